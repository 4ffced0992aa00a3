"""The training and evaluation CLIs, run for real on a generated set, and the shipped model's sidecar."""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from datasets import write_labelled_set
from helpers import TINY_OPTIONS, run_module
from maskclassifier.classifier.classifier import load_classifier
from maskclassifier.classifier.learner_file import read_learner
from maskclassifier.core.sidecar import sha256_file
from maskclassifier.training import metrics
from maskclassifier.training.dataset import DatasetError, LabelledData, oversample
from maskclassifier.training.errors import TrainingError
from maskclassifier.training.fitting import fit_batch_size, lr_find_steps
from maskclassifier.training.train import parse_args

ROOT = Path(__file__).resolve().parent.parent
VOCAB = ["-", "Cloth", "Gas", "KN95", "Medical", "No_mask!", "Shield"]
def elsewhere(folder: Path) -> dict:
    """Keyword arguments to run a CLI with `folder` as the current directory and folder/tmp as TMPDIR."""
    (folder / "tmp").mkdir(exist_ok=True)
    return {"cwd": folder, "env": {**os.environ, "PYTHONPATH": str(ROOT), "TMPDIR": str(folder / "tmp")}}


JIT_WARNING = "torch.jit.script` is deprecated"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One real run of the training CLI: lr_find, one epoch, sweep, plots, export, sidecar, model card."""
    root = tmp_path_factory.mktemp("train")
    csv_path = write_labelled_set(root / "data", per_category=5)
    frame = pd.read_csv(csv_path)
    frame["labels"] = frame["labels"].str.replace("Medical", "Surgical")  # the original data's label
    frame["synthetic"] = frame["labels"].str.contains("Shield|Gas")
    frame.to_csv(csv_path, index=False)
    (root / "data" / "images" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with open(csv_path, "a") as handle:
        handle.write("images/broken.jpg,Cloth,False,False\n")
    (root / "data" / "DATASET.md").write_text("# Test set\n\n## Sources\n\n"
                                              "Drawn by tests/datasets.py, public domain.\n\n## Counts\n")
    out = root / "models"
    result = run_module("maskclassifier.train", "--csv", str(csv_path), "--out", str(out),
                        "--merge", "Surgical=Medical",
                        *TINY_OPTIONS, "--bs", "4")  # 6 batches per epoch: enough for lr_find
    assert result.returncode == 0, result.stderr[-3000:]
    return {"csv": csv_path, "out": out, "stdout": result.stdout, "stderr": result.stderr}


@pytest.mark.slow  # trains for real
def test_training_writes_the_model_and_its_sidecar(trained):
    out = trained["out"]
    sidecar = json.loads((out / "export.json").read_text())
    assert sidecar["vocab"] == VOCAB  # Surgical merged into Medical
    assert sidecar["sha256"] == sha256_file(out / "export.pkl")
    assert 0.05 <= sidecar["threshold"] <= 0.95 and sidecar["tta"] == "none"
    assert sidecar["architecture"] == "mobilenet_v2" and sidecar["input_size"] == 64
    assert sidecar["preprocessing"] == {"presize": 85, "resize_method": "crop", "size": 64, "normalize": None}
    assert set(sidecar["metrics"]["per_class"]) == set(VOCAB)
    assert sidecar["training"]["dataset"]["skipped"] == 1
    # 3 training images per label set (5, of which 2 validation): Gas and Shield rows are all marked synthetic, and
    # Medical is half real (Surgical), half drawn (Surgical Shield): at least half drawn, so flagged too
    examples = sidecar["training"]["dataset"]["examples"]
    assert examples["Shield"] == {"real": 0, "drawn": 6} and examples["Medical"] == {"real": 3, "drawn": 3}
    assert examples["Cloth"] == {"real": 3, "drawn": 0}  # the unreadable Cloth row is not an example
    assert sidecar["training"]["dataset"]["synthetic_categories"] == ["Gas", "Medical", "Shield"]
    assert sidecar["training"]["lr"] > 0 and "lr_find suggests" in trained["stdout"]
    # 24 training images in batches of 4: lr_find runs 5 epochs' worth, not fastai's 100 steps
    assert ("lr_find: 30 steps at rising learning rates to suggest one (6 training batches per epoch"
            in trained["stdout"])
    assert JIT_WARNING not in trained["stderr"]
    assert sidecar["training"]["lr_from"] == "lr_find" and sidecar["training"]["init_from"] is None
    options = sidecar["training"]["options"]
    assert set(options) == set(vars(parse_args(["--csv", "labels.csv"])))  # every option, a new one too
    assert options["merge"] == ["Surgical=Medical"] and options["bs"] == 4 and options["lr"] == "auto"
    assert options["out"] == str(out) and options["csv"] == str(trained["csv"]) and options["overwrite"] is False
    assert sidecar["versions"]["python"].startswith(f"{sys.version_info.major}.{sys.version_info.minor}")
    classifier = load_classifier(out / "export.pkl")
    assert classifier.vocab == VOCAB and classifier.threshold == sidecar["threshold"]


@pytest.mark.slow  # trains for real
def test_training_writes_plots_metrics_and_model_card(trained):
    out = trained["out"]
    for name in ("threshold_sweep.png", "confusion.png", "top_losses.png", "lr_find.png"):
        with Image.open(out / name) as image:
            assert image.format == "PNG" and image.width > 300
    report = json.loads((out / "metrics.json").read_text())
    assert len(report["threshold_sweep"]) == 19
    assert report["threshold"] == metrics.best_threshold(report["threshold_sweep"])
    assert report["cooccurrence"]["categories"] == VOCAB
    card = (out / "MODEL_CARD.md").read_text()
    assert "Mostly drawn categories: `Gas`, `Medical`, `Shield`" in card and "`Shield`: 6 drawn and 0 real" in card
    assert "Drawn by tests/datasets.py, public domain." in card
    assert f"{report['exact_match']:.4f}" in card


@pytest.mark.slow  # trains for real
def test_training_continues_from_an_exported_learner_with_oversampling(trained, tmp_path):
    start = trained["out"] / "export.pkl"
    out = tmp_path / "continued"
    result = run_module("maskclassifier.train", "--csv", str(trained["csv"]), "--out", str(out),
                        "--merge", "Surgical=Medical",
                        *TINY_OPTIONS, "--lr", "1e-12", "--init-from", str(start), "--oversample", "Shield=3",
                        "--tta", "flip")
    assert result.returncode == 0, result.stderr[-3000:]
    sidecar = json.loads((out / "export.json").read_text())
    assert sidecar["tta"] == "flip" and "and its mirror image" in (out / "MODEL_CARD.md").read_text()
    # The app mirrors each image as training's validation did, so evaluate gives training's figures.
    evaluated = run_module("maskclassifier.evaluate", "--csv", str(trained["csv"]), "--model", str(out / "export.pkl"),
                           "--merge", "Surgical=Medical", "--valid-only")
    assert "each image averaged with its mirror image" in evaluated.stdout
    assert f"exact-match {sidecar['metrics']['exact_match']:.4f}, macro-F1 {sidecar['metrics']['macro_f1']:.4f}" \
        in evaluated.stdout
    assert sidecar["training"]["init_from"] == {"file": "export.pkl", "sha256": sha256_file(start), "took": "model"}
    assert sidecar["training"]["oversample"] == ["Shield=3"]
    assert sidecar["training"]["dataset"]["images"] == json.loads((trained["out"] / "export.json").read_text())[
        "training"]["dataset"]["images"]  # counts are of distinct images, not of repeats
    card = (out / "MODEL_CARD.md").read_text()
    assert "Started from the weights of `export.pkl`" in card and "oversampled: Shield=3" in card
    assert sidecar["training"]["lr_from"] == "--lr" and "lr_find.png" not in card and not (out / "lr_find.png").exists()
    # With a learning rate of 1e-12 the convolutions keep the weights they started from.
    before, after = (read_learner(path).model.state_dict() for path in (start, out / "export.pkl"))
    convolutions = [name for name, tensor in before.items() if name.endswith("weight") and tensor.dim() == 4]
    assert convolutions and all(torch.allclose(before[name], after[name], atol=1e-6) for name in convolutions)


@pytest.mark.slow  # trains for real
def test_lr_mult_sets_how_much_slower_the_body_learns(trained, tmp_path):
    start = trained["out"] / "export.pkl"
    out = tmp_path / "head-only"
    result = run_module("maskclassifier.train", "--csv", str(trained["csv"]), "--out", str(out),
                        "--merge", "Surgical=Medical",
                        *TINY_OPTIONS, "--lr", "1e-2", "--lr-mult", "1e9", "--init-from", str(start))
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((out / "export.json").read_text())["training"]["lr_mult"] == 1e9
    assert "the body at 1/1e+09 of the head's rate" in (out / "MODEL_CARD.md").read_text()
    # The head learns at 5e-3; the body at a billionth of that, so its convolutions keep their weights.
    before, after = (read_learner(path).model for path in (start, out / "export.pkl"))
    body_before, body_after = before[0].state_dict(), after[0].state_dict()
    convolutions = [name for name, tensor in body_before.items() if tensor.dim() == 4]
    assert convolutions and all(torch.allclose(body_before[name], body_after[name], atol=1e-6) for name in convolutions)
    head_weights = [(a, b) for a, b in zip(before[1].parameters(), after[1].parameters(), strict=True) if a.dim() == 2]
    assert head_weights and all(not torch.allclose(a, b, atol=1e-4) for a, b in head_weights)


def first_norm(learner) -> torch.nn.BatchNorm1d:
    return next(layer for layer in learner.model[1] if isinstance(layer, torch.nn.BatchNorm1d))


@pytest.mark.slow  # trains for real
def test_training_takes_only_the_body_for_another_head_in_bfloat16(trained, tmp_path):
    # The start's first head BatchNorm gets weights no fresh head has (a one-epoch run may leave them at 1.0 to
    # within 1e-6, as a fresh one is): the new head, of another width, must not carry them over.
    start = tmp_path / "export.pkl"
    learner = read_learner(trained["out"] / "export.pkl")
    first_norm(learner).weight.data.fill_(2.0)
    learner.path = Path(".")
    learner.export(start.resolve())
    out = tmp_path / "new-head"
    result = run_module("maskclassifier.train", "--csv", str(trained["csv"]), "--out", str(out),
                        "--merge", "Surgical=Medical",
                        *TINY_OPTIONS, "--lr", "1e-12", "--init-from", str(start), "--head", "16",
                        "--precision", "bf16")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "took the body" in result.stdout
    training = json.loads((out / "export.json").read_text())["training"]
    assert (training["init_from"]["took"] == "body" and training["head_features"] == 16
            and training["precision"] == "bf16")
    assert "Started from the body's weights of `export.pkl`" in (out / "MODEL_CARD.md").read_text()
    before, after = (read_learner(path) for path in (start, out / "export.pkl"))
    assert [type(cb).__name__ for cb in after.cbs] == [type(cb).__name__ for cb in before.cbs]  # no bf16 callback left
    head_widths = [layer.out_features for layer in after.model[1] if isinstance(layer, torch.nn.Linear)]
    assert head_widths == [16, len(after.dls.vocab)]
    body_before, body_after = before.model[0].state_dict(), after.model[0].state_dict()
    assert all(torch.allclose(body_before[name], body_after[name], atol=1e-6)
               for name, tensor in body_before.items() if tensor.dim() == 4)
    # The head's first BatchNorm has the same shape in both heads, but it is not carried over either.
    assert torch.all(first_norm(before).weight == 2.0)
    assert not torch.allclose(first_norm(after).weight, torch.full_like(first_norm(after).weight, 2.0), atol=0.5)


@pytest.mark.slow  # trains for real
def test_training_refuses_a_start_that_does_not_fit(trained, tiny_model):
    wrong_categories = run_module("maskclassifier.train", "--csv", str(trained["csv"]),
                                  "--out", str(trained["out"] / "x"),
                                  *TINY_OPTIONS, "--init-from", str(trained["out"] / "export.pkl"))
    assert wrong_categories.returncode == 2 and "--init-from" in wrong_categories.stderr
    assert "Surgical" in wrong_categories.stderr and "Traceback" not in wrong_categories.stderr
    wrong_architecture = run_module("maskclassifier.train", "--csv", str(trained["csv"]),
                                    "--out", str(trained["out"] / "x"),
                                    "--merge", "Surgical=Medical", *TINY_OPTIONS, "--init-from", str(tiny_model))
    assert wrong_architecture.returncode == 2
    assert "is not a learner of this architecture" in wrong_architecture.stderr
    bad_factor = run_module("maskclassifier.train", "--csv", str(trained["csv"]), "--out", str(trained["out"] / "x"),
                            "--merge", "Surgical=Medical", *TINY_OPTIONS, "--oversample", "Shield=lots")
    assert bad_factor.returncode == 2 and "--oversample expects LABEL=TIMES" in bad_factor.stderr


@pytest.mark.parametrize("option,message", [
    (["--lr", "fast"], "--lr must be a number or 'auto', got 'fast'"),
    (["--lr-mult", "0.5"], "--lr-mult must be 1 or more"),
    (["--valid-pct", "1"], "--valid-pct must be between 0 and 1"),
    (["--bs", "1"], "--bs must be at least 2"),
])
def test_train_refuses_bad_options_with_one_line(option, message, capsys):
    with pytest.raises(SystemExit) as stopped:
        parse_args(["--csv", "labels.csv", *option])
    assert stopped.value.code == 2 and message in capsys.readouterr().err


def test_lr_find_cost_is_bounded_by_the_data():
    # 5 epochs' worth of batches, at most fastai's 100 steps (under 20, train uses fastai's default instead)
    assert [lr_find_steps(batches) for batches in (1, 3, 4, 19, 20, 5000)] == [5, 15, 20, 95, 100, 100]


def test_batch_size_is_capped_by_the_training_images():
    assert fit_batch_size(64, 16) == 16 and fit_batch_size(8, 16) == 8 and fit_batch_size(2, 2) == 2
    with pytest.raises(TrainingError, match="only 1 training image.*BatchNorm needs at least 2"):
        fit_batch_size(64, 1)


@pytest.mark.slow  # trains for real
def test_tiny_data_with_the_defaults_trains_into_a_new_run_folder(tmp_path):
    """A newcomer's first run: 16 training images, --bs 64 and --lr auto by default, no --out."""
    write_labelled_set(tmp_path / "data", per_category=3)
    command = [sys.executable, "-m", "maskclassifier.train", "--csv", "data/labels.csv", "--no-pretrained",
               "--size", "64", "--epochs", "1", "--frozen-epochs", "0", "--workers", "0"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900, **elsewhere(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "--bs 64 is more than the 16 training images: training with batches of 16" in result.stdout
    assert ("too little data for lr_find (1 training batch(es) per epoch, 5 of the 20 steps it needs in 5 epochs' "
            "worth): using fastai's default learning rate 0.001") in result.stdout
    runs = list((tmp_path / "runs").iterdir())
    assert len(runs) == 1 and re.fullmatch(r"\d{8}-\d{6}", runs[0].name)
    run = Path("runs") / runs[0].name
    training = json.loads((tmp_path / run / "export.json").read_text())["training"]
    assert training["batch_size"] == 16 and training["options"]["bs"] == 64 and training["options"]["out"] == str(run)
    assert training["lr"] == 1e-3 and training["lr_from"] == "default" and not (tmp_path / run / "lr_find.png").exists()
    card = (tmp_path / run / "MODEL_CARD.md").read_text()
    assert "learning rate 1.00e-03 (fastai's default: too little data for lr_find)" in card
    # lr_find kept its weights in a temporary folder, now removed: nothing (no models/) in the current directory.
    assert sorted(path.name for path in tmp_path.iterdir()) == ["data", "runs", "tmp"]
    assert not list((tmp_path / "tmp").glob("maskclassifier-train-*"))

    shipped = sha256_file(tmp_path / run / "export.pkl")
    again = subprocess.run([*command, "--out", str(run), "--lr", "1e-3"], capture_output=True, text=True, timeout=900,
                           **elsewhere(tmp_path))
    assert again.returncode == 2 and "Traceback" not in again.stderr
    assert again.stderr.strip() == (f"error: {run} already holds a trained model (export.pkl, export.json, "
                                    "MODEL_CARD.md, metrics.json, threshold_sweep.png, confusion.png, top_losses.png); "
                                    "pass --overwrite to replace it, or leave out --out to train into a new folder "
                                    "under runs/")
    assert sha256_file(tmp_path / run / "export.pkl") == shipped

    replaced = subprocess.run([*command, "--out", str(run), "--lr", "1e-3", "--overwrite"], capture_output=True,
                              text=True, timeout=900, **elsewhere(tmp_path))
    assert replaced.returncode == 0, replaced.stderr[-3000:]
    training = json.loads((tmp_path / run / "export.json").read_text())["training"]
    assert training["options"]["overwrite"] is True and training["lr_from"] == "--lr"
    sidecar = json.loads((tmp_path / run / "export.json").read_text())
    assert sha256_file(tmp_path / run / "export.pkl") == sidecar["sha256"]


@pytest.mark.slow  # trains for real
@pytest.mark.parametrize("signum,exit_code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_stopped_run_leaves_no_lr_find_files(tmp_path, labelled_set, signum, exit_code):
    """lr_find saves the weights while it runs; stopped then, the run removes them (Python's default SIGTERM
    would not) and never writes them under the current directory."""
    command = [sys.executable, "-m", "maskclassifier.train", "--csv", str(labelled_set), "--out", "out",
               *TINY_OPTIONS, "--bs", "2"]  # 16 batches per epoch: 80 lr_find steps
    # SIGINT as a terminal delivers it: a shell starts background jobs (`make test &`, nohup) with SIGINT ignored,
    # the child would inherit that, and Python then installs no KeyboardInterrupt handler at all.
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL), **elsewhere(tmp_path))
    try:
        saved, deadline = [], time.monotonic() + 600
        while not saved and process.poll() is None and time.monotonic() < deadline:
            saved = list((tmp_path / "tmp").glob("maskclassifier-train-*/models/tmp*/_tmp.pth"))
            time.sleep(0.005)
        assert saved, "lr_find's weights never appeared in the run's temporary folder"
        process.send_signal(signum)
        _, stderr = process.communicate(timeout=300)
    finally:
        process.kill()
    assert process.returncode == exit_code and "Traceback" not in stderr, stderr[-3000:]
    assert not list((tmp_path / "tmp").glob("maskclassifier-train-*"))
    assert not (tmp_path / "models").exists()


def test_options_can_come_from_a_file(tmp_path, capsys):
    recipe = tmp_path / "tiny.args"
    recipe.write_text("# a comment line\n--csv 'my data/labels.csv'  # a quoted path with a space\n"
                      "--size 64 --epochs 3\n\n--oversample Shield=3\n--oversample Gas=2\n")
    args = parse_args([f"@{recipe}", "--epochs", "1"])  # what follows the file overrides it
    assert args.csv == Path("my data/labels.csv") and args.size == 64 and args.presize == 85 and args.epochs == 1
    assert args.oversample == ["Shield=3", "Gas=2"]
    with pytest.raises(SystemExit) as stopped:
        parse_args([f"@{tmp_path / 'missing.args'}"])
    assert stopped.value.code == 2 and "missing.args" in capsys.readouterr().err


def test_the_documented_training_command_writes_a_new_run_folder():
    training = (ROOT / "docs" / "training.md").read_text()
    section = training[training.index("## Train your own model"):]
    command = re.search(r"```sh\n\.venv/bin/python -m maskclassifier\.train (.*)\n```", section).group(1)
    args = parse_args(command.split())
    assert args.out.parent == Path("runs") and re.fullmatch(r"\d{8}-\d{6}", args.out.name) and not args.overwrite


def model_card_runs() -> dict[int, list[str]]:
    """The options the model card quotes for each numbered run of the shipped model's chain."""
    card = (ROOT / "models" / "MODEL_CARD.md").read_text()
    section = card[card.index("How it was trained"):card.index("Also tried, not shipped")]
    parts = re.split(r"^(\d+)\. ", section, flags=re.MULTILINE)[1:]
    return {int(number): [token for span in re.findall(r"`(--[^`]+)`", text) if span != "--init-from"
                          for token in span.split()]
            for number, text in zip(parts[::2], parts[1::2], strict=True)}


def test_recipes_rebuild_the_shipped_models_chain():
    runs = model_card_runs()
    assert sorted(runs) == list(range(1, len(list((ROOT / "recipes").glob("model*.args"))) + 1))
    defaults = vars(parse_args(["--csv", "labels.csv"]))
    previous = None
    for number, quoted in runs.items():
        recipe = vars(parse_args([f"@{ROOT / 'recipes' / f'model{number}.args'}"]))
        assert recipe["csv"] == Path("../shared/data/masks/labels.csv") and recipe["out"] == Path(f"runs/model{number}")
        assert recipe["init_from"] == (None if previous is None else previous["out"] / "export.pkl")
        card = vars(parse_args(["--csv", "labels.csv", *quoted]))
        changed = {name for name in card if card[name] != defaults[name]}
        assert changed and {name: recipe[name] for name in changed} == {name: card[name] for name in changed}, number
        previous = recipe
    shipped = json.loads((ROOT / "models" / "export.json").read_text())
    training = shipped["training"]
    assert (previous["epochs"], previous["frozen_epochs"], previous["lr"], previous["lr_mult"], previous["head"],
            previous["precision"], previous["bs"], previous["seed"], previous["oversample"],
            previous["face_crops"]) == (
        training["epochs"], training["frozen_epochs"], training["lr"], training["lr_mult"], training["head_features"],
        training["precision"], training["batch_size"], training["seed"], training["oversample"], True)
    assert (previous["occluders"], previous["lighting"], previous["render_counts"]) == (
        training["augmentation"]["occluders"], training["augmentation"]["lighting"],
        training["augmentation"]["renderings"])
    assert (previous["size"], previous["presize"], previous["arch"], previous["tta"]) == (
        shipped["input_size"], shipped["preprocessing"]["presize"], shipped["architecture"], shipped["tta"])


def test_oversampling_repeats_training_rows_only():
    frame = pd.DataFrame({"fname": ["a", "b", "c", "d"], "labels": ["Shield", "Cloth Shield", "Cloth", "Shield"],
                          "is_valid": [False, False, False, True]})
    data = oversample(LabelledData(frame, Path(".")), {"Shield": 3, "Cloth": 2})
    assert data.frame["fname"].tolist() == ["a", "a", "a", "b", "b", "b", "c", "c", "d"]
    with pytest.raises(DatasetError, match="no image has the label"):
        oversample(LabelledData(frame, Path(".")), {"Gas": 2})


@pytest.mark.slow  # trains for real
def test_evaluate_prints_the_table_and_writes_predictions(trained, tmp_path):
    predictions = tmp_path / "predictions.csv"
    result = run_module("maskclassifier.evaluate", "--csv", str(trained["csv"]),
                        "--model", str(trained["out"] / "export.pkl"),
                        "--merge", "Surgical=Medical", "--valid-only", "--predictions", str(predictions))
    assert result.returncode == 0, result.stderr[-2000:]
    sidecar = json.loads((trained["out"] / "export.json").read_text())
    assert "test-time augmentation: none" in result.stdout  # the sidecar's, as in training
    assert JIT_WARNING not in result.stderr
    assert f"exact-match {sidecar['metrics']['exact_match']:.4f}" in result.stdout  # same numbers as training's
    rows = list(csv.DictReader(open(predictions)))
    assert len(rows) == sidecar["training"]["dataset"]["valid_images"]
    assert set(rows[0]) == {"fname", "labels", "predicted", "exact", *VOCAB}

    result = run_module("maskclassifier.evaluate", "--csv", str(trained["csv"]),
                        "--model", str(trained["out"] / "export.pkl"),
                        "--merge", "Surgical=Medical", "--valid-only", "--tta", "flip")
    assert result.returncode == 0 and "each image averaged with its mirror image" in result.stdout


@pytest.mark.slow  # trains for real
def test_evaluate_reports_exact_match_per_value_of_a_column(trained, tmp_path):
    predictions = tmp_path / "predictions.csv"
    result = run_module("maskclassifier.evaluate", "--csv", str(trained["csv"]),
                        "--model", str(trained["out"] / "export.pkl"),
                        "--merge", "Surgical=Medical", "--by", "labels", "--predictions", str(predictions))
    assert result.returncode == 0, result.stderr[-2000:]
    rows = list(csv.DictReader(open(predictions)))
    for labels in {row["labels"] for row in rows}:
        group = [row for row in rows if row["labels"] == labels]
        wrong = sum(row["exact"] == "False" for row in group)
        assert re.search(rf"^{re.escape(labels)} +{len(group)} +{wrong} +{1 - wrong / len(group):.4f}$",
                         result.stdout, re.MULTILINE), result.stdout

    missing = run_module("maskclassifier.evaluate", "--csv", str(trained["csv"]),
                         "--model", str(trained["out"] / "export.pkl"),
                         "--merge", "Surgical=Medical", "--by", "source")
    assert missing.returncode == 2 and "has no column source for --by" in missing.stderr


@pytest.mark.slow  # trains for real
def test_evaluate_refuses_labels_the_model_does_not_know(trained):
    result = run_module("maskclassifier.evaluate", "--csv", str(trained["csv"]),
                        "--model", str(trained["out"] / "export.pkl"))
    assert result.returncode == 2
    assert "Surgical are not categories of this model" in result.stderr and "--merge" in result.stderr


@pytest.mark.slow  # trains for real
@pytest.mark.parametrize("change,message", [
    (lambda df: df.drop(columns=["labels"]), "has no column labels"),
    (lambda df: df.assign(is_valid=False), "the validation set is empty"),
    (lambda df: df.assign(labels=np.where(df["is_valid"] & (df["labels"] == "Gas"), "Gas",
                                          df["labels"].str.replace("Gas", "Cloth"))),
     "Gas have no training images"),
])
def test_training_refuses_unusable_data_with_a_clear_error(tmp_path, change, message):
    csv_path = write_labelled_set(tmp_path, per_category=3)
    change(pd.read_csv(csv_path)).to_csv(csv_path, index=False)
    result = run_module("maskclassifier.train", "--csv", str(csv_path), "--out", str(tmp_path / "out"), *TINY_OPTIONS)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr


def test_threshold_sweep_and_choice():
    targets = np.array([[1, 0], [0, 1], [1, 1], [0, 0]])
    probs = np.array([[0.9, 0.2], [0.3, 0.7], [0.6, 0.65], [0.1, 0.4]])
    sweep = metrics.threshold_sweep(probs, targets)
    best = metrics.best_threshold(sweep)
    assert best == 0.55  # 0.45..0.55 all score macro-F1 1.0: ties go to the higher threshold
    report = metrics.summary(probs, targets, ["a", "b"], best)
    assert report["exact_match"] == 1.0 and report["per_class"]["a"]["confusion"] == [[2, 0], [0, 2]]
    low = metrics.summary(probs, targets, ["a", "b"], 0.35)
    assert low["per_class"]["b"]["precision"] == pytest.approx(2 / 3)
    assert low["cooccurrence"]["counts"] == [[2, 1], [1, 2]]  # row: true label, column: predicted


def test_shipped_model_matches_its_sidecar():
    """models/export.json describes models/export.pkl: same file hash, same categories."""
    model = ROOT / "models" / "export.pkl"
    sidecar = json.loads(model.with_suffix(".json").read_text())
    assert sidecar["sha256"] == sha256_file(model)
    classifier = load_classifier(model)
    assert sidecar["vocab"] == classifier.vocab == VOCAB
    assert classifier.threshold == sidecar["threshold"]
    # the pipeline the app rebuilds from the learner normalises as the model was trained (ImageNet statistics)
    normalize = [tfm for tfm in read_learner(model).dls.after_batch.fs if type(tfm).__name__ == "Normalize"]
    assert len(normalize) == 1 and sidecar["preprocessing"]["normalize"]["mean"] == pytest.approx(
        normalize[0].mean.flatten().tolist())


def test_metrics_agree_with_their_definitions_on_a_category_nobody_has():
    """scikit-learn's metrics, as the model card reports them: a category never true nor predicted scores F1 0."""
    targets = np.array([[1, 0, 0], [0, 1, 0], [1, 1, 0]])
    probs = np.array([[0.9, 0.1, 0.0], [0.8, 0.7, 0.1], [0.7, 0.2, 0.2]])
    assert metrics.accuracy_multi(probs, targets, 0.5) == pytest.approx(7 / 9)  # 2 of 9 decisions wrong
    assert metrics.exact_match(probs, targets, 0.5) == pytest.approx(1 / 3)
    report = metrics.per_class_report(probs, targets, ["a", "b", "c"], 0.5)
    assert report["c"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0, "confusion": [[3, 0], [0, 0]]}
    assert report["a"]["confusion"] == [[0, 1], [0, 2]] and report["a"]["precision"] == pytest.approx(2 / 3)
    assert metrics.macro_f1(probs, targets, 0.5) == pytest.approx((0.8 + 2 / 3 + 0) / 3)


def test_the_metrics_table_says_no_images_for_a_category_without_validation_images():
    """A tiny run's validation split may lack a category: its row says so instead of printing 0.000 scores."""
    targets = np.array([[1, 0, 0], [0, 1, 0], [1, 1, 0]])
    probs = np.array([[0.9, 0.1, 0.0], [0.8, 0.7, 0.1], [0.7, 0.2, 0.2]])
    rows = {line.split()[0]: line for line in metrics.format_table(metrics.summary(probs, targets, ["a", "b", "c"],
                                                                                   0.5)).splitlines()[2:]}
    assert "no images" in rows["c"] and "0.000" not in rows["c"] and rows["c"].split()[-1] == "0"
    assert "no images" not in rows["a"] and "0.667" in rows["a"]
