"""The app's model, face detector and inference slots, loaded once at start-up and handed to the views.

No HTTP here: the views parse the request and call these; these call the classifier layer.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass

from flask import Flask, current_app, request
from PIL import Image

from maskclassifier.classifier.classifier import Classifier, Prediction, load_classifier
from maskclassifier.classifier.explain import Explanation, explain
from maskclassifier.classifier.faces import (
    FaceAnalysis,
    FaceDetector,
    FacesUnavailable,
    analyse,
    analyse_frame,
    find_faces,
    load_detector,
)
from maskclassifier.classifier.heatmap import ExplainTooSlow
from maskclassifier.core import capacity
from maskclassifier.core.capacity import Deadline, InferenceSlots, OutOfTime, trusted_proxies
from maskclassifier.core.errors import ConfigError
from maskclassifier.core.facebox import Face, crop_box
from maskclassifier.core.images import claimed_pixels
from maskclassifier.web.memory import release_after_response

# Photos larger than this run alone, holding every inference slot. Below it, two at once stay within the memory
# bound of one upload (300 MB): decoding, converting and classifying the faces of a 12-megapixel photo costs about
# 150 MB at most; a 50-megapixel one up to about 260 MB (tests/test_serving.py measures both kinds).
SHARED_SLOT_PIXELS = 12_000_000
MAX_EXPLAINED_FACES = 8  # faces explained per photo in per-face mode (0.1 s each with Grad-CAM), the clearest


def init_app(app: Flask) -> None:
    settings = app.config["SETTINGS"]
    app.extensions["maskclassifier"] = load_classifier(settings.model_path, settings.threshold,
                                                       settings.torch_threads, settings.tta, settings.onnx_precision,
                                                       settings.jpeg_decode)
    app.extensions["face_detector"] = load_detector(settings.torch_threads)  # None without its files: no per-face mode
    app.extensions["inference_slots"] = InferenceSlots(settings.inference_slots, settings.queue_timeout_s)
    try:  # the same peers gunicorn.conf.py gives gunicorn as forwarded_allow_ips (one rule, in capacity)
        app.extensions["trusted_proxies"] = trusted_proxies(os.environ)
    except ValueError as error:
        raise ConfigError(str(error)) from None


def classifier() -> Classifier:
    return current_app.extensions["maskclassifier"]


def face_detector() -> FaceDetector | None:
    return current_app.extensions.get("face_detector")


def inference_slots() -> InferenceSlots:
    return current_app.extensions["inference_slots"]


def client_key(environ: Mapping[str, object]) -> str:
    """Whose turn a request is in the inference slots: its peer, or the client behind a trusted proxy
    (capacity.client_key)."""
    return capacity.client_key(str(environ.get("REMOTE_ADDR") or ""), environ.get("HTTP_X_FORWARDED_FOR"),
                               current_app.extensions["trusted_proxies"])


def slot_for(data: bytes) -> AbstractContextManager[None]:
    """The inference slot an upload must hold while it is decoded and classified (all of them for a big photo), in
    its client's turn; Busy when none frees up in time. After a big photo's response the memory it freed goes back to
    the kernel, after other responses once enough has piled up (`memory.release_after_response`)."""
    exclusive = claimed_pixels(data) > SHARED_SLOT_PIXELS
    release_after_response(always=exclusive)
    return inference_slots().hold(exclusive=exclusive, client=client_key(request.environ))


def analyse_faces(image: Image.Image, mode: str) -> FaceAnalysis:
    """Per-face mode `mode` ("auto", "on", "off") within the app's face margin and time budget."""
    settings = current_app.config["SETTINGS"]
    return analyse(face_detector(), classifier(), image, mode, settings.face_margin,
                   Deadline.after(settings.face_time_budget_s))


def explain_image(image: Image.Image, category: str | None, deadline: Deadline | None = None) -> Explanation:
    """The heat-map of `category` (default: the most probable) within `deadline`, by default the app's face time
    budget (occlusion on the ONNX backend runs many forward passes)."""
    budget = current_app.config["SETTINGS"].face_time_budget_s
    return explain(classifier(), image, category, deadline or Deadline.after(budget))


def explain_faces(image: Image.Image, category: str | None) -> tuple[list[FaceExplanation], int]:
    """Each face's crop (as per-face mode classifies it) explained, at most MAX_EXPLAINED_FACES, the clearest
    first; and how many faces were found. FacesUnavailable without a detector; ExplainTooSlow when the faces
    outlast the face time budget."""
    settings = current_app.config["SETTINGS"]
    detector = face_detector()
    if detector is None:
        raise FacesUnavailable()
    deadline = Deadline.after(settings.face_time_budget_s)
    try:
        scan = find_faces(detector, image, deadline)  # the faces the page shows, dark photos included
    except OutOfTime as exc:
        raise ExplainTooSlow(exc.budget_s) from None
    faces = sorted(scan.faces, key=lambda face: -face.score)[:MAX_EXPLAINED_FACES]
    faces = [face for face in scan.faces if face in faces]  # back in reading order
    explained = []
    for face in faces:
        box = crop_box(face.box, image.size, settings.face_margin)
        crop = image.crop(box)
        explained.append(FaceExplanation(face, box, crop, explain_image(crop, category, deadline)))
    return explained, scan.found


@dataclass(frozen=True)
class FaceExplanation:
    face: Face
    crop_box: tuple[int, int, int, int]  # the crop the classifier sees, in pixels of the photo
    crop: Image.Image
    explanation: Explanation  # its box is in pixels of the crop


def frame_faces(image: Image.Image) -> list[tuple[Face, Prediction]]:
    """A live camera frame: each face found and its crop's answer (`faces.analyse_frame`). FacesUnavailable
    without a detector; an empty answer when the face time budget runs out (the next frame comes soon)."""
    settings = current_app.config["SETTINGS"]
    detector = face_detector()
    if detector is None:
        raise FacesUnavailable()
    try:
        return analyse_frame(detector, classifier(), image, settings.face_margin,
                             Deadline.after(settings.face_time_budget_s))
    except OutOfTime:
        return []
