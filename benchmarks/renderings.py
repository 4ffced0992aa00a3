"""Time per call of the synthetic respirators, face shields and surgical, cloth and KN95 masks
(training.synthetic.renderings).

    .venv/bin/python -m benchmarks.renderings [--calls 200] [--size 300]

They run once per training item in the data loader, so each call should stay well under the time an item's
decode and transforms take (goal: under 15 ms on a 300x300 photo). Images are made here (noise with a drawn face),
so nothing outside the project is read. Three face sizes on a SIZE x SIZE photo: a small face (a quarter of the
side), a close-up (half the side) and a face filling the photo (the box reaching past its edges, as MTCNN gives it
on the dataset's tight crops). Per kind: median and 95th percentile of the wall time over --calls calls, one
thread, seeds 0..N-1, and the median CPU time (which a busy machine inflates less than the wall time).
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict
from datetime import UTC, datetime

import numpy as np
from PIL import Image, ImageDraw

from maskclassifier.training.synthetic.renderings import (
    pick_cloth,
    pick_kn95,
    pick_respirator,
    pick_shield,
    pick_surgical,
    render_cloth_mask,
    render_kn95_mask,
    render_respirator,
    render_shield,
    render_surgical_mask,
)

DRAWINGS = (("respirator", pick_respirator, render_respirator), ("shield", pick_shield, render_shield),
            ("surgical", pick_surgical, render_surgical_mask), ("cloth", pick_cloth, render_cloth_mask),
            ("kn95", pick_kn95, render_kn95_mask))


def photo(size: int, box: tuple[int, int, int, int]) -> Image.Image:
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(40, 220, (size, size, 3), dtype=np.uint8))
    ImageDraw.Draw(image).ellipse(box, fill=(215, 170, 140))
    return image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=200, help="calls per face size and drawing (default 200)")
    parser.add_argument("--size", type=int, default=300, help="side of the square photo in pixels (default 300)")
    args = parser.parse_args()
    side = args.size
    boxes = {"small face": (side * 3 // 8, side * 3 // 8, side * 5 // 8, side * 5 // 8),
             "close-up": (side // 4, side // 5, side * 3 // 4, side * 3 // 4),
             "filling": (-side // 20, -side // 20, side + side // 20, side + side // 10)}
    print(f"renderings on a {side}x{side} photo, {args.calls} calls each, "
          f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC")
    print(f"{'face':<12} {'drawing':<32} {'calls':>5} {'median ms':>10} {'p95 ms':>8} {'CPU median ms':>14}")
    for face, box in boxes.items():
        image = photo(side, box)
        times = defaultdict(list)
        for seed in range(args.calls):
            for name, pick, render in DRAWINGS:
                style = pick(np.random.default_rng(seed))
                start, cpu = time.perf_counter(), time.process_time()
                render(image, box, style)
                elapsed = ((time.perf_counter() - start) * 1000, (time.process_time() - cpu) * 1000)
                times[f"{name} {style.kind}"].append(elapsed)
                times[f"{name} (all)"].append(elapsed)
        for kind, pairs in sorted(times.items()):
            wall, cpu = np.array(pairs).T
            print(f"{face:<12} {kind:<32} {len(wall):>5} {np.median(wall):>10.1f} {np.percentile(wall, 95):>8.1f} "
                  f"{np.median(cpu):>14.1f}")


if __name__ == "__main__":
    main()
