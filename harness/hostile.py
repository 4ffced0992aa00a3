"""A corpus of malformed and hostile uploads, each with the answer the app must give.

Every case is a whole HTTP request body plus its Content-Type header (and an optional query string), so the same
cases drive the Flask test client (tests/test_hostile.py) and real HTTP against gunicorn (benchmarks/load.py,
benchmarks/crowd.py).
A case expects either a 4xx with a stable error code, or a 200 with a prediction when the file really is a usable
image. Everything is generated in memory from a seed: nothing is downloaded, nothing is written to disk.

    python -m harness.hostile [MAX_UPLOAD_MB]   # lists the cases
"""

from __future__ import annotations

import base64
import io
import random
import struct
import sys
import zipfile
import zlib
from dataclasses import dataclass

from PIL import Image, ImageDraw

from harness.files import encode, png_chunk, png_claiming, png_one_row_of
from harness.multipart import Part, multipart

OK = 200  # the file is a usable image: the app must classify it


@dataclass(frozen=True)
class Upload:
    """A request to POST to / and /api/predict, and the status (and error code) it must get from both."""

    name: str
    body: bytes
    content_type: str | None
    status: int
    code: str | None = None  # the JSON "error" code; None when status is 200
    query: str = ""

    @property
    def headers(self) -> dict[str, str]:
        return {"Content-Type": self.content_type} if self.content_type is not None else {}


# ---- request bodies ---------------------------------------------------------------------------------------------


def file_upload(name: str, data: bytes, status: int, code: str | None = None, filename: bytes = b"photo.jpg",
                content_type: str | None = "image/jpeg", query: str = "") -> Upload:
    """The common case: one file in the field `file`."""
    body, request_type = multipart([Part("file", data, filename, content_type)])
    return Upload(name, body, request_type, status, code, query)


# ---- images -----------------------------------------------------------------------------------------------------


def photo(size: tuple[int, int] = (160, 120), seed: int = 1) -> Image.Image:
    """A small drawn picture with a face-like oval: real pixels for the model, generated here."""
    rng = random.Random(seed)
    image = Image.new("RGB", size, tuple(rng.randrange(40, 200) for _ in range(3)))
    width, height = size
    draw = ImageDraw.Draw(image)
    draw.ellipse([width * 0.3, height * 0.1, width * 0.7, height * 0.9], fill=(220, 170, 140))
    draw.rectangle([width * 0.33, height * 0.5, width * 0.67, height * 0.8], fill=(90, 170, 220))
    return image


def png_with_chunk_before_idat(kind: bytes, body: bytes) -> bytes:
    """A valid PNG with one extra ancillary chunk (text, ICC profile, ...) inserted after IHDR."""
    data = encode(photo(), "PNG")
    ihdr_end = 8 + 4 + 4 + 13 + 4
    return data[:ihdr_end] + png_chunk(kind, body) + data[ihdr_end:]


def jpeg_with_segments(segments: list[bytes]) -> bytes:
    """A JPEG with extra marker segments (APPn, COM) inserted right after SOI."""
    data = encode(photo())
    return data[:2] + b"".join(segments) + data[2:]


def segment(marker: int, payload: bytes) -> bytes:
    """A JPEG marker segment: 0xFF, the marker, a big-endian length that counts itself, the payload."""
    return bytes([0xFF, marker]) + struct.pack(">H", len(payload) + 2) + payload


def jpeg_claiming(width: int, height: int) -> bytes:
    """A real JPEG whose frame header (SOF0) is patched to claim another size."""
    data = bytearray(encode(photo()))
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def bmp_claiming(width: int, height: int) -> bytes:
    data = bytearray(encode(photo((8, 8)), "BMP"))
    data[18:26] = struct.pack("<ii", width, height)
    return bytes(data)


def gif_with_frames(count: int) -> bytes:
    """A real GIF whose first frame is a photo, followed by `count` more 1x1 frames (a few bytes each)."""
    first = encode(photo().convert("P", palette=Image.Palette.ADAPTIVE, colors=16), "GIF")
    tiny_frame = b"\x2c" + struct.pack("<HHHH", 0, 0, 1, 1) + b"\x00" + b"\x02\x02\x44\x01\x00"
    return first.rstrip(b";") + tiny_frame * count + b";"


def gif_frame_larger_than_screen(width: int, height: int) -> bytes:
    """A 1x1 GIF screen whose first frame claims `width` x `height`."""
    header = b"GIF89a" + struct.pack("<HH", 1, 1) + b"\x80\x00\x00" + b"\x00\x00\x00\xff\xff\xff"
    frame = b"\x2c" + struct.pack("<HHHH", 0, 0, width, height) + b"\x00" + b"\x02\x02\x44\x01\x00"
    return header + frame + b";"


