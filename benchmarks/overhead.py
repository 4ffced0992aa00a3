"""What the web app adds on top of the physical floor: a full POST /api/predict against decode + forward pass.

    .venv/bin/python -m benchmarks.overhead [--backend both|onnx|fastai] [--size 640x480 --size 2048x1536]
                                            [--rounds 3] [--per-round 10] [--slim-python .venv-slim/bin/python]
                                            [--compare-root ../main]

For each backend the app serves (`models/export.onnx` through ONNX Runtime, what the slim install and Heroku run;
`models/export.pkl` through fastai, the full install) and each JPEG size (default 640x480 and 2048x1536):

  full request   real HTTP over loopback to gunicorn started with the Procfile's command (one worker): connect,
                 send the multipart upload, parse it, decode, preprocess, forward pass, thresholds, JSON, response.
                 The ONNX server runs under --slim-python (the slim install, as on Heroku) when it exists.
  floor          what no serving design can avoid, timed in this process: decoding the same bytes as the API
                 decodes them (`Classifier.decode`: whole, as fastai does, or with JPEG_DECODE=reduced in the
                 environment, which the server reads too, at the reduced scale the whole-photo answer needs) plus the
                 served forward pass of the same backend object the app uses, on the batch the app makes:
                 `OnnxBackend.run` (the ONNX graph, with the batch steps baked into it, and the sigmoid) or
                 the fastai backend's served model (BatchNorm folded) and the sigmoid. With flip test-time
                 augmentation the batch holds the photo and its mirror image, as the app runs them.
  ratio          full request / floor (issue 20's goal: at most 1.2 at both sizes).
  remainder      split into preprocessing (what the app does between the decoded photo and the forward pass's
                 input, timed here: the item Resize in Pillow, and for fastai its batch steps in torch; the issue
                 counts preprocessing done once at the decoded size, so a second ratio puts it in the floor) and the
                 rest: HTTP, gunicorn, multipart parsing, JSON, and whatever the worker's process settings cost
                 (the floor runs in this process, without the worker's allocator settings).

Every kind of timing is taken in alternating rounds (the server idles while this process times the floor), so a
change in background load hits all of them; p50s are reported. Wall-clock figures on a busy machine are inflated,
so each row also gives CPU time: the gunicorn worker's (all its threads, from /proc) per request against the
floor's thread CPU time here, and the load average. For fastai it also keeps the older columns: the learner's own
(unfused) forward pass and the ratio to it (the goal before issue 20: 1.3), fastai's test_dl for comparison, and
the cold start from starting gunicorn to the first 200 from GET /healthz.

With `--compare-root DIR` a second server, started from another checkout (a worktree of the code before a change),
is timed in the same rounds, so that before and after come from one run; the floor is this checkout's.

`--backend onnx` needs no torch: the slim install can run it (`.venv-slim/bin/python -m benchmarks.overhead
--backend onnx`). Exit status 1 when a wall-clock ratio is above the goal.
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
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from PIL import Image

from benchmarks.backends import photo_jpeg, training_running, worker_pid
from harness.multipart import Part, multipart
from harness.server import ROOT, GunicornLog, free_port, procfile_command, wait_healthy
from maskclassifier.classifier.classifier import Classifier, load_classifier
from maskclassifier.core.config import settings_from_env

GOAL_RATIO = 1.2  # issue 20, part 2
OLD_GOAL_RATIO = 1.3  # the goal before issue 20: full request / the learner's own forward pass (fastai only)
DEFAULT_SIZES = [(640, 480), (2048, 1536)]
MODELS = {"onnx": Path("models/export.onnx"), "fastai": Path("models/export.pkl")}
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class Timings:
    """Wall-clock and CPU seconds of repeated runs of one kind."""

    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)

    def time(self, action: Callable[[], object], repeat: int) -> None:
        for _ in range(repeat):
            wall, cpu = time.perf_counter(), time.thread_time()
            action()
            self.cpu.append(time.thread_time() - cpu)
            self.wall.append(time.perf_counter() - wall)

    @property
    def wall_ms(self) -> float:
        return statistics.median(self.wall) * 1000

    @property
    def cpu_ms(self) -> float:
        return statistics.median(self.cpu) * 1000


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, all its threads (/proc/PID/stat, fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


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


class Served:
    """The backend object the app serves, split where the app's work splits: preprocessing, then the forward pass."""

    def __init__(self, classifier: Classifier):
        self.classifier = classifier
        self.backend = classifier.backend
        self.flip = classifier.tta == "flip"
        self.onnx = type(self.backend).__name__ == "OnnxBackend"

    def preprocess(self, image: Image.Image):
        """The forward pass's input for one photo, as `backend.probabilities` makes it."""
        if self.onnx:
            pixels = np.stack([self.backend.resize(image)])
            return np.concatenate([pixels, pixels[:, :, ::-1]]) if self.flip else pixels
        return self.backend.model_batch([image], self.flip)

    def forward(self, batch) -> None:
        if self.onnx:
            self.backend.run(batch)
        else:
            _torch_forward(self.backend.model, batch)

    def learner_forward(self, batch) -> None:
        _torch_forward(self.backend.learner.model, batch)

    def test_dl(self, image: Image.Image) -> None:
        self.backend.learner_batch([image])


