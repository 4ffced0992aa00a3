"""Score a model on any labelled set, the way the app would classify each image.

    python -m maskclassifier.evaluate --csv labels.csv --images-root DIR [--model models/export.pkl]
        [--threshold T] [--tta flip|none] [--valid-only] [--by COLUMN] [--predictions out.csv] [--faces auto]

`--by source` adds exact-match for each value of a CSV column, to see which part of the data the model gets
wrong (any column works, e.g. labels). `--faces auto` scores the answer the web page gives by default: a photo
with exactly one face is answered from the whole photo and a close-up of the face together.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np

from maskclassifier import metrics
from maskclassifier.config import MAX_FACE_MARGIN, Settings
from maskclassifier.dataset import DatasetError, LabelledData, parse_merges, read_labelled_csv
from maskclassifier.faces import FaceDetector, analyse, load_detector
from maskclassifier.images import ImageError, load_image
from maskclassifier.model import TTA_CHOICES, Classifier, ModelLoadError, load_classifier

BATCH_SIZE = 32


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m maskclassifier.evaluate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--csv", type=Path, required=True, help="CSV with columns fname and labels (space-separated)")
    parser.add_argument("--images-root", type=Path, help="folder the fname column is relative to (default: the CSV's)")
    parser.add_argument("--model", type=Path, default=Path("models/export.pkl"), help=".pkl or .onnx model")
    parser.add_argument("--threshold", type=float, help="default: the model's (from its JSON sidecar)")
    parser.add_argument("--tta", choices=TTA_CHOICES,
                        help="flip: average each image with its mirror image; none: the image alone "
                             "(default: the model's, from its JSON sidecar)")
    parser.add_argument("--valid-only", action="store_true", help="only the rows with is_valid=True")
    parser.add_argument("--merge", action="append", default=[], metavar="OLD=NEW", help="rename a label first")
    parser.add_argument("--by", metavar="COLUMN", help="also report exact-match per value of this CSV column")
    parser.add_argument("--predictions", type=Path, help="write one row per image: fname, labels, predicted, probabilities")
    parser.add_argument("--faces", choices=["off", "auto"], default="off",
                        help="off: the whole photo, as the API answers by default; auto: as the web page answers "
                             "by default (needs the full install, with facenet-pytorch)")
    parser.add_argument("--face-margin", type=float, default=Settings.face_margin,
                        help=f"with --faces auto: the crop's margin, as FACE_MARGIN (default: {Settings.face_margin})")
    args = parser.parse_args(argv)
    if args.threshold is not None and not 0 < args.threshold < 1:
        parser.error("--threshold must be between 0 and 1")
    if not 0 <= args.face_margin <= MAX_FACE_MARGIN:
        parser.error(f"--face-margin must be between 0 and {MAX_FACE_MARGIN:g} (a fraction of the face box)")
    return args


def targets_matrix(data: LabelledData, vocab: list[str]) -> np.ndarray:
    unknown = sorted(set(data.vocab) - set(vocab))
    if unknown:
        raise DatasetError(f"label(s) {', '.join(unknown)} are not categories of this model ({', '.join(vocab)}); "
                           "rename them with --merge OLD=NEW")
    index = {name: i for i, name in enumerate(vocab)}
    targets = np.zeros((len(data.frame), len(vocab)), dtype=np.float32)
    for row, labels in enumerate(data.frame["labels"]):
        for label in labels.split():
            targets[row, index[label]] = 1
    return targets


def predict_all(classifier: Classifier, data: LabelledData, detector: FaceDetector | None = None,
                margin: float = Settings.face_margin) -> tuple[np.ndarray, list[str]]:
    """Probabilities for every row, decoding each file exactly as an upload is decoded, and the mode that answered
    each ("whole"; with a detector, automatic mode's "close_up" or "faces" too)."""
    rows, modes = [], []
    names = list(data.frame["fname"])
    for start in range(0, len(names), BATCH_SIZE):
        batch = [load_image((data.images_root / name).read_bytes()) for name in names[start:start + BATCH_SIZE]]
        if detector is None:
            rows.append(classifier.probabilities(batch))
            modes += ["whole"] * len(batch)
        else:
            analyses = [analyse(detector, classifier, image, "auto", margin) for image in batch]
            rows.append(np.array([list(analysis.photo.probabilities.values()) for analysis in analyses]))
            modes += [analysis.mode for analysis in analyses]
        print(f"\r{min(start + BATCH_SIZE, len(names))}/{len(names)} images", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    return np.concatenate(rows), modes


def write_predictions(path: Path, data: LabelledData, probs: np.ndarray, vocab: list[str], threshold: float) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["fname", "labels", "predicted", "exact", *vocab])
        for fname, labels, row in zip(data.frame["fname"], data.frame["labels"], probs):
            predicted = " ".join(name for name, p in zip(vocab, row) if p > threshold)
            exact = set(predicted.split()) == set(labels.split())
            writer.writerow([fname, labels, predicted, exact, *(f"{p:.4f}" for p in row)])


def evaluate(args: argparse.Namespace) -> dict:
    classifier = load_classifier(args.model, args.threshold, tta=args.tta)
    data = read_labelled_csv(args.csv, args.images_root, parse_merges(args.merge))
    if args.valid_only:
        data.frame = data.frame[data.frame["is_valid"]].reset_index(drop=True)
    if data.frame.empty:
        raise DatasetError("no readable images to evaluate")
    if args.by is not None and args.by not in data.frame.columns:
        raise DatasetError(f"{args.csv} has no column {args.by} for --by (its columns: "
                           f"{', '.join(map(str, data.frame.columns))})")
    if data.skipped:
        print(f"skipped {len(data.skipped)} unreadable image(s), e.g. {data.skipped[0]}", file=sys.stderr)
    targets = targets_matrix(data, classifier.vocab)
    detector = _detector() if args.faces == "auto" else None
    probs, modes = predict_all(classifier, data, detector, args.face_margin)
    report = metrics.summary(probs, targets, classifier.vocab, classifier.threshold)
    print("test-time augmentation: " + ("each image averaged with its mirror image" if classifier.tta == "flip"
                                        else "none (each image once)"))
    if detector is not None:
        report["modes"] = {mode: modes.count(mode) for mode in sorted(set(modes))}
        print("automatic mode answered " + ", ".join(f"{count} with {mode}" for mode, count in report["modes"].items()))
    print(metrics.format_table(report))
    if args.by is not None:
        report["by"] = {args.by: metrics.exact_match_by_group(probs, targets, classifier.threshold,
                                                             data.frame[args.by].tolist())}
        print(metrics.format_group_table(args.by, report["by"][args.by]))
    if args.predictions:
        write_predictions(args.predictions, data, probs, classifier.vocab, classifier.threshold)
        print(f"wrote {len(probs)} predictions to {args.predictions}")
    return report


def _detector() -> FaceDetector:
    detector = load_detector()
    if detector is None:
        raise ModelLoadError("--faces auto needs the face detector: install the full requirements "
                             "(torch and facenet-pytorch, see the README)")
    return detector


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        evaluate(args)
    except (DatasetError, ModelLoadError, ImageError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
