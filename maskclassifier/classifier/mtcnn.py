"""The MTCNN face detector run by facenet-pytorch itself (torch), bounded in time and work.

The app serves the torch-free twin, `maskclassifier.classifier.mtcnn_onnx`, which finds the same faces faster (see
BENCHMARKS.md); this one is the reference the tests compare it with, and `load_detector("torch")` still serves it.
Imports torch: only `maskclassifier.classifier.faces.load_detector` imports this module, and only when asked for it.
"""

from __future__ import annotations

from typing import Any

import torch
from facenet_pytorch import MTCNN
from facenet_pytorch.models.utils.detect_face import detect_face
from PIL import Image
from torch import nn

from maskclassifier.classifier.mtcnn_onnx import DETECTION_MAX_SIDE, MAX_CANDIDATES_PER_SCALE, MIN_FACE_SIZE, MIN_SCORE
from maskclassifier.core.capacity import Deadline
from maskclassifier.core.facebox import FaceScan, face_scan
from maskclassifier.core.images import shrunk

# The bounds and thresholds are the torch-free detector's, so that both find the same faces (and the tests compare
# them): the photo is shrunk to DETECTION_MAX_SIDE, faces from MIN_FACE_SIZE px are looked for, boxes under
# MIN_SCORE dropped, and P-Net passes on at most MAX_CANDIDATES_PER_SCALE windows a scale (R-Net crops each
# candidate in a Python loop here: a photo of a few hundred tiny faces made thousands and took 10-25 s).


class BoundedStage(nn.Module):
    """One MTCNN network that checks a deadline before it runs and, given `keep`, passes on only the `keep`
    surest windows of each pyramid scale (P-Net's map of face probabilities, shape (n, 2, h, w))."""

    def __init__(self, net: nn.Module, name: str, deadline: Deadline, keep: int | None):
        super().__init__()
        self.net, self.name, self.deadline, self.keep = net, name, deadline, keep

    def forward(self, batch: torch.Tensor) -> tuple[torch.Tensor, ...]:
        self.deadline.check(self.name)
        *outputs, probabilities = self.net(batch)
        if self.keep is not None and probabilities.dim() == 4:
            faces = probabilities[:, 1]
            if faces.numel() > self.keep:
                kept = torch.zeros(faces.numel(), dtype=torch.bool)
                kept[faces.reshape(-1).topk(self.keep).indices] = True
                probabilities = probabilities.clone()  # 0 is below every threshold MTCNN uses
                probabilities[:, 1] = torch.where(kept.view_as(faces), faces, torch.zeros_like(faces))
        return (*outputs, probabilities)


class MtcnnDetector:
    """MTCNN on a shrunk copy of the photo; boxes are scaled back to the photo's own pixels.

    It runs facenet-pytorch's own three-stage `detect_face` with each network wrapped (`BoundedStage`): every
    stage first checks the deadline, and the first passes on at most MAX_CANDIDATES_PER_SCALE windows per scale.
    """

    def __init__(self, mtcnn: Any):
        self._mtcnn = mtcnn

    def detect(self, image: Image.Image, deadline: Deadline | None = None) -> FaceScan:
        """Faces in reading order; raises OutOfTime when `deadline` passes before the last stage starts."""
        small, scale = shrunk(image, DETECTION_MAX_SIDE, Image.Resampling.BILINEAR, reducing_gap=2.0)
        if min(small.size) < MIN_FACE_SIZE:  # MTCNN fails on images smaller than its smallest window
            return FaceScan([], 0)
        deadline = deadline or Deadline.after(float("inf"))
        mtcnn = self._mtcnn
        stages = [BoundedStage(net, name, deadline, keep)
                  for net, name, keep in ((mtcnn.pnet, "face proposals", MAX_CANDIDATES_PER_SCALE),
                                          (mtcnn.rnet, "face refinement", None), (mtcnn.onet, "face check", None))]
        with torch.inference_mode():
            batch_boxes, _ = detect_face(small, mtcnn.min_face_size, *stages, mtcnn.thresholds, mtcnn.factor, "cpu")
        found = batch_boxes[0]  # (n, 5): x0, y0, x1, y1, score at detection scale
        return face_scan(found, 1 / scale, image.size, MIN_SCORE)


def mtcnn_detector(torch_threads: int | None = None) -> MtcnnDetector:
    if torch_threads:
        torch.set_num_threads(torch_threads)
    return MtcnnDetector(MTCNN(keep_all=True, min_face_size=MIN_FACE_SIZE, select_largest=False, device="cpu"))
