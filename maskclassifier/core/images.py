"""Decode an uploaded file into an upright RGB PIL image, or say clearly why it cannot be used.

Everything happens in memory; the bytes are never written to disk.
"""

from __future__ import annotations

import io
import struct
import warnings
import zlib

import numpy as np
from PIL import Image, UnidentifiedImageError

from maskclassifier.core.errors import ImageError

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
        raise ImageError(
            400, "not_an_image", f"This file is not an image we can read. Please upload a photo as {FRIENDLY_FORMATS}."
        ) from None
    except (OSError, ValueError, SyntaxError, EOFError):
        raise _corrupt() from None


def _jpeg_scans(data: bytes) -> int:
    """How many start-of-scan markers (0xFF 0xDA) `data` holds, as `data.count(b"\\xff\\xda")` counts them, found
    as the 0xFF bytes followed by 0xDA: 0.16 against 0.76 ms of CPU for an 870 KB photo."""
    values = np.frombuffer(data, dtype=np.uint8)
    after_ff = np.flatnonzero(values[:-1] == 0xFF) + 1
    return int(np.count_nonzero(values[after_ff] == 0xDA))


def _check_jpeg_scans(data: bytes) -> None:
    """Refuse a JPEG with more start-of-scan markers than any real photo has (0xFFDA never occurs in scan data)."""
    if data.startswith(b"\xff\xd8") and _jpeg_scans(data) > MAX_JPEG_SCANS:
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


