"""On-device mode's item Resize (maskclassifier/web/static/ondevice-resize.js, issue 30) gives Pillow's bytes:
the browser's model input is what the server makes of the same pixels. Run in Node (skipped without it)."""

from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from helpers import ROOT
from maskclassifier.core.resize import ItemResize, fastai_crop_box

NODE = shutil.which("node")
SCRIPT = ROOT / "maskclassifier" / "web" / "static" / "ondevice-resize.js"
pytestmark = pytest.mark.skipif(NODE is None, reason="needs Node.js")

RUNNER = """
const fs = require('fs');
const resize = require(process.argv[1]);
const cases = JSON.parse(fs.readFileSync(0, 'utf8'));
const out = cases.map((c) => {
  const pixels = Buffer.from(c.pixels, 'base64');
  const size = {width: c.out[0], height: c.out[1], resample: c.resample};
  const result = c.item ? resize.itemResize(pixels, c.size[0], 4, c.region, size)
                        : resize.resizeRegion(pixels, c.size[0], 4, 0, 0, c.size[0], c.size[1], c.out[0], c.out[1],
                                              c.resample);
  return {bytes: Buffer.from(result).toString('base64'), box: resize.cropBox(c.size[0], c.size[1], c.out[0], c.out[1])};
});
process.stdout.write(JSON.stringify(out));
"""


def run_node(cases: list[dict]) -> list[dict]:
    done = subprocess.run([NODE, "-e", RUNNER, str(SCRIPT)], input=json.dumps(cases), capture_output=True,
                          text=True, check=True, timeout=300)
    return json.loads(done.stdout)


def photo(width: int, height: int, seed: int) -> Image.Image:
    """Noise with smooth structure, so that both the rounding of edges and of flat areas is exercised."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (max(2, height // 7), max(2, width // 7), 3), dtype=np.uint8)
    smooth = np.asarray(Image.fromarray(base).resize((width, height), Image.Resampling.BICUBIC), dtype=np.int16)
    noisy = np.clip(smooth + rng.integers(-40, 41, smooth.shape), 0, 255).astype(np.uint8)
    return Image.fromarray(noisy)


def rgba_base64(image: Image.Image) -> str:
    import base64

    return base64.b64encode(image.convert("RGBA").tobytes()).decode("ascii")


SIZES = [(1, 1), (3, 700), (97, 301), (288, 288), (289, 288), (300, 300), (640, 480), (1001, 999), (1600, 1200),
         (4032, 3024)]


# Squares to squares (the item Resize's shapes) and one-axis resizes. Pillow 13 does some other two-axis resizes
# vertical pass first, which the port does not reproduce (see ondevice-resize.js).
SHAPES = [((1, 1), (288, 288)), ((288, 288), (288, 288)), ((300, 300), (288, 288)), ((97, 97), (256, 256)),
          ((1001, 1001), (288, 288)), ((2000, 2000), (288, 288)), ((640, 480), (64, 480)), ((97, 301), (97, 20)),
          ((3, 700), (3, 900)), ((50, 10), (700, 10))]


@pytest.mark.parametrize("resample", ["bilinear", "bicubic", "lanczos"])
def test_resize_matches_pillow_byte_for_byte(resample):
    cases, expected = [], []
    for index, ((width, height), out) in enumerate(SHAPES):
        image = photo(width, height, index)
        cases.append({"pixels": rgba_base64(image), "size": [width, height], "out": list(out), "resample": resample,
                      "item": False})
        expected.append(np.asarray(image.resize(out, Image.Resampling[resample.upper()]), dtype=np.uint8))
    for case, want, got in zip(cases, expected, run_node(cases), strict=True):
        import base64

        pixels = np.frombuffer(base64.b64decode(got["bytes"]), dtype=np.uint8).reshape(want.shape)
        assert np.array_equal(pixels, want), f"{case['size']} -> {case['out']} ({resample})"


def test_item_resize_matches_the_servers_including_regions_and_big_photos():
    """The whole photo and a wide photo's square view, through ItemResize (the strip-wise path for big crops)."""
    import base64

    resize = ItemResize(288, 288, Image.Resampling.BILINEAR)
    cases, expected = [], []
    for index, (width, height) in enumerate(SIZES):
        image = photo(width, height, 100 + index)
        regions = [(0, 0, width, height)]
        if width > 2 * height:
            regions.append((width - height, 0, width, height))
        for region in regions:
            cases.append({"pixels": rgba_base64(image), "size": [width, height], "out": [288, 288],
                          "resample": "bilinear", "item": True, "region": list(region)})
            expected.append((resize(image.crop(region)), fastai_crop_box(width, height, 288, 288)))
    for case, (want, box), got in zip(cases, expected, run_node(cases), strict=True):
        pixels = np.frombuffer(base64.b64decode(got["bytes"]), dtype=np.uint8).reshape(want.shape)
        assert np.array_equal(pixels, want), f"{case['size']} region {case['region']}"
        assert tuple(got["box"]) == box
