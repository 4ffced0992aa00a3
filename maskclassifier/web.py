"""Pages and JSON API: parse the HTTP request, hand images to the classifier, present the answer."""

from __future__ import annotations

import base64
import io
import time

from flask import Blueprint, Flask, Response, current_app, jsonify, make_response, render_template, request
from PIL import Image
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from maskclassifier.capacity import Busy, Deadline, InferenceSlots
from maskclassifier.facebox import Face, crop_box
from maskclassifier.faces import (MODES, FaceAnalysis, FaceDetector, FacesUnavailable, TooManyFaces, analyse, annotate,
                                  colour_for)
from maskclassifier.images import ACCEPT_ATTRIBUTE, ImageError, load_image
from maskclassifier.model import Classifier, Prediction

bp = Blueprint("web", __name__)

CATEGORY_INFO = {
    "-": ("Not a face or mask photo", "The model's 'intended noise' class: objects or scenes without a face."),
    "Cloth": ("Cloth mask", "A fabric face covering, often patterned or home-made."),
    "Gas": ("Gas mask / respirator with filters", "A half- or full-face respirator with filter cartridges."),
    "KN95": ("KN95 / N95 respirator", "A moulded or folded high-filtration respirator (also FFP2)."),
    "Medical": ("Surgical / medical mask", "A pleated disposable mask, usually blue or white."),
    "No_mask!": ("No mask on the face", "A bare face: nothing covers the nose and mouth."),
    "Shield": ("Face shield", "A clear plastic visor in front of the face."),
}
PREVIEW_SIZE = 800
# The page's script shrinks larger photos to this long side before sending them (a 12-megapixel phone photo goes
# from several MB to a few hundred KB). It keeps more than the server uses: faces are found at 1280 px, the
# annotated photo is 1600 px, and a face a tenth of the photo wide is still about 200 px, near the model's input.
UPLOAD_MAX_SIDE = 2048
FACE_THUMBNAIL_SIZE = 96
MODE_CHOICES = [  # the form's mode control: value, label, hint
    ("auto", "Automatic", "each face on its own when there are two or more; one face is also seen close up"),
    ("off", "Whole photo", "one answer for the whole picture"),
    ("on", "Every face", "find each face and classify it on its own"),
]

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


def classifier() -> Classifier:
    return current_app.extensions["maskclassifier"]


def face_detector() -> FaceDetector | None:
    return current_app.extensions.get("face_detector")


def inference_slots() -> InferenceSlots:
    return current_app.extensions["inference_slots"]


BODY_CHUNK = 64 * 1024


def buffer_body() -> None:
    """Read the whole request body into memory before anything parses it, within the upload deadline.

    Under gunicorn the connection's socket (`maskclassifier.gunicorn_worker.DeadlineSocket`) makes every read give
    up once the deadline passes, so a client that trickles or stalls holds one thread for at most UPLOAD_TIMEOUT
    seconds and then gets a 408, and the inference slot is only ever taken by a request whose photo has arrived.
    Raises ImageError (408 upload_timeout, 400 upload_incomplete) or RequestEntityTooLarge.
    """
    if request.method not in ("POST", "PUT", "PATCH"):
        return
    environ = request.environ
    length, limit = request.content_length, current_app.config["MAX_CONTENT_LENGTH"]
    if length is not None and length > limit:
        return  # Werkzeug answers 413 without reading it
    sock = environ.get("gunicorn.socket")
    set_deadline = getattr(sock, "set_read_deadline", None)
    if set_deadline is not None:
        set_deadline(time.monotonic() + current_app.config["SETTINGS"].upload_timeout_s)
    wanted = limit + 1 if length is None else length  # chunked: one byte over the limit tells it is too large
    chunks, received = [], 0
    try:
        while received < wanted:
            chunk = environ["wsgi.input"].read(min(BODY_CHUNK, wanted - received))
            if not chunk:
                break
            chunks.append(chunk)
            received += len(chunk)
        complete = received >= wanted or length is None
    except OSError:  # gunicorn's NoMoreData: a chunked body cut short
        complete = False
    if complete and set_deadline is not None:
        set_deadline(None)  # else it stays passed, so gunicorn drains nothing more and closes the connection
    if not complete:
        if getattr(sock, "read_timed_out", False):
            raise _upload_timeout()
        raise ImageError(400, "upload_incomplete",
                         "The upload stopped before the whole photo arrived. Please try again.")
    if received > limit:
        raise RequestEntityTooLarge()
    body = b"".join(chunks)
    environ["wsgi.input"] = io.BytesIO(body)
    environ["CONTENT_LENGTH"] = str(len(body))
    environ.pop("HTTP_TRANSFER_ENCODING", None)
    environ["wsgi.input_terminated"] = False


