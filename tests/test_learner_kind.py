"""Which learners the app serves: multi-label ones whatever their loss, never single-label ones.

A multi-label learner trained with a loss of its own (a focal loss written in a training script, without fastai's
`thresh`) was refused as "single-label" because the check looked only for `loss_func.thresh`. The learners here
are real: built from a DataBlock on generated images, trained for one short epoch and exported.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from fastai.vision.all import (
    CategoryBlock,
    CrossEntropyLossFlat,
    DataBlock,
    ImageBlock,
    MultiCategoryBlock,
    RandomSplitter,
    Resize,
    vision_learner,
)
from PIL import Image
from torchvision.models import resnet18

from datasets import write_labelled_set
from maskclassifier.classifier.classifier import load_classifier
from maskclassifier.classifier.fastai_backend import label_kind
from maskclassifier.core.categories import CATEGORIES
from maskclassifier.core.errors import ModelLoadError
from maskclassifier.core.sidecar import DEFAULT_THRESHOLD
from maskclassifier.modelfiles.export_onnx import export as export_onnx


class FocalLossMulti(torch.nn.Module):
    """A multi-label focal loss as a training script would define it: sigmoid per category, no `thresh`, no
    `decodes`. At module level so that the export pickles it by reference (this module is importable here)."""

    def __init__(self, gamma: float = 2.0):
        super().__init__()
        self.gamma = gamma

    def forward(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        target = target.float()
        bce = F.binary_cross_entropy_with_logits(output, target, reduction="none")
        p_true = torch.exp(-bce)
        return ((1 - p_true) ** self.gamma * bce).mean()


def exported_learner(folder: Path, labelled: Path, multi: bool) -> Path:
    """A learner of the app's seven categories (MultiCategoryBlock + FocalLossMulti, or CategoryBlock +
    cross-entropy), trained for one epoch on 48 px images and exported to folder/export.pkl."""
    frame = pd.read_csv(labelled)
    root = labelled.parent
    block = DataBlock(blocks=(ImageBlock, MultiCategoryBlock if multi else CategoryBlock),
                      splitter=RandomSplitter(seed=0),
                      get_x=lambda row: root / row["fname"],
                      get_y=(lambda row: row["labels"].split()) if multi else (lambda row: row["labels"].split()[0]),
                      item_tfms=Resize(48))
    dls = block.dataloaders(frame, bs=8, num_workers=0)
    learn = vision_learner(dls, resnet18, pretrained=False,
                           loss_func=FocalLossMulti() if multi else CrossEntropyLossFlat())
    learn.fit(1, 1e-3)
    folder.mkdir(parents=True, exist_ok=True)
    learn.path = folder
    learn.export("export.pkl")
    return folder / "export.pkl"


@pytest.fixture(scope="module")
def labelled(tmp_path_factory) -> Path:
    return write_labelled_set(tmp_path_factory.mktemp("kind-set"), per_category=3)


@pytest.fixture(scope="module")
def focal_multi(tmp_path_factory, labelled) -> Path:
    return exported_learner(tmp_path_factory.mktemp("focal"), labelled, multi=True)


@pytest.fixture(scope="module")
def single_label(tmp_path_factory, labelled) -> Path:
    return exported_learner(tmp_path_factory.mktemp("single"), labelled, multi=False)


def test_a_multi_label_learner_with_a_custom_loss_is_served(focal_multi):
    classifier = load_classifier(focal_multi, torch_threads=1)
    assert classifier.vocab == list(CATEGORIES)
    assert not hasattr(classifier.backend.learner.loss_func, "thresh")
    assert type(classifier.backend.learner.loss_func).__name__ == "FocalLossMulti"
    # no sidecar and no MASK_THRESHOLD: the documented default, never a threshold taken from the loss
    assert classifier.threshold == DEFAULT_THRESHOLD
    prediction = classifier.predict(Image.new("RGB", (120, 90), (200, 150, 120)))
    assert set(prediction.probabilities) == set(CATEGORIES)
    assert prediction.labels == [name for name in sorted(prediction.probabilities,
                                                          key=lambda n: -prediction.probabilities[n])
                                 if prediction.probabilities[name] > DEFAULT_THRESHOLD]


def test_the_configured_threshold_is_used_when_the_loss_has_none(focal_multi, tmp_path):
    copy = tmp_path / "export.pkl"
    copy.write_bytes(focal_multi.read_bytes())
    copy.with_suffix(".json").write_text(json.dumps({"threshold": 0.3}))
    assert load_classifier(copy, torch_threads=1).threshold == 0.3  # the sidecar's
    assert load_classifier(copy, threshold=0.7, torch_threads=1).threshold == 0.7  # MASK_THRESHOLD's


def test_a_multi_label_learner_with_a_custom_loss_exports_to_onnx(focal_multi, tmp_path):
    copy = tmp_path / "export.pkl"
    copy.write_bytes(focal_multi.read_bytes())
    sidecar = export_onnx(copy)
    assert sidecar.vocab == list(CATEGORIES) and sidecar.threshold == DEFAULT_THRESHOLD
    onnx = load_classifier(copy.with_suffix(".onnx"), torch_threads=1)
    fastai = load_classifier(copy, torch_threads=1)
    photo = Image.new("RGB", (120, 90), (90, 140, 200))
    onnx_p, fastai_p = onnx.predict(photo).probabilities, fastai.predict(photo).probabilities
    assert max(abs(onnx_p[name] - fastai_p[name]) for name in CATEGORIES) < 1e-3


def test_a_single_label_learner_is_still_refused_and_told_why(single_label):
    with pytest.raises(ModelLoadError) as refused:
        load_classifier(single_label, torch_threads=1)
    message = str(refused.value)
    assert "single-label" in message and "Categorize" in message and "CategoryBlock" in message
    assert "FocalLossMulti" not in message


def test_the_kind_is_read_from_the_data_before_the_loss(focal_multi, single_label):
    from maskclassifier.classifier.learner_file import read_learner

    multi = read_learner(focal_multi)
    assert label_kind(multi)[0] == "multi"
    single = read_learner(single_label)
    assert label_kind(single)[0] == "single"
    # a learner whose data says nothing falls back on its loss: fastai's multi-label loss, then an unknown one
    single.dls.valid_ds.tls[-1].tfms.fs.clear()
    assert label_kind(single) == ("single", "its loss is CrossEntropyLossFlat, a single-label loss")
    multi.dls.valid_ds.tls[-1].tfms.fs.clear()
    kind, because = label_kind(multi)
    assert kind is None and "FocalLossMulti" in because
