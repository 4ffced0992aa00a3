"""Test-time augmentation: the choices, and how a batch and its mirror images become one answer per image.

Leaf module (NumPy only): training, both backends, the classifier and the settings share it.
"""

from __future__ import annotations

import numpy as np

TTA_CHOICES = ("flip", "none")  # the mean over each image and its mirror image, or each image once


def average_mirrored(probabilities: np.ndarray) -> np.ndarray:
    """For a batch of n images followed by their n mirror images, (2n, k) -> (n, k): each image's mean of the two."""
    half = len(probabilities) // 2
    return (probabilities[:half] + probabilities[half:]) / 2
