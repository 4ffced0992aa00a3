"""The JSON API (and the annotated photo as a JPEG), with its own error handler: every error is JSON."""

from __future__ import annotations

from flask import Blueprint, Flask, Response, jsonify

from maskclassifier.drawing import annotate
from maskclassifier.images import load_image
from maskclassifier.model import Prediction, synthetic_note
from maskclassifier.web.errors import json_reply, reply_for
from maskclassifier.web.inference import analyse_faces, classifier, slot_for
from maskclassifier.web.presenters import faces_json, jpeg, prediction_json
from maskclassifier.web.uploads import requested_mode, uploaded_bytes

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
        image = load_image(data)
        if mode is None:  # without the parameter the answer is the whole-photo one, as before per-face mode
            prediction = classifier().predict(image)
            return jsonify({**prediction_json(prediction), **synthetic_json([prediction])})
        analysis = analyse_faces(image, mode)
        return jsonify({**prediction_json(analysis.photo), **faces_json(analysis),
                        **synthetic_json([analysis.photo, *analysis.predictions])})


def synthetic_json(predictions: list[Prediction]) -> dict:
    """`synthetic_note` when an answer names a category learned from drawn examples only (GET /api/model lists
    them), so that no client shows such an answer without its caveat."""
    synthetic = classifier().synthetic_categories
    named = [name for name in synthetic if any(name in prediction.labels for prediction in predictions)]
    return {"synthetic_note": synthetic_note(named)} if named else {}


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


@bp.get("/api/model")
def model():
    return jsonify(classifier().describe())


@bp.get("/healthz")
def healthz():
    return jsonify({"status": "ok"})
