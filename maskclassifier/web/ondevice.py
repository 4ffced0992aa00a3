"""On-device mode (issue 30): the model runs in the visitor's browser with ONNX Runtime Web; the server is the
fallback and the reference.

Here: the served model's ONNX file, MTCNN's three networks and the runtime's WebAssembly (vendored under
static/vendor/) at versioned, year-cached addresses, gzipped for browsers that accept it (the runtime's script is
a static file, versioned by assets.py); what GET /api/model adds for the browser (the decision rules, the files'
addresses and sizes, the live camera's words); and POST /result/computed, which words probabilities (and faces)
computed on the device with the very template, sentences and per-face analysis of a server answer
(`_result.html`, presenters.py, faces.analyse), so the page cannot say two things. No pixel reaches the server in
on-device mode: that endpoint takes numbers only.
"""

from __future__ import annotations

import gzip
import hashlib
import html
import math
import re
import threading
from collections import deque
from pathlib import Path

from flask import Blueprint, Flask, Response, abort, current_app, render_template, request, send_file, url_for
from PIL import Image

from maskclassifier.classifier.classifier import Prediction, decide
from maskclassifier.classifier.device import DeviceFile, decision_rules, device_detector, device_model, face_rules
from maskclassifier.classifier.faces import MODES, analyse
from maskclassifier.core.errors import ImageError
from maskclassifier.core.facebox import MAX_FACES, Face, FaceScan, unbiased_order
from maskclassifier.web.assets import VERSIONED_CACHE_CONTROL
from maskclassifier.web.inference import classifier, face_detector

ORT_WEB_VERSION = "1.18.0"  # scripts/vendor_ort.sh writes static/vendor/onnxruntime-web-VERSION/
ORT_FOLDER = f"vendor/onnxruntime-web-{ORT_WEB_VERSION}"
ORT_SCRIPT = f"{ORT_FOLDER}/ort.wasm-core.min.js"  # the wasm backend alone: no WebGL/WebGPU, no proxy worker
ORT_WASM = f"{ORT_FOLDER}/ort-wasm-simd.wasm"  # SIMD, one thread: no COOP/COEP headers needed
PROBABILITIES_FIELD_MAX = 64  # categories in a computed answer (the shipped model has 7)
DEVICE_MAX_SIDE = 4096  # the page answers photos up to this long side on the device (static/ondevice.js MAX_SIDE)

bp = Blueprint("ondevice", __name__)


# Flask sends files as they are; these are sent gzipped to browsers that accept it, compressed once per worker (in
# the background at start-up) and kept in memory, about 13 MB: the runtime's 10.6 MB WebAssembly is 2.8 MB gzipped,
# the model 9.5 of 10.5 MB, the detector 0.9 of 1.05 MB.
_GZIPPED: dict[Path, bytes] = {}
_GZIP_LOCK = threading.Lock()


def _gzipped(path: Path) -> bytes:
    with _GZIP_LOCK:
        if path not in _GZIPPED:
            _GZIPPED[path] = gzip.compress(path.read_bytes(), compresslevel=6, mtime=0)
        return _GZIPPED[path]


def _send(found: DeviceFile, mimetype: str) -> Response:
    """A device file, gzipped when the browser accepts it, cached for a year (its address names its version)."""
    if request.accept_encodings["gzip"] > 0:
        response = Response(_gzipped(found.path), mimetype=mimetype)
        response.headers["Content-Encoding"] = "gzip"
    else:
        response = send_file(found.path, mimetype=mimetype, conditional=True, max_age=None)
    response.headers["Vary"] = "Accept-Encoding"
    response.headers["Cache-Control"] = VERSIONED_CACHE_CONTROL
    return response


def runtime_wasm(static_folder: str) -> DeviceFile | None:
    path = (Path(static_folder) / ORT_WASM).resolve()
    if not path.is_file():
        return None
    return DeviceFile(path, hashlib.sha256(path.read_bytes()).hexdigest()[:16], path.stat().st_size)


