"""What the page's on-device mode (issue 30) needs of the served model: the ONNX file a browser runs, and the
decision rules it applies to that file's probabilities.

The browser runs the float ONNX twin of the served model with ONNX Runtime Web; the server stays the reference.
For an `.onnx` model that is the file itself; for a fastai `.pkl` it is the twin its sidecar records, used only
when the sidecar says it was exported from this very `.pkl` and the file's digest matches (else there is no
on-device mode). An int8 server (ONNX_PRECISION=int8) still gives browsers the float file: the int8 answers near the
threshold are the float model's anyway (onnx_backend.FloatRecheck).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from maskclassifier.classifier.classifier import MAX_BATCH, MAX_VIEWS, VIEW_MIN_PROBABILITY, VIEWS_ASPECT, Classifier
from maskclassifier.core.resize import item_resize_from
from maskclassifier.core.sidecar import sha256_file


@dataclass(frozen=True)
class DeviceFile:
    """A file the browser downloads: its path and the first 16 hex digits of its sha256 (its URL's version)."""

    path: Path
    version: str
    size: int


def device_model(classifier: Classifier) -> DeviceFile | None:
    """The float ONNX file that gives this classifier's probabilities in a browser; None when there is none."""
    if classifier.path.suffix == ".onnx":
        path, digest = classifier.path, classifier.sha256
    else:
        section = classifier.sidecar.onnx
        if not isinstance(section, dict) or not isinstance(section.get("file"), str):
            return None
        if (section.get("exported_from") or {}).get("sha256") != classifier.sha256:
            return None  # the twin of another .pkl (retrained since the export)
        path = classifier.path.with_name(section["file"])
        if not path.is_file():
            return None
        digest = sha256_file(path)
        if digest != section.get("sha256"):
            return None
    try:
        item_resize_from(classifier.sidecar.preprocessing)
    except ValueError:
        return None  # the browser repeats the item Resize as the sidecar records it: nothing recorded, no device
    return DeviceFile(path.resolve(), digest[:16], path.stat().st_size)


def device_detector(detector) -> dict[str, DeviceFile] | None:
    """MTCNN's three ONNX networks for the browser, when the server's detector is the ONNX one (the same files);
    None otherwise (no detector, or facenet-pytorch's)."""
    from maskclassifier.classifier.mtcnn_onnx import MODEL_DIR, OnnxMtcnnDetector

    if not isinstance(detector, OnnxMtcnnDetector):
        return None
    files = {}
    for name in ("pnet", "rnet", "onet"):
        path = (MODEL_DIR / f"{name}.onnx").resolve()
        if not path.is_file():
            return None
        files[name] = DeviceFile(path, sha256_file(path)[:16], path.stat().st_size)
    return files


def face_rules(margin: float) -> dict:
    """Per-face mode's rules for the browser's port of the detector (static/ondevice-faces.js): what
    mtcnn_onnx.py and faces.py do, by their own constants."""
    from maskclassifier.classifier import faces, mtcnn_onnx
    from maskclassifier.core.facebox import MAX_FACES

    return {"face_margin": margin, "max_faces": MAX_FACES, "detection_max_side": mtcnn_onnx.DETECTION_MAX_SIDE,
            "min_face_size": mtcnn_onnx.MIN_FACE_SIZE, "min_score": mtcnn_onnx.MIN_SCORE,
            "thresholds": list(mtcnn_onnx.THRESHOLDS), "pyramid_factor": mtcnn_onnx.PYRAMID_FACTOR,
            "max_candidates_per_scale": mtcnn_onnx.MAX_CANDIDATES_PER_SCALE, "batch": mtcnn_onnx.BATCH,
            "low_contrast_range": faces.LOW_CONTRAST_RANGE, "retry_max_side": faces.RETRY_MAX_SIDE,
            "frame_detection_side": faces.FRAME_DETECTION_SIDE}


def decision_rules(classifier: Classifier) -> dict:
    """Everything that turns the ONNX graph's probabilities into the server's answer, for GET /api/model: the
    browser reads these rather than copies of the constants. `item_resize` is what the graph's input is made
    from: fastai's centred crop to `size`'s aspect ratio, resized with Pillow's `resample` filter
    (core/resize.py)."""
    preprocessing = classifier.sidecar.preprocessing or {}
    rules = {
        "threshold": classifier.threshold,
        "label_rule": "above",  # a category is shown when its probability is strictly above the threshold
        "tta": classifier.tta,  # "flip": the mean of the item-resized image's and its mirror image's probabilities
        "views_aspect": VIEWS_ASPECT,
        "max_views": MAX_VIEWS,
        "view_min_probability": VIEW_MIN_PROBABILITY,
        "max_batch": MAX_BATCH,
    }
    try:
        resize = item_resize_from(preprocessing)
        rules["item_resize"] = {"width": resize.width, "height": resize.height, "crop": "center",
                                "resample": resize.resample.name.lower()}
    except ValueError:
        pass
    return rules
