"""Per-face mode: find every face in a photo and classify each crop (drawing the answers is `drawing`'s job).

The detector is MTCNN. The app runs its torch-free form (`maskclassifier.classifier.mtcnn_onnx`: facenet-pytorch's three
networks exported to ONNX in models/mtcnn/, the rest in NumPy), in the full and the slim install alike; it finds
the same faces as facenet-pytorch's own (`maskclassifier.classifier.mtcnn`, torch), and faster (BENCHMARKS.md). Both are
imported only by `load_detector`. Without a detector (`load_detector` returns None: the ONNX files missing and no
torch) `analyse` answers per-face requests with `FacesUnavailable`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Protocol

from PIL import Image, ImageOps

from maskclassifier.classifier.classifier import MAX_BATCH, Classifier, Prediction, combine
from maskclassifier.core import facebox
from maskclassifier.core.capacity import Deadline, OutOfTime
from maskclassifier.core.errors import MaskClassifierError
from maskclassifier.core.facebox import Face, FaceScan, face_crops, scaled_box, unbiased_order
from maskclassifier.core.images import shrunk

logger = logging.getLogger(__name__)

MODES = ("auto", "on", "off")  # automatic (per face when 2+ faces), every face, whole photo
# Live camera frames are searched for faces at this long side: at 640 px MTCNN took 263 ms a frame on the busy
# 2-core machine, at 320 px 120 ms, and it still found the face in every frame of benchmarks/live.py's video. The
# smallest face found is then about 40 px in a 640 px frame (MTCNN's 20 px at half scale): a face at arm's length
# from a webcam is 150 px or more.
FRAME_DETECTION_SIDE = 320


class TooManyFaces(MaskClassifierError, RuntimeError):
    """Finding and classifying the faces ran past the time budget; `photo` is the whole photo's answer, also in
    the JSON answer's `photo` (the web layer presents it)."""

    status = 422
    code = "too_many_faces"

    def __init__(self, photo: Prediction, budget_s: float):
        super().__init__(f"This photo has too many faces (or face-like patterns) to check each one within "
                         f"{budget_s:g} seconds. The answer for the whole photo is given instead; for one per face, "
                         "crop the photo to fewer people.", extra={"photo": photo})
        self.photo = photo


class FacesUnavailable(MaskClassifierError, RuntimeError):
    """Per-face mode was asked for, but this install has no face detector (no torch / facenet-pytorch)."""

    status = 501
    code = "faces_unavailable"

    def __init__(self) -> None:
        super().__init__("Per-face mode is not available on this server: its face detector (models/mtcnn/*.onnx, "
                         "or torch and facenet-pytorch) is not installed. Use faces=off (whole photo) or faces=auto.")


class FaceDetector(Protocol):
    """What per-face mode needs of a detector (`maskclassifier.classifier.mtcnn_onnx.OnnxMtcnnDetector`, or
    `maskclassifier.classifier.mtcnn.MtcnnDetector`)."""

    def detect(self, image: Image.Image, deadline: Deadline | None = None) -> FaceScan:
        """Every face found, in reading order (`facebox.face_scan`); raises OutOfTime when `deadline` passes
        first."""


DETECTORS = ("onnx", "torch")  # MTCNN in NumPy + ONNX Runtime (the default, every install); facenet-pytorch's own


def load_detector(threads: int | None = None, kind: str = "onnx") -> FaceDetector | None:
    """The MTCNN detector of `kind` (DETECTORS), each inference on `threads` threads; None when it cannot be
    loaded here: for "onnx" when models/mtcnn/ lacks its files, for "torch" when torch or facenet-pytorch is not
    installed (the slim install). The ONNX detector is the default: it finds the same faces in less time."""
    if kind not in DETECTORS:
        raise ValueError(f"unknown detector {kind!r}; one of {', '.join(DETECTORS)}")
    if kind == "onnx":
        from maskclassifier.classifier.mtcnn_onnx import MODEL_DIR, onnx_mtcnn_detector
        missing = [name for name in ("pnet", "rnet", "onet") if not (MODEL_DIR / f"{name}.onnx").is_file()]
        if missing:
            logger.warning("per-face mode is off: %s missing in %s (python -m maskclassifier.modelfiles.export_mtcnn "
                           "writes them)", ", ".join(f"{name}.onnx" for name in missing), MODEL_DIR)
            return None
        return onnx_mtcnn_detector(threads)
    try:
        from maskclassifier.classifier.mtcnn import mtcnn_detector
    except ImportError as exc:
        logger.warning("the torch face detector is not available: %s is not installed (the full install has it)",
                       exc.name)
        return None
    return mtcnn_detector(threads)


