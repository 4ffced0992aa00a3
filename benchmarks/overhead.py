"""What the web app adds on top of the model: a full POST /api/predict against the bare forward pass, and cold start.

    .venv/bin/python -m benchmarks.overhead [--model models/export.pkl] [--size 1600x1200] [--rounds 5] [--per-round 20]

"Full request" is real HTTP over loopback to gunicorn started with the Procfile's command (as benchmarks/load.py
does): connect, send the multipart upload, parse it, decode the JPEG, the learner's preprocessing, the forward
pass, thresholds, JSON, response. "Forward" is the same learner loaded in this process with the same torch thread
count, timing only `model(batch)` and the sigmoid on the batch the app's preprocessing makes from the same photo
(with the model's flip test-time augmentation, the photo and its mirror image, as the app runs them): the
learner's own model, and the model the app serves (BatchNorm folded into the convolutions). The three are
measured in alternating rounds (the server idles while the forward passes run here) so that a change in
background load hits all of them. It prints the p50s and the ratio of the full request to the learner's forward
pass (goal: at most 1.3) and to the app's, the in-process time of each stage of the request (decode as the API
does it, the learner's preprocessing, the app's forward pass) and what is left for HTTP, gunicorn, multipart
parsing and JSON, and the cold start from starting gunicorn to the first 200 from GET /healthz. It times the
fastai learner itself, so it takes a fastai export (.pkl) only.
"""

from __future__ import annotations

import argparse
import http.client
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import torch
from PIL import Image

from benchmarks.backends import free_port, photo_jpeg, training_running
from benchmarks.load import ROOT, GunicornLog, procfile_command, wait_healthy
from maskclassifier.config import settings_from_env
from maskclassifier.fastai_backend import FastaiBackend
from maskclassifier.images import load_image
from maskclassifier.model import load_classifier

from hostile_corpus import Part, multipart  # noqa: E402  (tests/ is on sys.path via benchmarks.load)

GOAL_RATIO = 1.3
PREPROCESSING = {True: "the learner's transforms, rebuilt in Pillow and torch", False: "fastai's test_dl"}


