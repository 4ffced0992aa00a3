"""The app's model, face detector and inference slots, loaded once at start-up and handed to the views.

No HTTP here: the views parse the request and call these; these call the classifier layer.
"""

from __future__ import annotations

from flask import Flask, current_app
from PIL import Image

from contextlib import AbstractContextManager

from maskclassifier.capacity import Deadline, InferenceSlots
from maskclassifier.faces import FaceAnalysis, FaceDetector, analyse, load_detector
from maskclassifier.images import claimed_pixels
from maskclassifier.model import Classifier, load_classifier

# Photos larger than this run alone, holding every inference slot. Below it, two at once stay within the memory
# bound of one upload (300 MB): decoding, converting and classifying the faces of a 12-megapixel photo costs about
# 150 MB at most; a 50-megapixel one up to about 260 MB (tests/test_serving.py measures both kinds).
SHARED_SLOT_PIXELS = 12_000_000


def init_app(app: Flask) -> None:
    settings = app.config["SETTINGS"]
    app.extensions["maskclassifier"] = load_classifier(settings.model_path, settings.threshold,
                                                       settings.torch_threads, settings.tta, settings.onnx_precision)
    app.extensions["face_detector"] = load_detector(settings.torch_threads)  # None without its files: no per-face mode
    app.extensions["inference_slots"] = InferenceSlots(settings.inference_slots, settings.queue_timeout_s)


def classifier() -> Classifier:
    return current_app.extensions["maskclassifier"]


def face_detector() -> FaceDetector | None:
    return current_app.extensions.get("face_detector")


def inference_slots() -> InferenceSlots:
    return current_app.extensions["inference_slots"]


def slot_for(data: bytes) -> AbstractContextManager[None]:
    """The inference slot an upload must hold while it is decoded and classified (all of them for a big photo);
    Busy when none frees up in time."""
    return inference_slots().hold(exclusive=claimed_pixels(data) > SHARED_SLOT_PIXELS)


def analyse_faces(image: Image.Image, mode: str) -> FaceAnalysis:
    """Per-face mode `mode` ("auto", "on", "off") within the app's face margin and time budget."""
    settings = current_app.config["SETTINGS"]
    return analyse(face_detector(), classifier(), image, mode, settings.face_margin,
                   Deadline.after(settings.face_time_budget_s))
