"""A newcomer's walk through the "Train your own model" section of docs/training.md (the README links to it), in a
fresh clone of the committed tree: every `.venv/bin/python -m maskclassifier.…` command of its code blocks, run as
written, in the document's order, on a small generated set (data/labels.csv) with the smallest training options
added, each step's files checked, and `git status` clean at the end (.gitignore covers what the commands write)."""

from __future__ import annotations

import csv
import json
import os
import re
import shlex
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from datasets import write_labelled_set
from helpers import ROOT, TINY_OPTIONS
from maskclassifier.core.sidecar import sha256_file

pytestmark = pytest.mark.slow  # a fresh clone, trained in for real

RUN_PLACEHOLDER = "runs/YYYYMMDD-HHMMSS"
TRAINING_DOC = Path("docs") / "training.md"


def readme_commands(document: str) -> list[list[str]]:
    """The commands of the training section's ```sh blocks, continuation lines joined, comments dropped."""
    section = document[document.index("## Train your own model"):]
    section = section[:section.index("\n## ", 1)]
    commands = []
    for block in re.findall(r"```sh\n(.*?)```", section, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if words[:3] == [".venv/bin/python", "-m", words[2]] and words[2].startswith("maskclassifier."):
                commands.append(words)
    return commands


def test_the_docs_list_the_training_walkthrough():
    modules = [words[2] for words in readme_commands((ROOT / TRAINING_DOC).read_text())]
    assert modules == ["maskclassifier.train", "maskclassifier.evaluate", "maskclassifier.clean",
                       "maskclassifier.train", "maskclassifier.evaluate"]


def fresh_clone(folder: Path) -> Path:
    """`git clone` of this checkout at its HEAD commit (only committed files travel), with this .venv linked in."""
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True)
    clone = folder / "clone"
    subprocess.run(["git", "clone", "--quiet", "--no-checkout", str(ROOT), str(clone)], check=True, timeout=120)
    subprocess.run(["git", "checkout", "--quiet", head.stdout.strip()], cwd=clone, check=True, timeout=120)
    (clone / ".venv").symlink_to(Path(sys.executable).parent.parent)
    return clone


def start_cleaner(words: list[str], clone: Path, env: dict) -> tuple[subprocess.Popen, str]:
    process = subprocess.Popen([*words, "--port", "0"], cwd=clone, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    for _ in range(5):
        line = process.stdout.readline()
        found = re.search(r"open (http://127\.0\.0\.1:\d+/\S+/)", line)
        if found:
            return process, found.group(1)
    process.kill()
    raise AssertionError(f"the cleaner printed no URL: {process.stderr.read()[-3000:]}")


def decide(url: str, body: dict) -> None:
    request = urllib.request.Request(url + "api/decide", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 200


@pytest.mark.skipif(not (ROOT / ".git").exists(), reason="needs the git checkout")
def test_a_fresh_clone_walks_through_the_training_section(tmp_path):
    clone = fresh_clone(tmp_path)
    write_labelled_set(clone / "data", per_category=3)
    env = {**os.environ, "PYTHONPATH": "", "TMPDIR": str(tmp_path)}
    where = subprocess.run([".venv/bin/python", "-c", "import maskclassifier; print(maskclassifier.__file__)"],
                           cwd=clone, env=env, capture_output=True, text=True, check=True)
    assert where.stdout.strip() == str(clone / "maskclassifier" / "__init__.py"), "the clone's code runs"
    runs: list[Path] = []
    for words in readme_commands((clone / TRAINING_DOC).read_text()):
        module = words[2]
        if runs:
            words = [word.replace(RUN_PLACEHOLDER, str(runs[-1].relative_to(clone))) for word in words]
        if module == "maskclassifier.clean":
            before = {path: sha256_file(path) for path in (clone / "data").rglob("*") if path.is_file()}
            process, url = start_cleaner(words, clone, env)
            try:
                decide(url, {"fname": "images/1-1.jpg", "action": "relabel", "labels": ["Cloth", "Shield"]})
                decide(url, {"fname": "images/2-1.jpg", "action": "delete"})
            finally:
                process.terminate()
                process.wait(timeout=30)
            assert {path: sha256_file(path) for path in (clone / "data").rglob("*") if path.is_file()} == before
            corrections = list(csv.reader((clone / "corrections.csv").read_text().splitlines()))
            assert [row[:4] for row in corrections[1:]] == [["images/1-1.jpg", "Cloth", "Cloth Shield", "relabel"],
                                                            ["images/2-1.jpg", "Gas", "", "delete"]]
            assert len(list(clone.glob("corrections.scores-*.json"))) == 1
            continue
        if module == "maskclassifier.train":
            words = [*words, *TINY_OPTIONS]
        result = subprocess.run(words, cwd=clone, env=env, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, f"{shlex.join(words)}\n{result.stderr[-3000:]}"
        assert "Traceback" not in result.stderr
        if module == "maskclassifier.train":
            new = sorted(set((clone / "runs").iterdir()) - set(runs))
            assert len(new) == 1 and re.fullmatch(r"\d{8}-\d{6}", new[0].name), new
            runs.append(new[0])
            for name in ("export.pkl", "export.json", "MODEL_CARD.md", "metrics.json", "threshold_sweep.png",
                         "confusion.png", "top_losses.png"):
                assert (new[0] / name).is_file(), name
            dataset = json.loads((new[0] / "export.json").read_text())["training"]["dataset"]
            if "--corrections" in words:
                assert dataset["corrections"]["relabelled"] == 1 and dataset["corrections"]["deleted"] == 1
                assert dataset["images"] == 23
                assert "Labels corrected by `corrections.csv`" in (new[0] / "MODEL_CARD.md").read_text()
            else:
                assert dataset["corrections"] is None and dataset["images"] == 24
        if module == "maskclassifier.evaluate":
            assert "exact" in result.stdout.lower()
            if "--predictions" in words:
                predictions = (clone / words[words.index("--predictions") + 1]).read_text().splitlines()
                assert len(predictions) == 1 + 24
            if "--corrections" in words:
                assert "1 image(s) relabelled, 1 left out" in result.stderr
    assert len(runs) == 2
    status = subprocess.run(["git", "status", "--porcelain", "--ignored"], cwd=clone, capture_output=True, text=True)
    leftovers = {line[3:].rstrip("/") for line in status.stdout.splitlines() if "__pycache__" not in line}
    assert leftovers <= {".venv", "data", "runs", "corrections.csv", "predictions.csv"} | {
        path.name for path in clone.glob("corrections.scores-*.json")}, leftovers
    # and .gitignore covers every one of them: the walkthrough leaves `git status` clean
    untracked = subprocess.run(["git", "status", "--porcelain"], cwd=clone, capture_output=True, text=True, check=True)
    assert untracked.stdout == "", untracked.stdout
