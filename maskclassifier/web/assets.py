"""Static files cached by browsers: every `url_for('static', ...)` carries a version from the file's content
(`?v=` the first 10 hex digits of its SHA-256), and a request with the current version is answered with a year's
`Cache-Control: immutable`, so a page load fetches the CSS, script and examples once, and again only after they
change. A request without the version, or with an old one, keeps Flask's default (revalidated each time).
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path

from flask import Flask, Response, current_app, request

VERSIONED_CACHE_CONTROL = "public, max-age=31536000, immutable"


@lru_cache(maxsize=256)
def _digest(path: Path, mtime_ns: int) -> str:  # mtime in the key: an edited file gets a new version at once
    return hashlib.sha256(path.read_bytes()).hexdigest()[:10]


def version_of(filename: str) -> str | None:
    """The version of a file under the static folder; None when it does not exist (or leaves the folder)."""
    folder = Path(current_app.static_folder).resolve()
    path = (folder / filename).resolve()
    if not path.is_relative_to(folder) or not path.is_file():
        return None
    return _digest(path, path.stat().st_mtime_ns)


def _add_version(endpoint: str, values: dict) -> None:
    if endpoint == "static" and "filename" in values and "v" not in values:
        version = version_of(values["filename"])
        if version:
            values["v"] = version


def _cache_versioned(response: Response) -> Response:
    if (request.endpoint == "static" and response.status_code == 200
            and request.args.get("v") == version_of(request.view_args.get("filename", ""))):
        response.headers["Cache-Control"] = VERSIONED_CACHE_CONTROL
    return response


def init_app(app: Flask) -> None:
    app.url_defaults(_add_version)
    app.after_request(_cache_versioned)
