"""Per-face mode: find every face in a photo, classify each crop, and draw the answers on the photo.

The detector is MTCNN from facenet-pytorch (its weights ship inside the wheel). facenet-pytorch and torch
are imported only by `load_detector`, so this module also imports in the slim install, which has no torch:
there `load_detector` returns None and `analyse` answers per-face requests with `FacesUnavailable`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from PIL import Image, ImageDraw, ImageFont

from maskclassifier.model import Classifier, Prediction, combine

logger = logging.getLogger(__name__)

MAX_FACES = 50  # the most certain faces are kept; a crowd photo is still answered in seconds
DETECTION_MAX_SIDE = 1280  # the photo is shrunk to this long side for detection (MTCNN time grows with pixels)
MIN_FACE_SIZE = 20  # pixels at detection scale: ~60 px in a 4000 px wide photo
MIN_SCORE = 0.9  # MTCNN's own last stage keeps boxes above 0.7; below 0.9 they are mostly patterns, not faces
ANNOTATED_MAX_SIDE = 1600  # long side of the annotated photo (page and /api/annotate)

MODES = ("auto", "on", "off")  # automatic (per face when 2+ faces), every face, whole photo

# Box colours by top category (white text on them must stay readable); the page's table uses the same ones.
CATEGORY_COLOURS = {
    "-": "#24292f",
    "Cloth": "#8250df",
    "Gas": "#7d4e00",
    "KN95": "#0550ae",
    "Medical": "#1b7c83",
    "No_mask!": "#cf222e",
    "Shield": "#bc4c00",
}
UNSURE_COLOUR = "#6e7781"
OTHER_COLOURS = ["#116329", "#a40e26", "#4c2889", "#953800", "#0a3069"]  # models with other categories
SHORT_NAMES = {"-": "not a face", "No_mask!": "no mask"}
CAPTION_LABELS = 2  # labels written on the photo per face; the page's table lists them all


class FacesUnavailable(RuntimeError):
    """Per-face mode was asked for, but this install has no face detector (no torch / facenet-pytorch)."""

    def __init__(self) -> None:
        super().__init__("Per-face mode needs the full install (torch and facenet-pytorch); this server runs "
                         "without them. Use faces=off (whole photo) or faces=auto.")


@dataclass(frozen=True)
class Face:
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 in pixels of the (EXIF-upright) photo
    score: float  # the detector's confidence that this is a face


@dataclass(frozen=True)
class FaceScan:
    faces: list[Face]  # at most MAX_FACES, in reading order (rows top to bottom, each left to right)
    found: int  # faces detected before the cap


class FaceDetector:
    """MTCNN on a shrunk copy of the photo; boxes are scaled back to the photo's own pixels."""

    def __init__(self, mtcnn: Any):
        self._mtcnn = mtcnn

    def detect(self, image: Image.Image) -> FaceScan:
        scale = min(1.0, DETECTION_MAX_SIDE / max(image.size))
        small = image if scale == 1.0 else image.resize(
            (max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.BILINEAR, reducing_gap=2.0)
        if min(small.size) < MIN_FACE_SIZE:  # MTCNN fails on images smaller than its smallest window
            return FaceScan([], 0)
        boxes, scores = self._mtcnn.detect(small)
        if boxes is None:
            return FaceScan([], 0)
        faces = [Face(_scaled_box(box, 1 / scale, image.size), float(score))
                 for box, score in zip(boxes, scores) if float(score) >= MIN_SCORE]
        faces = [face for face in faces if face.box[2] > face.box[0] and face.box[3] > face.box[1]]
        kept = sorted(faces, key=lambda face: -face.score)[:MAX_FACES]
        return FaceScan(reading_order(kept), len(faces))


def _scaled_box(box: Sequence[float], factor: float, size: tuple[int, int]) -> tuple[int, int, int, int]:
    x0, y0, x1, y1 = (float(value) * factor for value in box)
    width, height = size
    return (max(0, round(x0)), max(0, round(y0)), min(width, round(x1)), min(height, round(y1)))


def reading_order(faces: Sequence[Face]) -> list[Face]:
    """Rows from top to bottom, each from left to right: the order people name the faces in a group photo.

    A face starts a new row when its centre is lower than the current row's first face by more than half
    a typical face height.
    """
    if not faces:
        return []
    heights = sorted(face.box[3] - face.box[1] for face in faces)
    tolerance = heights[len(heights) // 2] / 2
    rows: list[list[Face]] = []
    for face in sorted(faces, key=_centre_y):
        if rows and _centre_y(face) - _centre_y(rows[-1][0]) <= tolerance:
            rows[-1].append(face)
        else:
            rows.append([face])
    return [face for row in rows for face in sorted(row, key=lambda face: face.box[0])]


def _centre_y(face: Face) -> float:
    return (face.box[1] + face.box[3]) / 2


def load_detector(torch_threads: int | None = None) -> FaceDetector | None:
    """The MTCNN detector, or None when torch or facenet-pytorch is not installed (the slim install)."""
    try:
        import torch
        from facenet_pytorch import MTCNN
    except ImportError as exc:
        logger.warning("per-face mode is off: %s is not installed (the full install has it)", exc.name)
        return None
    if torch_threads:
        torch.set_num_threads(torch_threads)
    return FaceDetector(MTCNN(keep_all=True, min_face_size=MIN_FACE_SIZE, select_largest=False, device="cpu"))


def crop_box(box: tuple[int, int, int, int], size: tuple[int, int], margin: float) -> tuple[int, int, int, int]:
    """The face box grown by `margin` of its width and height on every side (so masks and shields stay in)."""
    x0, y0, x1, y1 = box
    pad_x, pad_y = (x1 - x0) * margin, (y1 - y0) * margin
    width, height = size
    return (max(0, round(x0 - pad_x)), max(0, round(y0 - pad_y)),
            min(width, round(x1 + pad_x)), min(height, round(y1 + pad_y)))


def face_crops(image: Image.Image, faces: Sequence[Face], margin: float) -> list[Image.Image]:
    """What the classifier sees of each face: its box grown by `margin`."""
    return [image.crop(crop_box(face.box, image.size, margin)) for face in faces]


@dataclass(frozen=True)
class FaceAnalysis:
    mode: str  # which mode ran: "whole", "close_up" (one face, in automatic mode) or "faces"
    photo: Prediction  # the answer for the photo (in "close_up" mode the whole photo's and the face's, averaged)
    faces: list[Face] = field(default_factory=list)  # the classified faces (empty when mode is "whole")
    predictions: list[Prediction] = field(default_factory=list)  # one per face, from its crop alone
    found: int | None = None  # faces detected (before the cap); None when detection did not run
    note: str | None = None  # a sentence for the person when something is worth knowing


def analyse(detector: FaceDetector | None, classifier: Classifier, image: Image.Image, requested: str,
            margin: float) -> FaceAnalysis:
    """Run the requested mode ("auto", "on", "off"); raise FacesUnavailable for "on" without a detector.

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
    scan = detector.detect(image)
    if not scan.faces:
        return FaceAnalysis("whole", classifier.predict(image), found=0,
                            note="No face was found, so the whole photo was classified.")
    # one batch: the whole photo, then each face
    photo, *predictions = classifier.predict_many([image, *face_crops(image, scan.faces, margin)])
    if requested == "auto" and len(scan.faces) == 1:
        return FaceAnalysis("close_up", combine([photo, predictions[0]]), scan.faces, predictions, scan.found,
                            note="One face was found: the answer combines the whole photo and a close-up of the "
                                 "face. Choose 'every face' to see the face's own answer.")
    note = None
    if scan.found > len(scan.faces):
        note = f"{scan.found} faces were found; only the {len(scan.faces)} clearest were classified."
    return FaceAnalysis("faces", photo, scan.faces, predictions, scan.found, note)


def colour_for(prediction: Prediction) -> str:
    """The colour of the most probable category that passed the threshold; grey when none did."""
    if not prediction.labels:
        return UNSURE_COLOUR
    top = prediction.labels[0]
    if top in CATEGORY_COLOURS:
        return CATEGORY_COLOURS[top]
    return OTHER_COLOURS[list(prediction.probabilities).index(top) % len(OTHER_COLOURS)]


def short_name(category: str) -> str:
    return SHORT_NAMES.get(category, category)


def caption_lines(number: int, prediction: Prediction) -> list[str]:
    """What is written by a face box: its number, then its labels with their probabilities, one per line.

    At most CAPTION_LABELS labels, so captions stay short in a crowd; the page's table lists them all.
    """
    scores = prediction.probabilities
    if not prediction.labels:
        top = max(scores, key=scores.get)
        return [f"{number} unsure:", f"{short_name(top)} {scores[top]:.0%}"]
    lines = [f"{short_name(label)} {scores[label]:.0%}" for label in prediction.labels[:CAPTION_LABELS]]
    more = len(prediction.labels) - CAPTION_LABELS
    if more > 0:
        lines[-1] += f" +{more}"
    return [f"{number} {lines[0]}"] + lines[1:]


def annotate(image: Image.Image, faces: Sequence[Face], predictions: Sequence[Prediction]) -> Image.Image:
    """A copy of the photo (long side at most ANNOTATED_MAX_SIDE) with each face boxed, numbered and labelled."""
    scale = min(1.0, ANNOTATED_MAX_SIDE / max(image.size))
    canvas = image.copy() if scale == 1.0 else image.resize(
        (max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.LANCZOS, reducing_gap=3.0)
    draw = ImageDraw.Draw(canvas)
    line_width = max(2, round(max(canvas.size) / 400))
    for number, (face, prediction) in enumerate(zip(faces, predictions), start=1):
        box = tuple(round(value * scale) for value in face.box)
        colour = colour_for(prediction)
        draw.rectangle(box, outline=colour, width=line_width)
        _draw_caption(draw, box, caption_lines(number, prediction), colour, canvas.size)
    return canvas


def _fitting_font(draw: ImageDraw.ImageDraw, lines: list[str], width: int, size: tuple[int, int]) -> ImageFont.FreeTypeFont:
    """The largest font (up to one that suits the photo's size) whose lines fit the box width, never below 10 px,
    so that the captions of neighbouring faces do not run into each other."""
    largest = max(14, round(max(size) / 50))
    font = ImageFont.load_default(size=largest)
    widest = max(draw.textlength(line, font=font) for line in lines)
    if widest <= width:
        return font
    return ImageFont.load_default(size=max(10, int(largest * width / widest)))


def _draw_caption(draw: ImageDraw.ImageDraw, box: tuple[int, ...], lines: list[str], colour: str,
                  size: tuple[int, int]) -> None:
    """The caption on a filled band above the box, else below it, else inside its top edge."""
    font = _fitting_font(draw, lines, box[2] - box[0], size)
    text = "\n".join(lines)
    left, top, right, bottom = draw.multiline_textbbox((0, 0), text, font=font, spacing=1)
    pad = max(2, round(font.size / 6))
    band_width, band_height = right - left + 2 * pad, bottom - top + 2 * pad
    x = min(max(0, box[0]), max(0, size[0] - band_width))
    if box[1] >= band_height:
        y = box[1] - band_height
    elif box[3] + band_height <= size[1]:
        y = box[3]
    else:
        y = box[1]
    draw.rectangle((x, y, x + band_width, y + band_height), fill=colour)
    draw.multiline_text((x + pad - left, y + pad - top), text, font=font, fill="white", spacing=1)
