"""Multi-label metrics on probability matrices (shared by training and evaluation), with scikit-learn's metrics.

`probs` and `targets` are (n_images, n_categories) arrays; targets hold 0/1. A category is predicted when its
probability is above the threshold (core.threshold's rule, the app's). What scikit-learn has no name for stays here: the
threshold sweep, exact-match by group and the label co-occurrence table.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    f1_score,
    hamming_loss,
    multilabel_confusion_matrix,
    precision_recall_fscore_support,
)

from maskclassifier.core.threshold import above_threshold

SWEEP_THRESHOLDS = np.round(np.arange(0.05, 0.951, 0.05), 2)


def _decisions(probs: np.ndarray, targets: np.ndarray, threshold: float | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(true labels, predicted labels) as 0/1 indicator matrices, as scikit-learn's multi-label metrics take them.
    `threshold`: one for every category, or one per category (shape (c,): benchmarks/holdout.py asks)."""
    return targets.astype(int), above_threshold(probs, threshold).astype(int)


def accuracy_multi(probs: np.ndarray, targets: np.ndarray, threshold: float | np.ndarray) -> float:
    """fastai's accuracy_multi: the share of (image, category) decisions that are right (1 - Hamming loss)."""
    return float(1 - hamming_loss(*_decisions(probs, targets, threshold)))


def exact_match(probs: np.ndarray, targets: np.ndarray, threshold: float | np.ndarray) -> float:
    """Subset accuracy: the share of images whose whole predicted label set is right."""
    return float(accuracy_score(*_decisions(probs, targets, threshold)))


def exact_match_by_group(probs: np.ndarray, targets: np.ndarray, threshold: float,
                         groups: Sequence[str]) -> dict[str, dict]:
    """Exact-match for each value of a column (e.g. the data source): where the errors are, not just how many."""
    right = (above_threshold(probs, threshold) == targets.astype(bool)).all(axis=1)
    groups = np.asarray([str(group) for group in groups])
    report = {}
    for group in sorted(set(groups)):
        members = right[groups == group]
        report[group] = {"images": int(members.size), "wrong": int((~members).sum()),
                         "exact_match": float(members.mean())}
    return report


def format_group_table(column: str, report: dict[str, dict]) -> str:
    width = max(len(column), *(len(group) for group in report))
    lines = [f"{column:<{width}} {'images':>7} {'wrong':>6} {'exact-match':>12}"]
    for group, row in report.items():
        lines.append(f"{group:<{width}} {row['images']:>7d} {row['wrong']:>6d} {row['exact_match']:>12.4f}")
    return "\n".join(lines)


def macro_f1(probs: np.ndarray, targets: np.ndarray, threshold: float | np.ndarray) -> float:
    """Mean of the per-category F1 scores (a category with no true and no predicted image scores 0)."""
    return float(f1_score(*_decisions(probs, targets, threshold), average="macro", zero_division=0))


def threshold_sweep(probs: np.ndarray, targets: np.ndarray,
                    thresholds: Sequence[float] = SWEEP_THRESHOLDS) -> list[dict[str, float]]:
    return [
        {
            "threshold": float(t),
            "accuracy_multi": accuracy_multi(probs, targets, t),
            "exact_match": exact_match(probs, targets, t),
            "macro_f1": macro_f1(probs, targets, t),
        }
        for t in thresholds
    ]


def best_threshold(sweep: list[dict[str, float]]) -> float:
    """The threshold with the highest macro-F1; on a tie the higher threshold wins (fewer false alarms)."""
    return max(sweep, key=lambda row: (round(row["macro_f1"], 9), row["threshold"]))["threshold"]


def per_class_report(probs: np.ndarray, targets: np.ndarray, vocab: Sequence[str],
                     threshold: float) -> dict[str, dict[str, float | int | list[list[int]]]]:
    """Precision, recall, F1, support and a 2x2 confusion matrix [[TN, FP], [FN, TP]] per category."""
    actual, predicted = _decisions(probs, targets, threshold)
    precision, recall, f1, support = precision_recall_fscore_support(actual, predicted, average=None,
                                                                     labels=range(len(vocab)), zero_division=0)
    confusion = multilabel_confusion_matrix(actual, predicted, labels=range(len(vocab)))
    return {
        name: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
               "support": int(support[i]), "confusion": confusion[i].tolist()}
        for i, name in enumerate(vocab)
    }


def cooccurrence(probs: np.ndarray, targets: np.ndarray, threshold: float) -> list[list[int]]:
    """Row = true category, column = predicted category: how many images with that true label got that prediction.

    The diagonal holds the hits; off-diagonal cells show which categories get mistaken for which,
    the multi-label stand-in for a confusion matrix.
    """
    predicted, actual = above_threshold(probs, threshold).astype(int), targets.astype(int)
    return (actual.T @ predicted).tolist()


def summary(probs: np.ndarray, targets: np.ndarray, vocab: Sequence[str], threshold: float) -> dict:
    """Every metric the model card and the evaluate command report, at one threshold."""
    return {
        "threshold": float(threshold),
        "images": int(len(probs)),
        "accuracy_multi": accuracy_multi(probs, targets, threshold),
        "exact_match": exact_match(probs, targets, threshold),
        "macro_f1": macro_f1(probs, targets, threshold),
        "per_class": per_class_report(probs, targets, vocab, threshold),
        "cooccurrence": {"categories": list(vocab), "counts": cooccurrence(probs, targets, threshold)},
    }


def format_table(report: dict) -> str:
    """A plain-text metrics table for the terminal and the model card."""
    lines = [
        f"threshold {report['threshold']:.2f} on {report['images']} images: "
        f"exact-match {report['exact_match']:.4f}, macro-F1 {report['macro_f1']:.4f}, "
        f"accuracy_multi {report['accuracy_multi']:.4f}",
        f"{'category':<10} {'precision':>9} {'recall':>7} {'F1':>7} {'support':>8}",
    ]
    for name, row in report["per_class"].items():
        if row["support"] == 0:  # no validation image has it (a tiny run's split): no score to print, not 0.000
            lines.append(f"{name:<10} {'no images':>25} {row['support']:>8d}")
        else:
            lines.append(f"{name:<10} {row['precision']:>9.3f} {row['recall']:>7.3f} {row['f1']:>7.3f} "
                         f"{row['support']:>8d}")
    return "\n".join(lines)