def _upload_timeout() -> ImageError:
    seconds = current_app.config["SETTINGS"].upload_timeout_s
    return ImageError(408, "upload_timeout",
                      f"The photo did not arrive within {seconds:g} seconds: the connection is too slow or stalled. "
                      "Please try again on a better connection, or with a smaller photo.")


def friendly_name(category: str) -> str:
    return CATEGORY_INFO.get(category, (category, ""))[0]


def prediction_message(prediction: Prediction) -> str:
    """The one sentence a person reads first."""
    if not prediction.labels:
        return (f"The model is not confident enough about any category (none reached {prediction.threshold:.0%}). "
                "Try a clearer, front-facing photo of a face.")
    if prediction.labels[0] == "-":
        return "This does not look like a face or mask photo."
    return "Recognised: " + ", ".join(friendly_name(label) for label in prediction.labels) + "."


def prediction_json(prediction: Prediction) -> dict:
    return {
        "labels": prediction.labels,
        "probabilities": prediction.probabilities,
        "threshold": prediction.threshold,
        "message": prediction_message(prediction),
    }


def _uploaded_bytes() -> bytes:
    """The one file in the form field `file`; empty parts (an unused second file input) are ignored."""
    parts = request.files.getlist("file")
    contents = [part.read() for part in parts]
    non_empty = [data for data in contents if data]
    if len(non_empty) > 1:
        raise ImageError(400, "too_many_files", "Please upload one image at a time.")
    if non_empty:
        data = non_empty[0]
    elif any(part.filename for part in parts):
        raise ImageError(400, "empty_file", "The file is empty. Please choose a photo to upload.")
    else:
        raise _no_file_error()
    limit = current_app.config["SETTINGS"].max_upload_bytes
    if len(data) > limit:
        raise _too_large_error()
    return data


def _no_file_error() -> ImageError:
    if request.mimetype == "multipart/form-data" and request.content_length and not request.form and not request.files:
        # Werkzeug drops a whole multipart body it cannot parse (bad boundary, cut short, non-UTF-8 headers).
        return ImageError(400, "malformed_upload",
                          "The upload could not be read: the request is not a well-formed multipart form. Send the "
                          "photo as a file in the field 'file' (as a browser form or curl -F file=@photo.jpg does).")
    others = [name for name in request.files if name and name != "file"]
    hint = (" (the field 'file' held text, not a file)" if "file" in request.form
            else f" (the request had a file in the field {others[0]!r} instead)" if others else "")
    return ImageError(400, "no_file", f"No image was sent{hint}. Choose a photo and upload it in the field 'file'.")


def _request_too_large() -> ImageError:
    """Werkzeug's 413: a body over the limit, or a smaller one with too many form parts or too long a text field."""
    length = request.content_length
    if length is not None and length <= current_app.config["MAX_CONTENT_LENGTH"]:
        return ImageError(413, "form_too_large",
                          "The form has too many fields or too long a field. Send one photo in the field 'file'.")
    return _too_large_error()


def _too_large_error() -> ImageError:
    limit_mb = current_app.config["SETTINGS"].max_upload_mb
    return ImageError(413, "file_too_large", f"The file is too large. The limit is {limit_mb:g} MB per photo.")


def _requested_mode() -> str | None:
    """The `faces` query parameter, else the form field: auto, on or off; None when neither was sent."""
    raw = request.args.get("faces")
    if raw is None:
        raw = request.form.get("faces")
    if raw is None:
        return None
    mode = raw.strip().lower()
    if mode not in MODES:
        raise ImageError(400, "invalid_faces_mode",
                         f"faces must be auto, on or off (got {raw[:20]!r}): auto classifies each face when there "
                         "are two or more, on always does, off classifies the whole photo.")
    return mode


