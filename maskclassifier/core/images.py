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


# What decoding may cost. A decoder that cannot work in parts allocates its whole output (and more) before Pillow
# sees a pixel, so such files are refused, from their header, when decoding them would cost more than
# DECODE_BUDGET_BYTES: with what the request needs after decoding (the model's crop, face detection at 1280 px, the
# annotated photo: tens of MB) each upload stays within the 300 MB bound of "Robustness" in the README. Peaks of
# decoding alone, VmHWM growth in a fresh process, Pillow 13.0.0 with libjpeg-turbo 3, libwebp 1.6, pillow-heif
# 1.8.1 (`python -m benchmarks.decoders`, BENCHMARKS.md "Issue 27"), in bytes a pixel at 12, 24, 36 and 49 MP:
#   baseline JPEG (4:2:0 and 4:4:4)  4.0-4.2: Pillow's RGB image (4 bytes a pixel); libjpeg decodes row by row
#   progressive JPEG 4:2:0           7.1-7.2: that, plus libjpeg's coefficient buffer (2 bytes a coefficient: 3 a pixel)
#   progressive JPEG 4:4:4           10.0-10.2: that, with a coefficient buffer of 6 bytes a pixel
#   WebP lossy and lossless          16.1-16.7: libwebp's animation decoder (which Pillow uses for every WebP) keeps
#                                    two RGBA canvases, Pillow copies the frame into a bytes object, then its image
#   HEIC                             7.3-7.7 (7.4 at 24 and 36 MP): libheif's planes and RGB output, then Pillow's copy
# A 50 MP baseline JPEG costs 200 MB; this budget is what 49 MP photos of the other kinds used to exceed.
DECODE_BUDGET_BYTES = 240 << 20
# The formats with a fixed cost a pixel get a pixel limit: the budget over the largest cost measured, rounded down.
WEBP_MAX_PIXELS = 15_000_000  # 16.7 bytes a pixel: 239 MB
HEIF_MAX_PIXELS = 33_000_000  # 7.4 bytes a pixel: 233 MB; a 48 MP iPhone "HEIF Max" photo must come as JPEG
# A JPEG that libjpeg decodes in several passes (progressive, or sequential with a first scan that lacks some
# components) keeps every DCT coefficient of the image until the last scan: 64 two-byte coefficients per 8x8 block
# of each component, whatever draft() scale the output is. It may cost its coefficient buffer plus the decoded
# image (Pillow: 4 bytes a pixel) within the budget: 35.9 MP at 4:2:0, 25.1 MP at 4:4:4 (grey: 41.9 MP).
JPEG_DECODED_BYTES_PER_PIXEL = 4


def _too_costly(kind: str, size: tuple[int, int], limit_pixels: int, advice: str) -> ImageError:
    limit = f"{limit_pixels // 100_000 / 10:g}"  # rounded down: 25.1 MP, not 25
    return ImageError(422, "image_too_large_for_format",
                      f"This {kind} is {size[0]}x{size[1]} pixels ({size[0] * size[1] / 1e6:.3g} megapixels): "
                      f"{kind}s are decoded whole, so the most this server takes is {limit} megapixels. "
                      f"Please {advice}, or resize it to at most {limit} megapixels, and upload it again.")


def _jpeg_first_scan_components(data: bytes) -> int | None:
    """How many components the first scan (SOS) of the main image holds, walking the marker segments before it
    (an EXIF thumbnail lies inside its APP1 segment and is skipped); None when the markers cannot be followed."""
    offset = 2
    while offset + 4 <= len(data):
        if data[offset] != 0xFF:
            return None
        marker = data[offset + 1]
        if marker == 0xFF:  # fill byte
            offset += 1
            continue
        if marker == 0xDA:
            return data[offset + 4] if offset + 4 < len(data) else None
        if marker in (0x01, *range(0xD0, 0xD8)):  # markers without a length
            offset += 2
            continue
        offset += 2 + struct.unpack(">H", data[offset + 2:offset + 4])[0]
    return None


def jpeg_coefficient_bytes(image: Image.Image, data: bytes) -> int:
    """The bytes of libjpeg's whole-image coefficient buffer for the JPEG `image` opened from `data` (before any
    draft()), 0 when it is decoded in one pass and needs none. As jdcoefct.c allocates it: per component, its blocks
    rounded up to whole multiples of its sampling factors, 64 coefficients of 2 bytes each."""
    components = [(h, v) for _, h, v, _ in getattr(image, "layer", [])]  # (id, horizontal, vertical, table)
    if not components:
        return 0
    if not image.info.get("progressive"):
        first_scan = _jpeg_first_scan_components(data)
        if first_scan is None or first_scan >= len(components):
            return 0
    h_max, v_max = max(h for h, _ in components), max(v for _, v in components)
    width, height = image.size
    total = 0
    for h, v in components:
        columns = -(-width * h // (8 * h_max))
        rows = -(-height * v // (8 * v_max))
        total += (-(-columns // h) * h) * (-(-rows // v) * v) * 64 * 2
    return total


def _check_decoding_cost(image: Image.Image, data: bytes) -> None:
    """Refuse, before decoding, a photo whose decoder would need more than DECODE_BUDGET_BYTES (422
    image_too_large_for_format, saying what to send instead)."""
    pixels = image.width * image.height
    if image.format == "WEBP" and pixels > WEBP_MAX_PIXELS:
        raise _too_costly("WebP image", image.size, WEBP_MAX_PIXELS, "send it as a JPEG")
    if image.format == "HEIF" and pixels > HEIF_MAX_PIXELS:
        raise _too_costly("HEIC/HEIF photo", image.size, HEIF_MAX_PIXELS,
                          "send it as a JPEG (on an iPhone: Settings > Camera > Formats > Most Compatible)")
    if image.format in ("JPEG", "MPO"):
        coefficients = jpeg_coefficient_bytes(image, data)
        if coefficients and coefficients + JPEG_DECODED_BYTES_PER_PIXEL * pixels > DECODE_BUDGET_BYTES:
            per_pixel = coefficients / pixels + JPEG_DECODED_BYTES_PER_PIXEL
            raise _too_costly("progressive JPEG", image.size, int(DECODE_BUDGET_BYTES / per_pixel),
                              "save it as a baseline (standard, not progressive) JPEG")


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
    image_too_large, image_too_complex; 415 unsupported_format; 422 image_too_large_for_format (a WebP, HEIC or
    progressive JPEG whose decoder would need more than DECODE_BUDGET_BYTES).
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
    _check_decoding_cost(image, data)
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
