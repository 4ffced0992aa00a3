"""Shared fixtures: a real fastai learner trained and exported the notebook's way, and apps serving it."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import threading
from dataclasses import replace
from pathlib import Path

import pytest

from datasets import PATCH_SIZE, face_like_image, write_labelled_set, write_patch_set
from helpers import CHROMEDRIVER, CHROMIUM, RecordUploads, encode, require_chromium
from maskclassifier.core.config import Settings
from maskclassifier.web import create_app

TESTS = Path(__file__).resolve().parent

# Fixtures that train or export a model (tens of seconds to minutes on 2 cores), drive Chromium or start the
# Procfile's gunicorn (test_serving's `server`, test_frontdoor's `stack`): every test that needs one, directly,
# through another fixture or as a fixture parameter, is marked slow (`make check` leaves it out).
SLOW_FIXTURES = {"cli_model", "trained_onnx", "notebook_onnx", "patch_model", "chromium", "server", "stack"}


def pytest_collection_modifyitems(items):
    for item in items:
        needed = set(item.fixturenames)
        callspec = getattr(item, "callspec", None)
        if callspec is not None:  # e.g. params=["tiny_model", "cli_model"], resolved with request.getfixturevalue
            needed |= {value for value in callspec.params.values() if isinstance(value, str)}
        if needed & SLOW_FIXTURES:
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session", autouse=True)
def own_cache_folder(tmp_path_factory) -> None:
    """Training runs in the tests (subprocesses inherit it) keep their face boxes in a folder of the test run, not
    in the owner's ~/.cache."""
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("cache"))


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


@pytest.fixture(scope="session")
def make_app(settings):
    """Build another app with some settings changed, e.g. make_app(threshold=0.99) (the builder holds no state, so
    module fixtures may use it too)."""

    def build(**changes):
        app = create_app(replace(settings, **changes))
        app.config["TESTING"] = True
        return app

    return build


@pytest.fixture
def face_jpeg() -> bytes:
    return encode(face_like_image(["Medical"], seed=7, size=(120, 160)))


PHONE = {"width": 390, "height": 844}  # an iPhone 12-15's CSS viewport
DESKTOP = {"width": 1280, "height": 900}


@pytest.fixture
def uploads(make_app) -> RecordUploads:
    """The test learner (threshold 0.01, so that every photo gets an answer) behind a recorder of uploads."""
    return RecordUploads(make_app(threshold=0.01))


@pytest.fixture
def live_url(uploads):
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, uploads, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


@pytest.fixture
def open_browser(chromium):
    """open_browser(phone=False, javascript=True, camera=None): a `chromium` sized as a desktop or a phone.

    A phone is 390x844 CSS px with touch (so CSS `pointer: coarse` matches, as on a real phone); `camera` "fake"
    gives Chromium's fake webcam without a permission prompt.
    """

    def start(phone: bool = False, javascript: bool = True, camera: str | None = None):
        fake_camera = (("--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream") if camera == "fake"
                       else ())
        driver = chromium("--hide-scrollbars", *fake_camera)
        if not javascript:
            # The page's one script is never loaded, so the page is what a browser without JavaScript gets (the
            # page has no inline script), while chromedriver and axe-core can still run theirs.
            driver.execute_cdp_cmd("Network.enable", {})
            driver.execute_cdp_cmd("Network.setBlockedURLs", {"urls": ["*/static/app.js*"]})
        size = PHONE if phone else DESKTOP
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
            "width": size["width"], "height": size["height"], "deviceScaleFactor": 2 if phone else 1, "mobile": phone})
        if phone:
            driver.execute_cdp_cmd("Emulation.setTouchEmulationEnabled", {"enabled": True, "maxTouchPoints": 5})
        return driver

    return start


@pytest.fixture(scope="session")
def patch_model(tmp_path_factory) -> Path:
    """A real fastai learner (a small conv-BN-ReLU body and fastai's own head) that learnt to say which coloured
    patches an image has (tests/datasets.py `patch_image`), exported; about 10 s of training on one core."""
    import pandas as pd
    import torch
    from fastai.learner import Learner
    from fastai.losses import BCEWithLogitsLossFlat
    from fastai.vision.all import ColReader, ColSplitter, DataBlock, ImageBlock, MultiCategoryBlock, Resize, set_seed
    from fastai.vision.learner import create_head
    from torch import nn

    root = tmp_path_factory.mktemp("patches")
    table = pd.read_csv(write_patch_set(root), keep_default_na=False)
    set_seed(0, reproducible=True)
    dls = DataBlock(blocks=(ImageBlock, MultiCategoryBlock), get_x=ColReader("fname", pref=f"{root}/"),
                    get_y=ColReader("labels", label_delim=" "), splitter=ColSplitter("is_valid"),
                    item_tfms=Resize(PATCH_SIZE)).dataloaders(table, bs=16, num_workers=0)

    def block(channels_in: int, channels_out: int) -> list[nn.Module]:
        return [nn.Conv2d(channels_in, channels_out, 3, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(channels_out), nn.ReLU()]

    body = nn.Sequential(*block(3, 16), *block(16, 32), *block(32, 32))  # a 12x12 map at 96 px
    learner = Learner(dls, nn.Sequential(body, create_head(32, 2)), loss_func=BCEWithLogitsLossFlat(), path=root)
    with learner.no_bar(), learner.no_logging():
        torch.set_num_threads(1)
        learner.fit_one_cycle(10, 1e-2)
    learner.export("export.pkl")
    return root / "export.pkl"


@pytest.fixture
def dataset(tmp_path) -> Path:
    """The cleaner's labelled set (tests/test_clean*.py): 16 generated images; labels.csv with fname, labels,
    is_valid and a source column."""
    csv_path = write_labelled_set(tmp_path / "data", per_category=2)
    with open(csv_path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    with open(csv_path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=[*rows[0], "source"])
        writer.writeheader()
        writer.writerows({**row, "source": "camera" if i % 2 else "web"} for i, row in enumerate(rows))
    return csv_path


@pytest.fixture
def serve():
    """serve(wsgi_app[, host]) -> its URL on a free port of `host` (default loopback), in a thread, shut down after
    the test."""
    import threading

    from werkzeug.serving import make_server

    servers = []

    def start(wsgi_app, host: str = "127.0.0.1") -> str:
        server = make_server(host, 0, wsgi_app, threaded=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://{host}:{server.server_port}"

    yield start
    for server in servers:
        server.shutdown()


@pytest.fixture
def chromium(tmp_path):
    """chromium(*flags) -> a headless Chromium (selenium) with the flags added; quit after the test."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    require_chromium()
    drivers = []

    def start(*flags: str):
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                     "--disable-background-networking", "--disable-component-update", "--disable-sync",
                     f"--user-data-dir={tmp_path / f'profile{len(drivers)}'}", *flags):
            options.add_argument(flag)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        drivers.append(webdriver.Chrome(service=Service(CHROMEDRIVER), options=options))
        return drivers[-1]

    yield start
    for driver in drivers:
        driver.quit()


@pytest.fixture
def browser(chromium):
    """One headless Chromium at its default size (mark the test with helpers.needs_chromium)."""
    return chromium()
