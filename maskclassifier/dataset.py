"""Labelled image sets: the `fname,labels` CSV the owner trains and evaluates on (no torch needed)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image


class DatasetError(ValueError):
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
class LabelledData:
    frame: pd.DataFrame  # columns fname, labels, is_valid (+ whatever else the CSV had)
    images_root: Path
    skipped: list[str] = field(default_factory=list)  # unreadable images left out

    @property
    def vocab(self) -> list[str]:
        return sorted({label for labels in self.frame["labels"] for label in labels.split()})


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


def read_labelled_csv(csv_path: Path, images_root: Path | None = None, merges: dict[str, str] | None = None,
                      valid_pct: float = 0.2, seed: int = 42) -> LabelledData:
    """Read `fname,labels[,is_valid]`, merge labels and leave out (and count) unreadable images.

    Without an is_valid column, a seeded random `valid_pct` of the rows is marked for validation.
    """
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise DatasetError(f"CSV not found: {csv_path}")
    frame = pd.read_csv(csv_path, dtype={"fname": str, "labels": str}, keep_default_na=False)
    missing = [column for column in ("fname", "labels") if column not in frame.columns]
    if missing:
        raise DatasetError(f"{csv_path} has no column {', '.join(missing)} (found: {', '.join(frame.columns)})")
    images_root = Path(images_root) if images_root is not None else csv_path.parent
    frame["labels"] = frame["labels"].str.strip()
    unlabelled = frame["labels"] == ""
    if unlabelled.any():
        raise DatasetError(f"{int(unlabelled.sum())} rows have no label, e.g. {frame.loc[unlabelled, 'fname'].iloc[0]}")
    frame["labels"] = frame["labels"].map(lambda labels: _merge_labels(labels, merges or {}))
    if "is_valid" in frame.columns:
        frame["is_valid"] = frame["is_valid"].astype(str).str.strip().str.lower().isin({"true", "1", "yes"})
    else:
        rng = np.random.default_rng(seed)
        frame["is_valid"] = rng.random(len(frame)) < valid_pct
    readable = frame["fname"].map(lambda name: _is_readable(images_root / name))
    return LabelledData(frame[readable].reset_index(drop=True), images_root, frame.loc[~readable, "fname"].tolist())


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
