"""Faces found in a photo, in pixels of the photo: the boxes, their reading order and the crops around them.

Leaf module (Pillow only): the detectors (`maskclassifier.classifier.mtcnn_onnx`, `maskclassifier.classifier.mtcnn`),
per-face mode (`maskclassifier.classifier.faces`) and training's face close-ups share these.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from PIL import Image

MAX_FACES = 50  # the most certain faces are kept; a crowd photo is still answered in seconds


@dataclass(frozen=True)
class Face:
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 in pixels of the (EXIF-upright) photo
    score: float  # the detector's confidence that this is a face


@dataclass(frozen=True)
class FaceScan:
    faces: list[Face]  # at most MAX_FACES, in reading order (rows top to bottom, each left to right)
    found: int  # faces detected before the cap


def scaled_box(box: Sequence[float], factor: float, size: tuple[int, int]) -> tuple[int, int, int, int]:
    """A box found on a resized copy, times `factor`, rounded and clipped to a photo of `size` (width, height)."""
    x0, y0, x1, y1 = (float(value) * factor for value in box)
    width, height = size
    return max(0, round(x0)), max(0, round(y0)), min(width, round(x1)), min(height, round(y1))


def face_scan(detections: Sequence[Sequence[float]], factor: float, size: tuple[int, int],
              min_score: float) -> FaceScan:
    """A detector's rows (x0, y0, x1, y1, score, ... on a copy of the photo resized by 1 / `factor`) as a
    FaceScan of the photo of `size`: scores under `min_score` and boxes empty after clipping dropped, the
    MAX_FACES surest kept, in reading order; `found` counts the faces before the cap."""
    faces = [Face(scaled_box(row[:4], factor, size), float(row[4])) for row in detections
             if float(row[4]) >= min_score]
    faces = [face for face in faces if face.box[2] > face.box[0] and face.box[3] > face.box[1]]
    kept = sorted(faces, key=lambda face: -face.score)[:MAX_FACES]
    return FaceScan(reading_order(kept), len(faces))


def face_crops(image: Image.Image, faces: Sequence[Face], margin: float) -> list[Image.Image]:
    """What the classifier sees of each face: its box grown by `margin`."""
    return [image.crop(crop_box(face.box, image.size, margin)) for face in faces]


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


def crop_box(box: tuple[int, int, int, int], size: tuple[int, int], margin: float) -> tuple[int, int, int, int]:
    """The face box grown by `margin` of its width and height on every side (so masks and shields stay in)."""
    x0, y0, x1, y1 = box
    pad_x, pad_y = (x1 - x0) * margin, (y1 - y0) * margin
    width, height = size
    return (max(0, round(x0 - pad_x)), max(0, round(y0 - pad_y)),
            min(width, round(x1 + pad_x)), min(height, round(y1 + pad_y)))
