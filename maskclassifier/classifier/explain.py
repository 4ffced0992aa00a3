"""The "Why?" heat-map: which parts of the photo drove a category's probability, and the photo with it drawn over.

Two methods, one per backend:

- **Grad-CAM** (fastai backend; Selvaraju et al. 2017, as in the fastai book's chapter 18): the gradient of the
  category's logit with respect to the activations of the network's last convolutional block, averaged over the
  block's map into one weight per channel; the map is the ReLU of the weighted sum of the channels. It runs on
  exactly the batch the app classifies (`FastaiBackend.batch`: the item Resize's centre crop, then the batch
  transforms), one forward and one backward pass: about 0.1 s for the shipped MobileNetV2 on one core. Its
  resolution is the block's: 8x8 for the shipped model at 256 px (a 32-pixel stride).
- **Occlusion sensitivity** (ONNX backend, which has no gradients; Zeiler & Fergus 2014): the item-resized image
  is copied GRID x GRID times, each copy with one cell painted the image's mean colour, and all copies go through
  the graph in batches; a cell's value is how much hiding it lowers the category's probability. GRID*GRID + 1
  forward passes, so it is bounded by a deadline checked between batches.

Both maps cover what the model saw, `Explanation.box`: the item Resize's centre crop of the photo, not the parts of
a wide photo that the crop cuts off; for a photo the classifier answers from one of its square views (more than
VIEWS_ASPECT:1, see `maskclassifier.classifier.classifier`), that view. Values are scaled to 0..1 (Grad-CAM: from its smallest to
its largest value, as pytorch-grad-cam does; occlusion: by its largest value); a map whose every value is 0 means
no part of the photo raised the category's score more than another.

This module imports torch only inside the Grad-CAM path, so it also imports in the slim install.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, replace

import numpy as np
from PIL import Image

from maskclassifier.core.capacity import Deadline
from maskclassifier.core.categories import category as category_facts
from maskclassifier.core.errors import MaskClassifierError
from maskclassifier.core.images import shrunk
from maskclassifier.classifier.classifier import VIEWS_ASPECT, Classifier, answering_view, square_views
from maskclassifier.core.resize import fastai_crop_box

OCCLUSION_GRID = 5  # cells per side: 26 forward passes, about 1.1 s for the shipped model on one core
OCCLUSION_BATCH = 8  # copies per forward pass (as model.MAX_BATCH, for the same memory bound)
OVERLAY_MAX_SIDE = 800  # long side of the overlay image, as the page's preview
OVERLAY_OPACITY = 0.6  # of the colour map over the photo; the rest is the photo
OUTSIDE_DIMMING = 0.35  # brightness left to the parts of the photo the model did not see (cut off by the crop)
# A perceptually ordered black-purple-red-yellow ramp (anchors of matplotlib's "inferno"), so that "brighter"
# reads as "mattered more" also in grey scale; interpolated linearly between anchors.
RAMP = np.array([(0, 0, 4), (87, 16, 110), (188, 55, 84), (249, 142, 9), (252, 255, 164)], dtype=np.float32)


class ExplainUnavailable(MaskClassifierError, RuntimeError):
    """This model cannot be explained here (e.g. a Grad-CAM request on a model with no convolutional body);
    `reason` says why."""

    status = 501
    code = "explain_unavailable"

    def __init__(self, reason: str):
        super().__init__(f"No heat-map can be made for this model: {reason}.")
        self.reason = reason


class ExplainTooSlow(MaskClassifierError, RuntimeError):
    """The heat-map was not done within its deadline (occlusion on a slow or busy server)."""

    status = 503
    code = "explain_timeout"

    def __init__(self, budget_s: float):
        super().__init__(f"The heat-map took longer than {budget_s:g} seconds; the server is busy or the model "
                         "slow. Please try again later.", headers=[("Retry-After", "10")])
        self.budget_s = budget_s


class UnknownCategory(MaskClassifierError, ValueError):
    """The category asked for is not in the model's vocab; `vocab` lists the ones it has."""

    status = 400
    code = "invalid_category"

    def __init__(self, name: str, vocab: list[str]):
        super().__init__(f"category must be one of the model's categories ({', '.join(vocab)}); "
                         f"got {name[:40]!r}.")  # cut: the name is the request's, echoed back
        self.name, self.vocab = name, vocab


