"""The MTCNN face detector without torch: its three networks run in ONNX Runtime, the rest is NumPy.

The networks are facenet-pytorch's, exported by `python -m maskclassifier.modelfiles.export_mtcnn` to models/mtcnn/
(MIT, see LICENCE.md there). Everything around them repeats facenet-pytorch 2.6.0's `detect_face` step by step: the
image pyramid (area resampling, which is an adaptive average pool), P-Net's candidate windows, NMS within each
scale (IoU 0.5) and across scales (0.7), box regression, squaring, R-Net on 24 px crops (NMS 0.7), O-Net on 48 px
crops, and the final NMS over the smaller box (0.7). It keeps the bounds of `maskclassifier.classifier.mtcnn`: the
deadline is checked before every network runs, and P-Net passes on at most MAX_CANDIDATES_PER_SCALE windows per scale.

Differences from facenet-pytorch, none of which changes a face found in the tests' photos: the float16-stored
weights move the networks' outputs by about 1e-3; the pyramid and crops are averaged from an integer summed-area
table (exact sums, where torch sums in float32); and a candidate box that lies wholly outside the photo is dropped
(facenet-pytorch skips its crop but keeps the box, which shifts every later box against its network output).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime
from PIL import Image

from maskclassifier.core.capacity import Deadline
from maskclassifier.core.errors import ModelLoadError
from maskclassifier.core.facebox import FaceScan, face_scan
from maskclassifier.core.images import shrunk

MODEL_DIR = Path(__file__).resolve().parent.parent.parent / "models" / "mtcnn"
DETECTION_MAX_SIDE = 1280  # the photo is shrunk to this long side for detection (MTCNN time grows with pixels)
MIN_FACE_SIZE = 20  # pixels at detection scale: ~60 px in a 4000 px wide photo
MIN_SCORE = 0.9  # MTCNN's own last stage keeps boxes above 0.7; below 0.9 they are mostly patterns, not faces
# Candidate windows that P-Net passes on from each scale of its image pyramid, the surest first. The two later
# networks cost time for every candidate: a photo of a few hundred tiny faces, or of a face-like texture, made
# thousands of them. 300 a scale (about 3600 for a 1280 px photo) keeps every face of a 50-person photo.
MAX_CANDIDATES_PER_SCALE = 300
THRESHOLDS = (0.6, 0.7, 0.7)  # facenet-pytorch's defaults: the face probability each network must reach
PYRAMID_FACTOR = 0.709  # facenet-pytorch's default: each pyramid scale is this times the one before
# R-Net runs on at most BATCH crops at once, O-Net on a quarter as many (its crops have 4x the pixels), cut just
# before (and the deadline checked before each batch). Without an arena ONNX Runtime's buffers for a batch are
# fresh memory on every run: R-Net on 256 crops took 25 MB over the rest of detection, O-Net on 64 crops 15 MB;
# at 64 and 16 a few MB, in the same time (BENCHMARKS.md, "Issue 27: the worker's peak under a 10-minute soak").
BATCH = 64
# P-Net runs on the pyramid's levels in bands of this many rows of its output (about 2x as many of input), each
# band's input rows made just for it: its buffers for a whole 768x768 level (the first of a 1280 px photo) took
# 68 MB; a band of 64 rows, under 12 MB; of 32 rows, about 5 MB less again.
PNET_BAND_ROWS = 32
SUM_BAND_ROWS = 64  # the summed-area table is made this many rows at a time (see summed_area)
NMS_MATRIX_MAX = 500  # up to this many boxes, NMS computes all pairwise overlaps at once (2 MB a matrix)


def _normalised(pixels: np.ndarray) -> np.ndarray:
    """(n, h, w, 3) mean pixel values -> (n, 3, h, w) float32 as MTCNN was trained: (x - 127.5) / 128."""
    return ((pixels - 127.5) * 0.0078125).astype(np.float32).transpose(0, 3, 1, 2)


def summed_area(pixels: np.ndarray) -> np.ndarray:
    """(h, w, 3) uint8 -> (h + 1, w + 1, 3) int32 table: [y, x] is the sum of every pixel above and left of it.
    int32 is exact up to 8.4 megapixels (255 x 8.4e6 < 2**31); detection sees at most 1280 x 1280."""
    if pixels.shape[0] * pixels.shape[1] * 255 >= 2**31:
        raise ValueError(f"{pixels.shape[:2]} is too large for an int32 summed-area table")
    table = np.zeros((pixels.shape[0] + 1, pixels.shape[1] + 1, pixels.shape[2]), dtype=np.int32)
    # SUM_BAND_ROWS rows at a time, each band carried on from the row above it: a whole-array cumulative sum into
    # the table (a strided, wider-typed output) made a temporary copy of it, 14 MB for a 1280 px photo, a quarter
    # of detection's peak memory.
    for first in range(0, pixels.shape[0], SUM_BAND_ROWS):
        band = table[first + 1:first + 1 + SUM_BAND_ROWS, 1:]
        np.cumsum(pixels[first:first + SUM_BAND_ROWS], axis=1, dtype=np.int32, out=band)
        np.cumsum(band, axis=0, out=band)
        band += table[first, 1:]
    return table


def _pool_bounds(start: np.ndarray, length: np.ndarray, out: int) -> tuple[np.ndarray, np.ndarray]:
    """torch's adaptive average pool: output i of a span of `length` averages [i*L // out, ceil((i+1)*L / out)).
    `start`, `length`: (n,) ints -> absolute first and end indices, (n, out) each."""
    index = np.arange(out)
    first = (index[None, :] * length[:, None]) // out
    end = ((index[None, :] + 1) * length[:, None] + out - 1) // out
    return start[:, None] + first, start[:, None] + end


def level_resize(table: np.ndarray, out_hw: tuple[int, int], rows: slice = slice(None)) -> np.ndarray:
    """The whole photo area-resized to `out_hw` (one pyramid level), its output `rows` only, normalised as MTCNN
    takes it: as `area_resize` for one region, but by rows then columns, which copies whole rows instead of
    gathering single pixels -> (1, 3, len(rows), out_w) float32, contiguous. Its intermediate sums and float64
    quotients grow with the rows asked for (34 MB for the whole first level of a 1280 px photo): P-Net asks for
    one band at a time."""
    height, width = table.shape[0] - 1, table.shape[1] - 1
    (r0,), (r1,) = _pool_bounds(np.array([0]), np.array([height]), out_hw[0])
    (c0,), (c1,) = _pool_bounds(np.array([0]), np.array([width]), out_hw[1])
    r0, r1 = r0[rows], r1[rows]
    sums_by_row = table[r1] - table[r0]  # (rows, w + 1, 3): each output row's sums, cumulative along the columns
    sums = sums_by_row[:, c1] - sums_by_row[:, c0]
    counts = (r1 - r0)[:, None] * (c1 - c0)[None, :]
    return np.ascontiguousarray(_normalised((sums / counts[..., None].astype(np.float32))[None].astype(np.float32)))


def area_resize(table: np.ndarray, rows: tuple[np.ndarray, np.ndarray], cols: tuple[np.ndarray, np.ndarray],
                out_hw: tuple[int, int]) -> np.ndarray:
    """Regions of the photo resized as torch's `interpolate(mode="area")` does: each output pixel is the mean of
    the input pixels it covers. `rows`/`cols`: (first, length) arrays of shape (n,), one region each, from the
    summed-area table of the photo -> (n, out_h, out_w, 3) float32 means."""
    r0, r1 = _pool_bounds(*rows, out_hw[0])
    c0, c1 = _pool_bounds(*cols, out_hw[1])
    a, b = r0[:, :, None], r1[:, :, None]
    c, d = c0[:, None, :], c1[:, None, :]
    sums = table[b, d] - table[a, d] - table[b, c] + table[a, c]  # (n, out_h, out_w, 3)
    counts = ((b - a) * (d - c)).astype(np.float32)
    return (sums / counts[..., None]).astype(np.float32)


def nms(boxes: np.ndarray, scores: np.ndarray, threshold: float, by_smaller: bool = False) -> np.ndarray:
    """Greedy non-maximum suppression: indices kept, surest first. A box is dropped when its overlap with a surer
    kept box is above `threshold`: intersection over union (torchvision's `nms`, areas without +1), or with
    `by_smaller` intersection over the smaller box (facenet-pytorch's "Min" NMS, areas with +1 pixel)."""
    if len(boxes) == 0:
        return np.zeros(0, dtype=np.int64)
    plus = 1.0 if by_smaller else 0.0
    x0, y0, x1, y1 = (boxes[:, k].astype(np.float64) for k in range(4))
    area = (x1 - x0 + plus) * (y1 - y0 + plus)
    order = np.argsort(-scores, kind="stable")
    if len(boxes) <= NMS_MATRIX_MAX:  # every overlap at once, then one cheap step per box
        width = np.maximum(0.0, np.minimum(x1[:, None], x1) - np.maximum(x0[:, None], x0) + plus)
        height = np.maximum(0.0, np.minimum(y1[:, None], y1) - np.maximum(y0[:, None], y0) + plus)
        inter = width * height
        base = np.minimum(area[:, None], area) if by_smaller else area[:, None] + area - inter
        with np.errstate(divide="ignore", invalid="ignore"):
            overlapping = np.where(base > 0, inter / np.where(base > 0, base, 1), 0.0) > threshold
        suppressed = np.zeros(len(boxes), dtype=bool)
        kept = []
        for index in order:
            if not suppressed[index]:
                kept.append(index)
                suppressed |= overlapping[index]
        return np.asarray(kept, dtype=np.int64)
    keep = []
    while order.size:
        best, rest = order[0], order[1:]
        keep.append(best)
        width = np.maximum(0.0, np.minimum(x1[best], x1[rest]) - np.maximum(x0[best], x0[rest]) + plus)
        height = np.maximum(0.0, np.minimum(y1[best], y1[rest]) - np.maximum(y0[best], y0[rest]) + plus)
        inter = width * height
        base = np.minimum(area[best], area[rest]) if by_smaller else area[best] + area[rest] - inter
        with np.errstate(divide="ignore", invalid="ignore"):
            overlap = np.where(base > 0, inter / np.where(base > 0, base, 1), 0.0)
        order = rest[overlap <= threshold]
    return np.asarray(keep, dtype=np.int64)


def pyramid_scales(height: int, width: int, min_face: int = MIN_FACE_SIZE) -> list[float]:
    """The scales at which P-Net (12 px windows) sees faces from `min_face` px up to the photo's short side."""
    scale, short = 12.0 / min_face, min(height, width) * 12.0 / min_face
    scales = []
    while short >= 12:
        scales.append(scale)
        scale, short = scale * PYRAMID_FACTOR, short * PYRAMID_FACTOR
    return scales


def proposals(regression: np.ndarray, face_map: np.ndarray, scale: float, keep: int) -> np.ndarray:
    """P-Net's windows of one scale: regression (4, h, w), face probabilities (h, w) -> (n, 9) rows of x0, y0, x1,
    y1 (photo pixels), score, 4 regression offsets; at most `keep` windows, the surest, at or above THRESHOLDS[0]."""
    passing = face_map >= THRESHOLDS[0]
    if face_map.size > keep:  # as BoundedStage: every window outside the `keep` surest counts as no face
        top = np.zeros(face_map.size, dtype=bool)
        top[np.argpartition(-face_map.ravel(), keep - 1)[:keep]] = True
        passing &= top.reshape(face_map.shape)
    ys, xs = np.nonzero(passing)  # row-major, as torch's nonzero
    corner = np.stack([xs, ys], axis=1).astype(np.float32)
    first = np.floor((2 * corner + 1) / scale)  # stride 2, 12 px cells, 1-based as in facenet-pytorch
    last = np.floor((2 * corner + 12) / scale)
    return np.concatenate([first, last, face_map[ys, xs, None], regression[:, ys, xs].T], axis=1)


def squared(boxes: np.ndarray) -> np.ndarray:
    """Each box grown to a square around its centre (facenet-pytorch's `rerec`); columns 0-3, in place."""
    height, width = boxes[:, 3] - boxes[:, 1], boxes[:, 2] - boxes[:, 0]
    side = np.maximum(width, height)
    boxes[:, 0] += width * 0.5 - side * 0.5
    boxes[:, 1] += height * 0.5 - side * 0.5
    boxes[:, 2:4] = boxes[:, 0:2] + side[:, None]
    return boxes


def regressed(boxes: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Boxes moved by a network's regression (fractions of the box's size, +1 pixel: facenet-pytorch's `bbreg`)."""
    width = boxes[:, 2] - boxes[:, 0] + 1
    height = boxes[:, 3] - boxes[:, 1] + 1
    boxes[:, :4] += offsets[:, :4] * np.stack([width, height, width, height], axis=1)
    return boxes


def clipped(boxes: np.ndarray, photo_hw: tuple[int, int]) -> np.ndarray:
    """The pixels each box covers, clipped to the photo as facenet-pytorch's `pad` does: (n, 4) ints x0, y0, x1,
    y1 (end exclusive); a box wholly outside the photo gets x1 <= x0 or y1 <= y0."""
    height, width = photo_hw
    whole = np.trunc(boxes[:, :4]).astype(np.int64)
    return np.stack([np.maximum(whole[:, 0], 1) - 1, np.maximum(whole[:, 1], 1) - 1,
                     np.minimum(whole[:, 2], width), np.minimum(whole[:, 3], height)], axis=1)


def crops(table: np.ndarray, bounds: np.ndarray, size: int) -> np.ndarray:
    """The regions `bounds` ((n, 4) from `clipped`, none empty) area-resized to size x size and normalised:
    (n, 3, size, size) float32, the networks' input."""
    x0, y0, x1, y1 = bounds.T
    return _normalised(area_resize(table, (y0, y1 - y0), (x0, x1 - x0), (size, size)))


class OnnxMtcnnDetector:
    """MTCNN on a shrunk copy of the photo, boxes scaled back to the photo's own pixels; no torch.

    Same interface and bounds as `maskclassifier.classifier.mtcnn.MtcnnDetector` (see
    `maskclassifier.classifier.faces.FaceDetector`).
    """

    def __init__(self, sessions: dict[str, onnxruntime.InferenceSession]):
        self._sessions = sessions

    def _run(self, name: str, inputs: Callable[[slice], np.ndarray], count: int, deadline: Deadline,
             stage: str, batch: int = BATCH) -> list[np.ndarray]:
        """One network on `count` inputs made `inputs(batch_slice)` at a time, `batch` at most, checking the
        deadline before each batch; its outputs, concatenated."""
        session = self._sessions[name]
        parts = []
        for start in range(0, count, batch):
            deadline.check(stage)
            parts.append(session.run(None, {"pixels": inputs(slice(start, start + batch))}))
        return [np.concatenate(outputs) for outputs in zip(*parts, strict=True)]

    def _pnet(self, table: np.ndarray, level_hw: tuple[int, int], deadline: Deadline) -> list[np.ndarray]:
        """P-Net on one pyramid level of the photo (`level_hw`, made from its summed-area table), PNET_BAND_ROWS
        rows of its output at a time, each band's input rows made just for it: the same outputs as one pass over
        the whole level (a fully convolutional net: output row i sees input rows 2i to 2i + 11), but the buffers
        of one band instead of the whole level's (51 of 93 MB of a 1280 px photo's detection), and not the whole
        level either (5 MB)."""
        height = level_hw[0]
        rows = max(0, (height - 1) // 2 - 4)  # 3x3 conv, 2x2 max pool (ceil mode), two 3x3 convs
        parts = []
        for first in range(0, max(1, rows), PNET_BAND_ROWS):
            last = min(rows, first + PNET_BAND_ROWS)
            band = level_resize(table, level_hw, slice(2 * first, 2 * last + 10 if last < rows else height))
            parts.append(self._run("pnet", lambda batch, band=band: band, 1, deadline, "face proposals"))
        return [np.concatenate(outputs, axis=2) for outputs in zip(*parts, strict=True)]

    def find(self, table: np.ndarray, deadline: Deadline) -> np.ndarray:
        """Faces in a photo given as its `summed_area` table -> (n, 5) float rows x0, y0, x1, y1, score, surest
        first (may be empty). Raises OutOfTime when `deadline` passes before a network runs."""
        height, width = table.shape[0] - 1, table.shape[1] - 1
        found = []
        for scale in pyramid_scales(height, width):
            level_hw = (int(height * scale + 1), int(width * scale + 1))
            regression, probabilities = self._pnet(table, level_hw, deadline)
            windows = proposals(regression[0], probabilities[0, 1], scale, MAX_CANDIDATES_PER_SCALE)
            found.append(windows[nms(windows[:, :4], windows[:, 4], 0.5)])
        boxes = np.concatenate(found) if found else np.zeros((0, 9), np.float32)
        boxes = boxes[nms(boxes[:, :4], boxes[:, 4], 0.7)].astype(np.float64)
        # P-Net's regression is a fraction of the box's size without the +1 of the later stages
        size = np.stack([boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]] * 2, axis=1)
        boxes = squared(np.concatenate([boxes[:, :4] + boxes[:, 5:9] * size, boxes[:, 4:5]], axis=1))

        for name, crop_size, threshold, stage in (("rnet", 24, THRESHOLDS[1], "face refinement"),
                                                  ("onet", 48, THRESHOLDS[2], "face check")):
            if len(boxes) == 0:
                break
            bounds = clipped(boxes, (height, width))
            inside = (bounds[:, 2] > bounds[:, 0]) & (bounds[:, 3] > bounds[:, 1])
            boxes, bounds = boxes[inside], bounds[inside]
            if len(boxes) == 0:
                break
            regression, *_, probabilities = self._run(
                name, lambda batch, bounds=bounds, size=crop_size: crops(table, bounds[batch], size), len(boxes),
                deadline, stage, BATCH * 24 * 24 // (crop_size * crop_size))
            passing = probabilities[:, 1] > threshold
            boxes = np.concatenate([boxes[passing, :4], probabilities[passing, 1:2]], axis=1)
            regression = regression[passing]
            if name == "rnet":
                keep = nms(boxes[:, :4], boxes[:, 4], 0.7)
                boxes = squared(regressed(boxes[keep], regression[keep]))
            else:
                boxes = regressed(boxes, regression)
                boxes = boxes[nms(boxes[:, :4], boxes[:, 4], 0.7, by_smaller=True)]
        return boxes[:, :5]

    def detect(self, image: Image.Image, deadline: Deadline | None = None) -> FaceScan:
        """Every face found, in reading order; raises OutOfTime when `deadline` passes before a network runs."""
        small, scale = shrunk(image, DETECTION_MAX_SIDE, Image.Resampling.BILINEAR, reducing_gap=2.0)
        if min(small.size) < MIN_FACE_SIZE:  # smaller than MTCNN's smallest window
            return FaceScan([], 0)
        table = summed_area(np.asarray(small if small.mode == "RGB" else small.convert("RGB")))
        # The table holds every pixel the networks see: the shrunk copy need not stay while they run (4 MB a
        # 1280 px photo, for each photo in flight).
        del small
        found = self.find(table, deadline or Deadline.after(float("inf")))
        return face_scan(found, 1 / scale, image.size, MIN_SCORE)


def onnx_mtcnn_detector(threads: int | None = None, model_dir: Path = MODEL_DIR) -> OnnxMtcnnDetector:
    """The detector with its three networks loaded from `model_dir`; ModelLoadError when a file is missing or
    unreadable (re-create them with `python -m maskclassifier.modelfiles.export_mtcnn`, in the full install)."""
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads or 0  # 0: ONNX Runtime's default, every core
    options.inter_op_num_threads = 1
    # No memory arena: P-Net's buffers grow with the photo (tens of MB at 1280 px) and an arena would keep the
    # largest ever for the worker's lifetime; freed buffers go back to the allocator (gunicorn.conf.py returns
    # blocks over 1 MB to the system).
    options.enable_cpu_mem_arena = False
    sessions = {}
    for name in ("pnet", "rnet", "onet"):
        path = model_dir / f"{name}.onnx"
        try:
            sessions[name] = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - ONNX Runtime raises several unrelated types; one line for each
            raise ModelLoadError(f"cannot load the face detector's {path} ({str(exc).strip().splitlines()[0]}); "
                                 "re-create it with: python -m maskclassifier.modelfiles.export_mtcnn") from None
    return OnnxMtcnnDetector(sessions)
