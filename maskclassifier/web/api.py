"""The JSON API (and the annotated photo as a JPEG), with its own error handler: every error is JSON."""

from __future__ import annotations

import time

from flask import Blueprint, Flask, Response, jsonify, request

from maskclassifier.classifier.drawing import annotate, caption_lines, colour_for
from maskclassifier.core.errors import ImageError
from maskclassifier.classifier.explain import overlay, png
from maskclassifier.core.images import claimed_pixels, load_image
from maskclassifier.classifier.classifier import Prediction
from maskclassifier.web.errors import json_reply, reply_for
from maskclassifier.web.inference import analyse_faces, classifier, explain_faces, explain_image, frame_faces, slot_for
from maskclassifier.web.ondevice import device_json
from maskclassifier.web.presenters import drawn_note, explanation_json, faces_json, jpeg, prediction_json
from maskclassifier.web.uploads import requested_mode, uploaded_bytes

# The live camera sends frames of about 640x480; a frame of more pixels than 1280x960 is refused before it is
# decoded, so that the light frame endpoint stays light.
FRAME_MAX_PIXELS = 1280 * 960
FACE_OVERLAY_MAX_SIDE = 320  # each face's overlay in per-face mode: a close-up, not a second photo

bp = Blueprint("api", __name__)


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)


@bp.errorhandler(Exception)
def api_error(error: Exception) -> Response:
    return json_reply(reply_for(error))


@bp.post("/api/predict")
def predict():
    """The whole-photo answer; with ?faces=auto|on (or the form field `faces`) also one answer per face.

    With faces=auto and one face found, the photo's answer combines the whole photo and the face's close-up.
    """
    mode = requested_mode()
    data = uploaded_bytes()
    with slot_for(data):
        image = classifier().decode(data, whole_photo=mode in (None, "off"))
        if mode is None:  # without the parameter the answer is the whole-photo one, as before per-face mode
            prediction = classifier().predict(image)
            return jsonify({**prediction_json(prediction), **synthetic_json([prediction])})
        analysis = analyse_faces(image, mode)
        return jsonify({**prediction_json(analysis.photo), **faces_json(analysis),
                        **synthetic_json([analysis.photo, *analysis.predictions])})


def synthetic_json(predictions: list[Prediction]) -> dict:
    """`synthetic_note` when an answer names a category learned from drawn examples only (GET /api/model lists
    them), so that no client shows such an answer without its caveat."""
    note = drawn_note(predictions, classifier().synthetic_categories)
    return {"synthetic_note": note} if note else {}


@bp.post("/api/annotate")
def annotated():
    """The photo as a JPEG with every face boxed and labelled (no boxes when no face is found)."""
    data = uploaded_bytes()
    with slot_for(data):
        image = load_image(data)
        analysis = analyse_faces(image, "on")
        response = Response(jpeg(annotate(image, analysis.faces, analysis.predictions)), mimetype="image/jpeg")
    response.headers["X-Faces-Found"] = str(analysis.found or 0)
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.post("/api/explain")
def explained():
    """The "Why?" heat-map of the photo's most probable category (or `category`), as JSON with the overlay as a
    PNG data URL, or with ?format=png the overlay alone (image/png). With faces=on|auto also one heat-map per
    face crop (JSON only)."""
    wanted = requested_category()
    as_png = requested_format() == "png"
    mode = requested_mode()
    data = uploaded_bytes()
    with slot_for(data):
        image = load_image(data)
        explanation = explain_image(image, wanted)
        picture = png(overlay(image, explanation))
        if as_png:
            response = Response(picture, mimetype="image/png")
            response.headers["X-Category"] = explanation.category
            response.headers["X-Probability"] = f"{explanation.probability:.4f}"
            response.headers["Cache-Control"] = "no-store"
            return response
        body = explanation_json(explanation, picture)
        if mode in ("on", "auto"):
            faces, found = explain_faces(image, wanted)
            body["faces_found"] = found
            body["faces"] = [{"box": list(item.face.box), "crop": list(item.crop_box), "score": item.face.score,
                              **explanation_json(item.explanation,
                                                 png(overlay(item.crop, item.explanation, FACE_OVERLAY_MAX_SIDE)))}
                             for item in faces]
    return jsonify(body)


@bp.post("/api/frame")
def frame():
    """One frame of the page's live camera: each face's box, answer, caption and colour (no whole-photo answer, no
    stored frame). Frames have at most FRAME_MAX_PIXELS pixels (400 frame_too_large)."""
    data = uploaded_bytes()
    if claimed_pixels(data) > FRAME_MAX_PIXELS:
        raise ImageError(400, "frame_too_large", "Live camera frames must be at most 1280x960 pixels; send a "
                                                 "smaller frame (the page sends 640 px).")
    started = time.perf_counter()
    with slot_for(data):
        image = load_image(data)
        found = frame_faces(image)
    return jsonify({
        "width": image.width, "height": image.height,
        "faces": [{"box": list(face.box), "score": face.score, "labels": prediction.labels,
                   "caption": " ".join(caption_lines(number, prediction)), "colour": colour_for(prediction)}
                  for number, (face, prediction) in enumerate(found, start=1)],
        "server_ms": round((time.perf_counter() - started) * 1000, 1),
    })


def requested_category() -> str | None:
    """The `category` query parameter or form field (a name of the model's vocab), None when absent or empty."""
    value = request.values.get("category", "").strip()
    return value or None


def requested_format() -> str:
    value = request.args.get("format", "json").strip().lower()
    if value not in ("json", "png"):
        raise ImageError(400, "invalid_format", f"format must be json or png (got {value[:20]!r}).")
    return value


@bp.get("/api/model")
def model():
    return jsonify({**classifier().describe(), **device_json()})


@bp.get("/healthz")
def healthz():
    return jsonify({"status": "ok"})
