"""One rule decides labels from probabilities (core.threshold): at the boundary the app, evaluate's metrics and
the cleaner's scoring must all say the same."""

from __future__ import annotations

import numpy as np

from maskclassifier.classifier.classifier import decide
from maskclassifier.clean.ranking import score_rows
from maskclassifier.core.threshold import above_threshold
from maskclassifier.training import metrics

VOCAB = ["Cloth", "Medical", "No_mask!"]
THRESHOLD = 0.45


def test_a_probability_equal_to_the_threshold_is_not_named_anywhere():
    row = [0.45, 0.46, 0.2]
    assert decide(row, VOCAB, THRESHOLD).labels == ["Medical"]
    assert score_rows([["Medical"]], [row], VOCAB, THRESHOLD)[0].predicted == ["Medical"]
    only_medical = np.array([[0, 1, 0]])
    assert metrics.exact_match(np.array([row]), only_medical, THRESHOLD) == 1.0
    assert metrics.cooccurrence(np.array([row]), only_medical, THRESHOLD) == [[0, 0, 0], [0, 1, 0], [0, 0, 0]]


def test_a_float32_probability_is_judged_by_its_own_value():
    # float32(0.45) is 0.44999998807..., just above this threshold, which rounds to that same float32: NumPy
    # compares a float32 array with a Python float in float32 and would call them equal; the app's decide
    # compares Python floats, and every other caller must agree with it.
    threshold = 0.449999988
    probabilities = np.array([[0.45, 0.1, 0.1]], dtype=np.float32)
    assert decide(probabilities[0], VOCAB, threshold).labels == ["Cloth"]
    assert above_threshold(probabilities, threshold).tolist() == [[True, False, False]]
    assert metrics.exact_match(probabilities, np.array([[1, 0, 0]]), threshold) == 1.0
