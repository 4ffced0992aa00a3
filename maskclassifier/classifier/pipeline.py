"""fastai's validation pipeline, read from a learner and rebuilt without fastai's DataLoader.

fastai's inference pipeline has two halves. The item transforms (Resize with method='crop') run in Pillow, so
they are repeated with Pillow (`maskclassifier.core.resize`) and give the same pixels. The batch transforms (float
conversion, the resamples to `size` that the augmentation transforms still do on the validation split,
normalisation) run in torch; here they become small torch modules, in pipeline order. The fastai backend runs
them directly instead of building a `test_dl` per request, and the ONNX export bakes them into its graph. A
transform this module does not know raises PipelineError.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from fastai.data.transforms import IntToFloatTensor, Normalize, ToTensor
from fastai.vision.augment import AffineCoordTfm, RandomResizedCropGPU, Resize, ResizeMethod
from PIL import Image
from torch import nn

from maskclassifier.core.errors import MaskClassifierError
from maskclassifier.core.resize import ItemResize, item_resize_from


class PipelineError(MaskClassifierError, RuntimeError):
    """The learner's validation pipeline has a step that cannot be rebuilt faithfully; the message says which."""


def _size_hw(size: int | Sequence[int]) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def size_json(height: int, width: int) -> int | list[int]:
    """An int for a square, else [height, width] (fastai's order for sizes)."""
    return height if height == width else [height, width]


def item_resize(after_item) -> dict:
    """The item-level Resize of the validation pipeline, described the way the sidecar records it."""
    resizes = []
    for tfm in after_item.fs:
        if isinstance(tfm, ToTensor) or _train_only(tfm):
            continue
        if not isinstance(tfm, Resize):
            raise PipelineError(f"item transform {tfm!r} runs at inference and has no equivalent outside fastai "
                                "here; train with item_tfms=Resize(presize) (method='crop')")
        resizes.append(tfm)
    if len(resizes) != 1:
        raise PipelineError(f"the learner has {len(resizes)} item Resize transforms; expected exactly one "
                            "(item_tfms=Resize(presize)): without it images reach the model at their own size")
    resize = resizes[0]
    if resize.method != ResizeMethod.Crop:
        raise PipelineError(f"item Resize uses method={resize.method!r}; only 'crop' (fastai's default) is supported")
    width, height = resize.size  # fastai stores Resize.size as (width, height), Pillow's order
    return {"presize": size_json(height, width), "resize_method": "crop", "crop": "center",
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
    """fastai's TensorImage.affine_coord with the identity matrix: grid_sample onto an identity grid of `size`,
    run as the bilinear resize that reads the same pixels where one does (`separable`), unless `exact`."""

    def __init__(self, in_hw: tuple[int, int], out_hw: tuple[int, int], mode: str, padding: str,
                 align_corners: bool, exact: bool = False):
        super().__init__()
        identity = torch.eye(3)[:2].unsqueeze(0)
        grid = F.affine_grid(identity, [1, 3, *out_hw], align_corners=align_corners)
        _refuse_area_prefilter(in_hw, out_hw, grid, mode)
        self.register_buffer("grid", grid)
        self.in_hw, self.out_hw = in_hw, out_hw
        self.mode, self.padding, self.align_corners = mode, padding, align_corners
        shrinking = in_hw[0] >= out_hw[0] and in_hw[1] >= out_hw[1]
        self.separable = not exact and mode == "bilinear" and (align_corners or shrinking)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.separable:
            # The same samples as grid_sample on the identity grid: with align_corners output pixel i reads input
            # i * (in - 1) / (out - 1), without it (i + 0.5) * in / out - 0.5; a bilinear resize computes exactly
            # these (up to float rounding of the positions: at most 0.012 of 255 on noise), and when shrinking no
            # sample falls outside the image, so padding never applies. It is a separable Resize in the ONNX graph
            # instead of a GridSample, which gathered four pixels per output pixel through a per-pixel grid and
            # took 38 % of the served forward pass (BENCHMARKS.md, int8 on model 9).
            return F.interpolate(x, size=self.out_hw, mode="bilinear", align_corners=self.align_corners)
        grid = self.grid.expand(x.shape[0], -1, -1, -1)
        return F.grid_sample(x, grid, mode=self.mode, padding_mode=self.padding, align_corners=self.align_corners)

    def describe(self) -> dict:
        return {"op": "resample", "from": list(self.in_hw), "to": list(self.out_hw), "mode": self.mode,
                "padding": self.padding, "align_corners": self.align_corners}


def _refuse_area_prefilter(in_hw: tuple[int, int], out_hw: tuple[int, int], grid: torch.Tensor, mode: str) -> None:
    """fastai's _grid_sample first area-downsamples when shrinking by more than 2x; that step is not rebuilt."""
    zoom = 2 / (grid.max() - grid.min()).item()
    shrink = min(in_hw[0] / out_hw[0], in_hw[1] / out_hw[1]) / 2
    if mode == "bilinear" and shrink > 1 and shrink > zoom:
        raise PipelineError(f"the batch resample shrinks {in_hw} to {out_hw}, more than 2x, where fastai "
                            "area-filters first; retrain with a presize at most twice the size (--presize)")


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


def batch_steps(after_batch, in_hw: tuple[int, int], exact: bool = False) -> tuple[list[nn.Module], tuple[int, int]]:
    """The validation-split batch transforms, in pipeline order, as torch modules; and the final (height, width).

    On the validation split fastai's flip/rotate/zoom transform resamples the batch onto an identity grid of the
    same size, which returns it unchanged up to float rounding, and a resample to another size reads the same
    pixels as a bilinear resize. Unless `exact`, the identity resamples are left out and the others done as
    resizes (Resample), both equal to fastai's up to float rounding (the caller checks the answers still match);
    `exact` keeps fastai's own operations, bit for bit. A crop of the whole image is always left out."""
    steps: list[nn.Module] = []
    hw = in_hw
    for tfm in after_batch.fs:
        if isinstance(tfm, IntToFloatTensor):
            steps.append(ToFloat(tfm.div))
        elif isinstance(tfm, AffineCoordTfm):  # validation: identity matrix, no coordinate warp, resample to size
            out_hw = hw if tfm.size is None else _size_hw(tfm.size)
            if exact or out_hw != hw:
                steps.append(Resample(hw, out_hw, tfm.mode, tfm.pad_mode, tfm.align_corners, exact))
            hw = out_hw
        elif isinstance(tfm, RandomResizedCropGPU):  # validation: a center crop (valid_scale), then resample to size
            tfm.before_call(torch.zeros(1, 3, *hw), split_idx=1)
            (top, left), (height, width) = tfm.tl, tfm.cp_size
            if (height, width) != hw:
                steps.append(Crop(top, left, height, width))
            # affine_coord's defaults, which RandomResizedCropGPU does not override
            steps.append(Resample((height, width), _size_hw(tfm.size), tfm.mode, "reflection", True, exact))
            hw = _size_hw(tfm.size)
        elif isinstance(tfm, Normalize):
            steps.append(Standardise(tfm.mean, tfm.std))
        elif not _train_only(tfm):
            raise PipelineError(f"batch transform {tfm!r} runs at inference and has no equivalent outside fastai "
                                "here; remove it from batch_tfms or extend maskclassifier.classifier.pipeline")
    return steps, hw


def probe_images() -> list[Image.Image]:
    """Noise at several sizes and aspect ratios: high-frequency content shows any resampling difference."""
    rng = np.random.default_rng(0)
    sizes = [(640, 480), (480, 640), (301, 97), (1200, 90), (64, 64), (333, 333), (40, 700), (1024, 768)]
    return [Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)) for width, height in sizes]


