"""Big JPEGs decoded at reduced scale (JPEG_DECODE=reduced) against decoded whole (exact): the answers and the time.

    .venv/bin/python -m benchmarks.draft --csv ../shared/data/masks/labels.csv [--model models/export.onnx]
        [--short-side 1536 --short-side 3024] [--noise 4] [--quality 90] [--headroom 2] [--limit N]

With JPEG_DECODE=reduced, `Classifier.decode` lets libjpeg decode a JPEG at 1/2, 1/4 or 1/8 scale for the
whole-photo answer, keeping at least `--headroom` (model.DECODE_HEADROOM) times the item size on both sides;
fastai's `learn.predict` (and the default, exact) decodes it whole and the item Resize shrinks it. The two differ a
little in the pixels the model sees. No image in the dataset is big enough to take the reduced path (every short
side is under 576 px, twice the 288 px item), so this makes big
photos of the validation images: each is enlarged (Lanczos) until its short side is `--short-side`, given
Gaussian sensor noise of `--noise` levels (a phone photo's grain; without it an enlarged image is smooth and
any two downscalers agree) and saved as a JPEG at `--quality` (4:2:0, as phone cameras save). Each big JPEG is
then classified both ways ("whole" and "draft"), next to the original image, in one batch; the figures: how
many get the same labels both ways, the largest and the 99th percentile probability difference, exact-match
against the CSV's labels of the original, the whole decode and the draft decode, and the decode + item Resize CPU
time of both ways (thread time, p50). Enlarged photos are not real big photos (their detail is invented by the noise),
so this measures how far the two decodes move the answers, not which is right. Bounded: about 0.1 s per image at 1536 px
and 0.3 s at 3024 px on this 2-core machine.
"""

from __future__ import annotations

import argparse
import io
import platform
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from PIL import Image

from benchmarks.int8 import validation
from maskclassifier.classifier.classifier import DECODE_HEADROOM, Classifier, decide, load_classifier
from maskclassifier.core.config import default_model_path
from maskclassifier.core.images import load_image


def big_jpeg(image: Image.Image, short_side: int, noise: float, quality: int, seed: int) -> bytes:
    """`image` enlarged to `short_side` on its short side, with Gaussian noise of `noise` levels, as a JPEG."""
    scale = short_side / min(image.size)
    size = (round(image.width * scale), round(image.height * scale))
    pixels = np.asarray(image.resize(size, Image.Resampling.LANCZOS), dtype=np.float32)
    pixels += np.random.default_rng(seed).normal(0, noise, pixels.shape).astype(np.float32)
    buffer = io.BytesIO()
    Image.fromarray(pixels.clip(0, 255).round().astype(np.uint8)).save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def cpu_ms(action) -> tuple[float, object]:
    start = time.thread_time()
    result = action()
    return (time.thread_time() - start) * 1000, result


def item_resize(classifier: Classifier) -> Callable[[Image.Image], object]:
    """The Pillow item Resize the served backend runs on a decoded photo: the ONNX backend's, or the fastai
    backend's rebuilt pipeline's; SystemExit for a learner served through fastai's own DataLoader."""
    backend = classifier.backend
    resize = getattr(backend, "resize", None) or getattr(getattr(backend, "direct", None), "resize", None)
    if resize is None:
        raise SystemExit(f"{classifier.path} is served through fastai's DataLoader: no item Resize to time here")
    return resize


