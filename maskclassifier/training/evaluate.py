"""Score a model on any labelled set, the way the app would classify each image.

    python -m maskclassifier.evaluate --csv labels.csv --images-root DIR [--model models/export.pkl]
        [--threshold T] [--tta flip|none] [--valid-only] [--by COLUMN] [--predictions out.csv] [--faces auto]

It runs in the slim install too (no torch, fastai or pandas) with an .onnx model, which is then the default.

`--by source` adds exact-match for each value of a CSV column, to see which part of the data the model gets
wrong (any column works, e.g. labels). `--faces auto` scores the answer the web page gives by default: a photo
with exactly one face is answered from the whole photo and a close-up of the face together.
"""

from __future__ import annotations

import argparse
import csv
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.preprocessing import MultiLabelBinarizer

from maskclassifier.classifier.classifier import Classifier, load_classifier
from maskclassifier.classifier.faces import FaceDetector, analyse, load_detector
from maskclassifier.classifier.scorer import score_files
from maskclassifier.core.cli import silence_fastai_jit_warning
from maskclassifier.core.config import (
    DEFAULT_MODEL_PATH,
    JPEG_DECODES,
    MAX_FACE_MARGIN,
    SLIM_MODEL_PATH,
    Settings,
    default_model_path,
    full_install,
)
from maskclassifier.core.errors import ModelLoadError
from maskclassifier.core.images import ImageError
from maskclassifier.core.threshold import above_threshold
from maskclassifier.core.tta import TTA_CHOICES
from maskclassifier.training import metrics
from maskclassifier.training.dataset import (
    DatasetError,
    LabelledRows,
    corrections_line,
    parse_merges,
    read_labelled_rows,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m maskclassifier.evaluate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--csv", type=Path, required=True, help="CSV with columns fname and labels (space-separated)")
    parser.add_argument("--images-root", type=Path, help="folder the fname column is relative to (default: the CSV's)")
    parser.add_argument("--model", type=Path, default=None,
                        help=f".pkl or .onnx model (default: {DEFAULT_MODEL_PATH}, "
                             f"or {SLIM_MODEL_PATH} in the slim install)")
    parser.add_argument("--threshold", type=float, help="default: the model's (from its JSON sidecar)")
    parser.add_argument("--tta", choices=TTA_CHOICES,
                        help="flip: average each image with its mirror image; none: the image alone "
                             "(default: the model's, from its JSON sidecar)")
    parser.add_argument("--jpeg-decode", choices=JPEG_DECODES, default=Settings.jpeg_decode,
                        help="as the server's JPEG_DECODE: exact (default) decodes every JPEG whole, as fastai does; "
                             "reduced lets libjpeg decode big JPEGs at 1/2 to 1/8 scale for the whole-photo answer")
    parser.add_argument("--valid-only", action="store_true", help="only the rows with is_valid=True")
    parser.add_argument("--merge", action="append", default=[], metavar="OLD=NEW", help="rename a label first")
    parser.add_argument("--corrections", type=Path, metavar="FILE",
                        help="a corrections file (python -m maskclassifier.clean writes one), applied to the "
                             "CSV's labels")
    parser.add_argument("--by", metavar="COLUMN", help="also report exact-match per value of this CSV column")
    parser.add_argument("--predictions", type=Path,
                        help="write one row per image: fname, labels, predicted, probabilities")
    parser.add_argument("--faces", choices=["off", "auto"], default="off",
                        help="off: the whole photo, as the API answers by default; auto: as the web page answers "
                             "by default (needs the face detector's models/mtcnn/*.onnx)")
    parser.add_argument("--face-margin", type=float, default=Settings.face_margin,
                        help=f"with --faces auto: the crop's margin, as FACE_MARGIN (default: {Settings.face_margin})")
    args = parser.parse_args(argv)
    if args.model is None:
        args.model = default_model_path()
    if args.threshold is not None and not 0 < args.threshold < 1:
        parser.error("--threshold must be between 0 and 1")
    if not 0 <= args.face_margin <= MAX_FACE_MARGIN:
        parser.error(f"--face-margin must be between 0 and {MAX_FACE_MARGIN:g} (a fraction of the face box)")
    return args


def targets_matrix(data: LabelledRows, vocab: list[str]) -> np.ndarray:
    """(rows, len(vocab)) 0/1 float32: which categories each row is labelled with."""
    unknown = sorted(set(data.vocab) - set(vocab))
    if unknown:
        raise DatasetError(f"label(s) {', '.join(unknown)} are not categories of this model ({', '.join(vocab)}); "
                           "rename them with --merge OLD=NEW")
    binarizer = MultiLabelBinarizer(classes=vocab)  # columns in the model's vocab order
    return binarizer.fit_transform([labels.split() for labels in data.column("labels")]).astype(np.float32)


def predict_all(classifier: Classifier, data: LabelledRows, detector: FaceDetector | None = None,
                margin: float = Settings.face_margin) -> tuple[np.ndarray, list[str]]:
    """Probabilities for every row, decoding each file exactly as an upload is decoded, and the mode that answered
    each ("whole"; with a detector, automatic mode's "close_up" or "faces" too)."""
    paths = [data.images_root / name for name in data.column("fname")]
    if detector is None:
        return np.stack(score_files(classifier, paths)), ["whole"] * len(paths)
    modes: list[str] = []

    def automatic(batch: list[Image.Image]) -> np.ndarray:
        analyses = [analyse(detector, classifier, image, "auto", margin) for image in batch]
        modes.extend(analysis.mode for analysis in analyses)
        return np.array([list(analysis.photo.probabilities.values()) for analysis in analyses])

    return np.stack(score_files(classifier, paths, automatic, whole_photo=False)), modes


def write_predictions(path: Path, data: LabelledRows, probs: np.ndarray, vocab: list[str], threshold: float) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["fname", "labels", "predicted", "exact", *vocab])
        for fname, labels, row in zip(data.column("fname"), data.column("labels"), probs, strict=True):
            passing = above_threshold(row, threshold)
            predicted = " ".join(name for name, passed in zip(vocab, passing, strict=True) if passed)
            exact = set(predicted.split()) == set(labels.split())
            writer.writerow([fname, labels, predicted, exact, *(f"{p:.4f}" for p in row)])


