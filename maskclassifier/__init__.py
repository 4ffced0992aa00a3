"""Face-mask classifier web app: `create_app()` builds the Flask application around one loaded model."""

from __future__ import annotations

import io
from pathlib import Path

from flask import Flask, Request

from maskclassifier.capacity import InferenceSlots
from maskclassifier.config import Settings, settings_from_env
from maskclassifier.faces import load_detector
from maskclassifier.model import load_classifier

PROJECT_ROOT = Path(__file__).resolve().parent.parent
MULTIPART_OVERHEAD = 64 * 1024  # boundaries and headers around the file in a multipart body


class InMemoryRequest(Request):
    """Keeps uploaded files in memory: Werkzeug would spool files over 500 KB to a temporary file on disk."""

    def _get_file_stream(self, total_content_length, content_type, filename=None, content_length=None):
        return io.BytesIO()


def create_app(settings: Settings | None = None) -> Flask:
    """Load the model named by `settings` (default: from the environment) and serve it.

    Raises ConfigError or ModelLoadError with a one-line message when the app cannot start.
    """
    settings = settings or settings_from_env()
    app = Flask(__name__, template_folder=str(PROJECT_ROOT / "templates"), static_folder=str(PROJECT_ROOT / "static"))
    app.request_class = InMemoryRequest
    app.config["MAX_CONTENT_LENGTH"] = settings.max_upload_bytes + MULTIPART_OVERHEAD
    app.config["SETTINGS"] = settings
    app.extensions["maskclassifier"] = load_classifier(settings.model_path, settings.threshold,
                                                       settings.torch_threads, settings.tta)
    app.extensions["face_detector"] = load_detector(settings.torch_threads)  # None without torch: no per-face mode
    app.extensions["inference_slots"] = InferenceSlots(settings.inference_slots, settings.queue_timeout_s)

    from maskclassifier import web

    app.register_blueprint(web.bp)
    app.before_request(web.buffer_body)
    web.register_error_handlers(app)
    app.after_request(web.add_security_headers)
    return app