def _jpeg(image: Image.Image) -> bytes:
    """JPEG without chroma subsampling, which would smear the thin coloured boxes and captions."""
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=85, subsampling=0)
    return buffer.getvalue()


def _data_uri(image: Image.Image) -> str:
    """An image inline in the page: nothing is stored on the server."""
    return "data:image/jpeg;base64," + base64.b64encode(_jpeg(image)).decode("ascii")


def _preview_data_uri(image: Image.Image) -> str:
    """The (EXIF-upright) photo as an inline JPEG for the result page."""
    scale = min(1.0, PREVIEW_SIZE / max(image.size))
    if scale == 1.0:
        return _data_uri(image)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return _data_uri(image.resize(size, Image.Resampling.BICUBIC, reducing_gap=2.0))  # no full-size copy


def _analyse_faces(image: Image.Image, mode: str) -> FaceAnalysis:
    settings = current_app.config["SETTINGS"]
    return analyse(face_detector(), classifier(), image, mode, settings.face_margin,
                   Deadline.after(settings.face_time_budget_s))


def _result_view(prediction: Prediction) -> dict:
    kind = "not_confident" if not prediction.labels else "noise" if prediction.labels[0] == "-" else "ok"
    return {
        "kind": kind,
        "message": prediction_message(prediction),
        "threshold": prediction.threshold,
        "matches": [
            {"name": label, "title": friendly_name(label), "description": CATEGORY_INFO.get(label, ("", ""))[1],
             "probability": prediction.probabilities[label]}
            for label in prediction.labels
        ],
        "bars": [
            {"name": name, "title": friendly_name(name), "probability": p, "passed": name in prediction.labels}
            for name, p in sorted(prediction.probabilities.items(), key=lambda item: -item[1])
        ],
    }


def _face_row(number: int, image: Image.Image, face: Face, prediction: Prediction) -> dict:
    """One row of the page's face table; the thumbnail is the crop the classifier saw."""
    thumbnail = image.crop(crop_box(face.box, image.size, current_app.config["SETTINGS"].face_margin))
    thumbnail.thumbnail((FACE_THUMBNAIL_SIZE, FACE_THUMBNAIL_SIZE))
    top = max(prediction.probabilities, key=prediction.probabilities.get)
    return {
        "number": number,
        "colour": colour_for(prediction),
        "thumbnail": _data_uri(thumbnail),
        "matches": [{"title": friendly_name(label), "probability": prediction.probabilities[label]}
                    for label in prediction.labels],
        "top": {"title": friendly_name(top), "probability": prediction.probabilities[top]},
        "score": face.score,
        "box": face.box,
    }


def _faces_view(image: Image.Image, analysis: FaceAnalysis) -> dict:
    view = {"mode": analysis.mode,
            # Without a detector the page offers no mode control, so its fallback note would only confuse.
            "note": analysis.note if face_detector() is not None else None}
    if analysis.mode == "faces":
        view["annotated"] = _data_uri(annotate(image, analysis.faces, analysis.predictions))
        view["rows"] = [_face_row(number, image, face, prediction) for number, (face, prediction)
                        in enumerate(zip(analysis.faces, analysis.predictions), start=1)]
    return view


def _faces_json(analysis: FaceAnalysis) -> dict:
    body: dict = {"mode": analysis.mode, "faces": [
        {"box": list(face.box), "score": face.score, "labels": prediction.labels,
         "probabilities": prediction.probabilities}
        for face, prediction in zip(analysis.faces, analysis.predictions)
    ]}
    if analysis.found is not None:
        body["faces_found"] = analysis.found
    if analysis.note:
        body["note"] = analysis.note
    return body


def _render_page(status: int = 200, mode: str = "auto", **context) -> tuple[str, int]:
    return render_template("index.html", accept=ACCEPT_ATTRIBUTE, categories=CATEGORY_INFO, mode=mode,
                           mode_choices=MODE_CHOICES, faces_available=face_detector() is not None,
                           upload_max_side=UPLOAD_MAX_SIDE,
                           **context), status


@bp.get("/")
def index():
    return _render_page()


