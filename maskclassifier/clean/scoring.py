"""The model's probabilities for every image of a labelled CSV, batch by batch through the classifier layer (the
same decoding and preprocessing as the web app, `maskclassifier.classifier.scorer`), with progress on the console,
cached in a JSON file keyed by the model's and the CSV's sha256 so that a restart is instant.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from maskclassifier.classifier.classifier import Classifier, load_classifier
from maskclassifier.classifier.scorer import score_files
from maskclassifier.core.sidecar import sha256_file

CACHE_VERSION = 1


@dataclass(frozen=True)
class Scores:
    vocab: list[str]
    threshold: float
    probabilities: dict[str, list[float] | None]  # fname -> vocab-ordered probabilities; None: unreadable
    model_sha256: str
    cached: bool = False  # read from the cache file


def cache_path(corrections: Path, model_sha256: str, csv_sha256: str) -> Path:
    """Beside the corrections file, named by both digests: another model or CSV gets its own file."""
    return corrections.with_name(f"{corrections.stem}.scores-{model_sha256[:12]}-{csv_sha256[:12]}.json")


def score_csv(model_path: Path, fnames: Sequence[str], images_root: Path, csv_path: Path, corrections: Path,
              out=None) -> Scores:
    """The model's probabilities for each of `fnames` (relative to `images_root`), from the cache when the model
    and the CSV are unchanged, else computed (printing progress to `out`) and cached. ModelLoadError when the
    model cannot be loaded."""
    out = out or sys.stderr
    model_sha256, csv_sha256 = sha256_file(model_path), sha256_file(csv_path)
    cache = cache_path(corrections, model_sha256, csv_sha256)
    found = _read_cache(cache, str(images_root), fnames)
    if found is not None:
        print(f"scores of {len(fnames)} images read from {cache}", file=out, flush=True)
        return Scores(found["vocab"], found["threshold"], found["probabilities"], model_sha256, cached=True)
    classifier = load_classifier(model_path, torch_threads=max(1, (os.cpu_count() or 1)))
    probabilities = _score(classifier, fnames, images_root, out)
    scores = Scores(classifier.vocab, classifier.threshold, probabilities, model_sha256)
    temporary = cache.with_suffix(".tmp")
    temporary.write_text(json.dumps({"version": CACHE_VERSION, "images_root": str(images_root), "vocab": scores.vocab,
                                     "threshold": scores.threshold, "probabilities": probabilities}))
    temporary.replace(cache)  # whole or not at all: a stopped run leaves no half-written cache
    print(f"scores cached in {cache}", file=out, flush=True)
    return scores


def _read_cache(path: Path, images_root: str, fnames: Sequence[str]) -> dict | None:
    try:
        found = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if (not isinstance(found, dict) or found.get("version") != CACHE_VERSION or found.get("images_root") != images_root
            or set(found.get("probabilities", {})) != set(fnames)):
        return None
    return found


def _score(classifier: Classifier, fnames: Sequence[str], images_root: Path, out) -> dict[str, list[float] | None]:
    rows = score_files(classifier, [images_root / name for name in fnames], skip_unreadable=True, out=out)
    # None: shown on its card as unreadable, at the end of the loss order
    return {name: None if row is None else [round(float(p), 5) for p in row]
            for name, row in zip(fnames, rows, strict=True)}
