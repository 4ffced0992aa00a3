"""Every upload format the issue lists, decoded to an upright RGB image or rejected with the right status."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from harness.files import png_claiming
from helpers import encode, sideways_jpeg
from maskclassifier.core import images
from maskclassifier.core.images import ImageError, load_image


def gradient(size=(40, 30)) -> Image.Image:
    width, height = size
    x = np.linspace(0, 255, width, dtype=np.uint8)
    y = np.linspace(0, 255, height, dtype=np.uint8)
    rgb = np.stack([np.tile(x, (height, 1)), np.tile(y[:, None], (1, width)), np.full((height, width), 90, np.uint8)],
                   -1)
    return Image.fromarray(rgb, "RGB")


def assert_error(data: bytes, status: int, code: str) -> ImageError:
    with pytest.raises(ImageError) as caught:
        load_image(data)
    assert (caught.value.status, caught.value.code) == (status, code)
    assert caught.value.message.endswith(".")
    return caught.value


@pytest.mark.parametrize("fmt,params", [
    ("JPEG", {"quality": 95}),
    ("PNG", {}),
    ("WEBP", {"lossless": True}),
    ("BMP", {}),
    ("TIFF", {}),
])
def test_common_formats_decode_to_rgb(fmt, params):
    original = gradient()
    decoded = load_image(encode(original, fmt, **params))
    assert decoded.mode == "RGB" and decoded.size == original.size
    tolerance = 8 if fmt == "JPEG" else 0
    assert np.abs(np.asarray(decoded, int) - np.asarray(original, int)).max() <= tolerance


def test_rgba_png_is_flattened_on_white():
    image = Image.new("RGBA", (10, 10), (255, 0, 0, 0))
    image.putpixel((0, 0), (0, 0, 255, 255))
    decoded = load_image(encode(image, "PNG"))
    assert decoded.mode == "RGB"
    assert decoded.getpixel((5, 5)) == (255, 255, 255)
    assert decoded.getpixel((0, 0)) == (0, 0, 255)


def test_palette_png_with_transparency_is_flattened_on_white():
    image = Image.new("P", (8, 8), 0)
    image.putpalette([0, 0, 0, 200, 30, 30] + [0] * 762)
    image.putpixel((1, 1), 1)
    decoded = load_image(encode(image, "PNG", transparency=0))
    assert decoded.getpixel((0, 0)) == (255, 255, 255)
    assert decoded.getpixel((1, 1)) == (200, 30, 30)


def test_animated_gif_uses_the_first_frame():
    frames = [Image.new("RGB", (12, 12), colour) for colour in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    decoded = load_image(buffer.getvalue())
    assert decoded.mode == "RGB"
    red, green, blue = decoded.getpixel((6, 6))
    assert red > 200 and green < 50 and blue < 50


def test_grayscale_becomes_three_equal_channels():
    decoded = load_image(encode(gradient().convert("L"), "PNG"))
    array = np.asarray(decoded)
    assert decoded.mode == "RGB" and (array[..., 0] == array[..., 1]).all() and (array[..., 1] == array[..., 2]).all()


def test_cmyk_jpeg_becomes_rgb():
    decoded = load_image(encode(Image.new("CMYK", (16, 16), (0, 255, 255, 0)), "JPEG", quality=95))
    red, green, blue = decoded.getpixel((8, 8))
    assert decoded.mode == "RGB" and red > 200 and green < 60 and blue < 60


def test_16_bit_png_is_scaled_not_clipped():
    array = np.array([[0, 32768, 65535]], dtype=np.uint16)
    image = Image.fromarray(array)
    assert image.mode.startswith("I;16")
    decoded = load_image(encode(image, "PNG"))
    assert [decoded.getpixel((x, 0))[0] for x in range(3)] == [0, 128, 255]


def test_exif_orientation_is_applied():
    upright = gradient((40, 30))
    decoded = load_image(sideways_jpeg(upright))
    assert decoded.size == upright.size
    assert np.abs(np.asarray(decoded, int) - np.asarray(upright, int)).mean() < 4


def test_upright_jpegs_are_decoded_whole_as_fastai_decodes_them():
    jpeg = encode(gradient((5000, 3000)), "JPEG")
    decoded = load_image(jpeg)
    assert decoded.size == (5000, 3000)
    assert np.array_equal(np.asarray(decoded), np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB")))


def test_a_jpeg_twice_the_size_asked_for_is_decoded_at_reduced_scale():
    photo = gradient((2048, 1536))
    jpeg = encode(photo, "JPEG", quality=95)
    decoded = load_image(jpeg, at_least=(288, 288))
    assert decoded.size == (512, 384)  # 1/4; 1/8 would be 256 x 192, under what was asked for
    assert np.abs(np.asarray(decoded, int) - np.asarray(photo.resize((512, 384)), int)).mean() < 4
    assert load_image(jpeg, at_least=(1024, 768)).size == (1024, 768)
    assert load_image(jpeg, at_least=(1025, 768)).size == (2048, 1536)  # not twice on both sides: whole
    assert load_image(encode(photo, "PNG"), at_least=(288, 288)).size == (2048, 1536)  # libjpeg's scaling only


def test_a_sideways_jpeg_is_reduced_by_its_upright_size():
    upright = gradient((600, 2000))
    decoded = load_image(sideways_jpeg(upright), at_least=(288, 1000))  # stored 2000 x 600: asks 1000 x 288
    assert decoded.size == (300, 1000)
    assert np.abs(np.asarray(decoded, int) - np.asarray(upright.resize((300, 1000)), int)).mean() < 4


def test_sideways_and_non_jpeg_photos_over_the_working_size_are_reduced():
    upright = gradient((9000, 2000))
    decoded = load_image(sideways_jpeg(upright))  # libjpeg decodes at 1/2, then the box filter halves again
    assert decoded.size == (2250, 500)
    assert np.abs(np.asarray(decoded, int) - np.asarray(upright.resize((2250, 500)), int)).mean() < 4
    assert load_image(encode(gradient((9000, 2000)), "PNG")).size == (3000, 667)  # 1/3: long side <= 4096
    assert load_image(encode(gradient((4096, 100)), "PNG")).size == (4096, 100)


def test_broken_exif_does_not_reject_the_photo():
    exif = Image.Exif()
    exif[0x0112] = 99  # not a valid orientation
    decoded = load_image(encode(gradient(), "JPEG", exif=exif))
    assert decoded.size == (40, 30)


@pytest.mark.skipif(not images.HEIF_SUPPORTED, reason="pillow-heif is not installed")
def test_heic_is_accepted_when_pillow_heif_is_installed():
    decoded = load_image(encode(gradient((64, 48)), "HEIF", quality=90))
    assert decoded.mode == "RGB" and decoded.size == (64, 48)


@pytest.mark.skipif(not images.HEIF_SUPPORTED, reason="pillow-heif is not installed")
def test_heic_without_support_is_415_with_advice(monkeypatch):
    data = encode(gradient((64, 48)), "HEIF")
    monkeypatch.setattr(images, "HEIF_SUPPORTED", False)
    error = assert_error(data, 415, "unsupported_format")
    assert "HEIC" in error.message and "JPEG" in error.message


def test_decompression_bomb_is_rejected_before_allocating(monkeypatch):
    allocations = []
    real_new = Image.core.new
    monkeypatch.setattr(Image.core, "new", lambda *args: allocations.append(args) or real_new(*args))
    data = png_claiming(30000, 30000)
    assert len(data) < 5000
    assert_error(data, 400, "image_too_large")
    assert allocations == []


def test_image_just_over_our_pixel_limit_is_rejected():
    assert_error(png_claiming(10000, 5001), 400, "image_too_large")


@pytest.mark.parametrize("data,status,code", [
    (b"", 400, "empty_file"),
    (b"just some text, named photo.jpg\n", 400, "not_an_image"),
    (b"<svg xmlns='http://www.w3.org/2000/svg'><script>alert(1)</script></svg>", 415, "unsupported_format"),
    (b"<?xml version='1.0'?>\n<svg xmlns='http://www.w3.org/2000/svg'></svg>", 415, "unsupported_format"),
    (b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n", 415, "unsupported_format"),
])
def test_non_images(data, status, code):
    assert_error(data, status, code)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_truncated_files_are_400(fmt):
    data = encode(gradient((200, 150)), fmt)
    assert_error(data[: len(data) // 2], 400, "corrupt_image")


@pytest.mark.parametrize("data", [
    b"", b"\xff", b"\xda", b"\xff\xda", b"\xda\xff", b"\xff\xff\xda\xda\xff", b"\xff\xda" * 7 + b"\xff",
    bytes(np.random.default_rng(0).choice(np.array([0x00, 0xDA, 0xFF], np.uint8), 100_000)),
])
def test_jpeg_scans_are_counted_as_bytes_count_counts_them(data):
    assert images._jpeg_scans(data) == data.count(b"\xff\xda")


def test_the_scan_limit_refuses_one_scan_over_it_and_not_at_it():
    from harness.hostile import jpeg_scan_bomb

    scans = jpeg_scan_bomb(0).count(b"\xff\xda")
    images._check_jpeg_scans(jpeg_scan_bomb(images.MAX_JPEG_SCANS - scans))
    with pytest.raises(ImageError) as caught:
        images._check_jpeg_scans(jpeg_scan_bomb(images.MAX_JPEG_SCANS - scans + 1))
    assert caught.value.code == "image_too_complex"


# Issue 27: decoders that cannot work in parts are refused from the header when they would cost too much.
def _jpeg(size: tuple[int, int], **params) -> bytes:
    return encode(Image.new("RGB", size, (90, 120, 200)), "JPEG", quality=80, **params)


@pytest.mark.parametrize("subsampling, per_pixel", [(0, 6.0), (2, 3.0)])
def test_a_progressive_jpegs_coefficient_buffer_is_two_bytes_a_coefficient(subsampling, per_pixel):
    data = _jpeg((1024, 768), progressive=True, subsampling=subsampling, exif=Image.Exif())
    image = Image.open(io.BytesIO(data))
    assert images.jpeg_coefficient_bytes(image, data) == per_pixel * 1024 * 768
    baseline = _jpeg((1024, 768), subsampling=subsampling)
    assert images.jpeg_coefficient_bytes(Image.open(io.BytesIO(baseline)), baseline) == 0  # decoded row by row


def test_a_sequential_jpeg_whose_first_scan_lacks_a_component_needs_the_buffer_too():
    data = bytearray(_jpeg((64, 64), subsampling=0))
    sos = data.index(b"\xff\xda")
    assert data[sos + 4] == 3  # the scan's component count (Ns): all three, interleaved
    data[sos + 4] = 1  # as a non-interleaved file's first scan: libjpeg then keeps every coefficient
    data = bytes(data)
    assert images.jpeg_coefficient_bytes(Image.open(io.BytesIO(data)), data) == 6 * 64 * 64


@pytest.mark.parametrize("make, kind", [
    (lambda: _jpeg((6100, 4200), progressive=True, subsampling=0), "progressive JPEG"),  # 25.6 MP at 4:4:4
    (lambda: encode(Image.new("RGB", (4000, 3800), (9, 9, 9)), "WEBP"), "WebP image"),  # 15.2 MP
])
def test_files_whose_decoders_would_need_too_much_memory_are_refused_with_what_to_do(make, kind):
    error = assert_error(make(), 422, "image_too_large_for_format")
    assert kind in error.message and "megapixels" in error.message


@pytest.mark.parametrize("make", [
    lambda: _jpeg((6000, 4150), progressive=True, subsampling=0),  # 24.9 MP: 237 MB of coefficients and pixels
    lambda: _jpeg((7000, 5050), progressive=True, subsampling=2),  # 35.4 MP at 4:2:0
    lambda: encode(Image.new("RGB", (4000, 3750), (9, 9, 9)), "WEBP"),  # 15.0 MP
    lambda: _jpeg((7000, 7000)),  # baseline: decoded row by row, 50 MP allowed
])
def test_files_just_within_their_formats_limits_are_decoded(make):
    assert load_image(make()).size[0] > 0