# A photo whose luminance between its 1st and 99th percentiles spans less than this (of 255) is dark, backlit or
# flat: when the detector finds no face in it, it looks again on a contrast-stretched copy. On real validation faces
# darkened to 0.2 of the light with sensor noise the detector found 87 % of them, with the second pass 97 %, and on
# no-face photos at most 2 % false faces (benchmarks/low_light.py). Photos with a wider range keep one pass.
LOW_CONTRAST_RANGE = 200
RETRY_MAX_SIDE = 1280  # the second look's copy, at most the size the detectors shrink a photo to anyway


def find_faces(detector: FaceDetector, image: Image.Image, deadline: Deadline | None = None) -> FaceScan:
    """The detector's faces in `image`; when it finds none and the photo is low in contrast, its faces in a copy
    shrunk to RETRY_MAX_SIDE and stretched to the full range (ImageOps.autocontrast, 1 % clipped at each end).
    Boxes are in `image`'s pixels either way. Raises OutOfTime past `deadline`, like the detector."""
    scan = detector.detect(image, deadline)
    if scan.faces:
        return scan
    # shrunk first: a stretched copy of a 50-megapixel photo would cost 150 MB (the detector shrinks it anyway)
    small, scale = shrunk(image, RETRY_MAX_SIDE, Image.Resampling.BILINEAR, reducing_gap=2.0)
    if not low_contrast(small):
        return scan
    again = detector.detect(ImageOps.autocontrast(small, cutoff=1), deadline)
    return FaceScan([Face(scaled_box(face.box, 1 / scale, image.size), face.score) for face in again.faces],
                    again.found)


def low_contrast(image: Image.Image) -> bool:
    """Whether the luminance between the 1st and 99th percentiles spans less than LOW_CONTRAST_RANGE levels
    (measured on a copy of at most 256 px)."""
    grey = image.convert("L")
    grey.thumbnail((256, 256))
    histogram = grey.histogram()
    total, seen, low, high = sum(histogram), 0, None, 255
    for level, count in enumerate(histogram):
        seen += count
        if low is None and seen > total * 0.01:
            low = level
        if seen >= total * 0.99:
            high = level
            break
    return high - (low or 0) < LOW_CONTRAST_RANGE


@dataclass(frozen=True)
class FaceAnalysis:
    mode: str  # which mode ran: "whole", "close_up" (one face, in automatic mode) or "faces"
    photo: Prediction  # the answer for the photo (in "close_up" mode the whole photo's and the face's, averaged)
    faces: list[Face] = field(default_factory=list)  # the classified faces (empty when mode is "whole")
    predictions: list[Prediction] = field(default_factory=list)  # one per face, from its crop alone
    found: int | None = None  # faces detected (classified or not); None when detection did not run
    note: str | None = None  # a sentence for the person when something is worth knowing