def _check_png_complete(data: bytes, image: Image.Image) -> None:
    """Refuse a PNG whose compressed pixel data ends before its last row.

    Pillow decodes a PNG whose zlib stream ends early (after one row, say) as a whole image, the missing rows
    black: a 93-byte file could then claim 50 megapixels and cost their memory. The IDAT chunks are inflated here
    in bounded pieces, without keeping the output, and must give every row the header promises.
    """
    if image.format != "PNG":
        return
    try:
        header = next(_png_chunks(data, b"IHDR"))
        width, height, bit_depth, colour_type, _, _, interlace = struct.unpack(">IIBBBBB", header[:13])
    except (StopIteration, struct.error):
        raise _corrupt() from None
    bits_per_pixel = bit_depth * _PNG_CHANNELS.get(colour_type, 1)
    passes = _ADAM7 if interlace else [(0, 0, 1, 1)]
    expected = 0
    for x0, y0, dx, dy in passes:
        columns, rows = -(-max(0, width - x0) // dx), -(-max(0, height - y0) // dy)
        if columns and rows:
            expected += rows * (1 + -(-columns * bits_per_pixel // 8))
    inflater = zlib.decompressobj()
    inflated = 0
    try:
        for payload in _png_chunks(data, b"IDAT"):
            pending = payload
            while pending and inflated < expected:
                inflated += len(inflater.decompress(pending, _INFLATE_PIECE))
                pending = inflater.unconsumed_tail
            if inflated >= expected:
                return
    except zlib.error:
        raise _corrupt() from None
    raise _corrupt()


_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # by IHDR colour type: grey, RGB, palette, grey+alpha, RGBA
_ADAM7 = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]
_INFLATE_PIECE = 1 << 20  # bytes of inflated data held at a time while counting


def _png_chunks(data: bytes, kind: bytes):
    """The payloads of every chunk of one kind, in file order (a chunk cut short yields what is there)."""
    offset = 8
    while offset + 8 <= len(data):
        length, chunk_kind = struct.unpack(">I4s", data[offset:offset + 8])
        if chunk_kind == kind:
            yield data[offset + 8:offset + 8 + length]
        offset += 12 + length


# Rows of the original image converted at a time: a few megapixels, so a mode conversion never holds a second
# full-size copy of a 50-megapixel image.
STRIP_PIXELS = 4_000_000
# Photos that are not JPEGs, and JPEGs that must be turned or are CMYK, are reduced to at most this long side right
# after decoding: face detection works at 1280 px and the annotated photo is 1600 px, so 4096 px keeps faces a
# quarter of the size of the photo's detail. Upright RGB and grey JPEGs are kept whole, so that the model sees what
# fastai's own pipeline (a full decode, then the item Resize) would make of the same file.
WORKING_MAX_SIDE = 4096
_ORIENTATION_TAG = 0x0112
_TRANSPOSE_FOR_ORIENTATION = {
    2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def _orientation(image: Image.Image) -> int:
    """The EXIF orientation (1 = upright); a broken EXIF block counts as upright, the pixels are still good."""
    try:
        value = image.getexif().get(_ORIENTATION_TAG, 1)
    except Exception:  # noqa: BLE001 - Pillow raises many types on malformed EXIF
        return 1
    return value if value in _TRANSPOSE_FOR_ORIENTATION else 1


def _reduction(size: tuple[int, int]) -> int:
    """The integer factor that brings the long side to at most WORKING_MAX_SIDE."""
    return -(-max(size) // WORKING_MAX_SIDE)


def _keeps_full_size(image: Image.Image, orientation: int) -> bool:
    """An upright RGB or grey JPEG is decoded whole: fastai's pipeline decodes it whole too."""
    return image.format in ("JPEG", "MPO") and image.mode in ("RGB", "L") and orientation == 1


def _high_bit_divisor(image: Image.Image) -> float | None:
    """For 16-bit, 32-bit integer and float images, the value that becomes 255: 65535 for 16-bit data, else 255
    when every value fits in 8 bits. None for 8-bit modes."""
    if image.mode.startswith("I;16"):
        return 65535.0
    if image.mode in ("I", "F"):
        low, high = image.getextrema()
        return 65535.0 if high > 255 else 255.0
    return None


def _strip_to_rgb(strip: Image.Image, divisor: float | None) -> Image.Image:
    """RGB with transparency flattened onto white and high bit depths scaled, not clipped, in float32."""
    if divisor is not None:
        values = np.asarray(strip, dtype=np.float32)
        strip = Image.fromarray(np.clip(values * np.float32(255.0 / divisor) + np.float32(0.5), 0, 255)
                                .astype(np.uint8))
    if strip.mode == "P" and "transparency" in strip.info:
        strip = strip.convert("RGBA")
    if strip.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = strip.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return strip if strip.mode == "RGB" else strip.convert("RGB")


def _to_rgb(image: Image.Image, factor: int) -> Image.Image:
    """The decoded image as RGB, 1/`factor` of its size, converted a strip of rows at a time.

    Peak memory is the decoded image plus the result plus one strip, whatever the mode: converting a 16-bit or
    float image whole would cost several full-size copies (8 bytes a pixel through float64).
    """
    if factor == 1 and image.mode == "RGB":
        return image
    width, height = image.size
    divisor = _high_bit_divisor(image)
    rows = factor * max(1, STRIP_PIXELS // (width * factor * factor))  # a multiple of the factor
    result = Image.new("RGB", (-(-width // factor), -(-height // factor)))
    for top in range(0, height, rows):
        strip = _strip_to_rgb(image.crop((0, top, width, min(height, top + rows))), divisor)
        result.paste(strip.reduce(factor) if factor > 1 else strip, (0, top // factor))
    return result


def claimed_pixels(data: bytes) -> int:
    """Width x height as the file's header states them, without decoding; 0 when the header cannot be read (then
    load_image says why)."""
    try:
        with _open(data) as image:
            return image.width * image.height
    except ImageError:
        return 0


def shrunk(image: Image.Image, max_side: int, resample: Image.Resampling,
           reducing_gap: float) -> tuple[Image.Image, float]:
    """`image` with its long side at most `max_side` (the image itself when it already fits), and the scale applied
    (at most 1). `reducing_gap` lets Pillow box-reduce first, which is faster and needs no full-size copy."""
    scale = min(1.0, max_side / max(image.size))
    if scale == 1.0:
        return image, scale
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, resample, reducing_gap=reducing_gap), scale


def _draft_size(image: Image.Image, orientation: int, factor: int,
                at_least: tuple[int, int] | None) -> tuple[int, int] | None:
    """The size (in the file's own orientation) to ask libjpeg's DCT scaling for, or None to decode whole: each
    side the smaller of what 1/`factor` of the image and `at_least` (given upright, so turned for orientations
    5-8) need. Pillow's draft keeps both sides at least that large."""
    wanted = []
    if factor > 1:
        wanted.append((-(-image.width // factor), -(-image.height // factor)))
    if at_least is not None and image.format in ("JPEG", "MPO"):
        wanted.append(at_least if orientation < 5 else (at_least[1], at_least[0]))
    if not wanted:
        return None
    return min(size[0] for size in wanted), min(size[1] for size in wanted)


def load_image(data: bytes, at_least: tuple[int, int] | None = None) -> Image.Image:
    """Decode upload bytes into an EXIF-upright RGB image (first frame of animations), or raise ImageError.

    Every path (page, API, evaluate) decodes with this one function, so a photo gets one answer. Upright RGB and
    grey JPEGs come back at full size, as fastai's PILImage.create decodes them; other images whose long side is
    over WORKING_MAX_SIDE come back reduced by an integer factor (a box filter, applied as they are converted).
    A JPEG that is reduced anyway is decoded by libjpeg at 1/2 to 1/8 scale, which needs no full-size copy.

    `at_least` (width, height), for a caller that needs no more of the photo (`Classifier.decode` with
    JPEG_DECODE=reduced): a JPEG at least twice that size on both sides is then decoded at the smallest of 1/2,
    1/4 and 1/8 of its size that keeps both sides at least that large. libjpeg scales while it decodes (its
    entropy decoding still reads the whole file), so a 2048x1536 photo decodes in 9.9 instead of 14.4 ms at 1/4
    and the pixels take 1/16 of the memory; they differ a little from the whole image's, so answers move
    (benchmarks/draft.py).

    Errors: 400 empty_file, not_an_image, corrupt_image (also for compressed data that ends early),
    image_too_large, image_too_complex; 415 unsupported_format.
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
    orientation = _orientation(image)
    factor = 1 if _keeps_full_size(image, orientation) else _reduction(image.size)
    draft_size = _draft_size(image, orientation, factor, at_least)
    if draft_size is not None:  # JPEG only; other formats ignore it
        image.draft(None, draft_size)
    try:
        _check_png_complete(data, image)
        image.seek(0)
        image.load()
        rgb = _to_rgb(image, _reduction(image.size) if factor > 1 else 1)
    except ImageError:
        raise
    except Image.DecompressionBombError:
        raise _too_many_pixels() from None
    except (OSError, ValueError, SyntaxError, EOFError, TypeError, KeyError, IndexError,
            ZeroDivisionError, MemoryError):
        raise _corrupt() from None
    return rgb if orientation == 1 else rgb.transpose(_TRANSPOSE_FOR_ORIENTATION[orientation])