@bp.post("/")
def classify_form():
    mode = "auto"
    try:
        mode = _requested_mode() or mode
        data = _uploaded_bytes()
        with inference_slots().hold():  # decoding holds the photo's pixels: one heavy request at a time
            image = load_image(data)
            try:
                analysis = _analyse_faces(image, mode)
            except TooManyFaces as error:
                return _render_page(422, mode=mode, error=error.message, result=_result_view(error.photo),
                                    preview=_preview_data_uri(image))
            return _render_page(mode=mode, result=_result_view(analysis.photo), preview=_preview_data_uri(image),
                                faces=_faces_view(image, analysis))
    except ImageError as error:
        return _render_page(error.status, mode=mode, error=error.message)


@bp.post("/api/predict")
def api_predict():
    """The whole-photo answer; with ?faces=auto|on (or the form field `faces`) also one answer per face.

    With faces=auto and one face found, the photo's answer combines the whole photo and the face's close-up.
    """
    mode = _requested_mode()
    data = _uploaded_bytes()
    with inference_slots().hold():
        image = load_image(data)
        if mode is None:  # without the parameter the answer is the whole-photo one, as before per-face mode
            return jsonify(prediction_json(classifier().predict(image)))
        analysis = _analyse_faces(image, mode)
        return jsonify({**prediction_json(analysis.photo), **_faces_json(analysis)})


@bp.post("/api/annotate")
def api_annotate():
    """The photo as a JPEG with every face boxed and labelled (no boxes when no face is found)."""
    data = _uploaded_bytes()
    with inference_slots().hold():
        image = load_image(data)
        analysis = _analyse_faces(image, "on")
        response = Response(_jpeg(annotate(image, analysis.faces, analysis.predictions)), mimetype="image/jpeg")
    response.headers["X-Faces-Found"] = str(analysis.found or 0)
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/api/model")
def api_model():
    return jsonify(classifier().describe())


@bp.get("/healthz")
def healthz():
    return jsonify({"status": "ok"})


def _wants_json() -> bool:
    return request.path.startswith("/api/") or request.path == "/healthz"


def _error_response(status: int, code: str, message: str, **extra):
    if _wants_json():
        return jsonify({"error": code, "message": message, **extra}), status
    return _render_page(status, error=message, error_title=ERROR_TITLES.get(status))


ERROR_TITLES = {  # the page's heading over the message, where "We could not classify that file" would mislead
    408: "The upload was too slow",
    503: "The server is busy, try again in a few seconds",
}


def _busy(error: Busy):
    response = make_response(_error_response(
        503, "busy", "The server is busy with other people's photos right now. "
                     f"Please try again in {error.retry_after_s} seconds."))
    response.headers["Retry-After"] = str(error.retry_after_s)
    return response


def _too_many_faces(error: TooManyFaces):
    """Only the API gets here: the page catches TooManyFaces itself, to show the photo with the answer."""
    return _error_response(422, "too_many_faces", error.message, photo=prediction_json(error.photo))


def _http_error(error: HTTPException):
    if error.code == 413:
        too_large = _request_too_large()
        return _error_response(413, too_large.code, too_large.message)
    code = (error.name or "error").lower().replace(" ", "_")
    messages = {
        400: "The request could not be understood. Please upload the photo again using the form.",
        404: "There is no page here. Go back to the start page to upload a photo.",
        405: "This address does not accept that kind of request.",
    }
    message = messages.get(error.code, error.description or error.name)
    response = make_response(_error_response(error.code or 500, code, message))
    # Keep the headers Werkzeug's own error page would carry, such as the Allow list a 405 must have.
    response.headers.extend([(name, value) for name, value in error.get_headers() if name.lower() != "content-type"])
    return response


def _unexpected_error(error: Exception):
    current_app.logger.exception("unexpected error while handling %s %s", request.method, request.path)
    return _error_response(500, "internal_error", "Something went wrong on our side. Please try again.")


def register_error_handlers(app: Flask) -> None:
    app.register_error_handler(ImageError, lambda error: _error_response(error.status, error.code, error.message))
    app.register_error_handler(FacesUnavailable, lambda error: _error_response(501, "faces_unavailable", str(error)))
    app.register_error_handler(Busy, _busy)
    app.register_error_handler(TooManyFaces, _too_many_faces)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _unexpected_error)


def add_security_headers(response: Response) -> Response:
    response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    return response