def _ifd_entry(tag: int, kind: int, count: int, value: int) -> bytes:
    """One little-endian TIFF directory entry; a single SHORT (type 3) sits in the first half of the value field."""
    packed = struct.pack("<HH", value, 0) if kind == 3 and count == 1 else struct.pack("<I", value)
    return struct.pack("<HHI", tag, kind, count) + packed


def _long_array(out: bytearray, values: list[int]) -> int:
    """A TIFF LONG value: one fits in its entry; more are appended to `out` and the entry holds their offset."""
    if len(values) == 1:
        return values[0]
    offset = len(out)
    out += struct.pack(f"<{len(values)}I", *values)
    return offset


def tiff_strips(width: int, height: int, strips: list[bytes], rows_per_strip: int, compression: int = 1,
                bits: int = 8, pages: int = 1) -> bytes:
    """A little-endian grayscale TIFF whose every page claims `width` x `height` and shares the same `strips`."""
    out = bytearray(b"II*\x00" + bytes(4))
    offsets = []
    for strip in strips:
        offsets.append(len(out))
        out += strip
    strip_offsets = _long_array(out, offsets)
    strip_byte_counts = _long_array(out, [len(strip) for strip in strips])
    out += bytes(len(out) % 2)  # directories start on a word boundary
    out[4:8] = struct.pack("<I", len(out))
    entries = [(256, 4, 1, width), (257, 4, 1, height), (258, 3, 1, bits), (259, 3, 1, compression), (262, 3, 1, 1),
               (273, 4, len(strips), strip_offsets), (277, 3, 1, 1), (278, 4, 1, rows_per_strip),
               (279, 4, len(strips), strip_byte_counts)]
    directory = struct.pack("<H", len(entries)) + b"".join(_ifd_entry(*entry) for entry in entries)
    for page in range(pages):
        next_offset = len(out) + len(directory) + 4 if page < pages - 1 else 0
        out += directory + struct.pack("<I", next_offset)
    return bytes(out)


def tiff(width: int, height: int, strip: bytes, compression: int = 1, bits: int = 8, pages: int = 1) -> bytes:
    """A TIFF with all its pixel data in one strip."""
    return tiff_strips(width, height, [strip], height, compression, bits, pages)


def tiff_with_a_strip_per_row(width: int, height: int) -> bytes:
    """Legal but slow to open: Pillow builds one decoder tile per strip."""
    return tiff_strips(width, height, [b"\x80" * width] * height, rows_per_strip=1)


def jpeg_scan_bomb(scans: int) -> bytes:
    """A progressive JPEG followed by `scans` empty scans, each costing libjpeg a pass over the image's blocks."""
    data = encode(photo((1000, 1000)), progressive=True)
    last_scan = data.rindex(b"\xff\xda")
    header = data[last_scan:last_scan + 2 + int.from_bytes(data[last_scan + 2:last_scan + 4], "big")]
    return data[:-2] + (header + b"\x00") * scans + data[-2:]


def exif_block(entries: list[tuple[int, int, int, bytes]], next_ifd: int = 0) -> bytes:
    """An APP1 EXIF payload: a little-endian TIFF header and one IFD of (tag, type, count, 4-byte value) entries."""
    ifd = struct.pack("<H", len(entries)) + b"".join(struct.pack("<HHI", tag, kind, count) + value[:4].ljust(4, b"\0")
                                                     for tag, kind, count, value in entries)
    return b"Exif\x00\x00" + b"II*\x00" + struct.pack("<I", 8) + ifd + struct.pack("<I", next_ifd)


def webp_canvas_claiming(width: int, height: int) -> bytes:
    """A WebP extended-format header claiming a huge canvas, with no image data."""
    vp8x = b"VP8X" + struct.pack("<I", 10) + b"\x00\x00\x00\x00" + (width - 1).to_bytes(3, "little") + (
        height - 1).to_bytes(3, "little")
    return b"RIFF" + struct.pack("<I", 4 + len(vp8x)) + b"WEBP" + vp8x