def init_app(app: Flask) -> None:
    runtime = app.extensions["device_runtime"] = runtime_wasm(app.static_folder)
    with app.app_context():  # no runtime (static/vendor/ missing) or no ONNX twin: no on-device mode
        found = app.extensions["device_model"] = device_model(classifier()) if runtime else None
        app.extensions["device_detector"] = device_detector(face_detector()) if found else None
    app.register_blueprint(bp)
    app.context_processor(page_context)
    # compress the device files once, in the background, so that the first visitor does not wait for it
    if found is not None:
        paths = [runtime.path, found.path, *(item.path for item in (app.extensions["device_detector"] or {}).values())]
        threading.Thread(target=lambda: [_gzipped(path) for path in paths], name="gzip-device-files",
                         daemon=True).start()  # the page's on-device section (templates/_ondevice.html)


def model_file() -> DeviceFile | None:
    return current_app.extensions.get("device_model")


def detector_files() -> dict[str, DeviceFile] | None:
    return current_app.extensions.get("device_detector")


@bp.get("/device/<name>-<version>.onnx")
def model(name: str, version: str):
    """An ONNX graph the browser runs (the classifier, "model", or MTCNN's "pnet", "rnet", "onet"), at an address
    that changes with its content: cached for a year."""
    found = model_file() if name == "model" else (detector_files() or {}).get(name)
    if found is None or version != found.version:
        abort(404)
    return _send(found, "application/octet-stream")


@bp.get("/device/runtime-<version>.wasm")
def runtime(version: str):
    """ONNX Runtime Web's WebAssembly (static/vendor/...), gzipped when accepted, cached for a year."""
    found = current_app.extensions.get("device_runtime")
    if found is None or version != found.version:
        abort(404)
    return _send(found, "application/wasm")


# The page's own files, as its HTML names them (versioned static addresses): what the service worker saves first.
PAGE_FILES = re.compile(r'(?:src|href|data-[a-z-]+)="(/static/[^"?]+\?v=[0-9a-f]+)"')


@bp.get("/sw.js")
def service_worker():
    """The page's service worker (templates/sw.js), for on-device mode offline after the first visit: it saves the
    page, GET /api/model and the page's files when it installs, and the model, detector and runtime as the page
    downloads them. Its cache is named after the versions of all of them, so a change of model (or of any file)
    installs a new worker that replaces the saved copies. 404 where this model cannot run in a browser."""
    from maskclassifier.web.pages import render_page

    found, runtime_file = model_file(), current_app.extensions.get("device_runtime")
    if found is None or runtime_file is None:
        abort(404)
    page_url, config_url = url_for("pages.index"), url_for("api.model")
    page, _ = render_page()
    shell = [page_url, config_url, *dict.fromkeys(html.unescape(path) for path in PAGE_FILES.findall(page))]
    versions = [*shell, found.version, runtime_file.version,
                *(item.version for item in (detector_files() or {}).values())]
    version = hashlib.sha256("\n".join(versions).encode()).hexdigest()[:12]
    body = render_template("sw.js", version=version, shell=shell, page_url=page_url, config_url=config_url)
    response = Response(body, mimetype="text/javascript")
    response.headers["Cache-Control"] = "no-cache"  # browsers check it on every visit anyway; say so
    return response


