"""fastai's item Resize (method='crop') in Pillow alone, for backends that do not run fastai's DataLoader.

Torch-free: the slim ONNX backend imports it, and so does the fastai backend's direct preprocessing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image


def fastai_crop_box(width: int, height: int, target_width: int, target_height: int) -> tuple[int, int, int, int]:
    """The box fastai's Resize(method='crop') cuts on the validation split: the largest centred crop with the
    target's aspect ratio, computed with fastai's own roundings (fastai/vision/augment.py, Resize.encodes)."""
    scale = width / target_width if width / target_width < height / target_height else height / target_height
    crop_width, crop_height = int(scale * target_width), int(scale * target_height)
    left, top = int(0.5 * (width - crop_width)), int(0.5 * (height - crop_height))
    return left, top, left + crop_width, top + crop_height


@dataclass(frozen=True)
class ItemResize:
    width: int
    height: int
    resample: Image.Resampling

    def __call__(self, image: Image.Image) -> np.ndarray:
        """(height, width, 3) uint8 pixels, as fastai's item transforms (Resize, then ToTensor) produce them."""
        if image.mode != "RGB":
            image = image.convert("RGB")
        box = fastai_crop_box(image.width, image.height, self.width, self.height)
        return np.asarray(image.crop(box).resize((self.width, self.height), self.resample), dtype=np.uint8)


def size_hw(value) -> tuple[int, int]:
    """A sidecar size: an int for a square, else [height, width]; ValueError for anything else."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value, value
    if (isinstance(value, list) and len(value) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)):
        return value[0], value[1]
    raise ValueError(f"bad size {value!r}")


def item_resize_from(preprocessing: dict) -> ItemResize:
    """The ItemResize a sidecar's `preprocessing` section describes; ValueError when it describes none."""
    if preprocessing.get("resize_method") != "crop":
        raise ValueError(f"resize_method {preprocessing.get('resize_method')!r} (only 'crop' is supported)")
    height, width = size_hw(preprocessing.get("presize"))
    try:
        resample = Image.Resampling[str(preprocessing.get("resample", "")).upper()]
    except KeyError:
        raise ValueError(f"unknown resample {preprocessing.get('resample')!r}") from None
    return ItemResize(width, height, resample)