def _torch_forward(model, batch) -> None:
    import torch

    with torch.inference_mode():
        torch.sigmoid(model(batch))


@dataclass
class SizeResult:
    size: tuple[int, int]
    jpeg_kb: int
    requests: dict[str, Timings] = field(default_factory=dict)  # by server: this checkout, --compare-root
    worker_cpu: dict[str, list[float]] = field(default_factory=dict)  # per request, one figure per round
    decode: Timings = field(default_factory=Timings)
    preprocess: Timings = field(default_factory=Timings)
    forward: Timings = field(default_factory=Timings)
    learner_forward: Timings = field(default_factory=Timings)
    test_dl: Timings = field(default_factory=Timings)
    load: list[float] = field(default_factory=list)

    @property
    def floor_ms(self) -> float:
        return self.decode.wall_ms + self.forward.wall_ms

    @property
    def floor_cpu_ms(self) -> float:
        return self.decode.cpu_ms + self.forward.cpu_ms

    def ratio(self, server: str = "") -> float:
        return self.requests[server].wall_ms / self.floor_ms

    def worker_cpu_ms(self, server: str = "") -> float:
        return statistics.median(self.worker_cpu[server]) * 1000


@dataclass
class Server:
    """gunicorn started with a checkout's Procfile command (one worker) on a free loopback port."""

    root: Path
    port: int
    process: subprocess.Popen
    log: GunicornLog
    started: float
    cold_start: float = 0.0
    worker: int = 0

    @classmethod
    def start(cls, root: Path, python: str, model: Path) -> Server:
        port = free_port()
        env = {**os.environ, "MODEL_PATH": str(model.resolve()), "PORT": str(port), "WEB_CONCURRENCY": "1"}
        command = procfile_command(port, root, python)
        started = time.perf_counter()
        process = subprocess.Popen(command, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   text=True, errors="replace")
        return cls(root, port, process, GunicornLog(process.stdout), started)

    def wait(self) -> None:
        wait_healthy(f"http://127.0.0.1:{self.port}", self.process, output=self.log.tail)
        self.cold_start = time.perf_counter() - self.started
        self.worker = worker_pid(self.process.pid)

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=60)