def device_json() -> dict:
    """What GET /api/model adds: the decision rules, and where the browser finds the runtime and the model (absent
    when this model has no ONNX twin the browser could run)."""
    body = {"decision_rules": decision_rules(classifier())}
    found, detector = model_file(), detector_files()
    if detector is not None:
        body["decision_rules"]["faces"] = face_rules(current_app.config["SETTINGS"].face_margin)
    if found is not None:
        static = current_app.static_folder
        body["on_device"] = {
            "model_url": url_for("ondevice.model", name="model", version=found.version),
            "model_bytes": found.size,
            "runtime": {"name": "onnxruntime-web", "version": ORT_WEB_VERSION, "build": "wasm, SIMD, one thread",
                        "script_url": url_for("static", filename=ORT_SCRIPT),
                        "wasm_url": url_for("ondevice.runtime",
                                            version=current_app.extensions["device_runtime"].version),
                        "bytes": sum(_static_size(static, name) for name in (ORT_SCRIPT, ORT_WASM))},
            "result_url": url_for("ondevice.computed"),
            "preview_placeholder": PREVIEW_PLACEHOLDER,
        }
        if detector is not None:
            body["on_device"]["captions"] = {**captions_json(classifier().vocab), "caveats": classifier().caveats}
            body["on_device"]["detector"] = {name: url_for("ondevice.model", name=name, version=item.version)
                                             for name, item in detector.items()}
            body["on_device"]["detector_bytes"] = sum(item.size for item in detector.values())
    return body


def captions_json(vocab: list[str]) -> dict:
    """What the live camera writes by a face box (classifier/drawing.py caption_lines, colour_for), and the
    headline's words (presenters.py), as data: the browser words the frames it answers itself, and its answers
    while the server cannot be reached, with these words and colours, the server's."""
    from maskclassifier.classifier.drawing import CAPTION_LABELS
    from maskclassifier.core.categories import UNSURE_COLOUR, category
    from maskclassifier.web import presenters

    return {"labels": CAPTION_LABELS, "unsure": "unsure:", "unsure_colour": UNSURE_COLOUR,
            "short": {name: category(name).short for name in vocab},
            "colours": {name: category(name).colour for name in vocab},
            # the headline's words, for an answer the page words itself when the server cannot be reached
            "titles": {name: category(name).title for name in vocab},
            "phrases": {name: category(name).phrase for name in vocab},
            "not_sure_phrase": presenters.NOT_SURE_PHRASE, "not_sure_title": presenters.NOT_SURE_TITLE,
            "no_face_title": presenters.NO_FACE_TITLE}


def _static_size(folder: str, name: str) -> int:
    path = Path(folder) / name
    return path.stat().st_size if path.is_file() else 0


def page_context() -> dict:
    """For the page's template: the on-device section's data (None when this model cannot run in a browser)."""
    found = model_file()
    if found is None:
        return {"ondevice": None}
    return {"ondevice": {"config_url": url_for("api.model"), "script_url": url_for("static", filename=ORT_SCRIPT),
                         "model_mb": round(found.size / 1e6, 1), "worker_url": url_for("ondevice.service_worker")}}


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
    template, sentences and decisions. Takes JSON: {"mode": "off", "probabilities": [...]} (numbers, in
    /api/model's category order) for a whole photo; for mode "auto" or "on" also "size": [width, height],
    "faces": [{"box", "score", "probabilities"}, ...] (in reading order, at most MAX_FACES) and "found". Nothing
    else of the photo: the page puts its own copy of the photo and of each face in the fragment's images."""
    from maskclassifier.web.errors import reply_for
    from maskclassifier.web.pages import error_page

    try:
        return _computed()
    except Exception as error:  # noqa: BLE001 - every error as the page's error fragment, as POST /result does
        return error_page(reply_for(error), "off")


def _computed() -> Response:
    from maskclassifier.web.pages import render_page
    from maskclassifier.web.presenters import faces_view, headline_view, result_view

    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise ImageError(400, "invalid_result", "Send JSON: {\"probabilities\": [...]}.")
    served = classifier()
    mode = body.get("mode", "off")
    if mode not in MODES or (mode != "off" and detector_files() is None):
        raise ImageError(400, "invalid_result", "mode must be off, or auto or on where the server has the detector.")
    photo = _probabilities(body.get("probabilities"), served.vocab)
    size = _size(body.get("size")) if mode != "off" else (1, 1)
    scan, answers = _faces(body, size, served.vocab) if mode != "off" else (FaceScan([], 0), [])
    # The server's own analysis, with the device's numbers standing in for its detector and classifier: which
    # mode answers (whole, close-up, faces), the combined close-up answer, the notes and the cap are decided here.
    stand_in = Image.new("L", size)  # the face table's thumbnails are drawn from it; the page puts its own crops there
    analysis = analyse(_Found(scan), _Answered(served, photo, answers, stand_in), stand_in, mode,
                       current_app.config["SETTINGS"].face_margin)
    caveats = served.caveats  # the caveat, with its counts, for answers naming a category learnt mostly from drawings
    html, status = render_page(mode=mode, result=result_view(analysis.photo, caveats), preview=PREVIEW_PLACEHOLDER,
                               headline=headline_view(analysis, caveats), example=body.get("example") or None,
                               faces=faces_view(stand_in, analysis, current_app.config["SETTINGS"].face_margin,
                                                True),
                               where="device", fragment=True)
    response = Response(html, status, mimetype="text/html")
    response.headers["Cache-Control"] = "no-store"
    return response


def _size(value) -> tuple[int, int]:
    if (not isinstance(value, list) or len(value) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= DEVICE_MAX_SIDE for v in value)):
        raise ImageError(400, "invalid_result", f"size must be [width, height], each 1 to {DEVICE_MAX_SIDE}.")
    return value[0], value[1]


