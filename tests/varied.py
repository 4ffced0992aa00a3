"""Uploads of every size, shape, format and mode the app accepts, decoded as the app decodes them."""

from __future__ import annotations

import numpy as np
from PIL import Image

from datasets import CATEGORIES, face_like_image
from helpers import encode
from maskclassifier.core.images import load_image

# Sizes include 1x1, strips 60:1 wide and tall, odd sizes, a 6-megapixel photo, and a height of 49 that
# fastai's crop rounds down to 48 rows at presize 85.
SIZES = [(1, 1), (3, 2), (17, 5), (64, 64), (85, 85), (96, 96), (100, 75), (75, 100), (640, 480), (480, 640),
         (1000, 999), (2000, 33), (30, 1800), (400, 49), (301, 97), (97, 301), (1280, 720), (720, 1280),
         (257, 255), (3000, 2000)]


def _content(kind: int, size: tuple[int, int], seed: int) -> Image.Image:
    width, height = size
    rng = np.random.default_rng(seed)
    if kind == 0:
        return face_like_image([CATEGORIES[seed % len(CATEGORIES)]], seed=seed, size=size)
    if kind == 1:
        return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
    x = np.linspace(0, 1, width)[None, :, None]
    y = np.linspace(0, 1, height)[:, None, None]
    stripes = (np.sin(x * width * 1.3 + y * 7) > 0) * 180 + x * 60 + y * np.array([10, 40, 70])
    return Image.fromarray(stripes.clip(0, 255).astype(np.uint8))


def _with_alpha(image: Image.Image, mode: str) -> Image.Image:
    alpha = Image.linear_gradient("L").resize(image.size)
    converted = image.convert(mode[0] if mode == "LA" else "RGB")
    converted.putalpha(alpha)
    return converted


def _exif_rotated_jpeg(image: Image.Image) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways, shown rotated: load_image turns it upright
    return encode(image, "JPEG", exif=exif)


ENCODINGS = [
    lambda im: encode(im, "JPEG", quality=90),
    lambda im: encode(im, "PNG"),
    lambda im: encode(im.convert("L"), "PNG"),
    lambda im: encode(_with_alpha(im, "LA"), "PNG"),
    lambda im: encode(_with_alpha(im, "RGBA"), "PNG"),
    lambda im: encode(im.convert("P"), "GIF"),
    lambda im: encode(im.convert("P"), "PNG", transparency=0),
    lambda im: encode(im.convert("CMYK"), "JPEG"),
    lambda im: encode(Image.fromarray(np.asarray(im.convert("L")).astype(np.uint16) * 257), "PNG"),  # I;16
    lambda im: encode(im.convert("1"), "BMP"),
    lambda im: encode(im, "WEBP", quality=80),
    lambda im: encode(im, "TIFF"),
    _exif_rotated_jpeg,
]


def varied_uploads(count: int = 60) -> list[Image.Image]:
    """Every size with three kinds of content, in 13 formats and modes, decoded by load_image."""
    images = []
    for i in range(count):
        content = _content(i % 3, SIZES[i % len(SIZES)], seed=i)
        images.append(load_image(ENCODINGS[i % len(ENCODINGS)](content)))
    return images