@dataclass(frozen=True)
class Explanation:
    category: str  # the category explained (in the model's vocab)
    probability: float  # its probability for the image, from the same forward pass as the map (no TTA)
    method: str  # "grad-cam" or "occlusion"
    grid: np.ndarray  # (rows, cols) float32 in 0..1, row 0 at the top of `box`
    box: tuple[int, int, int, int]  # x0, y0, x1, y1: what the model saw, in pixels of the photo

    @property
    def title(self) -> str:
        return category_facts(self.category).title

    @property
    def legend(self) -> str:
        return f"Brighter = mattered more for '{self.title}'."


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
    backend = classifier.backend
    if hasattr(backend, "learner"):  # the fastai backend: gradients are available
        return _grad_cam(backend, image, category)
    if hasattr(backend, "session"):  # the ONNX backend
        return _occlusion(backend, image, category, deadline or Deadline.after(float("inf")))
    raise ExplainUnavailable(f"heat-maps are not available for the {type(backend).__name__} backend")


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


def _seen_box(image: Image.Image, item_width: int, item_height: int,
              crop: tuple[int, int, int, int] | None = None) -> tuple[int, int, int, int]:
    """The part of the photo the model sees: fastai's centre crop for the item size, narrowed by a batch-level
    crop (top, left, height, width in item pixels) when the pipeline has one."""
    x0, y0, x1, y1 = fastai_crop_box(image.width, image.height, item_width, item_height)
    if crop is None:
        return x0, y0, x1, y1
    top, left, height, width = crop
    sx, sy = (x1 - x0) / item_width, (y1 - y0) / item_height
    return (round(x0 + left * sx), round(y0 + top * sy), round(x0 + (left + width) * sx),
            round(y0 + (top + height) * sy))


def _fastai_seen_box(backend, image: Image.Image) -> tuple[int, int, int, int]:
    from maskclassifier.classifier.pipeline import Crop, PipelineError, item_resize
    from maskclassifier.core.resize import size_hw

    direct = backend.direct
    if direct is None:  # served through fastai's own DataLoader: its item Resize, if it can be read
        try:
            height, width = size_hw(item_resize(backend.learner.dls.valid.after_item)["presize"])
        except (PipelineError, ValueError):
            return 0, 0, image.width, image.height
        return _seen_box(image, width, height)
    crops = [(step.top, step.left, step.height, step.width) for step in direct.steps if isinstance(step, Crop)]
    return _seen_box(image, direct.resize.width, direct.resize.height, crops[0] if crops else None)


def feature_split(model) -> tuple[object, object]:
    """(features, rest): the model cut after its last top-level child that holds a convolution, e.g. fastai's
    vision_learner model Sequential(body, head) -> (body, head). ExplainUnavailable when there is no such cut.

    Running the two halves one after the other, instead of hooking the body, keeps the shared model untouched:
    a hook would also fire in the other threads that classify with it at the same time.
    """
    from torch import nn

    if not isinstance(model, nn.Sequential):
        raise ExplainUnavailable(f"Grad-CAM needs a model that is a sequence of layers (fastai's body and head); "
                                 f"this one is a {type(model).__name__}")
    has_conv = [any(isinstance(module, nn.Conv2d) for module in child.modules()) for child in model]
    if not any(has_conv):
        raise ExplainUnavailable("Grad-CAM needs a convolutional network; this model has no convolution")
    last = max(index for index, flag in enumerate(has_conv) if flag)
    return model[:last + 1], model[last + 1:]


