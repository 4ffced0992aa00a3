"""The one rule that turns probabilities into labels: a category is named when its probability is above the
threshold, strictly, as fastai decodes multi-label outputs (`> thresh`) and as the README documents ("shown when its
probability is above this"). The app, evaluate, the training metrics, the cleaner and the benchmarks all ask this
function, so no two of them can disagree about a probability that equals the threshold."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike


def above_threshold(probabilities: ArrayLike, threshold: float | np.ndarray) -> np.ndarray:
    """Booleans of `probabilities`' shape: which pass (`threshold`: one for all, or one per category, shape (c,),
    as benchmarks/holdout.py tries). Compared in float64, as Python floats compare, so a float32
    probability is judged by its exact value, not against the threshold rounded to float32."""
    return np.asarray(probabilities, dtype=np.float64) > threshold
