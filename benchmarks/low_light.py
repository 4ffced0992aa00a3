"""Dark photos and the face detector: how often MTCNN finds the face in an underexposed photo, and what a second
pass on a brightened copy adds (and costs in faces found where there are none).

    .venv/bin/python -m benchmarks.low_light [--images 80]

Subjects are real-photo validation images of the shared dataset (`../shared/data/masks`, read-only; synthetic Gas
and Shield left out) in which the detector finds a face at normal exposure, darkened in linear light to 0.5, 0.35
and 0.2 of the light with sensor noise (tests/helpers.py `underexposed`). `-` validation images (no face) at the
same exposures measure false faces. Each way of retrying is the detector's second pass on a copy made by
Pillow's ImageOps, run only when the first pass finds nothing; the last row is the app's own rule
(maskclassifier.classifier.faces.find_faces: the autocontrast pass only for a photo low in contrast). Bounded by
--images.
"""

from __future__ import annotations

import argparse
import csv
import random
import sys
import time
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path

from PIL import Image, ImageOps

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT / "tests") not in sys.path:
    sys.path.insert(0, str(ROOT / "tests"))

from helpers import underexposed  # noqa: E402
from maskclassifier.classifier.faces import find_faces, load_detector, low_contrast  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "masks"
EXPOSURES = (0.5, 0.35, 0.2)
RETRIES = {
    "none": None,
    "autocontrast": lambda image: ImageOps.autocontrast(image, cutoff=1),
    "equalize": ImageOps.equalize,
    "autocontrast+gamma": lambda image: ImageOps.autocontrast(image, cutoff=1).point(
        lambda value: round(255 * (value / 255) ** 0.6)),
    "the app (autocontrast when low in contrast)": "app",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=80)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    detector = load_detector(1)  # the app's detector, one thread
    with open(DATA / "labels.csv", newline="") as handle:
        valid = [row for row in csv.DictReader(handle) if row["is_valid"] == "True" and row["synthetic"] == "False"]
    rng = random.Random(args.seed)
    faces = [row for row in valid if row["labels"] != "-"]
    rng.shuffle(faces)
    background = rng.sample([row for row in valid if row["labels"] == "-"], min(args.images, 118))

    def found(image: Image.Image, retry) -> bool:
        if retry == "app":
            return bool(find_faces(detector, image).faces)
        if detector.detect(image).faces:
            return True
        return retry is not None and bool(detector.detect(retry(image)).faces)

    started = time.perf_counter()
    subjects = []
    for row in faces:  # subjects: the face is found at normal exposure
        image = Image.open(DATA / row["fname"]).convert("RGB")
        if detector.detect(image).faces:
            subjects.append(image)
        if len(subjects) == args.images:
            break
    hits: dict[tuple[str, float, str], list[bool]] = defaultdict(list)
    for kind, images in (("faces", subjects),
                         ("no face", [Image.open(DATA / row["fname"]).convert("RGB") for row in background])):
        for number, image in enumerate(images):
            for exposure in EXPOSURES:
                dark = underexposed(image, exposure, seed=number)
                for name, retry in RETRIES.items():
                    hits[(name, exposure, kind)].append(found(dark, retry))
    elapsed = time.perf_counter() - started
    print(f"# {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {len(subjects)} face photos (found at normal "
          f"exposure) and {len(background)} no-face photos, {elapsed:.0f} s; "
          f"{sum(low_contrast(image) for image in subjects)} of the face photos are low in contrast as they are")
    print("| second pass | " + " | ".join(f"faces found at x{e}" for e in EXPOSURES)
          + " | " + " | ".join(f"false faces at x{e}" for e in EXPOSURES) + " |")
    print("|---|" + "---|" * (2 * len(EXPOSURES)))
    for name in RETRIES:
        cells = [sum(hits[(name, e, "faces")]) / len(subjects) for e in EXPOSURES]
        cells += [sum(hits[(name, e, "no face")]) / len(background) for e in EXPOSURES]
        print(f"| {name} | " + " | ".join(f"{cell:.2f}" for cell in cells) + " |")


if __name__ == "__main__":
    main()
