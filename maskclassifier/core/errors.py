"""The errors this package raises on purpose: each carries a message a person can act on.

Leaf module. Every such error derives from MaskClassifierError, so a caller (the web app, a command line) can
tell them from bugs: those it shows as they are, the rest it logs.
"""

from __future__ import annotations


class MaskClassifierError(Exception):
    """Base class: the message is one line saying what is wrong and how to fix it."""


class ConfigError(MaskClassifierError, ValueError):
    """A setting is missing or malformed; the message says which and how to fix it."""


class ModelLoadError(MaskClassifierError, RuntimeError):
    """The model cannot be served; the message is one line saying what is wrong and how to fix it."""


class ImageError(MaskClassifierError, ValueError):
    """An upload that cannot be classified: `status` is the HTTP status, `code` a stable machine-readable name."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