def _faces(body: dict, size: tuple[int, int], vocab: list[str]) -> tuple[FaceScan, list[list[float]]]:
    faces, found = body.get("faces"), body.get("found")
    if (not isinstance(faces, list) or len(faces) > MAX_FACES or not isinstance(found, int)
            or isinstance(found, bool) or not len(faces) <= found <= 100_000):
        raise ImageError(400, "invalid_result", f"faces must be a list of at most {MAX_FACES}, found a count.")
    scan, answers = [], []
    for face in faces:
        box = face.get("box") if isinstance(face, dict) else None
        if (not isinstance(box, list) or len(box) != 4 or not all(isinstance(v, int) and not isinstance(v, bool)
                                                                   for v in box)
                or not (0 <= box[0] < box[2] <= size[0] and 0 <= box[1] < box[3] <= size[1])
                or not isinstance(face.get("score"), (int, float)) or not 0 <= face["score"] <= 1):
            raise ImageError(400, "invalid_result", "each face needs a box inside the photo and a score.")
        scan.append(Face(tuple(box), float(face["score"])))
        answers.append(_probabilities(face.get("probabilities"), vocab))
    return FaceScan(scan, found), answers


class _Found:
    """A detector that finds what the device found."""

    def __init__(self, scan: FaceScan):
        self.scan = scan

    def detect(self, image, deadline=None) -> FaceScan:
        return self.scan


class _Answered:
    """A classifier that answers with the device's probabilities: `photo` for the stand-in photo itself, and for the
    faces' crops each face's, in the order faces.classify_faces asks for them (its seeded `unbiased_order`, in
    batches): the crops of a blank stand-in cannot say which face they are, and answering them in reading order
    gave one face's answer to another."""

    def __init__(self, served, photo: list[float], faces: list[list[float]], image: Image.Image):
        self.served, self.photo, self.faces, self.image = served, photo, faces, image
        self._asked = deque(unbiased_order(len(faces))[:MAX_FACES])

    def _decide(self, row: list[float]) -> Prediction:
        return decide(row, self.served.vocab, self.served.threshold)

    def predict(self, image) -> Prediction:
        return self.predict_many([image])[0]

    def predict_many(self, images) -> list[Prediction]:
        return [self._decide(self.photo if item is self.image else self.faces[self._asked.popleft()])
                for item in images]


# The fragment's photo until the page puts its own copy there (a transparent 1x1 GIF): the photo never left.
PREVIEW_PLACEHOLDER = "data:image/gif;base64,R0lGODlhAQABAAAAACH5BAEKAAEALAAAAAABAAEAAAICTAEAOw=="
