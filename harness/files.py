"""Image files made by hand: an image encoded in memory, and PNGs whose header claims more than their data holds
(decompression bombs, files that end early). Standard library and Pillow only."""

from __future__ import annotations

import io
import struct
import zlib

from PIL import Image


def encode(image: Image.Image, fmt: str = "JPEG", **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png(width: int, height: int, bit_depth: int, colour_type: int, raw_rows: bytes) -> bytes:
    """A PNG whose IHDR says `width` x `height` and whose compressed data holds only `raw_rows` (filter bytes
    included): decompression bombs and files whose data ends early."""
    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", zlib.compress(raw_rows, 9))
            + png_chunk(b"IEND", b""))


def png_claiming(width: int, height: int) -> bytes:
    """A PNG header for a `width` x `height` RGB image with almost no pixel data: a decompression bomb."""
    return png(width, height, 8, 2, b"\0" * 4096)


def png_one_row_of(width: int = 7071, height: int = 7071) -> bytes:
    """93 bytes: a 16-bit grey PNG of `width` x `height` (50 megapixels) whose compressed data ends after one row."""
    return png(width, height, 16, 0, b"\0" * (1 + 2 * width))
