"""Faces found in a photo, in pixels of the photo: the boxes, their reading order and the crops around them.

Leaf module (Pillow and NumPy only): the detectors (`maskclassifier.classifier.mtcnn_onnx`,
`maskclassifier.classifier.mtcnn`), per-face mode (`maskclassifier.classifier.faces`) and training's face close-ups
share these.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

# At most this many faces of one photo are classified (per-face mode, live frames): every face of a photo of a
# hundred people, 13 batches of crops (about 2.5 s on one thread), and a page table that stays light. Which faces
# are classified when more are found is `unbiased_order`'s choice, never the detector's confidence: masked faces
# are found less surely, so keeping the surest made a crowd's count lean to "no mask".
MAX_FACES = 100
# The seed of `unbiased_order`: the same photo is always answered with the same faces.
SAMPLE_SEED = 0


@dataclass(frozen=True)
class Face:
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 in pixels of the (EXIF-upright) photo
    score: float  # the detector's confidence that this is a face


@dataclass(frozen=True)
class FaceScan:
    faces: list[Face]  # every face found, in reading order (rows top to bottom, each left to right)
    found: int  # faces detected (len(faces))


def scaled_box(box: Sequence[float], factor: float, size: tuple[int, int]) -> tuple[int, int, int, int]:
    """A box found on a resized copy, times `factor`, rounded and clipped to a photo of `size` (width, height)."""
    x0, y0, x1, y1 = (float(value) * factor for value in box)
    width, height = size
    return max(0, round(x0)), max(0, round(y0)), min(width, round(x1)), min(height, round(y1))


def face_scan(detections: Sequence[Sequence[float]], factor: float, size: tuple[int, int],
              min_score: float) -> FaceScan:
    """A detector's rows (x0, y0, x1, y1, score, ... on a copy of the photo resized by 1 / `factor`) as a
    FaceScan of the photo of `size`: scores under `min_score` and boxes empty after clipping dropped, the rest in
    reading order. None is dropped for being less sure than others (see MAX_FACES)."""
    faces = [Face(scaled_box(row[:4], factor, size), float(row[4])) for row in detections
             if float(row[4]) >= min_score]
    faces = [face for face in faces if face.box[2] > face.box[0] and face.box[3] > face.box[1]]
    return FaceScan(reading_order(faces), len(faces))


def unbiased_order(count: int) -> list[int]:
    """0..count-1 in a seeded uniform random order (SAMPLE_SEED): classifying faces in this order, any prefix of
    it is a uniform sample of the faces, whatever stops the work (the time budget, MAX_FACES), so the counts of a
    crowd do not lean to the faces the detector is surest of. The same count always gives the same order."""
    return [int(index) for index in np.random.default_rng(SAMPLE_SEED).permutation(count)]


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