def measure(model: Path, python: str, sizes: list[tuple[int, int]], rounds: int, per_round: int,
            compare_root: Path | None) -> tuple[list[SizeResult], dict[str, Server], Served]:
    roots = {"": ROOT, **({"before": compare_root} if compare_root else {})}
    servers: dict[str, Server] = {}
    try:
        for label, root in roots.items():
            servers[label] = Server.start(root, python, model)
        # Loaded while the workers boot: the same kind of backend object, with the worker's thread count.
        settings = settings_from_env()
        served = Served(load_classifier(model, torch_threads=settings.torch_threads,
                                        jpeg_decode=settings.jpeg_decode))
        for server in servers.values():
            server.wait()
        results = []
        for size in sizes:
            jpeg = photo_jpeg(size)
            body, content_type = multipart([Part("file", jpeg)])
            image = served.classifier.decode(jpeg)
            batch = served.preprocess(image)
            result = SizeResult(size, len(jpeg) // 1024)
            for _ in range(2):  # the first requests and forward passes set up caches and thread pools
                for server in servers.values():
                    post_photo(server.port, body, content_type)
                served.forward(batch)
            for _ in range(rounds):
                result.load.append(os.getloadavg()[0])
                for label, server in servers.items():
                    worker_before = process_cpu_seconds(server.worker)
                    result.requests.setdefault(label, Timings()).time(
                        lambda port=server.port, body=body, content_type=content_type:
                            post_photo(port, body, content_type),
                        per_round)
                    result.worker_cpu.setdefault(label, []).append(
                        (process_cpu_seconds(server.worker) - worker_before) / per_round)
                result.decode.time(lambda jpeg=jpeg: served.classifier.decode(jpeg), per_round)
                result.preprocess.time(lambda image=image: served.preprocess(image), per_round)
                result.forward.time(lambda batch=batch: served.forward(batch), per_round)
                if not served.onnx:
                    result.learner_forward.time(lambda batch=batch: served.learner_forward(batch), per_round)
            if not served.onnx:
                result.test_dl.time(lambda image=image: served.test_dl(image), per_round)
            results.append(result)
    finally:
        for server in servers.values():
            server.stop()
    return results, servers, served


def report(backend: str, model: Path, python: str, served: Served, results: list[SizeResult],
           servers: dict[str, Server], rounds: int, per_round: int) -> list[str]:
    lines = [
        f"### {backend}: {model} ({served.backend.architecture}, input {served.backend.input_size} px, test-time "
        f"augmentation {served.classifier.tta}, JPEG_DECODE={served.classifier.jpeg_decode}); server: {python}",
        f"{rounds} rounds of {per_round} timings of each kind; p50 wall-clock, CPU time in brackets (the worker's "
        "per request; this process's thread time for the floor and preprocessing)",
        "",
        "| upload (JPEG) | server | load avg | full request | decode | forward | **floor** | **ratio** (CPU ratio) "
        "| preprocessing | ratio with it in the floor | HTTP, gunicorn, multipart, JSON, the rest |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        for label in servers:
            request_ms, worker_cpu_ms = r.requests[label].wall_ms, r.worker_cpu_ms(label)
            rest = request_ms - r.floor_ms - r.preprocess.wall_ms
            rest_cpu = worker_cpu_ms - r.floor_cpu_ms - r.preprocess.cpu_ms
            lines.append(
                f"| {r.size[0]}×{r.size[1]}, {r.jpeg_kb} KB | {label or 'this checkout'} "
                f"| {min(r.load):.1f}–{max(r.load):.1f} | {request_ms:.1f} ms ({worker_cpu_ms:.1f}) "
                f"| {r.decode.wall_ms:.1f} ({r.decode.cpu_ms:.1f}) | {r.forward.wall_ms:.1f} ({r.forward.cpu_ms:.1f}) "
                f"| {r.floor_ms:.1f} ({r.floor_cpu_ms:.1f}) | **{r.ratio(label):.2f}** "
                f"({worker_cpu_ms / r.floor_cpu_ms:.2f}) | {r.preprocess.wall_ms:.1f} ({r.preprocess.cpu_ms:.1f}) "
                f"| {request_ms / (r.floor_ms + r.preprocess.wall_ms):.2f} "
                f"({worker_cpu_ms / (r.floor_cpu_ms + r.preprocess.cpu_ms):.2f}) | {rest:.1f} ({rest_cpu:.1f}) |")
    if not served.onnx:
        lines += ["", "| upload | learner's own forward pass | request / it (old goal: at most 1.3) "
                      "| fastai's test_dl, for comparison |", "|---|---|---|---|"]
        lines += [f"| {r.size[0]}×{r.size[1]} | {r.learner_forward.wall_ms:.1f} ms ({r.learner_forward.cpu_ms:.1f}) "
                  f"| {r.requests[''].wall_ms / r.learner_forward.wall_ms:.2f} | {r.test_dl.wall_ms:.1f} ms |"
                  for r in results]
    lines += ["", "cold start to /healthz: " + ", ".join(
        f"{server.cold_start:.1f} s ({label or 'this checkout'}; the servers start together)" if len(servers) > 1
        else f"{server.cold_start:.1f} s" for label, server in servers.items()), ""]
    return lines


def parse_size(text: str) -> tuple[int, int]:
    width, _, height = text.partition("x")
    return int(width), int(height)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.overhead", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=("both", "onnx", "fastai"), default="both")
    parser.add_argument("--onnx-model", type=Path, default=MODELS["onnx"])
    parser.add_argument("--fastai-model", type=Path, default=MODELS["fastai"])
    parser.add_argument("--slim-python", default=str(ROOT / ".venv-slim" / "bin" / "python"),
                        help="the Python of the slim install, which serves the ONNX model when it exists "
                             "(default: .venv-slim/bin/python; else this Python)")
    parser.add_argument("--compare-root", type=Path,
                        help="another checkout (e.g. a worktree of main) whose server is timed in the same rounds, "
                             "as 'before'; the floor is this checkout's")
    parser.add_argument("--size", type=parse_size, action="append", metavar="WxH",
                        help="an uploaded JPEG's size; repeat for more (default: 640x480 and 2048x1536)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds, 1 to 50 (default: 3)")
    parser.add_argument("--per-round", type=int, default=10,
                        help="timings of each kind per round, 1 to 200 (default: 10)")
    args = parser.parse_args(argv)
    if not (1 <= args.rounds <= 50 and 1 <= args.per_round <= 200):
        parser.error("--rounds must be 1 to 50 and --per-round 1 to 200")
    args.size = args.size or DEFAULT_SIZES
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    backends = ["onnx", "fastai"] if args.backend == "both" else [args.backend]
    lines = [
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores "
        f"({platform.processor() or platform.machine()}), Python {platform.python_version()}, "
        f"threads per inference {settings_from_env().torch_threads}",
        "",
    ]
    ratios = []
    for backend in backends:
        model = args.onnx_model if backend == "onnx" else args.fastai_model
        python = args.slim_python if backend == "onnx" and Path(args.slim_python).is_file() else sys.executable
        results, servers, served = measure(model, python, args.size, args.rounds, args.per_round, args.compare_root)
        lines += report(backend, model, python, served, results, servers, args.rounds, args.per_round)
        ratios += [result.ratio() for result in results]
    lines.append(f"goal: full request at most {GOAL_RATIO} × floor at every size: "
                 f"{'met' if max(ratios) <= GOAL_RATIO else 'not met'} (largest ratio {max(ratios):.2f})")
    if training_running():
        lines += ["", "WARNING: a training run (maskclassifier.train) was using the CPU: wall-clock figures are "
                      "inflated; compare the CPU columns."]
    print("\n".join(lines))
    return 0 if max(ratios) <= GOAL_RATIO else 1


if __name__ == "__main__":
    sys.exit(main())
