"""Per-face mode: find every face in a photo, classify each crop, and draw the answers on the photo.

The detector is MTCNN from facenet-pytorch (its weights ship inside the wheel). facenet-pytorch and torch
are imported only by `load_detector`, so this module also imports in the slim install, which has no torch:
there `load_detector` returns None and `analyse` answers per-face requests with `FacesUnavailable`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from PIL import Image, ImageDraw, ImageFont

from maskclassifier.capacity import Deadline, OutOfTime
from maskclassifier.facebox import Face, FaceScan, face_crops
from maskclassifier.model import Classifier, Prediction, combine

logger = logging.getLogger(__name__)

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


class TooManyFaces(RuntimeError):
    """Finding and classifying the faces ran past the time budget; `photo` is the whole photo's answer."""

    def __init__(self, photo: Prediction, budget_s: float):
        self.photo = photo
        self.message = (f"This photo has too many faces (or face-like patterns) to check each one within "
                        f"{budget_s:g} seconds. The answer for the whole photo is given instead; for one per face, "
                        "crop the photo to fewer people.")
        super().__init__(self.message)


class FacesUnavailable(RuntimeError):
    """Per-face mode was asked for, but this install has no face detector (no torch / facenet-pytorch)."""

    def __init__(self) -> None:
        super().__init__("Per-face mode needs the full install (torch and facenet-pytorch); this server runs "
                         "without them. Use faces=off (whole photo) or faces=auto.")


class FaceDetector(Protocol):
    """What per-face mode needs of a detector (`maskclassifier.mtcnn.MtcnnDetector`)."""

    def detect(self, image: Image.Image, deadline: Deadline | None = None) -> FaceScan:
        """Faces in reading order, at most MAX_FACES; raises OutOfTime when `deadline` passes first."""


def load_detector(torch_threads: int | None = None) -> FaceDetector | None:
    """The MTCNN detector, or None when torch or facenet-pytorch is not installed (the slim install)."""
    try:
        from maskclassifier.mtcnn import mtcnn_detector
    except ImportError as exc:
        logger.warning("per-face mode is off: %s is not installed (the full install has it)", exc.name)
        return None
    return mtcnn_detector(torch_threads)


@dataclass(frozen=True)
class FaceAnalysis:
    mode: str  # which mode ran: "whole", "close_up" (one face, in automatic mode) or "faces"
    photo: Prediction  # the answer for the photo (in "close_up" mode the whole photo's and the face's, averaged)
    faces: list[Face] = field(default_factory=list)  # the classified faces (empty when mode is "whole")
    predictions: list[Prediction] = field(default_factory=list)  # one per face, from its crop alone
    found: int | None = None  # faces detected (before the cap); None when detection did not run
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
        scan = detector.detect(image, deadline)
        if scan.faces and deadline is not None:
            deadline.check("classifying the faces")
    except OutOfTime as exc:
        raise TooManyFaces(classifier.predict(image), exc.budget_s) from None
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
