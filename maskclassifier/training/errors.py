"""The training layer's own error: options or data that cannot produce a model, said in one line."""

from __future__ import annotations

from maskclassifier.core.errors import MaskClassifierError


class TrainingError(MaskClassifierError, ValueError):
    """The options cannot produce a model (unknown architecture, no weights, no face detector, an export that would
    not load outside the project); the message says why."""
