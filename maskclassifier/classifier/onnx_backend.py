"""The ONNX Runtime backend: serves an export written by `python -m maskclassifier.export_onnx`.

It imports neither torch nor fastai. The JSON sidecar says what the learner does before its model: the item
Resize (a centred crop to the presize's aspect ratio, then a Pillow resize), which is repeated here with Pillow
exactly as fastai does it, on PIL images; everything after that (float conversion, the batch resample to the model
size, normalisation, the sigmoid) is inside the ONNX graph.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime
from onnxruntime.capi import onnxruntime_pybind11_state as ort_errors
from PIL import Image

from maskclassifier.classifier.heatmap import Explanation, occlusion, seen_box
from maskclassifier.core.capacity import Deadline
from maskclassifier.core.errors import ModelLoadError
from maskclassifier.core.resize import ItemResize, item_resize_from, size_hw
from maskclassifier.core.sidecar import Sidecar, sha256_file, sidecar_path
from maskclassifier.core.tta import average_mirrored

INT8_SECTION = "onnx_int8"  # the sidecar's record of the int8 twin (python -m maskclassifier.modelfiles.quantize_onnx)
PRECISIONS = ("float", "int8")
# An int8 answer with any category's probability this close to the threshold is answered by the float model
# instead: int8 moves probabilities by up to about 0.3, but labels only change where they were near the threshold.
# On model 12's 982 validation images 2.6 % were rechecked, which gave 99.9 % of them the float model's labels
# (int8 alone: 98.6 %) for a forward pass 1.30x faster than float's on average (int8 alone 1.37x); a margin of
# 0.05 rechecked 1.4 % for 99.5 %, 0.15 rechecked 3.8 % for 100 % (BENCHMARKS.md, "Issue 20 again, model 12").
INT8_RECHECK_MARGIN = 0.1

_ORT_LOAD_ERRORS = (ort_errors.Fail, ort_errors.InvalidGraph, ort_errors.InvalidProtobuf, ort_errors.NoSuchFile,
                    ort_errors.InvalidArgument, ort_errors.NotImplemented, ort_errors.RuntimeException)


@dataclass(frozen=True)
class FloatRecheck:
    """The float model, for the int8 model's answers too close to the threshold to trust (INT8_RECHECK_MARGIN)."""

    session: onnxruntime.InferenceSession
    threshold: float
    margin: float = INT8_RECHECK_MARGIN

    def unsure(self, probabilities: np.ndarray) -> np.ndarray:
        """(n,) bool: the rows of (n, categories) probabilities with a category within `margin` of `threshold`."""
        return (np.abs(probabilities - self.threshold) < self.margin).any(axis=1)


class OnnxBackend:
    def __init__(self, session: onnxruntime.InferenceSession, vocab: list[str], architecture: str,
                 resize: ItemResize, input_hw: tuple[int, int], recheck: FloatRecheck | None = None):
        self.session = session
        self.vocab = vocab
        self.architecture = architecture
        self.resize = resize
        self.input_size = input_hw[1]
        self.item_size = (resize.width, resize.height)
        self.recheck = recheck
        self._input_name = session.get_inputs()[0].name

    def probabilities(self, images: Sequence[Image.Image], flip: bool = False) -> np.ndarray:
        pixels = np.stack([self.resize(image) for image in images])  # (n, height, width, 3)
        if not flip:
            return self.run(pixels)
        return average_mirrored(self.run(np.concatenate([pixels, pixels[:, :, ::-1]])))

    def run(self, pixels: np.ndarray) -> np.ndarray:
        """(n, height, width, 3) uint8 item-resized images (`resize`'s output) -> (n, len(vocab)) probabilities,
        PASS_IMAGES images a pass; with a `recheck`, the rows it is unsure of come from its float model."""
        probabilities = self._passes(self.session, pixels)
        if self.recheck is not None:
            unsure = self.recheck.unsure(probabilities)
            if unsure.any():
                probabilities[unsure] = self._passes(self.recheck.session, pixels[unsure])
        return probabilities

    def _passes(self, session: onnxruntime.InferenceSession, pixels: np.ndarray) -> np.ndarray:
        return np.concatenate([session.run(None, {self._input_name: pixels[start:start + PASS_IMAGES]})[0]
                               for start in range(0, max(1, len(pixels)), PASS_IMAGES)])

    def heat_map(self, image: Image.Image, category: str | None, deadline: Deadline) -> Explanation:
        """Occlusion (heatmap.occlusion): no gradients here, so the graph runs on copies of the item-resized
        image with one part hidden each, in batches, until `deadline`."""
        return occlusion(self.resize(image), self.run, self.vocab, category, deadline,
                         seen_box(image, self.resize.width, self.resize.height))


def _reexport_hint(path: Path) -> str:
    return f"re-export with: python -m maskclassifier.export_onnx {path.with_suffix('.pkl')}"


def _check_onnx_section(path: Path, sidecar: Sidecar | None) -> Sidecar:
    """The sidecar must describe this very file: a retrained learner rewrites the sidecar without an onnx section."""
    json_path = sidecar_path(path)
    if sidecar is None:
        raise ModelLoadError(f"{path} needs its sidecar {json_path}, which is missing; {_reexport_hint(path)}")
    section = sidecar.onnx
    if not isinstance(section, dict) or section.get("file") != path.name:
        raise ModelLoadError(f"{json_path} does not describe {path.name} (no matching 'onnx' section: the learner "
                             f"was probably retrained since the export); {_reexport_hint(path)}")
    if section.get("sha256") != sha256_file(path):
        raise ModelLoadError(f"{path} is not the file {json_path} was written for (sha256 differs); "
                             f"{_reexport_hint(path)}")
    return sidecar


