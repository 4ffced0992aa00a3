"""What several test modules (and the benchmarks) share: encoding images, form uploads, hand-made files, the CLI
runner and the Procfile's server on a loopback port. Fixtures are in conftest.py; this module has plain functions.
"""

from __future__ import annotations

import io
import json
import os
import shlex
import shutil
import socket
import struct
import subprocess
import sys
import time
import urllib.request
import uuid
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from maskclassifier.facebox import Face, FaceScan

ROOT = Path(__file__).resolve().parent.parent

# The browser tests' Chromium (conftest.py's `browser` fixture); they are skipped where either is missing.
CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")
NO_CHROMIUM = "needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)"

# The training CLI's smallest real run: a from-scratch learner, one epoch at 64 px.
TINY_OPTIONS = ["--no-pretrained", "--size", "64", "--epochs", "1", "--frozen-epochs", "0", "--bs", "8", "--workers", "0"]


def encode(image: Image.Image, fmt: str = "JPEG", **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def upload(data: bytes, name: str = "photo.jpg", content_type: str = "image/jpeg", field: str = "file") -> dict:
    """Form data for the test client's post(..., data=upload(...))."""
    return {field: (io.BytesIO(data), name, content_type)}


def sideways_jpeg(upright: Image.Image, orientation: int = 6) -> bytes:
    """What a phone stores: the pixels rotated, plus the EXIF tag that says how to turn them upright."""
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # orientation 6 = rotate 270 (clockwise 90) to view
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(stored, "JPEG", quality=95, exif=exif)


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png(width: int, height: int, bit_depth: int, colour_type: int, raw_rows: bytes) -> bytes:
    """A PNG whose IHDR says `width` x `height` and whose compressed data holds only `raw_rows` (filter bytes
    included): decompression bombs and files whose data ends early."""
    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", zlib.compress(raw_rows, 9))
            + png_chunk(b"IEND", b""))


def png_claiming(width: int, height: int) -> bytes:
    """A PNG header for a `width` x `height` RGB image with almost no pixel data: a decompression bomb."""
    return png(width, height, 8, 2, b"\0" * 4096)


def png_one_row_of(width: int = 7071, height: int = 7071) -> bytes:
    """93 bytes: a 16-bit grey PNG of `width` x `height` (50 megapixels) whose compressed data ends after one row."""
    return png(width, height, 16, 0, b"\0" * (1 + 2 * width))


def run_module(module: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, capture_output=True, text=True, timeout=900)


def procfile_web_command() -> list[str]:
    for line in (ROOT / "Procfile").read_text().splitlines():
        if line.startswith("web:"):
            return shlex.split(line.removeprefix("web:"))
    raise AssertionError("Procfile has no web process")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_gunicorn(model_path: Path, port: int, **environ: str) -> subprocess.Popen:
    """The Procfile's command with this Python and its gunicorn, one worker, and `environ` on top of this
    process's."""
    env = {**os.environ, "PORT": str(port), "MODEL_PATH": str(model_path), "WEB_CONCURRENCY": "1", **environ}
    command = procfile_web_command()
    # this Python: bin/web (the launcher that checks the settings) starts gunicorn with the Python that runs it
    command = [sys.executable, str(ROOT / command[0]), *command[1:]]
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


class RecordUploads:
    """WSGI middleware that keeps a copy of each file the browser sends in the field `file`; `delay_s` holds each
    POST back that long (to watch the progress state), and `fail_with` answers POSTs with that status and a plain
    text body, as a proxy in front of the app would."""

    def __init__(self, app):
        self.app = app
        self.files: list[bytes] = []
        self.forms: list[dict] = []
        self.delay_s = 0.0
        self.fail_with: int | None = None

    def __call__(self, environ, start_response):
        from werkzeug.wrappers import Request

        if environ["REQUEST_METHOD"] == "POST":
            body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
            request = Request(dict(environ, **{"wsgi.input": io.BytesIO(body)}))
            self.files += [part.read() for part in request.files.getlist("file") if part.filename]
            self.forms.append(dict(request.form))
            environ["wsgi.input"] = io.BytesIO(body)
            time.sleep(self.delay_s)
            if self.fail_with:
                start_response(f"{self.fail_with} Bad Gateway", [("Content-Type", "text/plain")])
                return [b"upstream error"]
        return self.app(environ, start_response)


AXE = ROOT / "tests" / "vendor" / "axe-core" / "axe.min.js"


def axe_violations(driver) -> list[str]:
    """axe-core's WCAG 2.x A/AA violations on the page as it is now: one line each (rule and the elements)."""
    driver.execute_script(AXE.read_text())
    found = driver.execute_async_script(
        "var done = arguments[arguments.length - 1];"
        "axe.run(document, {runOnly: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'best-practice']})"
        ".then(function (r) { done(JSON.stringify(r.violations)); },"
        "      function (e) { done(JSON.stringify([{id: String(e), nodes: []}])); });")
    return [f"{item['id']}: {[node['target'] for node in item['nodes']]}" for item in json.loads(found)]


def underexposed(image: Image.Image, exposure: float, noise: float = 4.0, seed: int = 0) -> Image.Image:
    """The photo as a camera would take it with `exposure` times the light (0.2 = 2.3 stops under): scaled in
    linear light, not in sRGB values, plus Gaussian sensor noise of `noise` 8-bit levels."""
    srgb = np.asarray(image.convert("RGB"), dtype=np.float64) / 255
    linear = np.where(srgb <= 0.04045, srgb / 12.92, ((srgb + 0.055) / 1.055) ** 2.4) * exposure
    dark = np.where(linear <= 0.0031308, linear * 12.92, 1.055 * np.power(linear, 1 / 2.4) - 0.055) * 255
    dark += np.random.default_rng(seed).normal(0, noise, dark.shape)
    return Image.fromarray(np.clip(np.rint(dark), 0, 255).astype(np.uint8))


def write_y4m(path: Path, frames: list[Image.Image], fps: int = 10) -> Path:
    """A YUV4MPEG2 video (4:2:0, full-range JPEG YCbCr) of same-size RGB frames: what Chromium's fake camera plays
    (--use-file-for-fake-video-capture), looping."""
    width, height = frames[0].size
    with open(path, "wb") as handle:
        handle.write(f"YUV4MPEG2 W{width} H{height} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
        for frame in frames:
            y, cb, cr = frame.convert("YCbCr").split()
            half = ((width + 1) // 2, (height + 1) // 2)
            handle.write(b"FRAME\n" + y.tobytes() + cb.resize(half, Image.Resampling.BOX).tobytes()
                         + cr.resize(half, Image.Resampling.BOX).tobytes())
    return path


class FindsBrightFaces:
    """A detector that sees a face only where the photo has bright pixels, recording what it was shown."""

    def __init__(self, bright: int = 200):
        self.shown: list[Image.Image] = []
        self.bright = bright

    def detect(self, image, deadline=None):
        self.shown.append(image)
        bright = np.asarray(image.convert("L")).max() > self.bright
        return FaceScan([Face((10, 10, 60, 70), 0.99)] if bright else [], int(bright))
