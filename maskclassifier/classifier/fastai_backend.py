"""The fastai backend: load an exported learner and run it on PIL images with the learner's own transforms."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from fastai.learner import Learner
from fastai.vision.core import PILImage
from PIL import Image
from torch import nn
from torch.fx.experimental.optimization import fuse
from torch.fx.proxy import TraceError

from maskclassifier.classifier.heatmap import Explanation, grad_cam, seen_box
from maskclassifier.classifier.learner_file import read_learner
from maskclassifier.classifier.pipeline import (
    Crop,
    PipelineError,
    ValidationPipeline,
    item_resize,
    probe_images,
    rebuild,
)
from maskclassifier.core.capacity import Deadline
from maskclassifier.core.errors import ModelLoadError
from maskclassifier.core.resize import item_resize_from, size_hw
from maskclassifier.core.tta import average_mirrored

# The rebuilt pipeline runs fastai's Pillow steps and the same arithmetic, but its batch resample is a bilinear resize
# rather than grid_sample (pipeline.Resample): the sample positions differ by float rounding, which moved the test
# learners' probabilities by up to about 1.3e-5. As for the fused model, a 1e-4 shift changes an answer only for a
# probability within 1e-4 of the threshold.
DIRECT_TOLERANCE = 1e-4
# Folding BatchNorm into the convolutions reorders float arithmetic: on the test learners the probabilities move by
# up to about 1e-5, on the shipped model by under 1e-6. A 1e-4 shift changes an answer only for a probability
# within 1e-4 of the threshold.
FUSED_TOLERANCE = 1e-4


# How a learner's targets are encoded, read from its data's target pipeline (kept by learn.export): fastai's
# MultiCategoryBlock makes MultiCategorize then OneHotEncode, its CategoryBlock makes Categorize.
MULTI_LABEL_TARGETS = ("MultiCategorize", "OneHotEncode", "EncodedMultiCategorize")
SINGLE_LABEL_TARGETS = ("Categorize",)
# Failing that, the loss: fastai's multi-label losses carry the decoding threshold (`thresh`); these are the
# standard losses of each kind that do not.
MULTI_LABEL_LOSSES = ("BCEWithLogitsLossFlat", "BCEWithLogitsLoss", "BCELossFlat", "BCELoss")
SINGLE_LABEL_LOSSES = ("CrossEntropyLossFlat", "CrossEntropyLoss", "LabelSmoothingCrossEntropyFlat",
                       "LabelSmoothingCrossEntropy", "FocalLossFlat", "NLLLoss")


def label_kind(learner: Learner) -> tuple[str | None, str]:
    """Whether the learner predicts several categories per image ("multi") or one ("single"), and what says so;
    (None, why) when neither its data nor its loss tells.

    The data decides first: a custom loss (a focal loss written in a training script, say) says nothing reliable
    about the targets, and a multi-label loss need not have fastai's `thresh` (the served threshold comes from the
    sidecar or MASK_THRESHOLD, never from the loss)."""
    try:
        target_steps = [type(step).__name__ for step in learner.dls.valid_ds.tls[-1].tfms.fs]
    except (AttributeError, IndexError, TypeError):  # a learner without a DataBlock's datasets
        target_steps = []
    multi = [name for name in target_steps if name in MULTI_LABEL_TARGETS]
    if multi:
        return "multi", f"its targets are encoded by {' and '.join(multi)}, as MultiCategoryBlock does"
    single = [name for name in target_steps if name in SINGLE_LABEL_TARGETS]
    if single:
        return "single", f"its targets are one category per image, encoded by {single[0]}, as CategoryBlock does"
    loss = type(learner.loss_func).__name__
    if hasattr(learner.loss_func, "thresh") or loss in MULTI_LABEL_LOSSES:
        return "multi", f"its loss is {loss}"
    if loss in SINGLE_LABEL_LOSSES:
        return "single", f"its loss is {loss}, a single-label loss"
    return None, f"its data has no category encoding and its loss ({loss}) is not a known one"


def _check_multilabel(learner: Learner, path: Path) -> list[str]:
    """The learner's vocab; ModelLoadError, saying why, unless it is a multi-label image classifier."""
    vocab = getattr(learner.dls, "vocab", None)
    if vocab is None or len(vocab) == 0:
        raise ModelLoadError(f"{path} has no category vocabulary; it is not an image classifier")
    if not isinstance(vocab[0], str):
        raise ModelLoadError(f"{path} is not a multi-label classifier; train it with MultiCategoryBlock")
    kind, because = label_kind(learner)
    if kind == "single":
        raise ModelLoadError(
            f"{path} is a single-label classifier ({because}); "
            "this app needs a multi-label one (MultiCategoryBlock, sigmoid outputs)"
        )
    if kind is None:
        raise ModelLoadError(
            f"{path}: cannot tell whether it is a multi-label classifier ({because}); "
            "this app needs one trained with MultiCategoryBlock (sigmoid outputs)"
        )
    return [str(name) for name in vocab]


