"""Start-up: settings validation, the model sidecar, and one clear line for every way a model fails to load."""

from __future__ import annotations

import json
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from maskclassifier.classifier.classifier import load_classifier
from maskclassifier.core.config import ConfigError, Settings, settings_from_env
from maskclassifier.core.errors import ModelLoadError

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("environ,message", [
    ({"MASK_THRESHOLD": "1.5"}, "MASK_THRESHOLD must be between 0 and 1"),
    ({"MASK_THRESHOLD": "0"}, "MASK_THRESHOLD must be between 0 and 1"),
    ({"MASK_THRESHOLD": "high"}, "MASK_THRESHOLD='high' is not a number"),
    ({"MASK_TTA": "rotate"}, "MASK_TTA must be one of flip, none"),
    ({"MAX_UPLOAD_MB": "-1"}, "MAX_UPLOAD_MB must be more than 0"),
    ({"PORT": "http"}, "PORT='http' is not a whole number"),
    ({"PORT": "70000"}, "PORT must be between 1 and 65535"),
    ({"ONNX_PRECISION": "fp16"}, "ONNX_PRECISION must be one of float, int8"),
    ({"ONNX_PRECISION": "int8", "MODEL_PATH": "models/export.pkl"}, "ONNX_PRECISION=int8 needs an ONNX model"),
    ({"JPEG_DECODE": "fast"}, "JPEG_DECODE must be one of exact, reduced"),
])
def test_bad_settings_are_refused(environ, message):
    with pytest.raises(ConfigError, match=message):
        settings_from_env(environ)


def test_settings_from_environment():
    settings = settings_from_env({"MODEL_PATH": "m/x.pkl", "MASK_THRESHOLD": "0.7", "MASK_TTA": "None",
                                  "MAX_UPLOAD_MB": "3", "PORT": "8080", "JPEG_DECODE": " Reduced"})
    assert settings == Settings(model_path=Path("m/x.pkl"), threshold=0.7, tta="none", max_upload_mb=3, port=8080,
                                jpeg_decode="reduced")
    assert settings_from_env({}).jpeg_decode == "exact"
    assert settings_from_env({}).model_path == Path("models/export.pkl")


@pytest.fixture
def model_copy(tiny_model, tmp_path) -> Path:
    path = tmp_path / "export.pkl"
    shutil.copyfile(tiny_model, path)
    return path


def write_sidecar(model_path: Path, **fields) -> None:
    model_path.with_suffix(".json").write_text(json.dumps(fields))


def test_threshold_comes_from_the_sidecar_unless_overridden(model_copy):
    write_sidecar(model_copy, threshold=0.8, metrics={"macro_f1": 0.9})
    classifier = load_classifier(model_copy)
    assert classifier.threshold == 0.8
    assert classifier.describe()["metrics"] == {"macro_f1": 0.9}
    assert load_classifier(model_copy, threshold=0.6).threshold == 0.6


def test_threshold_defaults_to_half_without_sidecar(model_copy):
    assert load_classifier(model_copy).threshold == 0.5


@pytest.mark.slow  # ~4 s
def test_test_time_augmentation_comes_from_the_sidecar_unless_overridden(model_copy):
    assert load_classifier(model_copy).tta == "none"  # no sidecar: each image once
    write_sidecar(model_copy, tta="flip")
    classifier = load_classifier(model_copy)
    assert classifier.tta == "flip" and classifier.describe()["tta"] == "flip"
    assert load_classifier(model_copy, tta="none").tta == "none"
    write_sidecar(model_copy, tta="rotate")
    with pytest.raises(ModelLoadError, match="has tta 'rotate'; it must be one of flip, none"):
        load_classifier(model_copy)


def test_sidecar_of_another_model_is_refused(model_copy):
    write_sidecar(model_copy, vocab=["cat", "dog"], threshold=0.8)
    with pytest.raises(ModelLoadError, match="belongs to another model"):
        load_classifier(model_copy)


def test_model_exported_under_another_python_is_refused_by_its_sidecar(model_copy):
    write_sidecar(model_copy, versions={"python": "3.10.12"})
    with pytest.raises(ModelLoadError, match=r"exported under Python 3\.10\.12 .* run the app under Python 3\.10"):
        load_classifier(model_copy)


def _save(path: Path, obj) -> Path:
    torch.save(obj, path, pickle_module=pickle)
    return path


# What cloudpickle writes for a function's code object: CodeType(*fields). Another Python minor version has other
# fields, so the call fails; here it gets two, as no Python's CodeType accepts.
FOREIGN_CODE_OBJECT = b"\x80\x02ccloudpickle.cloudpickle\n_builtin_type\nX\x08\x00\x00\x00CodeType\x85RK\x01K\x02\x86R."


@pytest.mark.parametrize("content,message", [
    (lambda p: p.write_bytes(b"\x00not a pickle at all" * 10), "is not a fastai learner export"),
    (lambda p: _save(p, {"weights": [1, 2, 3]}), "holds a dict, not a fastai Learner"),
    (lambda p: p.write_bytes(FOREIGN_CODE_OBJECT), "was exported under another Python version"),
])
def test_unloadable_models_fail_with_one_clear_line(tmp_path, content, message):
    path = tmp_path / "export.pkl"
    content(path)
    with pytest.raises(ModelLoadError, match=message) as caught:
        load_classifier(path)
    assert "\n" not in str(caught.value)


