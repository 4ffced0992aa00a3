"""The Procfile's gunicorn command, run for real on a loopback port."""

from __future__ import annotations

import json
import os
import shlex
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

from conftest import encode
from datasets import face_like_image

ROOT = Path(__file__).resolve().parent.parent


def procfile_web_command() -> list[str]:
    for line in (ROOT / "Procfile").read_text().splitlines():
        if line.startswith("web:"):
            return shlex.split(line.removeprefix("web:"))
    raise AssertionError("Procfile has no web process")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_gunicorn(model_path: Path, port: int) -> subprocess.Popen:
    env = {**os.environ, "PORT": str(port), "MODEL_PATH": str(model_path), "WEB_CONCURRENCY": "1"}
    command = procfile_web_command()
    command[0] = str(Path(sys.executable).parent / command[0])  # the venv's gunicorn
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_until_healthy(url: str, process: subprocess.Popen, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"gunicorn exited: {process.stdout.read()}")
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise AssertionError("gunicorn did not become healthy")


def multipart(field: str, filename: str, data: bytes, content_type: str) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{filename}\"\r\n"
            f"Content-Type: {content_type}\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


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
