"""Each install path the README's quick start documents works on a fresh clone: `make run` (full) and
`make run-slim` (slim).

A fresh clone holds only committed files: a venv or a symlink to another machine's folder committed by mistake
(`.venv-slim` once was) breaks it, which a test in the working checkout never sees.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from harness.multipart import Part, multipart
from harness.server import free_port, wait_healthy

pytestmark = pytest.mark.slow  # fresh clones, a real install, gunicorn

ROOT = Path(__file__).resolve().parent.parent
needs_git = pytest.mark.skipif(not (ROOT / ".git").exists(), reason="needs the git checkout")


def fresh_clone(folder: Path) -> Path:
    """`git clone` of this checkout at its HEAD commit: only committed files travel."""
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True)
    clone = folder / "clone"
    subprocess.run(["git", "clone", "--quiet", "--no-checkout", str(ROOT), str(clone)], check=True, timeout=120)
    subprocess.run(["git", "checkout", "--quiet", head.stdout.strip()], cwd=clone, check=True, timeout=120)
    return clone


def predict_an_example(url: str, clone: Path) -> dict:
    photo = next((clone / "maskclassifier/web/static/examples").glob("*.jpg"))
    body, content_type = multipart([Part("file", photo.read_bytes(), photo.name.encode())])
    request = urllib.request.Request(url + "/api/predict", data=body, headers={"Content-Type": content_type})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def serve_with_make(clone: Path, target: list[str], seconds: float) -> tuple[dict, dict]:
    """Run `make TARGET` in the clone on a free port; the answer for an example and /api/model."""
    port = free_port()
    env = {key: value for key, value in os.environ.items() if key not in ("MODEL_PATH", "WEB_CONCURRENCY")}
    process = subprocess.Popen(["make", *target, f"PORT={port}"], cwd=clone, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, process, seconds=seconds)
        with urllib.request.urlopen(url + "/api/model", timeout=30) as response:
            model = json.loads(response.read())
        return predict_an_example(url, clone), model
    finally:
        os.killpg(process.pid, 15)  # make, bin/web's gunicorn and its worker
        process.communicate(timeout=60)


@needs_git
def test_git_holds_no_symlink_or_virtualenv():
    listed = subprocess.run(["git", "ls-files", "-s"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    entries = [line.split(maxsplit=3) for line in listed.splitlines()]
    assert [path for mode, _, _, path in entries if mode == "120000"] == []  # symlinks
    assert [path for *_, path in entries if path.split("/")[0].startswith(".venv") or "/site-packages/" in path] == []


@needs_git
def test_make_run_serves_the_shipped_model_on_a_fresh_clone(tmp_path):
    clone = fresh_clone(tmp_path)
    # This test's own venv, already installed: `-o install` keeps make from reinstalling the project into it from
    # the clone (CI's `make test` runs the install recipe itself on its fresh clone).
    (clone / ".venv").symlink_to(Path(sys.executable).parent.parent)
    answer, model = serve_with_make(clone, ["-o", "install", "run"], seconds=180)
    assert answer["labels"] and set(answer["probabilities"]) == set(model["categories"])
    assert model["model_file"].endswith("export.pkl")


@needs_git
@pytest.mark.skipif(shutil.which("python3.11") is None, reason="the Makefile's PYTHON, python3.11, is not on PATH")
def test_make_run_slim_installs_and_serves_the_onnx_twin_on_a_fresh_clone(tmp_path):
    clone = fresh_clone(tmp_path)
    answer, model = serve_with_make(clone, ["run-slim"], seconds=600)  # a real install of requirements-slim.txt
    assert answer["labels"] and set(answer["probabilities"]) == set(model["categories"])
    assert model["model_file"].endswith("export.onnx")
    site = next((clone / ".venv-slim/lib").glob("python3.11/site-packages"))
    assert not (site / "torch").exists() and not (site / "fastai").exists()
