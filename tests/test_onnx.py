"""Slim serving: the ONNX export matches the fastai learner, serves the API, and needs neither torch nor fastai.

Two real learners are exported with the CLI: the notebook's (no Normalize, since it is not pretrained) and one
from `python -m maskclassifier.train` (pretrained MobileNetV2, so ImageNet Normalize, presize 85 for size 64).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from fastai.data.transforms import IntToFloatTensor
from fastai.vision.augment import RandomResizedCropGPU, Resize
from fastai.vision.core import imagenet_stats
from fasttransform import Pipeline, Transform
from PIL import Image

from datasets import CATEGORIES
from helpers import upload
from maskclassifier.classifier.classifier import decide, load_classifier
from maskclassifier.classifier.fastai_backend import load_fastai_backend
from maskclassifier.classifier.onnx_backend import INT8_RECHECK_MARGIN, FloatRecheck
from maskclassifier.classifier.pipeline import PipelineError, batch_steps, item_resize
from maskclassifier.core.errors import ModelLoadError
from maskclassifier.core.sidecar import sha256_file
from maskclassifier.modelfiles.export_onnx import is_up_to_date, main
from maskclassifier.modelfiles.quantize_onnx import calibration_stride
from maskclassifier.modelfiles.quantize_onnx import main as quantize_main
from varied import varied_uploads

ROOT = Path(__file__).resolve().parent.parent
TOLERANCE = 1e-3


def export_with_cli(model_path: Path) -> Path:
    result = subprocess.run([sys.executable, "-m", "maskclassifier.export_onnx", str(model_path)],
                            cwd=ROOT, check=True, capture_output=True, text=True, timeout=600)
    assert "torch.jit.script` is deprecated" not in result.stderr  # fastai's import-time FutureWarning is silenced
    return model_path.with_suffix(".onnx")


@pytest.fixture(scope="session")
def notebook_onnx(tiny_model, tmp_path_factory) -> Path:
    """The notebook learner's export, in its own folder (the export writes a sidecar beside the .pkl)."""
    model_path = tmp_path_factory.mktemp("onnx-notebook") / "export.pkl"
    shutil.copyfile(tiny_model, model_path)
    return export_with_cli(model_path)


@pytest.fixture(scope="session")
def trained_onnx(cli_model, tmp_path_factory) -> Path:
    """The training CLI's learner (with its own sidecar), exported in its own folder."""
    folder = tmp_path_factory.mktemp("onnx-trained")
    for file in (cli_model, cli_model.with_suffix(".json")):
        shutil.copyfile(file, folder / file.name)
    return export_with_cli(folder / cli_model.name)


@pytest.fixture(params=["notebook_onnx", "trained_onnx"])
def exported(request) -> Path:
    return request.getfixturevalue(request.param)


@pytest.fixture(scope="module")
def varied_images() -> list[Image.Image]:
    return varied_uploads()


def test_probabilities_and_labels_match_fastai(exported, varied_images):
    fastai = load_classifier(exported.with_suffix(".pkl"), torch_threads=1)
    slim = load_classifier(exported, torch_threads=1)
    expected = fastai.backend.learner_probabilities(varied_images)  # fastai's own DataLoader
    actual = slim.backend.probabilities(varied_images)
    assert actual.shape == expected.shape == (60, len(CATEGORIES))
    assert np.abs(expected - actual).max() <= TOLERANCE
    threshold = slim.threshold
    assert threshold == fastai.threshold
    # A probability closer to the threshold than the backends differ may fall on either side of it in the other.
    clear = ~(np.abs(expected - threshold) <= np.abs(expected - actual).max()).any(axis=1)
    assert clear.sum() >= 55
    assert ([decide(row, slim.vocab, threshold).labels for row in actual[clear]]
            == [decide(row, fastai.vocab, threshold).labels for row in expected[clear]])
    flipped = slim.backend.probabilities(varied_images, flip=True)  # mirrored in NHWC, before the graph
    assert np.abs(flipped - fastai.backend.probabilities(varied_images, flip=True)).max() <= TOLERANCE
    assert np.abs(flipped - actual).max() > 10 * TOLERANCE