def load_model(path: Path, threshold: float | None, tta: str | None, jpeg_decode: str) -> Classifier:
    """The classifier; ModelLoadError (one line) for a fastai .pkl in the slim install, which has no fastai."""
    if path.suffix == ".pkl" and not full_install():
        raise ModelLoadError(f"{path} is a fastai model, which needs the full install (requirements.txt); "
                             f"in the slim install pass its ONNX twin: --model {path.with_suffix('.onnx')}")
    return load_classifier(path, threshold, tta=tta, jpeg_decode=jpeg_decode)


def no_images_message(args: argparse.Namespace, data: LabelledRows) -> str:
    """Why nothing is left to score, naming the folder the images were looked for in."""
    where = f"{data.images_root}" + ("" if args.images_root is not None else
                                     " (the CSV's folder; pass --images-root DIR if the fname paths start elsewhere)")
    if data.rows:
        return f"none of the {len(data.rows)} readable images in {args.csv} is marked is_valid; leave out --valid-only"
    if data.skipped:
        return (f"none of the {len(data.skipped)} images listed in {args.csv} could be read under {where}, "
                f"e.g. {data.skipped[0]}")
    return f"{args.csv} lists no images"


def evaluate(args: argparse.Namespace) -> dict:
    classifier = load_model(args.model, args.threshold, args.tta, args.jpeg_decode)
    data = read_labelled_rows(args.csv, args.images_root, parse_merges(args.merge), corrections=args.corrections,
                              vocab=classifier.vocab)
    if data.corrections:
        print(corrections_line(data.corrections), file=sys.stderr)
    rows = [row for row in data.rows if row["is_valid"]] if args.valid_only else data.rows
    if not rows:
        raise DatasetError(no_images_message(args, data))
    data = replace(data, rows=rows)
    if args.by is not None and args.by not in data.columns:
        raise DatasetError(f"{args.csv} has no column {args.by} for --by (its columns: {', '.join(data.columns)})")
    if data.skipped:
        print(f"skipped {len(data.skipped)} unreadable image(s), e.g. {data.skipped[0]}", file=sys.stderr)
    targets = targets_matrix(data, classifier.vocab)
    detector = _detector() if args.faces == "auto" else None
    probs, modes = predict_all(classifier, data, detector, args.face_margin)
    report = metrics.summary(probs, targets, classifier.vocab, classifier.threshold)
    if data.corrections:
        report["corrections"] = data.corrections
    print("test-time augmentation: " + ("each image averaged with its mirror image" if classifier.tta == "flip"
                                        else "none (each image once)"))
    if detector is not None:
        report["modes"] = {mode: modes.count(mode) for mode in sorted(set(modes))}
        print("automatic mode answered " + ", ".join(f"{count} with {mode}" for mode, count in report["modes"].items()))
    print(metrics.format_table(report))
    if args.by is not None:
        report["by"] = {args.by: metrics.exact_match_by_group(probs, targets, classifier.threshold,
                                                             data.column(args.by))}
        print(metrics.format_group_table(args.by, report["by"][args.by]))
    if args.predictions:
        write_predictions(args.predictions, data, probs, classifier.vocab, classifier.threshold)
        print(f"wrote {len(probs)} predictions to {args.predictions}")
    return report


def _detector() -> FaceDetector:
    detector = load_detector()
    if detector is None:
        raise ModelLoadError("--faces auto needs the face detector: models/mtcnn/*.onnx are missing "
                             "(python -m maskclassifier.modelfiles.export_mtcnn writes them, in the full install)")
    return detector


def main(argv: list[str] | None = None) -> int:
    silence_fastai_jit_warning()  # before a .pkl model imports fastai
    args = parse_args(argv)
    try:
        evaluate(args)
    except (DatasetError, ModelLoadError, ImageError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
