"""Labelled image sets: the `fname,labels` CSV the owner trains and evaluates on.

No torch here, and pandas only for training's LabelledData: `read_labelled_rows` (what evaluate uses) needs
neither, so evaluate works in the slim install.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from maskclassifier.core import corrections as label_corrections
from maskclassifier.core.errors import MaskClassifierError

if TYPE_CHECKING:
    import pandas as pd


class DatasetError(MaskClassifierError, ValueError):
    """The labelled CSV or its images cannot be used; the message says why."""


@dataclass(frozen=True)
class ImageReader:
    """fastai's get_x: the row's image file, or for a row with a `crop` box ("x0 y0 x1 y1", the face close-ups
    that `train --face-crops` adds) that part of the image, in RGB."""

    images_root: Path

    def __call__(self, row) -> Path | Image.Image:
        path = self.images_root / row["fname"]
        crop = row.get("crop", "")
        if not crop:
            return path
        with Image.open(path) as image:
            return image.convert("RGB").crop(tuple(int(value) for value in crop.split()))


@dataclass
class LabelledRows:
    """A labelled CSV as plain rows (no pandas): what evaluate scores, and what training's LabelledData is made of."""

    columns: list[str]  # the CSV's columns, in order, and is_valid when the CSV has none
    rows: list[dict]  # one per readable image: the CSV's values as strings, labels merged, is_valid a bool
    images_root: Path
    skipped: list[str] = field(default_factory=list)  # unreadable images left out
    corrections: dict | None = None  # the applied corrections file: file, sha256, relabelled, deleted, kept

    @property
    def vocab(self) -> list[str]:
        return sorted({label for row in self.rows for label in row["labels"].split()})

    def column(self, name: str) -> list:
        """The values of one column, in row order."""
        return [row[name] for row in self.rows]


@dataclass
class LabelledData:
    frame: pd.DataFrame  # columns fname, labels, is_valid (+ whatever else the CSV had)
    images_root: Path
    skipped: list[str] = field(default_factory=list)  # unreadable images left out
    corrections: dict | None = None  # as LabelledRows.corrections

    @property
    def vocab(self) -> list[str]:
        return sorted({label for labels in self.frame["labels"] for label in labels.split()})


def training_examples(rows: Iterable[Mapping], vocab: Sequence[str],
                      drawn_per_epoch: Mapping[str, int] | None = None) -> dict[str, dict[str, int]]:
    """Training examples per category, real and drawn: {"Shield": {"real": 8, "drawn": 1893}, ...} for `vocab`.

    `rows` are the labelled set's rows after corrections (dicts or DataFrame records with labels, is_valid and
    optionally synthetic): each training row counts once for each of its labels, as drawn when its `synthetic`
    is true (a generated image, or an overlay drawn onto a real face), else as real. Oversampling's repeats and
    the face close-ups are views of these same images and are not counted again. `drawn_per_epoch` adds the
    images drawn anew at every read (`--render KIND=N`, by the category of what is drawn: N per epoch, since each
    epoch draws them afresh), all counted as drawn.
    """
    examples = {name: {"real": 0, "drawn": 0} for name in vocab}
    for row in rows:
        if _is_true(row["is_valid"]):
            continue
        kind = "drawn" if _is_true(row.get("synthetic", False)) else "real"
        for label in str(row["labels"]).split():
            if label in examples:
                examples[label][kind] += 1
    for name, count in (drawn_per_epoch or {}).items():
        if name in examples:
            examples[name]["drawn"] += int(count)
    return examples


def parse_merges(pairs: list[str]) -> dict[str, str]:
    """['Surgical=Medical'] -> {'Surgical': 'Medical'}."""
    merges = {}
    for pair in pairs:
        old, sep, new = pair.partition("=")
        if not sep or not old.strip() or not new.strip() or " " in new.strip():
            raise DatasetError(f"--merge expects OLD=NEW with single-word labels, got {pair!r}")
        merges[old.strip()] = new.strip()
    return merges


def parse_oversample(pairs: list[str]) -> dict[str, int]:
    """['Shield=3'] -> {'Shield': 3}."""
    factors = {}
    for pair in pairs:
        label, sep, times = pair.partition("=")
        if not sep or not label.strip() or not times.strip().isdigit() or int(times) < 1:
            raise DatasetError(f"--oversample expects LABEL=TIMES with a whole number of at least 1, got {pair!r}")
        factors[label.strip()] = int(times)
    return factors


def oversample(data: LabelledData, factors: dict[str, int]) -> LabelledData:
    """Training rows with a label in `factors` repeated that many times in all (the largest factor wins);
    validation rows are left alone, so the scores stay comparable."""
    unknown = sorted(set(factors) - set(data.vocab))
    if unknown:
        raise DatasetError(f"--oversample: no image has the label(s) {', '.join(unknown)}")
    if not factors:
        return data

    def times(row) -> int:
        return 1 if row["is_valid"] else max(factors.get(label, 1) for label in row["labels"].split())

    frame = data.frame
    repeats = frame.apply(times, axis=1)
    return LabelledData(frame.loc[frame.index.repeat(repeats)].reset_index(drop=True), data.images_root, data.skipped)