def zip_archive() -> bytes:
    """A ZIP whose one entry tries to escape the extraction directory ("zip slip")."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("../../etc/cron.d/evil", "* * * * * root rm -rf /\n")
    return buffer.getvalue()


def random_bytes(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


# ---- the corpus -------------------------------------------------------------------------------------------------


def _not_images() -> list[Upload]:
    svg_script = (b"<svg xmlns='http://www.w3.org/2000/svg' onload='alert(1)'>"
                  b"<script>alert(document.cookie)</script></svg>")
    return [
        file_upload("zero-bytes", b"", 400, "empty_file"),
        file_upload("random-1-byte", random_bytes(1, 1), 400, "not_an_image"),
        file_upload("random-4k", random_bytes(4096, 2), 400, "not_an_image"),
        file_upload("random-1m", random_bytes(1 << 20, 3), 400, "not_an_image"),
        file_upload("null-bytes-64k", b"\0" * 65536, 400, "not_an_image"),
        file_upload("text-named-jpg", b"just some text, named photo.jpg\n", 400, "not_an_image"),
        file_upload("html-named-jpg", b"<!doctype html><html><body><script>alert(1)</script></body></html>",
                    400, "not_an_image"),
        file_upload("php-named-jpg", b"<?php system($_GET['cmd']); ?>", 400, "not_an_image"),
        file_upload("gif-header-php-polyglot", b"GIF89a<?php system($_GET['cmd']); ?>", 400, "not_an_image"),
        file_upload("utf16-text", "not an image".encode("utf-16"), 400, "not_an_image"),
        file_upload("elf-executable", b"\x7fELF\x02\x01\x01" + b"\0" * 57, 400, "not_an_image"),
        file_upload("gzip", zlib.compress(encode(photo())), 400, "not_an_image"),
        file_upload("svg-with-script", svg_script, 415, "unsupported_format", b"cat.svg", "image/svg+xml"),
        file_upload("svg-named-jpg", b"<?xml version='1.0'?>\n" + svg_script, 415, "unsupported_format"),
        file_upload("pdf", b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /JS (app.alert(1)) >>\nendobj\n", 415,
                    "unsupported_format", b"scan.pdf", "application/pdf"),
        file_upload("postscript", b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n", 415, "unsupported_format"),
        file_upload("photoshop", b"8BPS\x00\x01" + b"\0" * 64, 415, "unsupported_format"),
        file_upload("zip-slip-archive", zip_archive(), 415, "unsupported_format", b"photos.zip", "application/zip"),
        file_upload("ico-not-accepted", encode(photo((32, 32)), "ICO"), 400, "not_an_image"),
        file_upload("ppm-not-accepted", encode(photo((32, 32)), "PPM"), 400, "not_an_image"),
    ]


def _broken_images() -> list[Upload]:
    jpeg, png = encode(photo((400, 300))), encode(photo((400, 300)), "PNG")
    return [
        file_upload("truncated-jpeg", jpeg[: len(jpeg) // 2], 400, "corrupt_image"),
        file_upload("jpeg-header-only", jpeg[:200], 400, "corrupt_image"),
        file_upload("truncated-png", png[: len(png) // 2], 400, "corrupt_image"),
        file_upload("png-signature-only", png[:8], 400, "not_an_image"),
        file_upload("jpeg-magic-then-noise", b"\xff\xd8\xff\xe0" + random_bytes(8192, 4), 400, "corrupt_image"),
        file_upload("png-bad-header-crc", png[:29] + b"\0\0\0\0" + png[33:], 400, "not_an_image"),
        file_upload("png-claiming-0x0", png_claiming(0, 0), 400, "not_an_image"),
        file_upload("jpeg-claiming-0x0", jpeg_claiming(0, 0), 400, "not_an_image"),
        file_upload("tiff-unknown-compression", tiff(16, 16, b"\0" * 256, compression=60000), 400, "not_an_image"),
        file_upload("tiff-strip-past-end", tiff(256, 256, b"\0" * 16), 400, "corrupt_image"),
        file_upload("tiff-1000-bits-per-sample", tiff(16, 16, b"\0" * 256, bits=1000), 400, "not_an_image"),
    ]


def _bombs() -> list[Upload]:
    return [
        file_upload("png-bomb-30000x30000", png_claiming(30000, 30000), 400, "image_too_large"),
        file_upload("png-bomb-65535x65535", png_claiming(65535, 65535), 400, "image_too_large"),
        file_upload("png-60-megapixels", png_claiming(10000, 6000), 400, "image_too_large"),
        file_upload("png-16-bit-7071x7071-data-ends-after-one-row", png_one_row_of(7071, 7071), 400, "corrupt_image"),
        file_upload("png-ztxt-bomb", png_with_chunk_before_idat(b"zTXt", b"Comment\0\0" + zlib.compress(
            b"\0" * (64 << 20), 9)), 400, "corrupt_image"),
        file_upload("png-iccp-bomb", png_with_chunk_before_idat(b"iCCP", b"icc\0\0" + zlib.compress(
            b"\0" * (64 << 20), 9)), 400, "corrupt_image"),
        file_upload("jpeg-claiming-65500x65500", jpeg_claiming(65500, 65500), 400, "image_too_large"),
        file_upload("bmp-claiming-50000x50000", bmp_claiming(50000, 50000), 400, "image_too_large"),
        file_upload("gif-frame-40000x40000-on-1x1-screen", gif_frame_larger_than_screen(40000, 40000),
                    400, "image_too_large"),
        file_upload("tiff-bomb-100000x100000", tiff(100000, 100000, zlib.compress(b"\0" * 65536, 9), compression=8),
                    400, "image_too_large"),
        file_upload("webp-canvas-16384x16384", webp_canvas_claiming(16384, 16384), 400, "image_too_large"),
        file_upload("jpeg-scan-bomb", jpeg_scan_bomb(20000), 400, "image_too_complex"),
    ]


def _usable_images() -> list[Upload]:
    jpeg = encode(photo())
    huge_exif = exif_block([(0x010E, 2, 60000, struct.pack("<I", 26))]) + b"A" * 60000
    looping_exif = exif_block([(0x0112, 3, 1, struct.pack("<H", 6)), (0x8769, 4, 1, struct.pack("<I", 8))], next_ifd=8)
    return [
        file_upload("1x1-png", encode(Image.new("RGB", (1, 1), (200, 30, 30)), "PNG"), OK),
        file_upload("1x1-jpeg", encode(Image.new("RGB", (1, 1), (30, 200, 30))), OK),
        file_upload("20000x10-png", encode(photo((20000, 10)), "PNG"), OK),
        file_upload("10x20000-png", encode(photo((10, 20000)), "PNG"), OK),
        file_upload("gif-5000-frames", gif_with_frames(5000), OK, filename=b"anim.gif", content_type="image/gif"),
        file_upload("tiff-2000-pages", tiff(64, 64, b"\x80" * 4096, pages=2000), OK, filename=b"scan.tif",
                    content_type="image/tiff"),
        file_upload("jpeg-60kb-exif", jpeg_with_segments([segment(0xE1, huge_exif)]), OK),
        file_upload("jpeg-exif-ifd-loop", jpeg_with_segments([segment(0xE1, looping_exif)]), OK),
        file_upload("jpeg-exif-count-overflow", jpeg_with_segments([segment(0xE1, exif_block(
            [(0x0112, 3, 0x7FFFFFFF, struct.pack("<I", 8))]))]), OK),
        file_upload("jpeg-2000-comment-segments", jpeg_with_segments([segment(0xFE, b"x" * 500)] * 2000), OK),
        file_upload("jpeg-zip-polyglot", jpeg + zip_archive(), OK, filename=b"photo.jpg.zip"),
        file_upload("png-named-jpg-as-text-plain", encode(photo(), "PNG"), OK, content_type="text/plain"),
        file_upload("jpeg-without-part-content-type", jpeg, OK, content_type=None),
        file_upload("jpeg-as-svg-content-type", jpeg, OK, content_type="image/svg+xml"),
        file_upload("path-traversal-filename", jpeg, OK, filename=b"../../etc/passwd"),
        file_upload("absolute-windows-filename", jpeg, OK, filename=b"C:\\Windows\\System32\\config\\SAM"),
        file_upload("progressive-jpeg", encode(photo(), progressive=True), OK),
        file_upload("tiff-20000-strips", tiff_with_a_strip_per_row(2, 20000), OK, filename=b"tall.tif",
                    content_type="image/tiff"),
        file_upload("filename-with-nul-and-newline-escapes", jpeg, OK, filename=b"a%00b%0d%0a.jpg"),
        file_upload("4kb-filename", jpeg, OK, filename=b"a" * 4096 + b".jpg"),
        file_upload("faces-off-query", jpeg, OK, query="faces=off"),
    ]


def form_upload(name: str, parts: list[Part], status: int, code: str | None = None, close: bool = True) -> Upload:
    body, content_type = multipart(parts, close=close)
    return Upload(name, body, content_type, status, code)


def raw_multipart(name: str, body: bytes, status: int, code: str | None = None) -> Upload:
    """A hand-written multipart body whose boundary is `b`, for headers `multipart()` would not write."""
    return Upload(name, body, "multipart/form-data; boundary=b", status, code)


def _odd_requests(max_upload_bytes: int) -> list[Upload]:
    jpeg = encode(photo())
    body, _ = multipart([Part("file", jpeg)])
    base64_part = Part("file", base64.b64encode(jpeg), extra_headers=("Content-Transfer-Encoding: base64",))
    return [
        Upload("no-body-no-content-type", b"", None, 400, "no_file"),
        form_upload("missing-file-field", [Part("faces", b"auto", None, None)], 400, "no_file"),
        form_upload("field-named-image", [Part("image", jpeg)], 400, "no_file"),
        form_upload("file-sent-as-text-field", [Part("file", jpeg, None, None)], 400, "no_file"),
        form_upload("two-files", [Part("file", jpeg), Part("file", encode(photo(seed=2)), b"b.jpg")],
                    400, "too_many_files"),
        form_upload("200-files", [Part("file", jpeg, f"{i}.jpg".encode()) for i in range(200)], 400, "too_many_files"),
        form_upload("unused-second-picker", [Part("file", jpeg), Part("file", b"", b"", "application/octet-stream")],
                    OK),
        form_upload("empty-filename-with-data", [Part("file", jpeg, b"")], OK),
        form_upload("base64-transfer-encoding", [base64_part], 400, "not_an_image"),
        form_upload("non-utf8-filename", [Part("file", jpeg, b"\xff\xfe\xc3\x28photo\x80.jpg")],
                    400, "malformed_upload"),
        raw_multipart("rfc5987-filename", b"--b\r\nContent-Disposition: form-data; name=\"file\"; "
                      b"filename*=UTF-8''%E2%82%AC%2F..%2F.jpg\r\n\r\n" + jpeg + b"\r\n--b--\r\n", OK),
        raw_multipart("bare-lf-line-endings", b"--b\nContent-Disposition: form-data; name=\"file\"; filename=\"a.jpg\""
                      b"\n\n" + jpeg + b"\n--b--\n", OK),
        raw_multipart("part-without-content-disposition", b"--b\r\nContent-Type: image/jpeg\r\n\r\n" + jpeg
                      + b"\r\n--b--\r\n", 400, "malformed_upload"),
        raw_multipart("content-disposition-without-name", b"--b\r\nContent-Disposition: form-data; filename=\"a.jpg\""
                      b"\r\n\r\n" + jpeg + b"\r\n--b--\r\n", 400, "no_file"),
        Upload("raw-jpeg-body", jpeg, "image/jpeg", 400, "no_file"),
        Upload("json-body", b'{"file": "' + jpeg[:30].hex().encode() + b'"}', "application/json", 400, "no_file"),
        Upload("urlencoded-body", b"file=%FF%D8%FF", "application/x-www-form-urlencoded", 400, "no_file"),
        Upload("multipart-without-boundary", body, "multipart/form-data", 400, "malformed_upload"),
        Upload("multipart-wrong-boundary", body, "multipart/form-data; boundary=nope", 400, "malformed_upload"),
        form_upload("multipart-never-closed", [Part("file", jpeg)], 400, "malformed_upload", close=False),
        raw_multipart("multipart-garbage", random_bytes(4096, 5), 400, "malformed_upload"),
        form_upload("2000-form-parts", [Part(f"f{i}", b"x", None, None) for i in range(2000)], 413, "form_too_large"),
        form_upload("600kb-text-field", [Part("faces", b"a" * 600_000, None, None), Part("file", jpeg)],
                    413, "form_too_large"),
        form_upload("file-just-over-limit", [Part("file", b"\xff\xd8" + bytes(max_upload_bytes))],
                    413, "file_too_large"),
        form_upload("body-over-limit", [Part("file", b"\xff\xd8" + bytes(max_upload_bytes + (256 << 10)))],
                    413, "file_too_large"),
        file_upload("faces-mode-script", jpeg, 400, "invalid_faces_mode",
                    query="faces=%3Cscript%3Ealert(1)%3C/script%3E"),
        file_upload("faces-mode-non-utf8", jpeg, 400, "invalid_faces_mode", query="faces=%FF%FE"),
    ]


def hostile_uploads(max_upload_bytes: int) -> list[Upload]:
    """Every case, for an app whose upload limit is `max_upload_bytes`."""
    cases = _not_images() + _broken_images() + _bombs() + _usable_images() + _odd_requests(max_upload_bytes)
    names = [case.name for case in cases]
    assert len(names) == len(set(names)), "case names must be unique"
    return cases


if __name__ == "__main__":
    limit = int(float(sys.argv[1]) * 1024 * 1024) if len(sys.argv) > 1 else 10 * 1024 * 1024
    cases = hostile_uploads(limit)
    for case in cases:
        print(f"{case.status} {case.code or '-':20} {len(case.body):>10} B  {case.name}")
    print(f"{len(cases)} cases")