def test_sidecar_records_what_the_learner_does(notebook_onnx, trained_onnx):
    notebook = json.loads(notebook_onnx.with_suffix(".json").read_text())
    assert notebook["vocab"] == CATEGORIES and notebook["threshold"] == 0.5
    assert notebook["preprocessing"]["presize"] == 96 and notebook["preprocessing"]["size"] == 64
    assert notebook["preprocessing"]["resize_method"] == "crop" and notebook["preprocessing"]["normalize"] is None
    assert notebook["onnx"]["file"] == "export.onnx" and notebook["onnx"]["sha256"] == sha256_file(notebook_onnx)
    assert notebook["onnx"]["parity"]["max_abs_difference"] <= TOLERANCE

    trained = json.loads(trained_onnx.with_suffix(".json").read_text())
    assert trained["preprocessing"]["presize"] == 85 and trained["preprocessing"]["size"] == 64
    normalize = trained["preprocessing"]["normalize"]
    assert np.allclose(normalize["mean"], imagenet_stats[0]) and np.allclose(normalize["std"], imagenet_stats[1])
    assert trained["architecture"] == "mobilenet_v2"
    assert "metrics" in trained and "training" in trained  # the training CLI's keys are kept
    assert trained["sha256"] == sha256_file(trained_onnx.with_suffix(".pkl"))


def test_api_answers_the_same_through_the_onnx_app(make_app, notebook_onnx, face_jpeg):
    slim = make_app(model_path=notebook_onnx).test_client()
    full = make_app(model_path=notebook_onnx.with_suffix(".pkl")).test_client()
    slim_answer = slim.post("/api/predict", data=upload(face_jpeg)).get_json()
    full_answer = full.post("/api/predict", data=upload(face_jpeg)).get_json()
    assert slim_answer["labels"] == full_answer["labels"]
    assert slim_answer["probabilities"] == pytest.approx(full_answer["probabilities"], abs=TOLERANCE)

    model = slim.get("/api/model").get_json()
    assert model["backend"] == "onnx" and model["model_file"] == "export.onnx"
    assert model["sha256"] == sha256_file(notebook_onnx)
    assert model["architecture"] == "resnet18" and model["input_size"] == 64
    assert slim.post("/", data=upload(face_jpeg)).status_code == 200
    assert slim.post("/api/predict", data=upload(b"not an image")).status_code == 400


SLIM_SCRIPT = """
import importlib.abc, io, json, sys
from pathlib import Path
from maskclassifier.classifier.classifier import load_classifier
from PIL import Image

HEAVY = {"torch", "torchvision", "fastai", "facenet_pytorch"}
model_path = Path(sys.argv[1])
photo = Image.new("RGB", (120, 90), (90, 170, 220))
load_classifier(model_path, torch_threads=1).predict(photo)
assert not HEAVY & {name.split(".")[0] for name in sys.modules}, "the ONNX backend imported torch or fastai"


class SlimInstall(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in HEAVY:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)


sys.meta_path.insert(0, SlimInstall())
from maskclassifier.web import create_app
from maskclassifier.core.config import Settings

client = create_app(Settings(model_path=model_path, torch_threads=1)).test_client()
buffer = io.BytesIO()
photo.save(buffer, "JPEG")
answer = client.post("/api/predict", data={"file": (io.BytesIO(buffer.getvalue()), "a.jpg", "image/jpeg")})
assert answer.status_code == 200, answer.get_data(as_text=True)
assert client.get("/healthz").status_code == 200
from skimage import data  # per-face mode, with the torch-free detector: the astronaut's head is one face

buffer = io.BytesIO()
Image.fromarray(data.astronaut()).crop((140, 20, 310, 230)).save(buffer, "JPEG")
faces = client.post("/api/predict?faces=on", data={"file": (io.BytesIO(buffer.getvalue()), "face.jpg", "image/jpeg")})
assert faces.status_code == 200 and faces.get_json()["faces_found"] == 1, faces.get_data(as_text=True)
assert faces.get_json()["mode"] == "faces" and faces.get_json()["faces"][0]["score"] > 0.9
assert not HEAVY & {name.split(".")[0] for name in sys.modules}
print(json.dumps(sorted(answer.get_json()["probabilities"])))
"""


