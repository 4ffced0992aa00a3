"""Which labelled images are most worth a look: per-image loss against the model, disagreement pairs, the orders
and filters of the cleaner's list. NumPy only: the probabilities come from clean/scoring.py.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from maskclassifier.core.threshold import above_threshold

NONE = "(none)"  # the "category" of a disagreement where one side has no label the other lacks
ORDERS = ("loss", "pairs", "csv")
EPSILON = 1e-7  # clips probabilities before the log, as torch's BCELoss clamps log at -100


@dataclass(frozen=True)
class Scored:
    """One image's model view: its probabilities (vocab order; None when the image could not be read), the labels
    above the threshold, its loss against the CSV's labels, and its (labelled, predicted) disagreement pairs."""

    probabilities: list[float] | None
    predicted: list[str]
    loss: float  # mean binary cross-entropy over the vocab; -1 for an unreadable image
    pairs: list[tuple[str, str]]


def bce_losses(probs: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """(n,) mean binary cross-entropy of each row of (n, categories) probabilities against 0/1 targets: the loss
    fastai's multi-label learners train with (BCEWithLogitsLossFlat), per image."""
    p = np.clip(probs, EPSILON, 1 - EPSILON)
    return -(targets * np.log(p) + (1 - targets) * np.log(1 - p)).mean(axis=1)


def disagreement_pairs(labels: Sequence[str], predicted: Sequence[str]) -> list[tuple[str, str]]:
    """(labelled, predicted) for each label the model missed against each it added, e.g. labelled Cloth,
    predicted Medical -> [("Cloth", "Medical")]; a side with nothing extra is NONE. [] when they agree."""
    missed = [label for label in labels if label not in predicted]
    added = [label for label in predicted if label not in labels]
    if not missed and not added:
        return []
    return [(old, new) for old in (missed or [NONE]) for new in (added or [NONE])]


def score_rows(labels: Sequence[Sequence[str]], probs: Sequence[Sequence[float] | None], vocab: Sequence[str],
               threshold: float) -> list[Scored]:
    """What the model says about each row: `labels[i]` are row i's CSV labels, `probs[i]` its probabilities."""
    index = {name: i for i, name in enumerate(vocab)}
    out = []
    for row_labels, row in zip(labels, probs, strict=True):
        if row is None:
            out.append(Scored(None, [], -1.0, []))
            continue
        target = np.zeros((1, len(vocab)), dtype=np.float32)
        for label in row_labels:
            if label in index:
                target[0, index[label]] = 1
        values = np.asarray(row, dtype=np.float64)[None, :]
        predicted = [name for name, passed in zip(vocab, above_threshold(values[0], threshold), strict=True) if passed]
        out.append(Scored([round(float(p), 4) for p in row], predicted, float(bce_losses(values, target)[0]),
                          disagreement_pairs(list(row_labels), predicted)))
    return out


def order(items: Sequence[dict], how: str) -> list[dict]:
    """`items` (dicts with loss, pairs and csv_index) in the order asked: "loss", highest first; "pairs", the
    disagreeing images grouped by their first (labelled, predicted) pair, the largest group first, each group by
    loss, then the images the model agrees with, by loss; "csv", the CSV's order."""
    if how == "csv":
        return sorted(items, key=lambda item: item["csv_index"])
    by_loss = sorted(items, key=lambda item: (-item["loss"], item["csv_index"]))
    if how == "loss":
        return by_loss
    if how != "pairs":
        raise ValueError(f"order must be one of {', '.join(ORDERS)}, got {how!r}")
    sizes = Counter(tuple(item["pairs"][0]) for item in items if item["pairs"])
    return sorted(by_loss, key=lambda item: (0, -sizes[tuple(item["pairs"][0])], tuple(item["pairs"][0]))
                  if item["pairs"] else (1, 0, ()))


def matches(item: dict, labelled: str = "", predicted: str = "", column: str = "", value: str = "",
            pair: str = "", undecided: bool = False) -> bool:
    """Whether `item` passes the filters: a labelled category (in its labels now), a predicted category, a CSV
    column's value, a disagreement pair "LABELLED>PREDICTED", and no decision yet. Empty filters pass all."""
    if labelled and labelled not in item["labels"]:
        return False
    if predicted and predicted not in item["predicted"]:
        return False
    if column and item["columns"].get(column) != value:
        return False
    if pair and pair not in {f"{old}>{new}" for old, new in item["pairs"]}:
        return False
    return not (undecided and item["decision"])
