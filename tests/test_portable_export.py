"""Exports load with plain fastai `load_learner` in a fresh Python outside this project (issue 17): the owner's
notebook can open the shipped model and every model the training CLI writes."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from helpers import TINY_OPTIONS, run_module
from maskclassifier.classifier.learner_file import read_learner
from maskclassifier.core.sidecar import sha256_file
from maskclassifier.training import train as train_module
from maskclassifier.training.dataset import ImageReader
from maskclassifier.training.export import project_references
from maskclassifier.training.repack import moved_modules_lent

ROOT = Path(__file__).resolve().parent.parent

# A notebook's view: no project on the path (the editable install's finder is blocked too), another directory.
LOAD_OUTSIDE = """
import json, sys, warnings
sys.modules["maskclassifier"] = None  # `import maskclassifier` now fails, however it is installed
sys.path = [entry for entry in sys.path if entry not in ("", {root!r})]
warnings.simplefilter("ignore")
import numpy as np
from fastai.learner import load_learner
from fastai.vision.core import PILImage
learn = load_learner(sys.argv[1])
image = PILImage.create(np.random.default_rng(0).integers(0, 256, (90, 120, 3), dtype=np.uint8))
_, _, probs = learn.predict(image)
print(json.dumps({{"vocab": list(learn.dls.vocab), "probs": probs.tolist()}}))
"""


def load_outside_project(model: Path, folder: Path) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    return subprocess.run([sys.executable, "-c", LOAD_OUTSIDE.format(root=str(ROOT)), str(model)], cwd=folder, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.slow  # a fresh Python loads fastai and the model
def test_the_shipped_model_loads_outside_the_project(tmp_path):
    model = ROOT / "models" / "export.pkl"
    assert project_references(model) == set()
    result = load_outside_project(model, tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    assert answer["vocab"] == json.loads(model.with_suffix(".json").read_text())["vocab"]
    assert len(answer["probs"]) == len(answer["vocab"])


def test_a_trained_model_loads_outside_the_project(cli_model, tmp_path):
    assert project_references(cli_model) == set()
    result = load_outside_project(cli_model, tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]


@pytest.mark.slow  # trains for real
def test_repack_makes_an_old_export_portable_with_the_same_weights(labelled_set, tmp_path, monkeypatch):
    """An export made the old way (plain learn.export: ImageReader pickled by reference) fails outside the project
    as it failed in the owner's notebook; repack rewrites it with the same weights and updates its sidecar."""
    monkeypatch.setattr(train_module, "export_portable", lambda learn, path: learn.export(path))
    assert train_module.main(["--csv", str(labelled_set), "--out", str(tmp_path / "old"), *TINY_OPTIONS,
                              "--lr", "1e-3"]) == 0
    old = tmp_path / "old" / "export.pkl"
    assert project_references(old) == {"maskclassifier.training.dataset ImageReader"}
    failed = load_outside_project(old, tmp_path)
    assert failed.returncode != 0 and "UnboundLocalError" in failed.stderr
    before = read_learner(old).model.state_dict()

    result = run_module("maskclassifier.training.repack", str(old))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "export_onnx" in result.stdout  # says the ONNX twin's record is now stale
    assert project_references(old) == set()
    assert json.loads(old.with_suffix(".json").read_text())["sha256"] == sha256_file(old)
    after = read_learner(old).model.state_dict()
    assert all(torch.equal(before[name], tensor) for name, tensor in after.items())
    assert load_outside_project(old, tmp_path).returncode == 0

    again = run_module("maskclassifier.training.repack", str(old))
    assert again.returncode == 0 and "nothing to do" in again.stdout


def test_repack_reads_exports_that_name_a_moved_module():
    """The shipped model's old export named maskclassifier.dataset.ImageReader: repack lends that name while reading."""
    old = b"\x80\x02cmaskclassifier.dataset\nImageReader\nq\x00."  # protocol 2: GLOBAL, then STOP
    with moved_modules_lent():
        assert pickle.loads(old) is ImageReader
    assert "maskclassifier.dataset" not in sys.modules