class BatchSteps(nn.Module):
    """uint8 pixels (batch, height, width, 3) after the item Resize -> the batch the model takes."""

    def __init__(self, steps: Sequence[nn.Module]):
        super().__init__()
        self.steps = nn.Sequential(*steps)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.steps(pixels.permute(0, 3, 1, 2).float())


@dataclass(frozen=True)
class ValidationPipeline:
    """The learner's validation pipeline, rebuilt: `item` as the sidecar records it, `resize` in Pillow, then
    `batch_steps` in torch, ending at `out_hw`."""

    item: dict
    resize: ItemResize
    batch_steps: BatchSteps
    out_hw: tuple[int, int]

    @property
    def steps(self) -> list[nn.Module]:
        return list(self.batch_steps.steps)

    def batch(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """The batch fastai's validation DataLoader would make of these RGB images."""
        pixels = np.stack([self.resize(image) for image in images])
        with torch.inference_mode():
            return self.batch_steps(torch.from_numpy(pixels))


def rebuild(valid_loader, exact: bool = False) -> ValidationPipeline:
    """The validation DataLoader's item and batch transforms without fastai (`exact`: see batch_steps);
    PipelineError when it cannot be."""
    if len(valid_loader.before_batch.fs):
        raise PipelineError(f"before_batch transforms {list(valid_loader.before_batch.fs)} are not supported")
    item = item_resize(valid_loader.after_item)
    resize = item_resize_from(item)
    steps, out_hw = batch_steps(valid_loader.after_batch, (resize.height, resize.width), exact)
    return ValidationPipeline(item, resize, BatchSteps(steps).eval(), out_hw)
