"""The web app: `create_app()` (web/factory.py) composes the Flask application around one loaded model.

Importing the package imports nothing else, and `create_app` is loaded when first asked for: gunicorn's master
imports the worker class (worker.py, frontdoor.py, headers.py, the standard library and h11 only), and with
Flask, NumPy and Pillow imported here it held about 58 MB instead of about 25.
"""

from __future__ import annotations

__all__ = ["create_app"]


def __getattr__(name: str):
    if name == "create_app":
        from maskclassifier.web.factory import create_app

        return create_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