def seconds(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def post_photo(port: int, body: bytes, content_type: str) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        connection.request("POST", "/api/predict", body=body, headers={"Content-Type": content_type})
        response = connection.getresponse()
        response.read()
        if response.status != 200:
            raise SystemExit(f"POST /api/predict answered {response.status}")
    finally:
        connection.close()


def forward(model: torch.nn.Module, batch: torch.Tensor) -> None:
    with torch.inference_mode():
        torch.sigmoid(model(batch))


def stage_times(backend: FastaiBackend, jpeg: bytes, image: Image.Image, flip: bool,
                repeat: int) -> dict[str, float]:
    """Median seconds of each stage of the request, run in this process the way POST /api/predict runs them;
    `image` is `jpeg` as load_image(jpeg) decodes it."""
    batch = backend.model_batch([image], flip)
    return {
        "decode (load_image, the whole photo)": statistics.median(
            seconds(lambda: load_image(jpeg)) for _ in range(repeat)),
        f"preprocessing ({PREPROCESSING[backend.direct is not None]})": statistics.median(
            seconds(lambda: backend.model_batch([image], flip)) for _ in range(repeat)),
        "the app's forward + sigmoid": statistics.median(
            seconds(lambda: forward(backend.model, batch)) for _ in range(repeat)),
    }


def parse_size(text: str) -> tuple[int, int]:
    width, _, height = text.partition("x")
    return int(width), int(height)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.overhead", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=Path(os.environ.get("MODEL_PATH") or "models/export.pkl"),
                        help="a fastai export (default: $MODEL_PATH, else models/export.pkl)")
    parser.add_argument("--size", type=parse_size, default=(1600, 1200), metavar="WxH",
                        help="the uploaded JPEG's size (default: 1600x1200)")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds, 1 to 50 (default: 5)")
    parser.add_argument("--per-round", type=int, default=20,
                        help="timings of each kind per round, 1 to 200 (default: 20)")
    args = parser.parse_args(argv)
    if not (1 <= args.rounds <= 50 and 1 <= args.per_round <= 200):
        parser.error("--rounds must be 1 to 50 and --per-round 1 to 200")
    if args.model.suffix != ".pkl" or not args.model.is_file():
        parser.error(f"{args.model}: pass an existing fastai export (.pkl)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    jpeg = photo_jpeg(args.size)
    body, content_type = multipart([Part("file", jpeg)])
    threads = settings_from_env().torch_threads  # what each gunicorn worker uses
    classifier = load_classifier(args.model, torch_threads=threads)
    backend, flip = classifier.backend, classifier.tta == "flip"
    image = load_image(jpeg)
    batch = backend.model_batch([image], flip)  # with flip TTA, the photo and its mirror image
    port = free_port()
    env = {**os.environ, "MODEL_PATH": str(args.model.resolve()), "PORT": str(port)}
    started = time.perf_counter()
    server = subprocess.Popen(procfile_command(port), cwd=ROOT, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, errors="replace")
    log = GunicornLog(server.stdout)
    try:
        wait_healthy(port, server, log)
        cold_start = time.perf_counter() - started
        for _ in range(3):  # the first requests and forward passes set up caches and thread pools
            post_photo(port, body, content_type)
            forward(backend.learner.model, batch)
            forward(backend.model, batch)
        requests, forwards, app_forwards = [], [], []
        for _ in range(args.rounds):
            requests += [seconds(lambda: post_photo(port, body, content_type)) for _ in range(args.per_round)]
            forwards += [seconds(lambda: forward(backend.learner.model, batch)) for _ in range(args.per_round)]
            app_forwards += [seconds(lambda: forward(backend.model, batch)) for _ in range(args.per_round)]
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
    stages = stage_times(backend, jpeg, image, flip, args.per_round)
    test_dl = statistics.median(seconds(lambda: backend.learner_batch([image])) for _ in range(args.per_round))
    request_p50, forward_p50 = statistics.median(requests), statistics.median(forwards)
    app_forward_p50 = statistics.median(app_forwards)
    ratio = request_p50 / forward_p50
    lines = [
        f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores "
        f"({platform.processor() or platform.machine()}), Python {platform.python_version()}, "
        f"torch threads {torch.get_num_threads()}",
        f"model {args.model} ({backend.architecture}, input {backend.input_size} px, test-time augmentation "
        f"{classifier.tta}: a batch of {len(batch)}), "
        f"upload a {args.size[0]}x{args.size[1]} JPEG of {len(jpeg) // 1024} KB, "
        f"{len(requests)} requests and {len(forwards)} forward passes of each model",
        "",
        "| | p50 |",
        "|---|---|",
        f"| full POST /api/predict (gunicorn, loopback) | {request_p50 * 1000:.1f} ms |",
        f"| forward pass alone, the learner's model (same batch) | {forward_p50 * 1000:.1f} ms |",
        f"| ratio | {ratio:.2f} (goal: at most {GOAL_RATIO}) |",
        f"| forward pass alone, the model the app serves (BatchNorm folded) | {app_forward_p50 * 1000:.1f} ms |",
        f"| ratio to the app's own forward pass | {request_p50 / app_forward_p50:.2f} |",
        *[f"| in process: {stage} | {value * 1000:.1f} ms |" for stage, value in stages.items()],
        f"| the rest: HTTP, gunicorn, multipart, JSON | {(request_p50 - sum(stages.values())) * 1000:.1f} ms |",
        f"| for comparison, fastai's test_dl for the same photo | {test_dl * 1000:.1f} ms |",
        f"| cold start to /healthz | {cold_start:.1f} s |",
    ]
    if training_running():
        lines += ["", "WARNING: a training run (maskclassifier.train) was using the CPU: these figures are inflated."]
    print("\n".join(lines))
    return 0 if ratio <= GOAL_RATIO else 1


if __name__ == "__main__":
    sys.exit(main())