class FastaiBackend:
    """Runs the learner's validation transforms and model; never the get_x/get_y it was trained with.

    fastai builds a DataLoader (`test_dl`) for every batch it predicts, which costs more than the forward pass of
    a small model. So the validation pipeline is rebuilt once, at load time, in Pillow and torch
    (`maskclassifier.classifier.pipeline`), and used only if it gives the learner's own answers on probe images; a
    learner whose pipeline cannot be rebuilt is served through `test_dl`, as fastai would. Likewise the model is served
    with each BatchNorm folded into the convolution before it (torch.fx's `fuse`, about 10 % faster on the CPU)
    when that gives the same answers up to float rounding; each check is of its own change alone.
    """

    def __init__(self, learner: Learner, path: Path):
        self.learner = learner
        self.vocab = _check_multilabel(learner, path)
        self.learner.model.eval()
        self.learner.model.to(memory_format=torch.contiguous_format)
        arch = getattr(learner, "arch", None)
        self.architecture = getattr(arch, "__name__", None) or str(arch or type(learner.model).__name__)
        probes = probe_images()
        probe_batch = self.learner_batch(probes)
        self.model, reference = self._checked_fused_model(probe_batch)
        self.direct = self._checked_direct_pipeline(probes, reference)
        self.input_size = self.batch([Image.new("RGB", (64, 48))]).shape[-1]
        self.item_size = _item_size(learner)

    def learner_batch(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """A batch the way the learner's validation DataLoader builds it, from images that are already RGB."""
        x_pipeline = self.learner.dls.valid_ds.tls[0].tfms.fs
        items = [PILImage.create(image) for image in images]
        # rm_type_tfms drops the whole x pipeline (get_x, PILImage.create): the items are already PILImages.
        loader = self.learner.dls.test_dl(items, rm_type_tfms=len(x_pipeline), bs=max(1, len(items)), num_workers=0)
        return torch.cat([batch[0] for batch in loader]).as_subclass(torch.Tensor)

    def batch(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """The same batch as `learner_batch`, through the rebuilt pipeline when there is one."""
        return self.learner_batch(images) if self.direct is None else self.direct.batch(images)

    def model_batch(self, images: Sequence[Image.Image], flip: bool = False) -> torch.Tensor:
        """The batch the model runs on: the images' `batch`, then, with `flip`, its mirror image."""
        batch = self.batch(images)
        return torch.cat([batch, batch.flip(-1)]) if flip else batch

    def probabilities(self, images: Sequence[Image.Image], flip: bool = False) -> np.ndarray:
        outputs = _sigmoid_outputs(self.model, self.model_batch(images, flip))
        return average_mirrored(outputs) if flip else outputs

    def learner_probabilities(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Probabilities of the learner's own model through fastai's own DataLoader: the reference the faster
        path is checked against."""
        return _sigmoid_outputs(self.learner.model, self.learner_batch(images))

    def heat_map(self, image: Image.Image, category: str | None, deadline: Deadline) -> Explanation:
        """Grad-CAM (heatmap.grad_cam): gradients are available here. One forward and one backward pass, on the
        learner's own model (the fused one has no separate body), so `deadline` is not checked."""
        return grad_cam(self.learner.model, self.batch([image]), self.vocab, category, self._seen_box(image))

    def _seen_box(self, image: Image.Image) -> tuple[int, int, int, int]:
        """The part of `image` the batch shows: the item Resize's centre crop, narrowed by a batch-level crop."""
        if self.direct is None:  # served through fastai's own DataLoader: its item Resize, if it can be read
            try:
                height, width = size_hw(item_resize(self.learner.dls.valid.after_item)["presize"])
            except (PipelineError, ValueError):
                return 0, 0, image.width, image.height
            return seen_box(image, width, height)
        crops = [(step.top, step.left, step.height, step.width)
                 for step in self.direct.steps if isinstance(step, Crop)]
        return seen_box(image, self.direct.resize.width, self.direct.resize.height, crops[0] if crops else None)

    def _checked_fused_model(self, probe_batch: torch.Tensor) -> tuple[nn.Module, np.ndarray]:
        """The model to serve and its outputs on `probe_batch` (each forward pass of the 8 probes costs about
        0.2 s of start-up on one thread, so none is run twice)."""
        learner_outputs = _sigmoid_outputs(self.learner.model, probe_batch)
        try:
            fused = fuse(self.learner.model)
        except (TraceError, TypeError, RuntimeError, NotImplementedError, AttributeError):  # fx cannot trace it
            return self.learner.model, learner_outputs
        fused_outputs = _sigmoid_outputs(fused, probe_batch)
        if np.abs(fused_outputs - learner_outputs).max() <= FUSED_TOLERANCE:
            return fused, fused_outputs
        return self.learner.model, learner_outputs

    def _checked_direct_pipeline(self, probes: list[Image.Image], reference: np.ndarray) -> ValidationPipeline | None:
        """The rebuilt pipeline with its resamples simplified, else the exact one (pipeline.batch_steps), if
        `self.model` answers on its batches as it does on fastai's (`reference`)."""
        for exact in (False, True):
            try:
                pipeline = rebuild(self.learner.dls.valid, exact)
            except PipelineError:
                return None
            if np.abs(_sigmoid_outputs(self.model, pipeline.batch(probes)) - reference).max() <= DIRECT_TOLERANCE:
                return pipeline
        return None


def _item_size(learner: Learner) -> tuple[int, int] | None:
    """(width, height) of the learner's item Resize; None when its validation items are not one crop Resize."""
    try:
        resize = item_resize_from(item_resize(learner.dls.valid.after_item))
    except (PipelineError, ValueError):
        return None
    return resize.width, resize.height


def _sigmoid_outputs(model: nn.Module, batch: torch.Tensor) -> np.ndarray:
    with torch.inference_mode():
        return torch.sigmoid(model(batch)).numpy()


def load_fastai_backend(path: Path, torch_threads: int | None = None) -> FastaiBackend:
    if torch_threads:
        torch.set_num_threads(torch_threads)
    return FastaiBackend(read_learner(path), path)
