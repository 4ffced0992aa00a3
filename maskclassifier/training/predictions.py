"""The trained learner's validation predictions, made as the app makes them (test-time augmentation included),
and the per-image losses the top-losses plot is ordered by.
"""

from __future__ import annotations

import numpy as np
from fastai.callback.core import Callback


class MirrorInputs(Callback):
    """Hands the model the mirror image of each batch: the second view of flip test-time augmentation."""

    def before_batch(self):
        self.learn.xb = tuple(x.flip(-1) for x in self.xb)


def validation_predictions(learn, tta: str) -> tuple[np.ndarray, np.ndarray]:
    """Sigmoid probabilities and 0/1 targets on the validation set, made as the app makes them with `tta`
    ("flip": each image's mean with its mirror image, mirrored after the item resize as the app does)."""
    probs, targets = learn.get_preds(dl=learn.dls.valid)
    if tta == "flip":
        mirrored, _ = learn.get_preds(dl=learn.dls.valid, cbs=[MirrorInputs()])
        probs = (probs + mirrored) / 2
    return probs.numpy(), targets.numpy()


def per_item_losses(probs: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Mean binary cross-entropy per image, as the loss function scores it."""
    clipped = np.clip(probs, 1e-7, 1 - 1e-7)
    return -(targets * np.log(clipped) + (1 - targets) * np.log(1 - clipped)).mean(axis=1)