def subsample_training(data: LabelledData, fraction: float, keep: set[str], seed: int) -> LabelledData:
    """The data with only `fraction` of its training rows (picked at random with `seed`), except rows with a label
    in `keep`, which all stay; validation is left alone, so the scores stay comparable. For a short fine-tuning
    run on a busy machine: an epoch over fewer images."""
    if fraction >= 1:
        return data
    frame = data.frame
    rng = np.random.default_rng(seed)
    kept = frame["labels"].map(lambda labels: bool(set(labels.split()) & keep))
    chosen = frame["is_valid"] | kept | (rng.random(len(frame)) < fraction)
    return LabelledData(frame[chosen].reset_index(drop=True), data.images_root, data.skipped, data.corrections)


def _merge_labels(labels: str, merges: dict[str, str]) -> str:
    merged = [merges.get(label, label) for label in labels.split()]
    return " ".join(dict.fromkeys(merged))  # drop duplicates, keep order


def _is_readable(path: Path) -> bool:
    try:
        with Image.open(path) as image:
            image.draft("RGB", (64, 64))
            image.load()
        return True
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return False


def _is_true(value: str) -> bool:
    return str(value).strip().lower() in {"true", "1", "yes"}


def read_labelled_rows(csv_path: Path, images_root: Path | None = None, merges: dict[str, str] | None = None,
                       valid_pct: float = 0.2, seed: int = 42, corrections: Path | None = None,
                       vocab: list[str] | None = None) -> LabelledRows:
    """Read `fname,labels[,is_valid]`, merge labels and leave out (and count) unreadable images; no pandas.

    Without an is_valid column, a seeded random `valid_pct` of the rows is marked for validation (before any
    correction, so deleting an image does not move the others between the splits). `corrections`, a corrections
    file (maskclassifier/core/corrections.py), is applied last; its labels must be categories of the CSV (after the
    merges) or of `vocab` (a model's). DatasetError (one line) for a missing file or column, an unlabelled row, a
    malformed CSV or an unusable corrections file.
    """
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise DatasetError(f"CSV not found: {csv_path}")
    columns, rows, _ = label_corrections.read_csv_rows(csv_path, DatasetError)
    missing = [column for column in ("fname", "labels") if column not in columns]
    if missing:
        raise DatasetError(f"{csv_path} has no column {', '.join(missing)} (found: {', '.join(columns)})")
    images_root = Path(images_root) if images_root is not None else csv_path.parent
    unlabelled = [row["fname"] for row in rows if not row["labels"].strip()]
    if unlabelled:
        raise DatasetError(f"{len(unlabelled)} rows have no label, e.g. {unlabelled[0]}")
    if "is_valid" in columns:
        is_valid = [_is_true(row["is_valid"]) for row in rows]
    else:
        columns = [*columns, "is_valid"]
        is_valid = list(np.random.default_rng(seed).random(len(rows)) < valid_pct)
    readable, skipped = [], []
    for row, valid in zip(rows, is_valid, strict=True):
        if not _is_readable(images_root / row["fname"]):
            skipped.append(row["fname"])
            continue
        readable.append({**row, "labels": _merge_labels(row["labels"].strip(), merges or {}), "is_valid": bool(valid)})
    data = LabelledRows(columns, readable, images_root, skipped)
    return data if corrections is None else apply_corrections(data, Path(corrections), vocab or [])


def apply_corrections(data: LabelledRows, path: Path, vocab: list[str]) -> LabelledRows:
    """`data` with the corrections file at `path` applied, and what was applied recorded in `corrections`."""
    try:
        found = label_corrections.read(path, vocab=set(data.vocab) | set(vocab))
        applied = label_corrections.apply(data.rows, found, also_known=data.skipped)
    except label_corrections.CorrectionsError as exc:
        raise DatasetError(str(exc).replace("corrections line", f"{path} line")) from None
    return LabelledRows(data.columns, applied.rows, data.images_root, data.skipped,
                        label_corrections.describe(path, applied))


def corrections_line(applied: dict) -> str:
    """One line saying what a corrections file changed, for train's and evaluate's output."""
    return (f"corrections {applied['file']}: {applied['relabelled']} image(s) relabelled, {applied['deleted']} "
            f"left out, {applied['kept']} kept as labelled")


def read_labelled_csv(csv_path: Path, images_root: Path | None = None, merges: dict[str, str] | None = None,
                      valid_pct: float = 0.2, seed: int = 42, corrections: Path | None = None) -> LabelledData:
    """`read_labelled_rows` as a DataFrame, for training (which needs pandas)."""
    import pandas as pd  # here, not at the top: evaluate reads CSVs without it, in the slim install

    rows = read_labelled_rows(csv_path, images_root, merges, valid_pct, seed, corrections)
    return LabelledData(pd.DataFrame(rows.rows, columns=rows.columns), rows.images_root, rows.skipped,
                        rows.corrections)


def check_split(data: LabelledData) -> None:
    """Training needs a non-empty validation set and training images for every label."""
    frame = data.frame
    if frame.empty:
        raise DatasetError(f"no readable images under {data.images_root}")
    if not frame["is_valid"].any():
        raise DatasetError("the validation set is empty: mark rows is_valid=True or raise --valid-pct")
    if frame["is_valid"].all():
        raise DatasetError("every image is in the validation set: nothing is left to train on")
    train_labels = {label for labels in frame.loc[~frame["is_valid"], "labels"] for label in labels.split()}
    orphans = [label for label in data.vocab if label not in train_labels]
    if orphans:
        raise DatasetError(f"label(s) {', '.join(orphans)} have no training images; add some or merge them (--merge)")
