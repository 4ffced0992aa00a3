"""fastai vs ONNX Runtime serving, side by side: cold start, request latency and one gunicorn worker's memory.

    .venv/bin/python -m benchmarks.backends [--model models/export.pkl] [--requests 100]

For each backend it starts gunicorn the way the Procfile does (`gunicorn app:app --config gunicorn.conf.py`, one
worker) but bound to a free loopback port, and measures
  cold start      from starting gunicorn to the first 200 from GET /healthz (the worker has loaded the model)
  p50 / p95       of `--requests` single POST /api/predict requests, one after another, with a 1600x1200 JPEG
  worker RSS      resident memory of the gunicorn worker after those requests (and its peak, VmHWM)
The fastai backend runs under the full install (--full-python, default .venv) with MODEL.pkl; the slim backend
under the slim install (--slim-python, default .venv-slim, made with
`python3.11 -m venv .venv-slim && .venv-slim/bin/pip install -r requirements-slim.txt`) with MODEL.onnx, which
`python -m maskclassifier.export_onnx MODEL.pkl` writes. Figures mean something only on an otherwise idle
machine: the report says how many cores there are and whether a training run was going on.
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from harness.multipart import Part, multipart
from harness.server import ROOT, free_port, wait_healthy

REQUEST_TIMEOUT_S = 30


@dataclass
class Result:
    cold_start_s: float
    latencies_s: list[float]
    rss_mb: float
    peak_rss_mb: float


def photo_jpeg(size: tuple[int, int] = (1600, 1200)) -> bytes:
    """A photo-like JPEG (textured background, a face-like shape): decoding and resizing it is part of a request."""
    width, height = size
    rng = np.random.default_rng(0)
    gradient = np.linspace(40, 200, width)[None, :, None] + np.linspace(0, 40, height)[:, None, None]
    pixels = (gradient + rng.normal(0, 12, (height, width, 3))).clip(0, 255).astype(np.uint8)
    photo = Image.fromarray(pixels)
    draw = ImageDraw.Draw(photo)
    draw.ellipse([width * 0.3, height * 0.15, width * 0.7, height * 0.85], fill=(220, 170, 140))
    draw.rectangle([width * 0.35, height * 0.5, width * 0.65, height * 0.75], fill=(90, 170, 220))
    buffer = io.BytesIO()
    photo.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def predict_seconds(url: str, body: bytes, content_type: str) -> float:
    request = urllib.request.Request(url + "/api/predict", data=body, headers={"Content-Type": content_type})
    started = time.perf_counter()
    with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT_S) as response:
        response.read()
        if response.status != 200:
            raise RuntimeError(f"/api/predict answered {response.status}")
    return time.perf_counter() - started


def worker_pid(master: int) -> int:
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    if len(children) != 1:
        raise RuntimeError(f"expected one gunicorn worker under {master}, found {children}")
    return int(children[0])


def memory_mb(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} for process {pid}")


def start_one_worker(python: Path, model: Path) -> tuple[subprocess.Popen, str]:
    """gunicorn with the Procfile's config (gunicorn.conf.py) and one worker, in `python`'s install, serving `model`
    on a free loopback port: the process (not yet healthy: see wait_healthy) and its URL."""
    port = free_port()
    env = {**os.environ, "MODEL_PATH": str(model), "PORT": str(port), "WEB_CONCURRENCY": "1"}
    command = [str(python), "-m", "gunicorn", "app:app", "--config", "gunicorn.conf.py",
               "--bind", f"127.0.0.1:{port}", "--workers", "1", "--access-logfile", "/dev/null"]
    server = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True)
    return server, f"http://127.0.0.1:{port}"


def measure(python: Path, model: Path, requests: int, photo: bytes) -> Result:
    started = time.perf_counter()
    server, url = start_one_worker(python, model)
    try:
        wait_healthy(url, server)
        cold_start = time.perf_counter() - started
        body, content_type = multipart([Part("file", photo)])
        latencies = [predict_seconds(url, body, content_type) for _ in range(requests)]
        worker = worker_pid(server.pid)
        return Result(cold_start, latencies, memory_mb(worker, "VmRSS"), memory_mb(worker, "VmHWM"))
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)


def percentile_ms(values: list[float], q: float) -> float:
    """The q-th percentile of durations in seconds, in milliseconds; NaN for none."""
    return float(np.percentile(values, q)) * 1000 if values else float("nan")


def training_running() -> bool:
    found = subprocess.run(["pgrep", "-f", "maskclassifier.train"], capture_output=True, text=True)
    return bool(found.stdout.strip())


def torch_version(python: Path) -> str:
    found = subprocess.run([str(python), "-c", "import torch; print(torch.__version__)"], capture_output=True,
                           text=True, timeout=120)
    return found.stdout.strip() or "(not importable)"


def report(results: dict[str, Result], model: Path, requests: int, torch_version: str) -> str:
    names = list(results)
    rows = [
        ("cold start to /healthz", [f"{r.cold_start_s:.1f} s" for r in results.values()]),
        ("first /api/predict", [f"{r.latencies_s[0] * 1000:.0f} ms" for r in results.values()]),
        (f"p50 /api/predict ({requests} requests)", [f"{percentile_ms(r.latencies_s, 50):.0f} ms"
                                                     for r in results.values()]),
        (f"p95 /api/predict ({requests} requests)", [f"{percentile_ms(r.latencies_s, 95):.0f} ms"
                                                     for r in results.values()]),
        (f"worker RSS after {requests} requests", [f"{r.rss_mb:.0f} MB" for r in results.values()]),
        ("worker peak RSS (VmHWM)", [f"{r.peak_rss_mb:.0f} MB" for r in results.values()]),
    ]
    lines = [
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores "
        f"({platform.processor() or platform.machine()}), "
        f"Python {platform.python_version()}, model {model.with_suffix('')}.{{pkl,onnx}}",
        "",
        "| | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names),
        *[f"| {label} | " + " | ".join(values) + " |" for label, values in rows],
    ]
    lines += ["", f"The full install's RSS includes torch {torch_version}'s libraries"
              + (" (a CUDA build: more than the +cpu build Heroku installs)." if "+cu" in torch_version else ".")]
    if training_running():
        lines += ["", "WARNING: a training run (maskclassifier.train) was using the CPU: these figures are inflated."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.backends", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=Path("models/export.pkl"),
                        help="the fastai export; its ONNX twin must be beside it (default: models/export.pkl)")
    parser.add_argument("--requests", type=int, default=100, metavar="N",
                        help="sequential /api/predict requests per backend, 1 to 1000 (default: 100)")
    parser.add_argument("--full-python", type=Path, default=ROOT / ".venv/bin/python")
    parser.add_argument("--slim-python", type=Path, default=ROOT / ".venv-slim/bin/python")
    args = parser.parse_args(argv)
    if not 1 <= args.requests <= 1000:
        parser.error("--requests must be between 1 and 1000")
    model = args.model.resolve()
    backends = {"fastai (.pkl, full install)": (args.full_python, model),
                "ONNX Runtime (.onnx, slim install)": (args.slim_python, model.with_suffix(".onnx"))}
    if not model.is_file():
        parser.error(f"{model} not found: pass --model with a fastai export")
    if not model.with_suffix(".onnx").is_file():
        parser.error(f"{model.with_suffix('.onnx')} not found: python -m maskclassifier.export_onnx {model}")
    for python, _ in backends.values():
        if not python.is_file():
            parser.error(f"{python} not found (see --help for how to make the slim install)")
    photo = photo_jpeg()
    results = {name: measure(python, path, args.requests, photo) for name, (python, path) in backends.items()}
    print(report(results, model, args.requests, torch_version(args.full_python)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
