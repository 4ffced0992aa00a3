"""Export a fastai learner to ONNX for the slim server, and describe its preprocessing in the JSON sidecar.

    python -m maskclassifier.export_onnx models/export.pkl

writes models/export.onnx next to the learner and adds to models/export.json (created when absent, other keys
kept) the vocab, threshold, the preprocessing the learner applies at inference and the .onnx file's sha256.

fastai's validation pipeline has two halves. The item transforms (Resize with method='crop') run in Pillow, so the
slim backend repeats them with Pillow and gets the same pixels. The batch transforms (float conversion, the
resamples to `size` that the augmentation transforms still do on the validation split, normalisation) run in
torch; they are baked into the ONNX graph in front of the model, together with the final sigmoid. The graph takes
uint8 pixels (batch, height, width, 3) at the item size and returns probabilities. Both halves are read from the
learner's own transforms, a transform this module does not know stops the export, and the export is checked
against the fastai backend before the sidecar is written.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import torch
import torch.nn.functional as F
from fastai.data.transforms import IntToFloatTensor, Normalize, ToTensor
from fastai.vision.augment import AffineCoordTfm, RandomResizedCropGPU, Resize, ResizeMethod
from PIL import Image
from torch import nn

from maskclassifier.fastai_backend import FastaiBackend, load_fastai_backend
from maskclassifier.model import DEFAULT_THRESHOLD, ModelLoadError, read_sidecar, sha256_file, sidecar_path
from maskclassifier.onnx import load_onnx_backend

OPSET = 18
PARITY_TOLERANCE = 1e-3
INPUT_NAME = "pixels"
OUTPUT_NAME = "probabilities"


class ExportError(RuntimeError):
    """The learner cannot be exported faithfully; the message says why and what to do."""


def _size_hw(size: int | Sequence[int]) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def _size_json(height: int, width: int) -> int | list[int]:
    """An int for a square, else [height, width] (fastai's order for sizes)."""
    return height if height == width else [height, width]


def item_resize(after_item) -> dict:
    """The item-level Resize of the validation pipeline, which the slim backend redoes in Pillow."""
    resizes = []
    for tfm in after_item.fs:
        if isinstance(tfm, ToTensor) or _train_only(tfm):
            continue
        if not isinstance(tfm, Resize):
            raise ExportError(f"item transform {tfm!r} runs at inference and has no ONNX equivalent here; "
                              "train with item_tfms=Resize(presize) (method='crop')")
        resizes.append(tfm)
    if len(resizes) != 1:
        raise ExportError(f"the learner has {len(resizes)} item Resize transforms; expected exactly one "
                          "(item_tfms=Resize(presize)): without it images reach the model at their own size")
    resize = resizes[0]
    if resize.method != ResizeMethod.Crop:
        raise ExportError(f"item Resize uses method={resize.method!r}; only 'crop' (fastai's default) is supported")
    width, height = resize.size  # fastai stores Resize.size as (width, height), Pillow's order
    return {"presize": _size_json(height, width), "resize_method": "crop", "crop": "center",
            "resample": Image.Resampling(resize.mode).name.lower()}


def _train_only(tfm) -> bool:
    """Skipped on the validation split. AffineCoordTfm resets its own split_idx on every call, so it always runs."""
    return getattr(tfm, "split_idx", None) == 0 and not isinstance(tfm, AffineCoordTfm)


class ToFloat(nn.Module):
    def __init__(self, divisor: float):
        super().__init__()
        self.divisor = float(divisor)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x / self.divisor

    def describe(self) -> dict:
        return {"op": "divide", "by": self.divisor}


class Resample(nn.Module):
    """fastai's TensorImage.affine_coord with the identity matrix: grid_sample onto an identity grid of `size`."""

    def __init__(self, in_hw: tuple[int, int], out_hw: tuple[int, int], mode: str, padding: str,
                 align_corners: bool):
        super().__init__()
        identity = torch.eye(3)[:2].unsqueeze(0)
        grid = F.affine_grid(identity, [1, 3, *out_hw], align_corners=align_corners)
        _refuse_area_prefilter(in_hw, out_hw, grid, mode)
        self.register_buffer("grid", grid)
        self.in_hw, self.out_hw = in_hw, out_hw
        self.mode, self.padding, self.align_corners = mode, padding, align_corners

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        grid = self.grid.expand(x.shape[0], -1, -1, -1)
        return F.grid_sample(x, grid, mode=self.mode, padding_mode=self.padding, align_corners=self.align_corners)

    def describe(self) -> dict:
        return {"op": "resample", "from": list(self.in_hw), "to": list(self.out_hw), "mode": self.mode,
                "padding": self.padding, "align_corners": self.align_corners}


def _refuse_area_prefilter(in_hw: tuple[int, int], out_hw: tuple[int, int], grid: torch.Tensor, mode: str) -> None:
    """fastai's _grid_sample first area-downsamples when shrinking by more than 2x; that step is not exported."""
    zoom = 2 / (grid.max() - grid.min()).item()
    shrink = min(in_hw[0] / out_hw[0], in_hw[1] / out_hw[1]) / 2
    if mode == "bilinear" and shrink > 1 and shrink > zoom:
        raise ExportError(f"the batch resample shrinks {in_hw} to {out_hw}, more than 2x, where fastai area-filters "
                          "first; retrain with a presize at most twice the size (--presize)")


class Crop(nn.Module):
    def __init__(self, top: int, left: int, height: int, width: int):
        super().__init__()
        self.top, self.left, self.height, self.width = top, left, height, width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[..., self.top:self.top + self.height, self.left:self.left + self.width]

    def describe(self) -> dict:
        return {"op": "crop", "top": self.top, "left": self.left, "height": self.height, "width": self.width}


class Standardise(nn.Module):
    def __init__(self, mean: torch.Tensor, std: torch.Tensor):
        super().__init__()
        self.register_buffer("mean", mean.detach().float().cpu().reshape(1, -1, 1, 1))
        self.register_buffer("std", std.detach().float().cpu().reshape(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def describe(self) -> dict:
        return {"op": "normalize", "mean": self.mean.flatten().tolist(), "std": self.std.flatten().tolist()}


def batch_steps(after_batch, in_hw: tuple[int, int]) -> tuple[list[nn.Module], tuple[int, int]]:
    """The validation-split batch transforms, in pipeline order, as torch modules; and the final (height, width)."""
    steps: list[nn.Module] = []
    hw = in_hw
    for tfm in after_batch.fs:
        if isinstance(tfm, IntToFloatTensor):
            steps.append(ToFloat(tfm.div))
        elif isinstance(tfm, AffineCoordTfm):  # validation: identity matrix, no coordinate warp, resample to size
            out_hw = hw if tfm.size is None else _size_hw(tfm.size)
            steps.append(Resample(hw, out_hw, tfm.mode, tfm.pad_mode, tfm.align_corners))
            hw = out_hw
        elif isinstance(tfm, RandomResizedCropGPU):  # validation: a center crop (valid_scale), then resample to size
            tfm.before_call(torch.zeros(1, 3, *hw), split_idx=1)
            (top, left), (height, width) = tfm.tl, tfm.cp_size
            steps.append(Crop(top, left, height, width))
            # affine_coord's defaults, which RandomResizedCropGPU does not override
            steps.append(Resample((height, width), _size_hw(tfm.size), tfm.mode, "reflection", True))
            hw = _size_hw(tfm.size)
        elif isinstance(tfm, Normalize):
            steps.append(Standardise(tfm.mean, tfm.std))
        elif not _train_only(tfm):
            raise ExportError(f"batch transform {tfm!r} runs at inference and has no ONNX equivalent here; "
                              "remove it from batch_tfms or extend maskclassifier.export_onnx")
    return steps, hw


class InferenceGraph(nn.Module):
    """uint8 pixels (batch, height, width, 3) after the item Resize -> sigmoid probabilities (batch, categories)."""

    def __init__(self, model: nn.Module, steps: Sequence[nn.Module]):
        super().__init__()
        self.steps = nn.Sequential(*steps)
        self.model = model

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = pixels.permute(0, 3, 1, 2).float()
        return torch.sigmoid(self.model(self.steps(x)))


def preprocessing(item: dict, steps: Sequence[nn.Module], out_hw: tuple[int, int]) -> dict:
    """The sidecar's description: the keys train.py writes, plus each batch step the graph performs."""
    normalize = next((step.describe() for step in steps if isinstance(step, Standardise)), None)
    return {
        **item,
        "size": _size_json(*out_hw),
        "normalize": None if normalize is None else {"mean": normalize["mean"], "std": normalize["std"]},
        "batch_steps_in_onnx_graph": [step.describe() for step in steps],
    }


def write_onnx(graph: InferenceGraph, item_hw: tuple[int, int], path: Path, opset: int) -> None:
    example = torch.zeros(2, *item_hw, 3, dtype=torch.uint8)
    batch = torch.export.Dim("batch", min=1, max=1024)
    graph.eval()
    program = torch.onnx.export(graph, (example,), input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                                opset_version=opset, dynamo=True, external_data=False,
                                dynamic_shapes={"pixels": {0: batch}}, verbose=False)
    program.save(str(path), external_data=False)
    onnx.checker.check_model(str(path))


def parity_images() -> list[Image.Image]:
    """Noise at several sizes and aspect ratios: high-frequency content shows any resampling difference."""
    rng = np.random.default_rng(0)
    sizes = [(640, 480), (480, 640), (301, 97), (1200, 90), (64, 64), (333, 333), (40, 700), (1024, 768)]
    return [Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)) for width, height in sizes]


def check_parity(fastai_backend: FastaiBackend, onnx_path: Path, sidecar: dict) -> float:
    """Largest absolute difference between the two backends' probabilities; ExportError above the tolerance."""
    images = parity_images()
    expected = fastai_backend.probabilities(images)
    actual = load_onnx_backend(onnx_path, sidecar, 1).probabilities(images)
    difference = float(np.abs(expected - actual).max())
    if difference > PARITY_TOLERANCE:
        raise ExportError(f"the ONNX export differs from the fastai learner by {difference:.2e} "
                          f"(tolerance {PARITY_TOLERANCE:g}); {onnx_path} was not recorded in the sidecar")
    return difference


def export(model_path: Path, opset: int = OPSET) -> dict:
    """Write MODEL.onnx beside MODEL.pkl (they share the sidecar MODEL.json) and return the updated sidecar."""
    model_path = Path(model_path)
    if model_path.suffix != ".pkl" or not model_path.is_file():
        raise ExportError(f"{model_path} is not a learner export: pass the .pkl written by learn.export() "
                          "(e.g. models/export.pkl)")
    onnx_path = model_path.with_suffix(".onnx")
    backend = load_fastai_backend(model_path)
    valid = backend.learner.dls.valid
    if len(valid.before_batch.fs):
        raise ExportError(f"before_batch transforms {list(valid.before_batch.fs)} are not supported")
    item = item_resize(valid.after_item)
    item_hw = _size_hw(item["presize"])
    steps, out_hw = batch_steps(valid.after_batch, item_hw)
    write_onnx(InferenceGraph(backend.learner.model, steps), item_hw, onnx_path, opset)

    sidecar = read_sidecar(model_path)
    sidecar.update({
        "vocab": backend.vocab,
        "threshold": float(sidecar.get("threshold", DEFAULT_THRESHOLD)),
        "architecture": sidecar.get("architecture", backend.architecture),
        "input_size": out_hw[1],
        "preprocessing": {**sidecar.get("preprocessing", {}), **preprocessing(item, steps, out_hw)},
    })
    sidecar["onnx"] = {
        "file": onnx_path.name,
        "sha256": sha256_file(onnx_path),
        "opset": opset,
        "input": {"name": INPUT_NAME, "dtype": "uint8", "layout": "NHWC", "height": item_hw[0], "width": item_hw[1]},
        "output": {"name": OUTPUT_NAME, "activation": "sigmoid"},
        "exported_from": {"file": model_path.name, "sha256": sha256_file(model_path)},
        "versions": {"torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__},
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    sidecar["onnx"]["parity"] = {"images": len(parity_images()), "max_abs_difference": check_parity(
        backend, onnx_path, sidecar)}
    sidecar_path(model_path).write_text(json.dumps(sidecar, indent=2) + "\n")
    return sidecar


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m maskclassifier.export_onnx", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", type=Path, help="a fastai learner exported with learn.export() (.pkl)")
    parser.add_argument("--opset", type=int, default=OPSET, help=f"ONNX opset (default: {OPSET})")
    args = parser.parse_args(argv)
    try:
        sidecar = export(args.model, args.opset)
    except (ModelLoadError, ExportError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    onnx_info = sidecar["onnx"]
    print(f"wrote {onnx_info['file']} (sha256 {onnx_info['sha256'][:12]}…) and updated "
          f"{sidecar_path(args.model).name}; largest difference from the fastai learner on "
          f"{onnx_info['parity']['images']} images: {onnx_info['parity']['max_abs_difference']:.1e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
