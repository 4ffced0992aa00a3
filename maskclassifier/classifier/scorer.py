"""Files scored through the classifier, batch by batch, each decoded as an upload is (`Classifier.decode`), with
progress on the console: the one loop behind evaluate (`maskclassifier.training.evaluate`) and the cleaner's scores
(`maskclassifier.clean.scoring`), which may not import each other.

NumPy and Pillow only, beside the classifier: it runs in the slim install too.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TextIO

import numpy as np
from PIL import Image

from maskclassifier.classifier.classifier import Classifier
from maskclassifier.core.errors import ImageError

BATCH_SIZE = 32  # files decoded and held at once; the classifier splits them further (classifier.MAX_BATCH)

# A batch of decoded images -> one row of vocab-ordered probabilities each.
Answer = Callable[[list[Image.Image]], np.ndarray]


def score_files(classifier: Classifier, paths: Sequence[Path], answer: Answer | None = None, *,
                whole_photo: bool = True, skip_unreadable: bool = False, out: TextIO | None = None
                ) -> list[np.ndarray | None]:
    """Each file's probabilities, in the order of `paths`, from `answer` (default: the whole-photo answer,
    `classifier.probabilities`; `whole_photo` as `Classifier.decode` takes it). A file that cannot be read or
    decoded (OSError, ImageError) is None with `skip_unreadable`, else its error is raised. Progress on `out`
    (default: stderr): files done, seconds taken and about how many are left."""
    answer = answer or classifier.probabilities
    out = out or sys.stderr
    started, scored = time.monotonic(), []
    for start in range(0, len(paths), BATCH_SIZE):
        rows: list[np.ndarray | None] = []
        images, readable = [], []
        for path in paths[start:start + BATCH_SIZE]:
            rows.append(None)
            try:
                images.append(classifier.decode(path.read_bytes(), whole_photo))
            except (OSError, ImageError):
                if not skip_unreadable:
                    raise
                continue
            readable.append(len(rows) - 1)
        if images:
            for index, row in zip(readable, answer(images), strict=True):
                rows[index] = row
        scored += rows
        _progress(classifier, len(scored), len(paths), time.monotonic() - started, out)
    print(file=out, flush=True)
    return scored


def _progress(classifier: Classifier, done: int, total: int, elapsed: float, out: TextIO) -> None:
    left = elapsed / done * (total - done)
    print(f"\rscoring images with {classifier.path.name}: {done}/{total}, {elapsed:.0f} s, "
          f"about {left:.0f} s left   ", end="", file=out, flush=True)
