"""Shared fixtures: a real fastai learner trained and exported the notebook's way, and apps serving it."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from maskclassifier.web import create_app
from maskclassifier.config import Settings

from datasets import face_like_image, write_labelled_set
from helpers import CHROMEDRIVER, CHROMIUM, encode

TESTS = Path(__file__).resolve().parent


@pytest.fixture(scope="session")
def labelled_set(tmp_path_factory) -> Path:
    """A few dozen generated images with fname,labels,is_valid; returns the CSV path."""
    return write_labelled_set(tmp_path_factory.mktemp("labelled"))


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory, labelled_set) -> Path:
    """A real learner exported by tests/notebook_export.py in a subprocess (its own __main__ get_x/get_y)."""
    out = tmp_path_factory.mktemp("model") / "export.pkl"
    subprocess.run(
        [sys.executable, str(TESTS / "notebook_export.py"), str(labelled_set.parent), str(labelled_set), str(out)],
        check=True, capture_output=True, timeout=600,
    )
    return out


@pytest.fixture(scope="session")
def cli_model(tmp_path_factory, labelled_set) -> Path:
    """A learner from the training CLI (pretrained MobileNetV2, so ImageNet Normalize, presize 85 for size 64)."""
    out = tmp_path_factory.mktemp("cli-model")
    subprocess.run([sys.executable, "-m", "maskclassifier.train", "--csv", str(labelled_set), "--out", str(out),
                    "--size", "64", "--epochs", "1", "--frozen-epochs", "0", "--lr", "1e-3", "--bs", "16",
                    "--workers", "0"], cwd=TESTS.parent, check=True, capture_output=True, timeout=900)
    return out / "export.pkl"


@pytest.fixture(scope="session")
def settings(tiny_model) -> Settings:
    return Settings(model_path=tiny_model, threshold=0.5, max_upload_mb=2, torch_threads=1)


@pytest.fixture(scope="session")
def app(settings):
    app = create_app(settings)
    app.config["TESTING"] = True
    return app


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def make_app(settings):
    """Build another app with some settings changed, e.g. make_app(threshold=0.99)."""

    def build(**changes):
        app = create_app(replace(settings, **changes))
        app.config["TESTING"] = True
        return app

    return build


@pytest.fixture
def face_jpeg() -> bytes:
    return encode(face_like_image(["Medical"], seed=7, size=(120, 160)))


@pytest.fixture
def browser(tmp_path):
    """Headless Debian Chromium through chromedriver (mark the test with helpers.needs_chromium)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()
