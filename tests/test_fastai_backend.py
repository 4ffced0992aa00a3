"""The fastai backend serves the learner's own answers, through its rebuilt pipeline when it can.

Both real learners are used: the notebook's (aug_transforms, no Normalize) and the training CLI's (ImageNet
Normalize, a presize that is not a multiple of the size).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from fastai.vision.augment import Resize
from PIL import Image, ImageOps
from torch import nn
from torch.fx.experimental.optimization import fuse
from torch.fx.proxy import TraceError

import maskclassifier.classifier.fastai_backend as fastai_backend
from maskclassifier.classifier.fastai_backend import FastaiBackend, load_fastai_backend
from maskclassifier.classifier.pipeline import Resample, rebuild
from maskclassifier.core.resize import ItemResize, fastai_crop_box
from varied import varied_uploads


@pytest.fixture(scope="module")
def varied_images() -> list[Image.Image]:
    return varied_uploads()


@pytest.fixture(params=["tiny_model", "cli_model"])
def learner_path(request):
    return request.getfixturevalue(request.param)


def test_rebuilt_pipeline_gives_the_learners_own_answers(learner_path, varied_images):
    backend = load_fastai_backend(learner_path, torch_threads=1)
    assert backend.direct is not None
    direct = backend.probabilities(varied_images)
    assert direct.shape == (len(varied_images), len(backend.vocab))
    with torch.inference_mode():  # the same model on fastai's batch: the difference is the pipeline's alone
        through_fastai = torch.sigmoid(backend.model(backend.learner_batch(varied_images))).numpy()
    assert np.abs(direct - through_fastai).max() <= fastai_backend.DIRECT_TOLERANCE
    assert np.abs(direct - backend.learner_probabilities(varied_images)).max() <= fastai_backend.FUSED_TOLERANCE
    assert backend.batch(varied_images[:2]).shape == backend.learner_batch(varied_images[:2]).shape


def cropped_evenly(image: Image.Image, resize: ItemResize) -> bool:
    """Whether the centred crop leaves even margins, so that it cuts the same pixels from the mirror image."""
    left, top, right, bottom = fastai_crop_box(image.width, image.height, resize.width, resize.height)
    return (image.width - (right - left)) % 2 == 0 and (image.height - (bottom - top)) % 2 == 0


def test_flip_averages_each_image_with_its_mirror_image(learner_path, varied_images):
    backend = load_fastai_backend(learner_path, torch_threads=1)
    images = [image for image in varied_images if cropped_evenly(image, backend.direct.resize)]
    assert len(images) >= 30
    plain, flipped = backend.probabilities(images), backend.probabilities(images, flip=True)
    mirrored = backend.probabilities([ImageOps.mirror(image) for image in images])
    assert np.abs(flipped - (plain + mirrored) / 2).max() <= 1e-5
    assert np.abs(flipped - plain).max() > 1e-3  # the mirror image does change the answer


def test_resamples_are_simplified_only_while_the_answers_match(tiny_model, monkeypatch):
    backend = load_fastai_backend(tiny_model)
    exact = rebuild(backend.learner.dls.valid, exact=True)

    def identities(pipeline):
        return [step for step in pipeline.steps if isinstance(step, Resample) and step.in_hw == step.out_hw]

    assert identities(exact) and not identities(backend.direct)
    assert len(backend.direct.steps) == len(exact.steps) - len(identities(exact))
    resizes = [step for step in backend.direct.steps if isinstance(step, Resample)]
    assert resizes and all(step.separable for step in resizes)
    assert not any(step.separable for step in exact.steps if isinstance(step, Resample))

    monkeypatch.setattr(fastai_backend, "DIRECT_TOLERANCE", 0.0)  # now only the exact rebuild is good enough
    strict = load_fastai_backend(tiny_model)
    assert [step.describe() for step in strict.direct.steps] == [step.describe() for step in exact.steps]


def test_the_model_is_served_with_batchnorm_folded_into_its_convolutions(learner_path, varied_images):
    backend = load_fastai_backend(learner_path, torch_threads=1)
    assert backend.model is not backend.learner.model
    assert not [module for module in backend.model.modules() if isinstance(module, nn.BatchNorm2d)]
    assert [module for module in backend.learner.model.modules() if isinstance(module, nn.BatchNorm2d)]
    batch = backend.batch(varied_images)
    with torch.inference_mode():
        fused, learner = (torch.sigmoid(model(batch)) for model in (backend.model, backend.learner.model))
    assert (fused - learner).abs().max() <= fastai_backend.FUSED_TOLERANCE


def test_a_fused_model_that_cannot_be_built_or_answers_differently_is_not_used(tiny_model, monkeypatch):
    def untraceable(model):
        raise TraceError("symbolically traced variables cannot be used as inputs to control flow")

    monkeypatch.setattr(fastai_backend, "fuse", untraceable)
    assert load_fastai_backend(tiny_model).model.__class__.__name__ != "GraphModule"

    def off_by_a_little(model):
        fused = fuse(model)
        [module for module in fused.modules() if isinstance(module, nn.Linear)][-1].bias.data += 0.01
        return fused

    monkeypatch.setattr(fastai_backend, "fuse", off_by_a_little)
    backend = load_fastai_backend(tiny_model)
    assert backend.model is backend.learner.model and backend.direct is not None


def test_a_pipeline_that_cannot_be_rebuilt_runs_through_fastai(tiny_model, varied_images):
    learner = load_fastai_backend(tiny_model).learner
    next(tfm for tfm in learner.dls.valid.after_item.fs if isinstance(tfm, Resize)).method = "squish"
    backend = FastaiBackend(learner, tiny_model)
    assert backend.direct is None
    images = varied_images[:8]
    assert torch.equal(backend.batch(images), backend.learner_batch(images))
    assert np.abs(backend.probabilities(images) - backend.learner_probabilities(images)).max() <= (
        fastai_backend.FUSED_TOLERANCE)  # the same batch, through the fused model


def test_a_rebuilt_pipeline_that_answers_differently_is_not_used(tiny_model, monkeypatch):
    def wrong_resampling(valid_loader, exact):
        pipeline = rebuild(valid_loader, exact)
        resize = pipeline.resize
        return replace(pipeline, resize=ItemResize(resize.width, resize.height, Image.Resampling.NEAREST))

    monkeypatch.setattr(fastai_backend, "rebuild", wrong_resampling)
    backend = load_fastai_backend(tiny_model)
    assert backend.direct is None
    assert backend.input_size == backend.learner_batch([Image.new("RGB", (64, 48))]).shape[-1]


@pytest.mark.parametrize("in_hw, out_hw, align_corners", [
    ((288, 288), (256, 256), True), ((288, 288), (256, 256), False), ((300, 220), (224, 160), True),
    ((97, 301), (256, 256), True), ((256, 256), (256, 256), False), ((300, 220), (256, 256), False)])
def test_a_resample_as_a_resize_reads_the_pixels_grid_sample_reads(in_hw, out_hw, align_corners):
    pixels = torch.rand(2, 3, *in_hw, generator=torch.Generator().manual_seed(0)) * 255
    step = Resample(in_hw, out_hw, "bilinear", "reflection", align_corners)
    reference = torch.nn.functional.grid_sample(pixels, step.grid.expand(2, -1, -1, -1), mode="bilinear",
                                                padding_mode="reflection", align_corners=align_corners)
    enlarging = in_hw[0] < out_hw[0] or in_hw[1] < out_hw[1]
    assert step.separable == (align_corners or not enlarging)  # enlarging without align_corners reads the padding
    assert (step(pixels) - reference).abs().max() <= 0.02  # of 255: float rounding of the sample positions
    exact = Resample(in_hw, out_hw, "bilinear", "reflection", align_corners, exact=True)
    assert torch.equal(exact(pixels), reference)
