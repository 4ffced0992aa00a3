"""Test doubles for the parts a test cannot make behave: a face detector that finds known boxes, and a deadline that
runs out after a set number of checks. Everything around them (facebox.face_scan, faces.analyse, the presenters) is
the app's own code."""

from __future__ import annotations

from dataclasses import dataclass, field

from PIL import Image

from maskclassifier.classifier.mtcnn_onnx import MIN_SCORE
from maskclassifier.core.capacity import OutOfTime
from maskclassifier.core.facebox import FaceScan, face_scan


@dataclass
class KnownFaces:
    """A face detector (faces.FaceDetector) that "finds" the given boxes with the given scores, passed through the
    real detectors' own `facebox.face_scan` (score floor, clipping, order, any cap it applies)."""

    boxes: list[tuple[int, int, int, int]]
    scores: list[float]
    size: tuple[int, int]  # the photo the boxes are in; a smaller copy (live frames) gets them scaled
    calls: list[tuple[int, int]] = field(default_factory=list)  # the size of each image searched

    def detect(self, image: Image.Image, deadline=None) -> FaceScan:
        self.calls.append(image.size)
        if deadline is not None:
            deadline.check("face proposals")
        scale_x = image.width / self.size[0]
        rows = [(x0 * scale_x, y0 * scale_x, x1 * scale_x, y1 * scale_x, score)
                for (x0, y0, x1, y1), score in zip(self.boxes, self.scores, strict=True)]
        return face_scan(rows, 1.0, image.size, MIN_SCORE)


class Countdown:
    """A Deadline (capacity.Deadline's check and remaining) that has time left for `checks` more looks at it and
    then has none: the point where work stops is exact, not a matter of the machine's speed."""

    def __init__(self, checks: int, budget_s: float = 8.0):
        self.left = checks
        self.budget_s = budget_s

    def remaining(self) -> float:
        self.left -= 1
        return 1.0 if self.left >= 0 else -1.0

    def check(self, stage: str) -> None:
        if self.remaining() <= 0:
            raise OutOfTime(stage, self.budget_s)
