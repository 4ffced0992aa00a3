"""The heat-map methods the backends run (`Backend.heat_map`); `maskclassifier.classifier.explain` picks the view
and draws the result.

Two methods, one per backend:

- **Grad-CAM** (fastai backend; Selvaraju et al. 2017, as in the fastai book's chapter 18): the gradient of the
  category's logit with respect to the activations of the network's last convolutional block, averaged over the
  block's map into one weight per channel; the map is the ReLU of the weighted sum of the channels. It runs on
  exactly the batch the app classifies (the backend's `batch`: the item Resize's centre crop, then the batch
  transforms), one forward and one backward pass: about 0.1 s for the shipped MobileNetV2 on one core. Its
  resolution is the block's: 8x8 for the shipped model at 256 px (a 32-pixel stride).
- **Occlusion sensitivity** (ONNX backend, which has no gradients; Zeiler & Fergus 2014): the item-resized image
  is copied GRID x GRID times, each copy with one cell painted the image's mean colour, and all copies go through
  the graph in batches; a cell's value is how much hiding it lowers the category's probability. GRID*GRID + 1
  forward passes, so it is bounded by a deadline checked between batches.

Each backend's `heat_map` (the backend protocol, `maskclassifier.classifier.classifier.Backend`) runs its method
with its own inputs: `grad_cam` and `occlusion` here take a model and a batch, or a run function and pixels, not a
backend, and this module imports no other of the classifier layer, so the backends may import it.

Values are scaled to 0..1 (Grad-CAM: from its smallest to its largest value, as pytorch-grad-cam does; occlusion:
by its largest value); a map whose every value is 0 means no part of the photo raised the category's score more than
another. This module imports torch only inside the Grad-CAM path, so it also imports in the slim install.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image

from maskclassifier.core.capacity import Deadline
from maskclassifier.core.categories import category as category_facts
from maskclassifier.core.errors import MaskClassifierError
from maskclassifier.core.resize import fastai_crop_box

OCCLUSION_GRID = 5  # cells per side: 26 forward passes, about 1.1 s for the shipped model on one core
OCCLUSION_BATCH = 8  # copies per forward pass (as model.MAX_BATCH, for the same memory bound)

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


def seen_box(image: Image.Image, item_width: int, item_height: int,
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


def grad_cam(model, batch, vocab: list[str], category: str | None, box: tuple[int, int, int, int]) -> Explanation:
    """Grad-CAM of `category` (None: the most probable) for a torch `batch` of one image, which `model` (a
    Sequential of body and head, see feature_split) classifies; `box` is the part of the photo the batch shows."""
    import torch

    features, rest = feature_split(model)
    # The batch is made in inference mode; a copy made here can take part in autograd. Asking for the input's
    # gradient makes every activation track one, also when the body's weights are frozen.
    batch = batch.clone().requires_grad_(True)
    with torch.enable_grad():
        activations = features(batch)
        if activations.dim() != 4:
            raise ExplainUnavailable(f"the last convolutional block's output has shape {tuple(activations.shape)}, "
                                     "not (batch, channels, height, width)")
        logits = rest(activations)
        probabilities = torch.sigmoid(logits[0]).detach().numpy()
        index = int(probabilities.argmax()) if category is None else vocab.index(category)
        # autograd.grad, not backward(): nothing accumulates in the shared model's .grad attributes
        (gradients,) = torch.autograd.grad(logits[0, index], activations)
    weights = gradients[0].mean(dim=(1, 2))  # one weight per channel: its gradient averaged over the map
    cam = torch.relu((weights[:, None, None] * activations[0].detach()).sum(dim=0)).numpy()
    # Channels that respond to the background everywhere give the map a floor; like pytorch-grad-cam's
    # scale_cam_image, the map is shifted to start at 0 before scaling, so its range shows what stood out.
    cam = cam - cam.min()
    return Explanation(vocab[index], float(probabilities[index]), "grad-cam", _scaled(cam), box)


def occlusion(pixels: np.ndarray, run: Callable[[np.ndarray], np.ndarray], vocab: list[str], category: str | None,
              deadline: Deadline, box: tuple[int, int, int, int]) -> Explanation:
    """Occlusion sensitivity of `category` (None: the most probable) for one item-resized image, `pixels`
    ((height, width, 3) uint8), which `run` classifies in batches ((n, height, width, 3) -> (n, len(vocab))
    probabilities); `box` is the part of the photo `pixels` shows. ExplainTooSlow past `deadline`."""
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
        outputs.append(run(batch))
    probabilities = np.concatenate(outputs)
    index = int(probabilities[0].argmax()) if category is None else vocab.index(category)
    drops = probabilities[0, index] - probabilities[1:, index]
    grid = _scaled(np.maximum(drops, 0).reshape(OCCLUSION_GRID, OCCLUSION_GRID))
    return Explanation(vocab[index], float(probabilities[0, index]), "occlusion", grid, box)


def _scaled(values: np.ndarray) -> np.ndarray:
    """0..1 by the largest value; all zeros stay zeros (nothing raised the score)."""
    values = np.asarray(values, dtype=np.float32)
    top = float(values.max()) if values.size else 0.0
    return values / top if top > 0 else np.zeros_like(values)
