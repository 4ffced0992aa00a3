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


# Crops larger than this are resized a strip of rows at a time (see ItemResize): a crop of a 50-megapixel photo
# would otherwise be a second full-size copy, 150 MB, next to the decoded photo.
CROP_IN_STRIPS_PIXELS = 4_000_000
STRIP_ROWS = 256


@dataclass(frozen=True)
class ItemResize:
    width: int
    height: int
    resample: Image.Resampling

    def __call__(self, image: Image.Image) -> np.ndarray:
        """(height, width, 3) uint8 pixels, as fastai's item transforms (Resize, then ToTensor) produce them.

        fastai crops, then resizes. Pillow resizes in two passes, each row on its own and then each column, with
        8-bit results in between; a big crop is therefore resized row strip by row strip to the output width,
        and the strips, stacked, are resized to the output height: the same pixels, without copying the crop.
        """
        if image.mode != "RGB":
            image = image.convert("RGB")
        left, top, right, bottom = fastai_crop_box(image.width, image.height, self.width, self.height)
        size = (self.width, self.height)
        if (right - left) * (bottom - top) <= CROP_IN_STRIPS_PIXELS or right - left == self.width:
            return np.asarray(image.crop((left, top, right, bottom)).resize(size, self.resample), dtype=np.uint8)
        rows = Image.new("RGB", (self.width, bottom - top))
        for strip_top in range(top, bottom, STRIP_ROWS):
            strip_bottom = min(bottom, strip_top + STRIP_ROWS)
            strip = image.crop((left, strip_top, right, strip_bottom))
            rows.paste(strip.resize((self.width, strip_bottom - strip_top), self.resample), (0, strip_top - top))
        return np.asarray(rows.resize(size, self.resample), dtype=np.uint8)


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