def analyse(detector: FaceDetector | None, classifier: Classifier, image: Image.Image, requested: str,
            margin: float, deadline: Deadline | None = None) -> FaceAnalysis:
    """Run the requested mode ("auto", "on", "off"); raise FacesUnavailable for "on" without a detector, and
    TooManyFaces (with the whole photo's answer) when finding and classifying the faces would outlast `deadline`.

    In automatic mode a photo of one person is answered from the whole photo and a close-up of the face together:
    a face that fills a small part of the photo is a few pixels wide in the model's input, and the close-up
    shows its mask in detail. Averaging keeps the whole photo's view as well, which matters when the face is so
    small that its close-up is a blur. The model card has the figures on the validation photos.
    """
    if requested == "off":
        return FaceAnalysis("whole", classifier.predict(image))
    if detector is None:
        if requested == "on":
            raise FacesUnavailable()
        return FaceAnalysis("whole", classifier.predict(image),
                            note="Per-face mode is not available on this server; the whole photo was classified.")
    try:
        scan = find_faces(detector, image, deadline)
        if scan.faces and deadline is not None:
            deadline.check("classifying the faces")
    except OutOfTime as exc:
        raise TooManyFaces(classifier.predict(image), exc.budget_s) from None
    if not scan.faces:
        return FaceAnalysis("whole", classifier.predict(image), found=0,
                            note="No face was found, so the whole photo was classified.")
    photo, faces, predictions = classify_faces(classifier, image, scan.faces, margin, deadline, whole_photo=True)
    if requested == "auto" and len(scan.faces) == 1:
        return FaceAnalysis("close_up", combine([photo, predictions[0]]), faces, predictions, scan.found,
                            note="One face was found: the answer combines the whole photo and a close-up of the "
                                 "face. Choose 'every face' to see the face's own answer.")
    note = None
    if len(faces) < scan.found:
        why = (f"at most {facebox.MAX_FACES} are classified per photo" if len(faces) == facebox.MAX_FACES
               else "there was no time for the rest")
        note = (f"{scan.found} faces were found; {len(faces)} of them, picked at random so that the counts stay "
                f"fair, were classified ({why}).")
    return FaceAnalysis("faces", photo, faces, predictions, scan.found, note)


def classify_faces(classifier: Classifier, image: Image.Image, faces: list[Face], margin: float,
                   deadline: Deadline | None = None, whole_photo: bool = False,
                   ) -> tuple[Prediction | None, list[Face], list[Prediction]]:
    """Each face's crop classified, batch by batch, in `unbiased_order` (at most facebox.MAX_FACES), until `deadline`
    passes (checked before every batch but the first, since torch cannot be interrupted): the faces done are a
    uniform sample of `faces`, not the detector's surest. Returns the whole photo's answer (in the first batch,
    with `whole_photo`; else None) and the classified faces with their answers, in reading order."""
    order = unbiased_order(len(faces))[:facebox.MAX_FACES]
    answers: dict[int, Prediction] = {}
    photo, start = None, 0
    while start < len(order):
        if start and deadline is not None and deadline.remaining() <= 0:
            break
        first = whole_photo and start == 0  # the photo rides in the first batch
        chosen = order[start:start + MAX_BATCH - int(first)]
        crops = face_crops(image, [faces[i] for i in chosen], margin)
        batch = classifier.predict_many([image, *crops] if first else crops)
        if first:
            photo, *batch = batch
        answers.update(zip(chosen, batch, strict=True))
        start += len(chosen)
    done = sorted(answers)  # indices into `faces`, which are in reading order
    return photo, [faces[i] for i in done], [answers[i] for i in done]


def analyse_frame(detector: FaceDetector, classifier: Classifier, image: Image.Image, margin: float,
                  deadline: Deadline | None = None) -> list[tuple[Face, Prediction]]:
    """A live camera frame: each face (found on a copy at most FRAME_DETECTION_SIDE px, boxes in pixels of
    `image`) and its crop's answer, in reading order; no whole-photo answer. Raises OutOfTime past `deadline`."""
    small, scale = shrunk(image, FRAME_DETECTION_SIDE, Image.Resampling.BILINEAR, reducing_gap=2.0)
    scan = find_faces(detector, small, deadline)
    faces = [Face(scaled_box(face.box, 1 / scale, image.size), face.score) for face in scan.faces]
    _, faces, predictions = classify_faces(classifier, image, faces, margin, deadline)
    return list(zip(faces, predictions, strict=True))

