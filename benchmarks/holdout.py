"""How much of a model's validation score comes from choosing its threshold on the same images.

    .venv/bin/python -m maskclassifier.evaluate --csv ../shared/data/masks/labels.csv --valid-only \
        --corrections recipes/masks-corrections.csv --predictions /tmp/valid.csv [--faces auto]
    .venv/bin/python -m benchmarks.holdout /tmp/valid.csv [--splits 20]

The threshold that training writes into the sidecar is the one with the best macro-F1 on the validation split,
so the card's figures at that threshold are a little optimistic: the threshold has seen the answers. This splits
the validation images in two halves (by a seeded shuffle, `--splits` times), chooses the threshold on one half
the way training does (`training.metrics.best_threshold`) and scores the other half, which the threshold never saw
and the model was never trained on; and the same with one threshold per category chosen on the other half
(`per_category`), to see whether one threshold can serve every category. It prints the mean and the range of the
held-out exact-match, macro-F1 and accuracy_multi over the splits, next to the same halves scored at the
sidecar's threshold. Bounded: NumPy and scikit-learn on a predictions CSV (`evaluate --predictions`), a few
seconds per split with the per-category search.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np

from maskclassifier.training import metrics

FIGURES = ("exact_match", "macro_f1", "accuracy_multi")


def read_predictions(path: Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(probabilities (n, c), targets (n, c) of 0/1, vocab) from `evaluate --predictions`' CSV."""
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        vocab = reader.fieldnames[4:]
        rows = list(reader)
    probs = np.array([[float(row[name]) for name in vocab] for row in rows])
    targets = np.array([[name in row["labels"].split() for name in vocab] for row in rows], dtype=float)
    return probs, targets, vocab


def score(probs: np.ndarray, targets: np.ndarray, threshold: float) -> dict[str, float]:
    return {"exact_match": metrics.exact_match(probs, targets, threshold),
            "macro_f1": metrics.macro_f1(probs, targets, threshold),
            "accuracy_multi": metrics.accuracy_multi(probs, targets, threshold)}


def per_category(probs: np.ndarray, targets: np.ndarray, start: float, rounds: int = 2) -> np.ndarray:
    """One threshold per category (issue 28's question: can one threshold serve Shield and the rest?), chosen on
    these images as training chooses one: from `start` for every category, each category's in turn set to the value
    of the sweep's grid (metrics.SWEEP_THRESHOLDS) with the best macro-F1, ties to the higher, `rounds` times."""
    thresholds = np.full(probs.shape[1], start)
    for _ in range(rounds):
        for category in range(probs.shape[1]):
            sweep = []
            for value in metrics.SWEEP_THRESHOLDS:
                trial = thresholds.copy()
                trial[category] = value
                sweep.append({"threshold": float(value), "macro_f1": metrics.macro_f1(probs, targets, trial)})
            thresholds[category] = metrics.best_threshold(sweep)  # training's rule, ties included
    return thresholds


def held_out(probs: np.ndarray, targets: np.ndarray, fixed: float, splits: int, seed: int) -> dict[str, list]:
    """Per split and half: the threshold chosen on the other half, and both halves' figures at it, at `fixed` and
    at one threshold per category chosen on the other half."""
    rng = np.random.default_rng(seed)
    results = {"chosen": [], "held_out": [], "fixed": [], "per_category": []}
    for _ in range(splits):
        order = rng.permutation(len(probs))
        halves = order[: len(order) // 2], order[len(order) // 2:]
        for choose, test in (halves, halves[::-1]):
            threshold = metrics.best_threshold(metrics.threshold_sweep(probs[choose], targets[choose]))
            results["chosen"].append(threshold)
            results["held_out"].append(score(probs[test], targets[test], threshold))
            results["fixed"].append(score(probs[test], targets[test], fixed))
            results["per_category"].append(score(probs[test], targets[test],
                                                 per_category(probs[choose], targets[choose], threshold)))
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.holdout", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("predictions", type=Path, help="evaluate --predictions' CSV of the validation images")
    parser.add_argument("--threshold", type=float, default=0.4, help="the sidecar's threshold (default: 0.4)")
    parser.add_argument("--splits", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    probs, targets, _ = read_predictions(args.predictions)
    whole = score(probs, targets, args.threshold)
    results = held_out(probs, targets, args.threshold, args.splits, args.seed)
    print(f"{len(probs)} images; {args.splits} random halvings, each half scored with the threshold chosen on the "
          f"other (chosen: {min(results['chosen']):.2f} to {max(results['chosen']):.2f})")
    print(f"{'':<34}" + "".join(f"{name:>24}" for name in FIGURES))
    print(f"{'all images, threshold ' + format(args.threshold, '.2f'):<34}" +
          "".join(f"{whole[name]:>24.4f}" for name in FIGURES))
    for label, rows in (("halves, threshold " + format(args.threshold, ".2f"), results["fixed"]),
                        ("halves, threshold from other half", results["held_out"]),
                        ("halves, one per category, ditto", results["per_category"])):
        cells = []
        for name in FIGURES:
            values = np.array([row[name] for row in rows])
            cells.append(f"{values.mean():.4f} ({values.min():.3f}-{values.max():.3f})")
        print(f"{label:<34}" + "".join(f"{cell:>24}" for cell in cells))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
