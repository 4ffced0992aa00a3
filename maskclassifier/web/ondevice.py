"""On-device mode (issue 30): the model runs in the visitor's browser with ONNX Runtime Web; the server is the
fallback and the reference.

Here: the served model's ONNX file at a versioned, year-cached address; the runtime's files (vendored under
static/vendor/, versioned by assets.py like every static file); what GET /api/model adds for the browser (the
decision rules, the files' addresses and sizes); and POST /result/computed, which words probabilities computed
on the device with the very template and sentences of a server answer (`_result.html`, presenters.py), so the
page cannot say two things. No pixel reaches the server in on-device mode: that endpoint takes numbers only.
"""

from __future__ import annotations

import math

from flask import Blueprint, Flask, Response, abort, current_app, request, send_file, url_for

from maskclassifier.classifier.classifier import decide
from maskclassifier.classifier.device import DeviceFile, decision_rules, device_model
from maskclassifier.classifier.faces import FaceAnalysis
from maskclassifier.core.errors import ImageError
from maskclassifier.web.assets import VERSIONED_CACHE_CONTROL
from maskclassifier.web.inference import classifier

ORT_WEB_VERSION = "1.18.0"  # scripts/vendor_ort.sh writes static/vendor/onnxruntime-web-VERSION/
ORT_FOLDER = f"vendor/onnxruntime-web-{ORT_WEB_VERSION}"
ORT_SCRIPT = f"{ORT_FOLDER}/ort.wasm-core.min.js"  # the wasm backend alone: no WebGL/WebGPU, no proxy worker
ORT_WASM = f"{ORT_FOLDER}/ort-wasm-simd.wasm"  # SIMD, one thread: no COOP/COEP headers needed
PROBABILITIES_FIELD_MAX = 64  # categories in a computed answer (the shipped model has 7)

bp = Blueprint("ondevice", __name__)


def init_app(app: Flask) -> None:
    with app.app_context():
        app.extensions["device_model"] = device_model(classifier())
    app.register_blueprint(bp)


def model_file() -> DeviceFile | None:
    return current_app.extensions.get("device_model")


@bp.get("/device/model-<version>.onnx")
def model(version: str):
    """The ONNX graph the browser runs, at an address that changes with its content: cached for a year."""
    found = model_file()
    if found is None or version != found.version:
        abort(404)
    response = send_file(found.path, mimetype="application/octet-stream", conditional=True, max_age=None)
    response.headers["Cache-Control"] = VERSIONED_CACHE_CONTROL
    return response


def device_json() -> dict:
    """What GET /api/model adds: the decision rules, and where the browser finds the runtime and the model (absent
    when this model has no ONNX twin the browser could run)."""
    body = {"decision_rules": decision_rules(classifier())}
    found = model_file()
    if found is not None:
        static = current_app.static_folder
        body["on_device"] = {
            "model_url": url_for("ondevice.model", version=found.version),
            "model_bytes": found.size,
            "runtime": {"name": "onnxruntime-web", "version": ORT_WEB_VERSION, "build": "wasm, SIMD, one thread",
                        "script_url": url_for("static", filename=ORT_SCRIPT),
                        "wasm_url": url_for("static", filename=ORT_WASM),
                        "bytes": sum((_static_size(static, name) for name in (ORT_SCRIPT, ORT_WASM)))},
            "result_url": url_for("ondevice.computed"),
            "preview_placeholder": PREVIEW_PLACEHOLDER,
        }
    return body


def _static_size(folder: str, name: str) -> int:
    from pathlib import Path

    path = Path(folder) / name
    return path.stat().st_size if path.is_file() else 0


def page_context() -> dict:
    """For the page's template: the on-device section's data (None when this model cannot run in a browser)."""
    found = model_file()
    if found is None:
        return {"ondevice": None}
    return {"ondevice": {"config_url": url_for("api.model"), "script_url": url_for("static", filename=ORT_SCRIPT),
                         "model_mb": round(found.size / 1e6, 1)}}


def _probabilities(value, vocab: list[str]) -> list[float]:
    if (not isinstance(value, list) or len(value) != len(vocab) or len(value) > PROBABILITIES_FIELD_MAX
            or not all(isinstance(p, (int, float)) and not isinstance(p, bool) and math.isfinite(p) and 0 <= p <= 1
                       for p in value)):
        raise ImageError(400, "invalid_result", f"probabilities must be a list of {len(vocab)} numbers from 0 to 1, "
                                                "in the order of GET /api/model's categories.")
    return [float(p) for p in value]


@bp.post("/result/computed")
def computed():
    """A whole-photo answer computed on the device, as the result fragment a server answer would be: the same
    template, sentences and decision (`decide` with the server's threshold). Takes JSON {"probabilities": [...]}
    (numbers, in /api/model's category order) and nothing else of the photo; the page puts its own copy of the
    photo in the fragment's image."""
    from maskclassifier.web.errors import reply_for
    from maskclassifier.web.pages import error_page

    try:
        return _computed()
    except Exception as error:  # noqa: BLE001 - every error as the page's error fragment, as POST /result does
        return error_page(reply_for(error), "off")


def _computed() -> Response:
    from maskclassifier.web.pages import render_page
    from maskclassifier.web.presenters import headline_view, result_view

    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise ImageError(400, "invalid_result", "Send JSON: {\"probabilities\": [...]}.")
    served = classifier()
    prediction = decide(_probabilities(body.get("probabilities"), served.vocab), served.vocab, served.threshold)
    analysis = FaceAnalysis("whole", prediction)

    synthetic = served.synthetic_categories
    html, status = render_page(mode="off", result=result_view(prediction, synthetic), preview=PREVIEW_PLACEHOLDER,
                               headline=headline_view(analysis, synthetic), faces={"mode": "whole", "note": None},
                               where="device", fragment=True)
    response = Response(html, status, mimetype="text/html")
    response.headers["Cache-Control"] = "no-store"
    return response


# The fragment's photo until the page puts its own copy there (a transparent 1x1 GIF): the photo never left.
PREVIEW_PLACEHOLDER = "data:image/gif;base64,R0lGODlhAQABAAAAACH5BAEKAAEALAAAAAABAAEAAAICTAEAOw=="
