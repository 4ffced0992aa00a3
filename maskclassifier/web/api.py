"""The JSON API (and the annotated photo as a JPEG), with its own error handler: every error is JSON."""

from __future__ import annotations

import time

from flask import Blueprint, Flask, Response, current_app, jsonify, request
from PIL import Image

from maskclassifier.classifier.drawing import annotate, caption_lines, colour_for, with_footnote
from maskclassifier.classifier.explain import OVERLAY_MAX_SIDE, Explanation, overlay, png
from maskclassifier.core.errors import ImageError
from maskclassifier.core.images import claimed_pixels, load_image
from maskclassifier.web.errors import json_reply, reply_for
from maskclassifier.web.inference import analyse_faces, classifier, explain_faces, explain_image, frame_faces, slot_for
from maskclassifier.web.ondevice import device_json
from maskclassifier.web.presenters import (
    drawn_json,
    drawn_note,
    explanation_json,
    faces_json,
    jpeg,
    prediction_json,
    without_metadata,
)
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
            return jsonify({**prediction_json(prediction), **drawn_json([prediction], classifier().caveats)})
        analysis = analyse_faces(image, mode)
        return jsonify({**prediction_json(analysis.photo), **faces_json(analysis),
                        **drawn_json([analysis.photo, *analysis.predictions], classifier().caveats)})


@bp.post("/api/annotate")
def annotated():
    """The photo as a JPEG with every face boxed and labelled (no boxes when no face is found). When a face's
    label names a category learnt mostly from drawn examples, its caveat is written under the photo (the JPEG is
    what gets shared) and sent in the header X-Synthetic-Note."""
    data = uploaded_bytes()
    with slot_for(data):
        image = load_image(data)
        analysis = analyse_faces(image, "on")
        note = drawn_note(analysis.predictions, classifier().caveats)
        picture = annotate(image, analysis.faces, analysis.predictions)
        response = Response(jpeg(with_footnote(picture, note) if note else picture), mimetype="image/jpeg")
    if note:
        response.headers["X-Synthetic-Note"] = note
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
        picture = overlay_png(image, explanation)
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
                                                 overlay_png(item.crop, item.explanation, FACE_OVERLAY_MAX_SIDE))}
                             for item in faces]
    return jsonify(body)


def overlay_png(image: Image.Image, explanation: Explanation, max_side: int = OVERLAY_MAX_SIDE) -> bytes:
    """The heat-map overlay as a PNG without the upload's metadata (the PNG encoder writes an ICC profile it finds)."""
    return png(without_metadata(overlay(image, explanation, max_side)))


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
        **drawn_json([prediction for _, prediction in found], classifier().caveats),
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
    """What is served; with the memory budget the worker runs under when gunicorn.conf.py set one (BENCHMARKS.md,
    "Issue 27", has what a worker was measured to need)."""
    budget = current_app.config["SETTINGS"].worker_memory_mb
    return jsonify({**classifier().describe(), **device_json(),
                    **({"worker_memory_budget_mb": budget} if budget is not None else {})})


@bp.get("/healthz")
def healthz():
    return jsonify({"status": "ok"})
