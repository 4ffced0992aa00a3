"""Decode an uploaded file into an upright RGB PIL image, or say clearly why it cannot be used.

Everything happens in memory; the bytes are never written to disk.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

try:  # HEIC/HEIF (iPhone photos) when pillow-heif is installed
    import pillow_heif

    pillow_heif.register_heif_opener()
    HEIF_SUPPORTED = True
except ImportError:  # pragma: no cover - depends on the install
    HEIF_SUPPORTED = False

MAX_PIXELS = 50_000_000  # a 50-megapixel phone photo is fine; a decompression bomb is not
# Progressive JPEGs have about ten scans. libjpeg makes a pass over the image's blocks for every scan, so a few
# hundred KB of empty scans (a "scan bomb") would hold a worker for minutes; 500 scans cost well under a second.
MAX_JPEG_SCANS = 500
ACCEPTED_FORMATS = ["JPEG", "MPO", "PNG", "GIF", "WEBP", "BMP", "TIFF"]
FRIENDLY_FORMATS = "JPEG, PNG, GIF, WebP, BMP or TIFF"
ACCEPT_ATTRIBUTE = "image/*"

# Signatures of files people send that are not raster images Pillow should decode here.
_UNSUPPORTED_SIGNATURES = [
    (b"%PDF", "PDF"),
    (b"PK\x03\x04", "ZIP"),
    (b"8BPS", "Photoshop"),
    (b"%!PS", "PostScript"),
]


class ImageError(ValueError):
    """An upload that cannot be classified: `status` is the HTTP status, `code` a stable machine-readable name."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def _heif_brand(head: bytes) -> bool:
    return head[4:8] == b"ftyp" and head[8:12] in {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis",
                                                   b"mif1", b"msf1", b"avif", b"avis"}


def _unsupported_kind(data: bytes) -> str | None:
    """Name the kind of a known non-image (or unsupported image) file, from its first bytes."""
    head = data[:512]
    for signature, name in _UNSUPPORTED_SIGNATURES:
        if head.startswith(signature):
            return name
    if _heif_brand(head):
        return "AVIF" if head[8:12] in {b"avif", b"avis"} else "HEIC/HEIF"
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if text.startswith(b"<svg") or (text.startswith(b"<?xml") and b"<svg" in data[:4096].lower()):
        return "SVG"
    return None


def _accepted_formats() -> list[str]:
    Image.init()  # register every plugin (MPO, the format of many phone JPEGs, is not preloaded)
    return [name for name in ACCEPTED_FORMATS + (["HEIF"] if HEIF_SUPPORTED else []) if name in Image.OPEN]


def _unsupported(kind: str) -> ImageError:
    hint = "" if kind != "HEIC/HEIF" else " (set your phone's camera to 'Most Compatible', or share the photo as JPEG)"
    return ImageError(415, "unsupported_format",
                      f"{kind} files are not supported. Please upload a photo as {FRIENDLY_FORMATS}{hint}.")


def _open(data: bytes) -> Image.Image:
    kind = _unsupported_kind(data)
    if kind and not (kind == "HEIC/HEIF" and HEIF_SUPPORTED):
        raise _unsupported(kind)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return Image.open(io.BytesIO(data), formats=_accepted_formats())
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise _too_many_pixels() from None
    except UnidentifiedImageError:
        raise ImageError(400, "not_an_image",
                         f"This file is not an image we can read. Please upload a photo as {FRIENDLY_FORMATS}.") from None
    except (OSError, ValueError, SyntaxError, EOFError):
        raise _corrupt() from None


def _check_jpeg_scans(data: bytes) -> None:
    """Refuse a JPEG with more start-of-scan markers than any real photo has (0xFFDA never occurs in scan data)."""
    if data.startswith(b"\xff\xd8") and data.count(b"\xff\xda") > MAX_JPEG_SCANS:
        raise ImageError(400, "image_too_complex",
                         f"This JPEG is made of more than {MAX_JPEG_SCANS} scans and would take too long to decode. "
                         "Please save it again as an ordinary JPEG or PNG and upload that.")


def _too_many_pixels() -> ImageError:
    return ImageError(400, "image_too_large",
                      f"This image has too many pixels (the limit is {MAX_PIXELS // 1_000_000} megapixels). "
                      "Please upload a smaller photo.")


def _corrupt() -> ImageError:
    return ImageError(400, "corrupt_image",
                      "This image file is damaged or incomplete and cannot be read. "
                      "Please upload it again or try another photo.")


def _to_rgb(image: Image.Image) -> Image.Image:
    """RGB with transparency flattened onto white and high bit depths scaled, not clipped."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        array = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") or array.max() > 255 else 255.0
        image = Image.fromarray(np.clip(array / top * 255.0 + 0.5, 0, 255).astype(np.uint8))
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def load_image(data: bytes, min_side: int | None = None) -> Image.Image:
    """Decode upload bytes into an EXIF-upright RGB image (first frame of animations), or raise ImageError.

    With `min_side`, a JPEG is decoded at 1/2, 1/4 or 1/8 of its size when both sides keep at least `min_side`
    pixels: libjpeg scales while decoding, several times faster than decoding every pixel and shrinking afterwards.
    """
    if not data:
        raise ImageError(400, "empty_file", "The file is empty. Please choose a photo to upload.")
    _check_jpeg_scans(data)
    image = _open(data)
    width, height = image.size
    if width * height > MAX_PIXELS:
        raise _too_many_pixels()
    if width < 1 or height < 1:
        raise _corrupt()
    if min_side:
        image.draft(None, (min_side, min_side))  # JPEG only; other formats ignore it
    try:
        image.seek(0)
        image.load()
    except Image.DecompressionBombError:
        raise _too_many_pixels() from None
    except (OSError, ValueError, SyntaxError, EOFError, TypeError, KeyError, IndexError,
            ZeroDivisionError, MemoryError):
        raise _corrupt() from None
    return _to_rgb(_upright(image))


def _upright(image: Image.Image) -> Image.Image:
    """Apply the EXIF orientation (phones store photos sideways); a broken EXIF block is ignored, not fatal."""
    try:
        return ImageOps.exif_transpose(image) or image
    except Exception:  # noqa: BLE001 - Pillow raises many types on malformed EXIF; the pixels are still good
        return image