def _grad_cam(backend, image: Image.Image, category: str | None) -> Explanation:
    import torch

    features, rest = feature_split(backend.learner.model)
    # The batch is made in inference mode; a copy made here can take part in autograd. Asking for the input's
    # gradient makes every activation track one, also when the body's weights are frozen.
    batch = backend.batch([image]).clone().requires_grad_(True)
    with torch.enable_grad():
        activations = features(batch)
        if activations.dim() != 4:
            raise ExplainUnavailable(f"the last convolutional block's output has shape {tuple(activations.shape)}, "
                                     "not (batch, channels, height, width)")
        logits = rest(activations)
        probabilities = torch.sigmoid(logits[0]).detach().numpy()
        index = int(probabilities.argmax()) if category is None else backend.vocab.index(category)
        # autograd.grad, not backward(): nothing accumulates in the shared model's .grad attributes
        (gradients,) = torch.autograd.grad(logits[0, index], activations)
    weights = gradients[0].mean(dim=(1, 2))  # one weight per channel: its gradient averaged over the map
    cam = torch.relu((weights[:, None, None] * activations[0].detach()).sum(dim=0)).numpy()
    # Channels that respond to the background everywhere give the map a floor; like pytorch-grad-cam's
    # scale_cam_image, the map is shifted to start at 0 before scaling, so its range shows what stood out.
    cam = cam - cam.min()
    return Explanation(backend.vocab[index], float(probabilities[index]), "grad-cam", _scaled(cam),
                       _fastai_seen_box(backend, image))


def _occlusion(backend, image: Image.Image, category: str | None, deadline: Deadline) -> Explanation:
    pixels = backend.resize(image)  # (height, width, 3) uint8: what the graph takes
    height, width = pixels.shape[:2]
    fill = pixels.reshape(-1, 3).mean(axis=0).round().astype(np.uint8)
    rows = np.linspace(0, height, OCCLUSION_GRID + 1).round().astype(int)
    cols = np.linspace(0, width, OCCLUSION_GRID + 1).round().astype(int)
    copies = [pixels]
    for r in range(OCCLUSION_GRID):
        for c in range(OCCLUSION_GRID):
            hidden = pixels.copy()
            hidden[rows[r]:rows[r + 1], cols[c]:cols[c + 1]] = fill
            copies.append(hidden)
    outputs = []
    for start in range(0, len(copies), OCCLUSION_BATCH):
        if deadline.remaining() <= 0:
            raise ExplainTooSlow(deadline.budget_s)
        batch = np.stack(copies[start:start + OCCLUSION_BATCH])
        outputs.append(backend.run(batch))
    probabilities = np.concatenate(outputs)
    index = int(probabilities[0].argmax()) if category is None else backend.vocab.index(category)
    drops = probabilities[0, index] - probabilities[1:, index]
    grid = _scaled(np.maximum(drops, 0).reshape(OCCLUSION_GRID, OCCLUSION_GRID))
    return Explanation(backend.vocab[index], float(probabilities[0, index]), "occlusion", grid,
                       _seen_box(image, backend.resize.width, backend.resize.height))


def _scaled(values: np.ndarray) -> np.ndarray:
    """0..1 by the largest value; all zeros stay zeros (nothing raised the score)."""
    values = np.asarray(values, dtype=np.float32)
    top = float(values.max()) if values.size else 0.0
    return values / top if top > 0 else np.zeros_like(values)


def colour_map(values: np.ndarray) -> np.ndarray:
    """(h, w) values in 0..1 -> (h, w, 3) uint8 colours of RAMP."""
    position = np.clip(values, 0, 1) * (len(RAMP) - 1)
    low = np.minimum(position.astype(int), len(RAMP) - 2)
    fraction = (position - low)[..., None]
    return (RAMP[low] * (1 - fraction) + RAMP[low + 1] * fraction).round().astype(np.uint8)


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
