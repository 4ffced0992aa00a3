"""The fastai backend serves the learner's own answers, through its rebuilt pipeline when it can.

Both real learners are used: the notebook's (aug_transforms, no Normalize) and the training CLI's (ImageNet
Normalize, a presize that is not a multiple of the size).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from fastai.vision.augment import Resize
from PIL import Image

import maskclassifier.fastai_backend as fastai_backend
from maskclassifier.fastai_backend import FastaiBackend, load_fastai_backend
from maskclassifier.pipeline import rebuild
from maskclassifier.resize import ItemResize
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
    assert np.abs(direct - backend.learner_probabilities(varied_images)).max() <= fastai_backend.DIRECT_TOLERANCE
    assert backend.batch(varied_images[:2]).shape == backend.learner_batch(varied_images[:2]).shape


def test_a_pipeline_that_cannot_be_rebuilt_runs_through_fastai(tiny_model, varied_images):
    learner = load_fastai_backend(tiny_model).learner
    next(tfm for tfm in learner.dls.valid.after_item.fs if isinstance(tfm, Resize)).method = "squish"
    backend = FastaiBackend(learner, tiny_model)
    assert backend.direct is None
    images = varied_images[:8]
    assert np.array_equal(backend.probabilities(images), backend.learner_probabilities(images))


def test_a_rebuilt_pipeline_that_answers_differently_is_not_used(tiny_model, monkeypatch):
    def wrong_resampling(valid_loader):
        pipeline = rebuild(valid_loader)
        resize = pipeline.resize
        return replace(pipeline, resize=ItemResize(resize.width, resize.height, Image.Resampling.NEAREST))

    monkeypatch.setattr(fastai_backend, "rebuild", wrong_resampling)
    backend = load_fastai_backend(tiny_model)
    assert backend.direct is None
    assert backend.input_size == backend.learner_batch([Image.new("RGB", (64, 48))]).shape[-1]