def test_export_from_old_fastai_is_explained(tmp_path):
    """fastai < 2.8 exports reference fastcore.transform, which fastai 2.8 no longer has."""
    path = tmp_path / "export.pkl"
    # protocol-2 pickle: GLOBAL fastcore.transform.Transform, then STOP
    path.write_bytes(b"\x80\x02cfastcore.transform\nTransform\nq\x00.")
    with pytest.raises(ModelLoadError, match=r"exported with fastai < 2\.8"):
        load_classifier(path)


def test_export_naming_a_moved_project_module_points_to_repack(tmp_path):
    """Exports from before the training layer was a subpackage name maskclassifier.dataset.ImageReader, now gone."""
    path = tmp_path / "export.pkl"
    path.write_bytes(b"\x80\x02cmaskclassifier.dataset\nImageReader\nq\x00.")
    hint = r"'maskclassifier\.dataset'.*python -m maskclassifier\.training\.repack "
    with pytest.raises(ModelLoadError, match=hint) as caught:
        load_classifier(path)
    assert "\n" not in str(caught.value)


def test_missing_model_and_wrong_suffix(tmp_path):
    with pytest.raises(ModelLoadError, match="model file not found: .*MODEL_PATH"):
        load_classifier(tmp_path / "nope.pkl")
    (tmp_path / "model.bin").write_bytes(b"x")
    with pytest.raises(ModelLoadError, match=r"must end in \.pkl"):
        load_classifier(tmp_path / "model.bin")


def run_app_py(environ: dict) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(Path.home()), **environ}
    return subprocess.run([sys.executable, "app.py"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def test_app_py_stops_with_one_line_when_the_model_is_missing(tmp_path):
    result = run_app_py({"MODEL_PATH": str(tmp_path / "missing.pkl")})
    assert result.returncode == 3
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines == [f"Cannot start the mask classifier: model file not found: {tmp_path / 'missing.pkl'}; "
                     "set MODEL_PATH to a learner exported with learn.export() (or an .onnx export), "
                     "or train one with python -m maskclassifier.train"]


def test_app_py_stops_on_a_bad_setting(tiny_model):
    result = run_app_py({"MODEL_PATH": str(tiny_model), "MASK_THRESHOLD": "2"})
    assert result.returncode == 3
    assert "MASK_THRESHOLD must be between 0 and 1" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_sidecar_is_typed_keeps_what_it_does_not_know_and_refuses_bad_values(tmp_path):
    from maskclassifier.core.sidecar import Sidecar, read_sidecar, resolve

    model = tmp_path / "export.pkl"
    assert read_sidecar(model) is None
    write_sidecar(model, vocab=["a", "b"], threshold=0.3, tta="flip", note_from_a_newer_version={"x": 1})
    sidecar = read_sidecar(model)
    assert (sidecar.vocab, sidecar.threshold, sidecar.tta) == (["a", "b"], 0.3, "flip")
    sidecar.write(model)  # a rewrite (as the ONNX export does) keeps the key this version does not know
    assert json.loads(model.with_suffix(".json").read_text()) == {
        "vocab": ["a", "b"], "threshold": 0.3, "tta": "flip", "note_from_a_newer_version": {"x": 1}}
    assert Sidecar().to_json() == {}
    for fields, message in [({"threshold": 1.5}, "threshold must be a number between 0 and 1"),
                            ({"vocab": "a b"}, "vocab must be a list"), ({"metrics": []}, "metrics must be an object")]:
        write_sidecar(model, **fields)
        with pytest.raises(ModelLoadError, match=message):
            read_sidecar(model)
    # One precedence rule for every served setting: explicit, else the sidecar's, else the default.
    assert resolve(0.7, 0.3, 0.5) == 0.7 and resolve(None, 0.3, 0.5) == 0.3 and resolve(None, None, 0.5) == 0.5


def test_the_slim_install_serves_the_onnx_twin_by_default_and_explains_a_pkl(monkeypatch, model_copy):
    import importlib.util

    from maskclassifier.core import config

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *args: None if name == "fastai"
                        else real_find_spec(name, *args))  # what the slim install looks like
    assert settings_from_env({}).model_path == config.SLIM_MODEL_PATH  # models/export.onnx is shipped
    assert settings_from_env({"MODEL_PATH": "m/x.pkl"}).model_path == Path("m/x.pkl")  # an explicit choice stays
    with pytest.raises(ModelLoadError, match=r"needs the full install .* MODEL_PATH=.*export\.onnx$") as caught:
        load_classifier(model_copy)
    assert "\n" not in str(caught.value)
    monkeypatch.setattr(importlib.util, "find_spec", real_find_spec)
    assert settings_from_env({}).model_path == config.DEFAULT_MODEL_PATH


def test_the_full_install_starts_without_fastais_jit_warning(tiny_model):
    """fastai's torch.jit.script FutureWarning printed at every full-install start; other warnings still show."""
    code = ("import warnings; warnings.simplefilter('default'); from pathlib import Path; "
            "from maskclassifier.classifier.classifier import load_classifier; "
            f"load_classifier(Path({str(tiny_model)!r})); warnings.warn('still shown', UserWarning)")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "jit.script" not in result.stderr and "still shown" in result.stderr


def test_app_py_outside_the_project_venv_says_how_to_run_it_in_one_line(tmp_path):
    """`python app.py` with a Python that lacks the requirements: one line, not a traceback."""
    bare = tmp_path / "bare"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(bare)], check=True, timeout=120)
    result = subprocess.run([str(bare / "bin" / "python"), "app.py"], cwd=ROOT, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "make run" in result.stderr and "flask" in result.stderr.lower()
