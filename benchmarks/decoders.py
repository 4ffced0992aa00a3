"""What each image decoder really allocates: peak memory (VmHWM growth) of decoding one photo, in a fresh process.

    .venv-slim/bin/python -m benchmarks.decoders [--sizes 12,24,36,49] [--formats webp-lossy,jpeg-prog-444,...]

For every format and size (megapixels, square-ish photos) it encodes a photo-like image in memory (smooth colour
fields with some texture, so that the files are the size real photos of that many pixels compress to), then, in
a fresh interpreter per case, reads nothing from disk but the bytes handed over on stdin and measures:

- `decode`: `Image.open(...).load()` alone, what Pillow and the format's library allocate;
- `load_image`: the app's `maskclassifier.images.load_image` (which may refuse the file before decoding it).

Each figure is the VmHWM growth over the RSS just before (Linux: /proc/self/clear_refs resets the peak), in MB.
These figures justify the per-format limits in maskclassifier/images.py (BENCHMARKS.md, "Issue 27"). Bounded:
about a minute for the default cases on 2 cores (encoding the 49 MP WebP lossless and HEIC files is the slow part).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import time

import numpy as np
from PIL import Image

FORMATS = ["jpeg-baseline-420", "jpeg-baseline-444", "jpeg-prog-420", "jpeg-prog-444", "webp-lossy",
           "webp-lossless", "heic"]
SIZES_MP = {12: (4000, 3000), 24: (6000, 4000), 36: (7344, 4896), 49: (7000, 7000)}


def photo_like(size: tuple[int, int], seed: int = 0) -> Image.Image:
    """Smooth colour fields (a small random image enlarged) with a little per-pixel texture: compresses about as a
    photo does (a 49 MP lossy WebP of a few hundred KB, a JPEG of a few MB)."""
    rng = np.random.default_rng(seed)
    small = Image.fromarray(rng.integers(0, 256, (max(2, size[1] // 400), max(2, size[0] // 400), 3), dtype=np.uint8))
    image = small.resize(size, Image.Resampling.BICUBIC)
    grain = Image.effect_noise((512, 512), 12).resize(size, Image.Resampling.NEAREST)  # tiled texture, cheap
    return Image.merge("RGB", [Image.blend(band, grain, 0.15) for band in image.split()])


def encoded(fmt: str, size: tuple[int, int]) -> bytes:
    """A photo of `size` in one of FORMATS (HEIC needs pillow-heif)."""
    image = photo_like(size)
    buffer = io.BytesIO()
    if fmt.startswith("jpeg"):
        image.save(buffer, "JPEG", quality=85, progressive="prog" in fmt, subsampling=0 if fmt.endswith("444") else 2)
    elif fmt == "webp-lossy":
        image.save(buffer, "WEBP", quality=80, method=0)
    elif fmt == "webp-lossless":
        image.save(buffer, "WEBP", lossless=True, quality=0, method=0)
    elif fmt == "heic":
        import pillow_heif

        pillow_heif.register_heif_opener()
        image.save(buffer, "HEIF", quality=50)
    else:
        raise ValueError(fmt)
    return buffer.getvalue()


MEASURE = r"""
import io, json, sys
from PIL import Image
try:
    import pillow_heif; pillow_heif.register_heif_opener()
except ImportError:
    pass
from maskclassifier.images import load_image
from maskclassifier.errors import ImageError

def vm(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024

data = sys.stdin.buffer.read()
what = sys.argv[1]
with open("/proc/self/clear_refs", "w") as handle:
    handle.write("5")
before = vm("VmRSS")
outcome = "ok"
if what == "decode":
    image = Image.open(io.BytesIO(data))
    image.load()
    size = image.size
else:
    try:
        size = load_image(data).size
    except ImageError as error:
        outcome, size = error.code, None
print(json.dumps({"growth_mb": vm("VmHWM") - before, "outcome": outcome, "size": size}))
"""


def measure(data: bytes, what: str) -> dict:
    result = subprocess.run([sys.executable, "-c", MEASURE, what], input=data, capture_output=True, timeout=300,
                            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    if result.returncode != 0:
        return {"growth_mb": float("nan"), "outcome": result.stderr.decode(errors="replace").strip().splitlines()[-1]}
    return json.loads(result.stdout)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.decoders", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="12,24,36,49", help=f"megapixels, of {sorted(SIZES_MP)}")
    parser.add_argument("--formats", default=",".join(FORMATS), help=f"of {FORMATS}")
    parser.add_argument("--decode-only", action="store_true", help="skip load_image (e.g. for another checkout)")
    args = parser.parse_args(argv)
    sizes = [int(value) for value in args.sizes.split(",")]
    formats = args.formats.split(",")
    if any(size not in SIZES_MP for size in sizes) or any(fmt not in FORMATS for fmt in formats):
        parser.error(f"sizes from {sorted(SIZES_MP)}, formats from {FORMATS}")
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} cores, Python "
          f"{sys.version.split()[0]} ({sys.executable}), Pillow {Image.__version__}")
    print("format | size | file KB | decode: peak growth MB (bytes/pixel) | load_image: peak growth MB, outcome")
    for fmt in formats:
        for megapixels in sizes:
            size = SIZES_MP[megapixels]
            try:
                data = encoded(fmt, size)
            except (OSError, ValueError, ImportError) as error:
                print(f"{fmt} | {size[0]}x{size[1]} | cannot encode: {error}")
                continue
            decode = measure(data, "decode")
            line = (f"{fmt} | {size[0]}x{size[1]} | {len(data) // 1024} | {decode['growth_mb']:.0f} "
                    f"({decode['growth_mb'] * 2**20 / (size[0] * size[1]):.1f})")
            if not args.decode_only:
                loaded = measure(data, "load_image")
                line += f" | {loaded['growth_mb']:.0f}, {loaded['outcome']}"
            print(line, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
