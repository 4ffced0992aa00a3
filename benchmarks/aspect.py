"""Wide and tall photos: which way of classifying them keeps a subject that is not in the centre square.

    .venv/bin/python -m benchmarks.aspect [--model models/export.onnx] [--subjects 150] [--aspect 4]

The model's item transform crops the centre square (as the learner's validation pipeline does), so in a 4:1
panorama with the person at one end the person is cut off. This takes validation images of the shared dataset
(`../shared/data/masks`, read-only) as subjects, pastes each at the start, the middle and the end of a wide
(ASPECT:1) and a tall (1:ASPECT) canvas whose background is a `-` validation image (another subject's), and scores
each way of classifying the canvas against the subject's labels with the model's threshold:

  centre      today's answer: the centre square only
  pad         the canvas letterboxed to a square (black bars), then classified once
  views-mean  overlapping square views along the long side (stride half a side), probabilities averaged
  views-best  the same views; the answer of the view the model thinks least likely to be `-` (no face or mask)
  views-max   the same views; each category's highest probability over the views
  centre-then-best  the centre square's answer when it names a face category, else views-best
  face-view   the app's rule (maskclassifier.classifier.classifier.answer_from_views; checked against the app's
              own answer)

It prints exact-match per way and position, and for reference on the plain subject images. `-` subjects are
included: a way that finds masks in background views shows there. Bounded: --subjects images, 6 canvases each.
"""

from __future__ import annotations

import argparse
import csv
import math
import pickle
import random
import time
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from PIL import Image

from maskclassifier.classifier.classifier import answer_from_views, decide, load_classifier, square_views

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data" / "masks"
POSITIONS = ("start", "middle", "end")


def letterbox(image: Image.Image) -> Image.Image:
    side = max(image.size)
    square = Image.new("RGB", (side, side))
    square.paste(image, ((side - image.width) // 2, (side - image.height) // 2))
    return square


def canvas(subject: Image.Image, background: Image.Image, aspect: int, position: str, wide: bool) -> Image.Image:
    """The subject scaled to the canvas's short side (256 px), pasted at `position` on the background."""
    short = 256
    size = (short * aspect, short) if wide else (short, short * aspect)
    scale = max(size[0] / background.width, size[1] / background.height)
    scene = background.resize((math.ceil(background.width * scale), math.ceil(background.height * scale)))
    scene = scene.crop((0, 0, *size))
    fit = short / max(subject.size)
    subject = subject.resize((max(1, round(subject.width * fit)), max(1, round(subject.height * fit))))
    free = (size[0] - subject.width) if wide else (size[1] - subject.height)
    along = {"start": 0, "middle": free // 2, "end": free}[position]
    across = (short - (subject.height if wide else subject.width)) // 2
    scene.paste(subject, (along, across) if wide else (across, along))
    return scene


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "export.onnx")
    parser.add_argument("--subjects", type=int, default=150)
    parser.add_argument("--aspect", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--save", type=Path, help="also write every canvas's centre and view probabilities (pickle)")
    args = parser.parse_args()

    classifier = load_classifier(args.model, torch_threads=1)
    vocab, threshold = classifier.vocab, classifier.threshold
    with open(DATA / "labels.csv", newline="") as handle:
        valid = [row for row in csv.DictReader(handle) if row["is_valid"] == "True"]
    rng = random.Random(args.seed)
    backgrounds = [row for row in valid if row["labels"] == "-"]
    subjects = rng.sample(valid, min(args.subjects, len(valid)))

    def probs(images: list[Image.Image]) -> np.ndarray:  # the backend's: the centre square of each image
        return classifier.backend.probabilities(images)

    hits: dict[tuple[str, str], list[bool]] = defaultdict(list)
    raw = []
    started = time.perf_counter()
    for row in subjects:
        truth = sorted(row["labels"].split())
        subject = Image.open(DATA / row["fname"]).convert("RGB")
        hits[("plain", "-")].append(sorted(decide(probs([subject])[0], vocab, threshold).labels) == truth)
        background_row = rng.choice([other for other in backgrounds if other["fname"] != row["fname"]])
        background = Image.open(DATA / background_row["fname"]).convert("RGB")
        for wide in (True, False):
            for position in POSITIONS:
                scene = canvas(subject, background, args.aspect, position, wide)
                view_probs = probs([scene.crop(box) for box in square_views(*scene.size)])
                answers = {
                    "centre": probs([scene])[0],
                    "pad": probs([letterbox(scene)])[0],
                    "views-mean": view_probs.mean(axis=0),
                    "views-best": view_probs[int(np.argmin(view_probs[:, vocab.index("-")]))],
                    "views-max": view_probs.max(axis=0),
                }
                centre = decide(answers["centre"], vocab, threshold)
                answers["centre-then-best"] = (answers["centre"] if centre.labels and centre.labels[0] != "-"
                                               else answers["views-best"])
                answers["face-view"] = answer_from_views(answers["centre"], view_probs, vocab, threshold)
                served = classifier.probabilities([scene])[0]
                assert np.allclose(served, answers["face-view"], atol=1e-6), "the app does not answer face-view"
                raw.append({"truth": truth, "centre": answers["centre"], "views": view_probs})
                where = f"{'wide' if wide else 'tall'}-{position}"
                for way, p in answers.items():
                    hit = sorted(decide(p, vocab, threshold).labels) == truth
                    hits[(way, where)].append(hit)
                    hits[(way, "no-face subjects" if truth == ["-"] else "face subjects")].append(hit)
    elapsed = time.perf_counter() - started

    if args.save:
        args.save.write_bytes(pickle.dumps({"vocab": vocab, "threshold": threshold, "canvases": raw}))
    ways = ("centre", "pad", "views-mean", "views-best", "views-max", "centre-then-best", "face-view")
    places = [f"{orientation}-{position}" for orientation in ("wide", "tall") for position in POSITIONS]
    print(f"# {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {args.model.name}, threshold {threshold}, "
          f"{len(subjects)} validation subjects on {args.aspect}:1 canvases, {elapsed:.0f} s")
    print(f"plain subject images: exact-match {np.mean(hits[('plain', '-')]):.3f}")
    print("| way | " + " | ".join(places) + " | all | face subjects | `-` subjects |")
    print("|---|" + "---|" * (len(places) + 3))
    for way in ways:
        cells = [np.mean(hits[(way, place)]) for place in places]
        overall = np.mean([hit for place in places for hit in hits[(way, place)]])
        split = [np.mean(hits[(way, group)]) for group in ("face subjects", "no-face subjects")]
        print(f"| {way} | " + " | ".join(f"{cell:.3f}" for cell in [*cells, overall, *split]) + " |")


if __name__ == "__main__":
    main()
