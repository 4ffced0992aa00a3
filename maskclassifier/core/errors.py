"""The errors this package raises on purpose: each carries a message a person can act on.

Leaf module. Every such error derives from MaskClassifierError, so a caller (the web app, a command line) can
tell them from bugs: those it shows as they are, the rest it logs. Each also carries the HTTP answer it becomes,
so the web app maps them all with one rule instead of a branch per class.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence


class MaskClassifierError(Exception):
    """Base class: the message is one line saying what is wrong and how to fix it.

    `status` and `code` (stable, machine-readable) are the HTTP answer; `extra` holds more fields of the JSON
    answer and `headers` more response headers (e.g. Retry-After). A status of 500, the default, is the server's
    own trouble (a setting, a model file, a bug in the making): the web app logs it and answers with its generic
    message, since this one is for the owner, not for whoever sent the request.
    """

    status: int = 500
    code: str = "internal_error"

    def __init__(self, message: str, *, extra: Mapping[str, object] | None = None,
                 headers: Sequence[tuple[str, str]] = ()):
        super().__init__(message)
        self.message = message
        self.extra = dict(extra or {})
        self.headers = list(headers)


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
