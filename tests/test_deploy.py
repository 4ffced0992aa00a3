"""The Procfile's gunicorn command, run for real on a loopback port."""

from __future__ import annotations

import json
import subprocess
import urllib.request

import pytest

from datasets import face_like_image
from helpers import encode, free_port, multipart, start_gunicorn, wait_until_healthy

pytestmark = pytest.mark.slow  # each test starts gunicorn


def test_procfile_command_serves_predictions(tiny_model):
    port = free_port()
    process = start_gunicorn(tiny_model, port)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(url, process)
        body, content_type = multipart("file", "face.jpg", encode(face_like_image(["Cloth"], seed=1)), "image/jpeg")
        request = urllib.request.Request(url + "/api/predict", data=body, headers={"Content-Type": content_type})
        with urllib.request.urlopen(request, timeout=20) as response:
            assert response.status == 200
            result = json.loads(response.read())
        assert len(result["probabilities"]) == 7
        assert response.headers["X-Content-Type-Options"] == "nosniff"
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_gunicorn_stops_instead_of_respawning_when_the_model_is_missing(tmp_path):
    process = start_gunicorn(tmp_path / "missing.pkl", free_port())
    try:
        output, _ = process.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        process.kill()
        pytest.fail("gunicorn kept running without a model")
    assert process.returncode != 0
    assert f"Cannot start the mask classifier: model file not found: {tmp_path / 'missing.pkl'}" in output


# WEB_CONCURRENCY=abc too: gunicorn parses that variable when it is imported, so the Procfile's bin/web checks the
# settings before it starts gunicorn.
@pytest.mark.parametrize("name,value", [("WEB_CONCURRENCY", "0"), ("WEB_CONCURRENCY", "17"), ("WEB_CONCURRENCY", "abc"),
                                        ("WEB_CONCURRENCY", "2.5"), ("PORT", "70000"),
                                        ("PORT", "http"), ("GUNICORN_THREADS", "-1")])
def test_bad_gunicorn_settings_stop_it_with_one_line(tiny_model, name, value):
    process = start_gunicorn(tiny_model, free_port(), **{name: value})
    try:
        output, _ = process.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        pytest.fail(f"gunicorn kept running with {name}={value}")
    assert process.returncode != 0
    assert f"Cannot start the mask classifier: {name} must be a whole number" in output
    assert "Traceback" not in output and len(output.strip().splitlines()) == 1, output