def measure(classifier: Classifier, rows: list[dict], root: Path, short_side: int, noise: float,
            quality: int, headroom: int) -> dict:
    resize = item_resize(classifier)
    reduced = tuple(side * headroom for side in classifier.item_size)  # as Classifier.decode asks for
    labels = [row["labels"].split() for row in rows]
    probs = {"original": [], "whole": [], "draft": []}
    times = {"whole": [], "draft": []}
    scales = []
    for index, row in enumerate(rows):
        original = load_image((root / row["fname"]).read_bytes())
        data = big_jpeg(original, short_side, noise, quality, seed=index)
        decoded = {}
        for way, at_least in (("whole", None), ("draft", reduced)):
            elapsed, decoded[way] = cpu_ms(lambda data=data, at_least=at_least: load_image(data, at_least=at_least))
            resize_ms, _ = cpu_ms(lambda image=decoded[way]: resize(image))
            times[way].append(elapsed + resize_ms)
        scales.append(decoded["whole"].width / decoded["draft"].width)
        answered = classifier.probabilities([original, decoded["whole"], decoded["draft"]])
        for way, values in zip(probs, answered, strict=True):
            probs[way].append(values)
    probs = {way: np.array(values) for way, values in probs.items()}
    answers = {way: [decide(row, classifier.vocab, classifier.threshold).labels for row in values]
               for way, values in probs.items()}
    difference = np.abs(probs["draft"] - probs["whole"]).max(axis=1)
    return {
        "short_side": short_side, "images": len(rows),
        "scales": sorted({round(scale) for scale in scales}),
        "same_labels": np.mean([set(a) == set(b) for a, b in zip(answers["whole"], answers["draft"], strict=True)]),
        "max_difference": float(difference.max()), "p99_difference": float(np.percentile(difference, 99)),
        "exact": {way: np.mean([set(answer) == set(truth) for answer, truth in zip(values, labels, strict=True)])
                  for way, values in answers.items()},
        "same_as_original": {
            way: np.mean([set(a) == set(b) for a, b in zip(answers["original"], answers[way], strict=True)])
            for way in ("whole", "draft")},
        "ms": {way: statistics.median(values) for way, values in times.items()},
    }


def report(classifier: Classifier, results: list[dict], args: argparse.Namespace) -> None:
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    print(f"# {now}, {platform.node()}, {classifier.path} (threshold {classifier.threshold:g}, item size "
          f"{classifier.item_size}), headroom {args.headroom}, noise {args.noise:g}, JPEG quality {args.quality}")
    print("| short side | images | draft scale | same labels, draft vs whole | largest / p99 difference | "
          "exact-match original / whole / draft | same labels as the original: whole / draft | "
          "decode + item resize p50, whole / draft |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['short_side']} px | {r['images']} | 1/{', 1/'.join(map(str, r['scales']))} | "
              f"{r['same_labels']:.2%} | {r['max_difference']:.3f} / {r['p99_difference']:.3f} | "
              f"{r['exact']['original']:.4f} / {r['exact']['whole']:.4f} / {r['exact']['draft']:.4f} | "
              f"{r['same_as_original']['whole']:.2%} / {r['same_as_original']['draft']:.2%} | "
              f"{r['ms']['whole']:.1f} / {r['ms']['draft']:.1f} ms |")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--csv", type=Path, required=True, help="labels.csv with an is_valid column")
    parser.add_argument("--images-root", type=Path, help="folder the fnames are relative to (default: the CSV's)")
    parser.add_argument("--model", type=Path, default=None, help="default: the app's MODEL_PATH")
    parser.add_argument("--short-side", type=int, action="append", help="px (repeatable; default 1536 and 3024)")
    parser.add_argument("--noise", type=float, default=4.0, help="sensor noise, standard deviation in levels")
    parser.add_argument("--quality", type=int, default=90)
    parser.add_argument("--headroom", type=int, default=DECODE_HEADROOM,
                        help=f"the reduced decode keeps this many times the item size (default {DECODE_HEADROOM}, "
                             "what JPEG_DECODE=reduced uses)")
    parser.add_argument("--limit", type=int, default=None, help="the first N validation images only")
    args = parser.parse_args(argv)
    args.short_side = args.short_side or [1536, 3024]
    if min(args.short_side) < 2 or args.headroom < 1:
        parser.error("--short-side must be at least 2 px and --headroom at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    classifier = load_classifier(args.model or default_model_path())
    if classifier.item_size is None:
        raise SystemExit(f"{classifier.path}: the backend cannot say its item size, so nothing is drafted")
    rows = validation(args.csv)[:args.limit]
    root = args.images_root or args.csv.parent
    report(classifier, [measure(classifier, rows, root, side, args.noise, args.quality, args.headroom)
                        for side in args.short_side], args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
