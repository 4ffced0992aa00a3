"""The "Why?" heat-map: which parts of the photo drove a category's probability, and the photo with it drawn over.

The map itself is made by the classifier's backend (`Backend.heat_map`, with `maskclassifier.classifier.heatmap`):
Grad-CAM where there are gradients (fastai), occlusion sensitivity where there are none (ONNX).

Both maps cover what the model saw, `Explanation.box`: the item Resize's centre crop of the photo, not the parts of
a wide photo that the crop cuts off; for a photo the classifier answers from one of its square views (more than
VIEWS_ASPECT:1, see `maskclassifier.classifier.classifier`), that view.

This module imports no torch, so it also imports in the slim install.
"""

from __future__ import annotations

import io
from dataclasses import replace

import numpy as np
from PIL import Image

from maskclassifier.classifier.classifier import VIEWS_ASPECT, Classifier, answering_view, square_views
from maskclassifier.classifier.heatmap import Explanation
from maskclassifier.core.capacity import Deadline
from maskclassifier.core.errors import MaskClassifierError
from maskclassifier.core.images import shrunk

OVERLAY_MAX_SIDE = 800  # long side of the overlay image, as the page's preview
OVERLAY_OPACITY = 0.6  # of the colour map over the photo; the rest is the photo
OUTSIDE_DIMMING = 0.35  # brightness left to the parts of the photo the model did not see (cut off by the crop)
# A perceptually ordered black-purple-red-yellow ramp (anchors of matplotlib's "inferno"), so that "brighter"
# reads as "mattered more" also in grey scale; interpolated linearly between anchors.
RAMP = np.array([(0, 0, 4), (87, 16, 110), (188, 55, 84), (249, 142, 9), (252, 255, 164)], dtype=np.float32)


class UnknownCategory(MaskClassifierError, ValueError):
    """The category asked for is not in the model's vocab; `vocab` lists the ones it has."""

    status = 400
    code = "invalid_category"

    def __init__(self, name: str, vocab: list[str]):
        super().__init__(f"category must be one of the model's categories ({', '.join(vocab)}); "
                         f"got {name[:40]!r}.")  # cut: the name is the request's, echoed back
        self.name, self.vocab = name, vocab


def explain(classifier: Classifier, image: Image.Image, category: str | None = None,
            deadline: Deadline | None = None) -> Explanation:
    """The heat-map of `category` (default: the most probable one) for an RGB `image`.

    Raises UnknownCategory for a category the model does not have, ExplainUnavailable when the backend cannot be
    explained, and ExplainTooSlow when occlusion outlasts `deadline`.
    """
    vocab = classifier.vocab
    if category is not None and category not in vocab:
        raise UnknownCategory(category, vocab)
    view = answered_view(classifier, image)
    if view is not None:  # a wide or tall photo answered from one of its square views: explain that view
        explanation = explain(classifier, image.crop(view), category, deadline)
        x0, y0, x1, y1 = explanation.box
        return replace(explanation, box=(x0 + view[0], y0 + view[1], x1 + view[0], y1 + view[1]))
    return classifier.backend.heat_map(image, category, deadline or Deadline.after(float("inf")))


def answered_view(classifier: Classifier, image: Image.Image) -> tuple[int, int, int, int] | None:
    """The square view (x0, y0, x1, y1) whose answer `Classifier.probabilities` gives for a photo wider or taller
    than VIEWS_ASPECT (`model.answering_view`); None when the photo is answered from its centre crop, as every
    other photo is."""
    if max(image.size) <= VIEWS_ASPECT * min(image.size):
        return None
    boxes = square_views(*image.size)
    index = answering_view(classifier.probabilities([image.crop(box) for box in boxes]), classifier.vocab,
                           classifier.threshold)
    return None if index is None else boxes[index]


COLOUR_BAND_ROWS = 64  # colour_map works this many rows at a time


def colour_map(values: np.ndarray) -> np.ndarray:
    """(h, w) values in 0..1 -> (h, w, 3) uint8 colours of RAMP. A band of rows at a time: the whole 800 px
    overlay's float64 intermediates took about 40 MB, most of /api/explain's peak memory."""
    colours = np.empty((*values.shape, 3), dtype=np.uint8)
    for first in range(0, values.shape[0], COLOUR_BAND_ROWS):
        position = np.clip(values[first:first + COLOUR_BAND_ROWS], 0, 1) * (len(RAMP) - 1)
        low = np.minimum(position.astype(int), len(RAMP) - 2)
        fraction = (position - low)[..., None]
        colours[first:first + COLOUR_BAND_ROWS] = (RAMP[low] * (1 - fraction) + RAMP[low + 1] * fraction).round()
    return colours


def overlay(image: Image.Image, explanation: Explanation, max_side: int = OVERLAY_MAX_SIDE) -> Image.Image:
    """The photo (long side at most `max_side`) with the heat-map blended over the part the model saw, smoothly
    upsampled (bilinear), and the rest dimmed."""
    canvas, scale = shrunk(image, max_side, Image.Resampling.BICUBIC, reducing_gap=2.0)
    canvas = canvas.convert("RGB")
    x0, y0, x1, y1 = (round(value * scale) for value in explanation.box)
    x1, y1 = max(x1, x0 + 1), max(y1, y0 + 1)
    grid = Image.fromarray(explanation.grid.astype(np.float32), mode="F")
    values = np.asarray(grid.resize((x1 - x0, y1 - y0), Image.Resampling.BILINEAR))
    heat = Image.fromarray(colour_map(values))
    dimmed = Image.eval(canvas, lambda v: int(v * OUTSIDE_DIMMING))
    seen = canvas.crop((x0, y0, x1, y1))
    dimmed.paste(Image.blend(seen, heat, OVERLAY_OPACITY), (x0, y0))
    return dimmed


def png(image: Image.Image) -> bytes:
    """PNG at zlib level 1: the default level took 0.25 s for an 800 px overlay, level 1 a fraction of it."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()
