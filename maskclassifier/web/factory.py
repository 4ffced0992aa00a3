"""`create_app()` composes the Flask application around one loaded model (imported as
`maskclassifier.web.create_app`).

Each module registers its own part with `init_app(app)`: uploads (in-memory request bodies read within a
deadline), inference (the model, the face detector and the inference slots), the pages, the JSON API with its own
error handler, the app-wide error pages and security headers, and the static files' cache versions.
"""

from __future__ import annotations

from pathlib import Path

from flask import Flask

from maskclassifier.core.config import Settings, settings_from_env
from maskclassifier.web import api, assets, errors, inference, ondevice, pages, uploads

HERE = Path(__file__).resolve().parent  # the page's templates/ and static/ are beside this file


def create_app(settings: Settings | None = None) -> Flask:
    """Load the model named by `settings` (default: from the environment) and serve it.

    Raises ConfigError or ModelLoadError with a one-line message when the app cannot start.
    """
    settings = settings or settings_from_env()
    app = Flask(__name__, template_folder=str(HERE / "templates"), static_folder=str(HERE / "static"))
    app.config["SETTINGS"] = settings
    uploads.init_app(app)
    inference.init_app(app)
    errors.init_app(app, pages.error_page)
    pages.init_app(app)
    ondevice.init_app(app)
    api.init_app(app)
    assets.init_app(app)
    return app