def test_onnx_app_runs_without_torch_or_fastai(notebook_onnx):
    """The classifier alone imports neither; the whole app starts and answers with them not installed, per-face
    mode included."""
    result = subprocess.run([sys.executable, "-c", SLIM_SCRIPT, str(notebook_onnx)], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == sorted(CATEGORIES)


@pytest.fixture
def onnx_beside(notebook_onnx, tmp_path):
    """A link to the export in an empty folder, and a way to give it a sidecar."""
    link = tmp_path / "export.onnx"
    link.symlink_to(notebook_onnx)
    sidecar = json.loads(notebook_onnx.with_suffix(".json").read_text())

    def with_sidecar(**changes) -> Path:
        link.with_suffix(".json").write_text(json.dumps({**sidecar, **changes}))
        return link

    return link, sidecar, with_sidecar


def test_onnx_without_its_sidecar_is_refused(onnx_beside):
    link, _, _ = onnx_beside
    with pytest.raises(ModelLoadError, match=r"needs its sidecar .*export\.json.*python -m maskclassifier.export_onnx"):
        load_classifier(link)


@pytest.mark.parametrize("change,message", [
    (lambda s: {"onnx": None}, "does not describe export.onnx .* retrained"),
    (lambda s: {"onnx": {**s["onnx"], "sha256": "0" * 64}}, r"not the file .*\(sha256 differs\)"),
    (lambda s: {"preprocessing": {**s["preprocessing"], "resize_method": "squish"}}, "only 'crop'"),
    (lambda s: {"preprocessing": {**s["preprocessing"], "presize": 128}}, "does not match its sidecar"),
    (lambda s: {"vocab": s["vocab"][:3]}, "does not match its sidecar"),
])
def test_onnx_with_a_wrong_sidecar_is_refused(onnx_beside, change, message):
    _, sidecar, with_sidecar = onnx_beside
    with pytest.raises(ModelLoadError, match=message) as error:
        load_classifier(with_sidecar(**change(sidecar)))
    assert "\n" not in str(error.value) and "export_onnx" in str(error.value)


def test_export_refuses_what_it_cannot_reproduce(tiny_model):
    valid = load_fastai_backend(tiny_model).learner.dls.valid
    next(tfm for tfm in valid.after_item.fs if isinstance(tfm, Resize)).method = "squish"
    with pytest.raises(PipelineError, match="only 'crop'"):
        item_resize(valid.after_item)
    with pytest.raises(PipelineError, match="has no equivalent outside fastai"):
        batch_steps(Pipeline([IntToFloatTensor(), Transform(lambda x: x * 2)]), (96, 96))
    shrink_too_much = Pipeline([IntToFloatTensor(), RandomResizedCropGPU(64, min_scale=0.75, ratio=(1, 1))])
    with pytest.raises(PipelineError, match="more than 2x"):
        batch_steps(shrink_too_much, (160, 160))


def test_export_rewrites_nothing_when_nothing_changed(notebook_onnx, tmp_path, capsys):
    """Re-running the export leaves a committed .onnx and its sidecar as they are, unless the .pkl changed."""
    for file in (notebook_onnx, notebook_onnx.with_suffix(".pkl"), notebook_onnx.with_suffix(".json")):
        shutil.copy2(file, tmp_path / file.name)
    model, onnx_file, sidecar_file = (tmp_path / f"export.{suffix}" for suffix in ("pkl", "onnx", "json"))
    before = {file: (file.read_bytes(), file.stat().st_mtime_ns) for file in (onnx_file, sidecar_file)}
    assert main([str(model)]) == 0
    assert "is up to date" in capsys.readouterr().out
    assert {file: (file.read_bytes(), file.stat().st_mtime_ns) for file in before} == before

    assert not is_up_to_date(model, opset=17)  # another opset is another export
    sidecar = json.loads(sidecar_file.read_text())
    sidecar["onnx"]["exported_from"]["sha256"] = "0" * 64  # as if the .pkl had been retrained since
    sidecar_file.write_text(json.dumps(sidecar))
    assert not is_up_to_date(model)
    assert main([str(model)]) == 0 and "wrote export.onnx" in capsys.readouterr().out
    assert json.loads(sidecar_file.read_text())["onnx"]["exported_from"]["sha256"] == sha256_file(model)
    assert is_up_to_date(model)

    exported = onnx_file.stat().st_mtime_ns
    assert main([str(model), "--force"]) == 0 and "wrote export.onnx" in capsys.readouterr().out
    assert onnx_file.stat().st_mtime_ns != exported and is_up_to_date(model)


SLIM_EVALUATE = """
import sys

import importlib.abc

HEAVY = ("torch", "torchvision", "fastai", "facenet_pytorch", "pandas", "matplotlib", "onnx")
# As in the slim install: importing these fails, and find_spec says they are absent. Most are kept out of
# sys.modules altogether: scipy and scikit-learn look them up there and would take a None for an imported module.
PEEKED = ("torch", "torchvision", "pandas", "matplotlib", "onnx")
for name in HEAVY:
    if name not in PEEKED:
        sys.modules[name] = None


class NotInstalled(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in PEEKED:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, NotInstalled())
from maskclassifier.training.evaluate import main

code = main(sys.argv[1:])
assert not [name for name, module in sys.modules.items() if module is not None and name.split(".")[0] in HEAVY]
sys.exit(code)
"""


def evaluate_slim(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", SLIM_EVALUATE, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)


def test_evaluate_runs_in_the_slim_install(notebook_onnx, labelled_set, tmp_path):
    predictions = tmp_path / "predictions.csv"
    result = evaluate_slim("--csv", str(labelled_set), "--model", str(notebook_onnx), "--by", "labels",
                           "--predictions", str(predictions))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "exact-match" in result.stdout and "Medical Shield" in result.stdout
    assert len(predictions.read_text().splitlines()) == 1 + 48

    pkl = evaluate_slim("--csv", str(labelled_set), "--model", str(notebook_onnx.with_suffix(".pkl")))
    assert pkl.returncode == 2 and pkl.stderr.strip() == (
        f"error: {notebook_onnx.with_suffix('.pkl')} is a fastai model, which needs the full install "
        f"(requirements.txt); in the slim install pass its ONNX twin: --model {notebook_onnx}")


def test_evaluate_says_where_it_looked_for_the_images(notebook_onnx, labelled_set, tmp_path):
    moved = tmp_path / "labels.csv"  # the CSV without its images beside it
    shutil.copyfile(labelled_set, moved)
    result = evaluate_slim("--csv", str(moved), "--model", str(notebook_onnx))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip() == (f"error: none of the 48 images listed in {moved} could be read under {tmp_path} "
                                     "(the CSV's folder; pass --images-root DIR if the fname paths start elsewhere), "
                                     "e.g. images/0-0.jpg")
    found = evaluate_slim("--csv", str(moved), "--model", str(notebook_onnx), "--images-root", str(labelled_set.parent))
    assert found.returncode == 0, found.stderr[-3000:]


def test_export_cli_explains_a_bad_path(tmp_path, capsys):
    assert main([str(tmp_path / "export.onnx")]) == 2
    assert "pass the .pkl written by learn.export()" in capsys.readouterr().err


@pytest.fixture
def quantized(notebook_onnx, labelled_set, tmp_path):
    """The notebook learner's ONNX twin and sidecar copied into an empty folder, quantized to int8 there."""
    for file in (notebook_onnx, notebook_onnx.with_suffix(".json")):
        shutil.copyfile(file, tmp_path / file.name)
    float_path = tmp_path / notebook_onnx.name
    assert quantize_main([str(float_path), "--csv", str(labelled_set), "--calibration", "16"]) == 0
    return float_path


def test_int8_twin_is_recorded_and_served_only_when_asked(quantized, labelled_set):
    section = json.loads(quantized.with_suffix(".json").read_text())["onnx_int8"]
    int8 = quantized.with_name("export.int8.onnx")
    assert section["file"] == int8.name and section["sha256"] == sha256_file(int8)
    assert section["quantized_from"]["sha256"] == sha256_file(quantized) and section["serve"] is False
    assert section["calibration"]["images"] == 16 and section["format"] == "qdq" and section["per_channel"]
    assert section["calibration"]["method"] == "percentile" and section["calibration"]["percentile"] == 99.99
    assert section["keep_float"] == {"modules": [], "nodes": 0}  # a ResNet: no default float layers
    photos = [Image.open(labelled_set.parent / row.split(",")[0]).convert("RGB")
              for row in labelled_set.read_text().splitlines()[1:13]]
    default, as_float = load_classifier(quantized), load_classifier(quantized, onnx_precision="float")
    as_int8 = load_classifier(quantized, onnx_precision="int8")
    assert default.backend.architecture == as_float.backend.architecture
    assert as_int8.backend.architecture.endswith("(int8)")
    float_probabilities = as_float.backend.probabilities(photos)
    assert np.array_equal(default.backend.probabilities(photos), float_probabilities)
    int8_session = as_int8.backend.session  # the int8 model alone, without the float recheck of unsure answers
    int8_probabilities = int8_session.run(None, {int8_session.get_inputs()[0].name:
                                                 np.stack([as_int8.backend.resize(photo) for photo in photos])})[0]
    difference = np.abs(int8_probabilities - float_probabilities)
    assert 0 < difference.max() < 0.2, difference.max()  # really another model, and close to the float one


def test_int8_answers_near_the_threshold_are_the_float_models(quantized, labelled_set):
    photos = [Image.open(labelled_set.parent / row.split(",")[0]).convert("RGB")
              for row in labelled_set.read_text().splitlines()[1:13]]
    as_float = load_classifier(quantized, onnx_precision="float")
    served = load_classifier(quantized, onnx_precision="int8").backend
    assert served.recheck.threshold == as_float.threshold and served.recheck.margin == INT8_RECHECK_MARGIN
    assert load_classifier(quantized, onnx_precision="int8").describe()["int8_recheck_margin"] == INT8_RECHECK_MARGIN
    assert "int8_recheck_margin" not in as_float.describe()
    pixels = np.stack([served.resize(photo) for photo in photos])
    float_rows = as_float.backend.run(pixels)
    int8_rows = served.session.run(None, {served.session.get_inputs()[0].name: pixels})[0]
    # a threshold one photo's answer sits on and a narrow margin, so that some rows are rechecked and others not
    served.recheck = FloatRecheck(served.recheck.session, threshold=float(int8_rows[0, 0]), margin=1e-4)
    unsure = served.recheck.unsure(int8_rows)
    assert unsure[0] and not unsure.all()
    answered = served.run(pixels)
    np.testing.assert_array_equal(answered[unsure], float_rows[unsure])
    np.testing.assert_array_equal(answered[~unsure], int8_rows[~unsure])
    assert not np.array_equal(int8_rows[unsure], float_rows[unsure])  # the recheck changed something


def test_a_stale_or_missing_int8_twin_is_refused_with_the_command(quantized):
    with pytest.raises(ModelLoadError, match=r"records no int8 twin .*quantize_onnx"):
        load_classifier(_without_int8(quantized), onnx_precision="int8")
    sidecar = json.loads(quantized.with_suffix(".json").read_text())
    sidecar["onnx_int8"]["serve"] = True
    sidecar["onnx_int8"]["sha256"] = "0" * 64
    quantized.with_suffix(".json").write_text(json.dumps(sidecar))
    with pytest.raises(ModelLoadError, match=r"is not the int8 twin .*sha256 differs.*quantize_onnx"):
        load_classifier(quantized)  # the sidecar says serve, so the default is int8 too
    assert load_classifier(quantized, onnx_precision="float").backend.architecture.endswith("(int8)") is False


def test_keep_float_leaves_a_learner_module_in_float(notebook_onnx, labelled_set, tmp_path, capsys):
    for file in (notebook_onnx, notebook_onnx.with_suffix(".json")):
        shutil.copyfile(file, tmp_path / file.name)
    float_path = tmp_path / notebook_onnx.name
    float_graph = onnx.load(str(float_path)).graph
    first = next(node for node in float_graph.node if node.op_type == "Conv").input[1]  # e.g. model.0.0.weight
    module = first.rsplit(".", 1)[0]
    arguments = [str(float_path), "--csv", str(labelled_set), "--calibration", "8", "--calibrate-method", "minmax"]
    assert quantize_main([*arguments, "--keep-float", "model.9.9"]) == 2
    assert "--keep-float model.9.9: no layer" in capsys.readouterr().err
    assert not float_path.with_name("export.int8.onnx").exists()
    assert quantize_main([*arguments, "--keep-float", module]) == 0
    section = json.loads(float_path.with_suffix(".json").read_text())["onnx_int8"]
    assert section["keep_float"] == {"modules": [module], "nodes": 1} and section["calibration"]["method"] == "minmax"
    int8_graph = onnx.load(str(float_path.with_name("export.int8.onnx"))).graph
    float_weights = [node.input[1] for node in int8_graph.node if node.op_type == "Conv"
                     and node.input[1] in {tensor.name for tensor in int8_graph.initializer}]
    assert float_weights == [first]  # that conv reads its float weight; every other conv a dequantized one
    assert sum(node.op_type == "Conv" for node in int8_graph.node) == sum(node.op_type == "Conv"
                                                                          for node in float_graph.node) > 1


def test_calibration_runs_in_chunks_that_divide_the_images():
    # quantize_static refuses a chunk size (CalibStridedMinMax) that does not divide the number of images
    assert [calibration_stride(count) for count in (200, 16, 30, 199, 1)] == [25, 16, 15, 1, 1]


def _without_int8(float_path: Path) -> Path:
    sidecar = json.loads(float_path.with_suffix(".json").read_text())
    folder = float_path.parent / "float-only"
    folder.mkdir()
    shutil.copyfile(float_path, folder / float_path.name)
    (folder / float_path.with_suffix(".json").name).write_text(json.dumps({**sidecar, "onnx_int8": None}))
    return folder / float_path.name