# ONNX Runtime's CPU arena keeps the largest set of buffers any forward pass ever needed for the worker's lifetime:
# one /api/explain (occlusion: batches of 8 item-size images) left the slim worker 129 MB bigger for good. The arena
# stays, and is bounded instead by giving the graph at most PASS_IMAGES images a pass. Measured on the shipped model,
# one thread, the worker's allocator settings (`python -m benchmarks.forward models/export.onnx --arena both
# --batch N`; BENCHMARKS.md, "Issue 27"): thread CPU per image 10.5 ms at 1 a pass, 10.6 at 2, 12.4 at 8 with the
# arena; the arena then keeps 9, 17 and 73 MB. Without the arena nothing is kept, but every buffer over 1 MB is a
# fresh mapping whose pages are faulted in on every pass: 15.5 ms an image at 1 a pass, 17.7 at 8 (+48 %).
CPU_MEM_ARENA = True
PASS_IMAGES = 1
# ONNX Runtime's memory pattern plans one block for all of a pass's buffers and keeps it, and the arena's blocks
# beside it: with it off the session of the shipped model settled 9 MB smaller (36 against 45 MB over the process
# before loading it, after 30 passes), at the same time a pass (11.0 against 10.9 ms, one thread); see
# `python -m benchmarks.forward models/export.onnx --arena on --pattern both` (BENCHMARKS.md, "Issue 27").
MEM_PATTERN = False


def open_session(path: Path, threads: int | None) -> onnxruntime.InferenceSession:
    """An ONNX Runtime session on the CPU as the app runs one: `threads` intra-op threads (None: every core), one
    inter-op thread, its memory arena as CPU_MEM_ARENA says; ModelLoadError when ONNX Runtime cannot load the file."""
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads or 0  # 0: ONNX Runtime's default, every core
    options.inter_op_num_threads = 1
    options.enable_cpu_mem_arena = CPU_MEM_ARENA
    options.enable_mem_pattern = MEM_PATTERN
    try:
        return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except _ORT_LOAD_ERRORS as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(f"ONNX Runtime {onnxruntime.__version__} cannot load {path} ({first_line}); "
                             f"{_reexport_hint(path)}") from None


def _check_signature(path: Path, session: onnxruntime.InferenceSession, resize: ItemResize, categories: int) -> None:
    """The graph must take the item size the sidecar promises and return one probability per category."""
    (graph_input,), (graph_output,) = session.get_inputs(), session.get_outputs()
    if list(graph_input.shape[1:]) != [resize.height, resize.width, 3] or graph_output.shape[-1] != categories:
        raise ModelLoadError(f"{path} takes {graph_input.shape} and returns {graph_output.shape}, which does not match "
                             f"its sidecar ({resize.height}x{resize.width} images, {categories} categories); "
                             f"{_reexport_hint(path)}")


def _int8_twin(path: Path, sidecar: Sidecar) -> Path:
    """The int8 file the sidecar records for the float `path`, checked; ModelLoadError with the command otherwise."""
    section = sidecar.onnx_int8
    hint = f"quantize it with: python -m maskclassifier.modelfiles.quantize_onnx {path} --csv LABELS.csv"
    if not isinstance(section, dict) or not isinstance(section.get("file"), str):
        raise ModelLoadError(f"int8 inference was asked for, but {sidecar_path(path)} records no int8 twin of "
                             f"{path.name}; {hint}")
    int8 = path.with_name(section["file"])
    if not int8.is_file():
        raise ModelLoadError(f"{int8} (recorded in {sidecar_path(path).name}) is missing; {hint}")
    if (section.get("sha256") != sha256_file(int8)
            or section.get("quantized_from", {}).get("sha256") != sha256_file(path)):
        raise ModelLoadError(f"{int8} is not the int8 twin {sidecar_path(path).name} records for this {path.name} "
                             f"(sha256 differs); {hint}")
    return int8


def load_onnx_backend(path: Path, sidecar: Sidecar | None, threads: int | None = None,
                      precision: str = "float", recheck_threshold: float | None = None) -> OnnxBackend:
    """An ONNX Runtime session for `path` (precision "float"), or for its int8 twin the sidecar records ("int8"),
    with the preprocessing its sidecar records; ModelLoadError otherwise. For int8 with `recheck_threshold` (the
    threshold the answers are decided at), `path` is opened too, as the FloatRecheck of unsure answers."""
    path = Path(path)
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, not {precision!r}")
    sidecar = _check_onnx_section(path, sidecar)
    try:
        if not sidecar.vocab or not sidecar.preprocessing:
            raise ValueError("'vocab' and 'preprocessing' must be recorded")
        vocab = list(sidecar.vocab)
        preprocessing = sidecar.preprocessing
        resize = item_resize_from(preprocessing)
        input_hw = size_hw(preprocessing["size"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelLoadError(f"{sidecar_path(path)} has no usable vocab/preprocessing for {path.name} ({exc}); "
                             f"{_reexport_hint(path)}") from None
    served = _int8_twin(path, sidecar) if precision == "int8" else path
    session = open_session(served, threads)
    _check_signature(served, session, resize, len(vocab))
    architecture = str(sidecar.architecture or "unknown") + (" (int8)" if precision == "int8" else "")
    recheck = None
    if precision == "int8" and recheck_threshold is not None:
        recheck = FloatRecheck(open_session(path, threads), recheck_threshold)
    return OnnxBackend(session, vocab, architecture, resize, input_hw, recheck)
