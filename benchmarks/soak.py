"""A soak: minutes of ordinary mixed traffic against the Procfile's stack, and the worker's RSS minute by minute.

    .venv-slim/bin/python -m benchmarks.soak [--minutes 10] [--python .venv-slim/bin/python] [--model PATH]
                                            [--root DIR] [--clients 3] [--seed 0]

It starts the web command of DIR's Procfile (default: this checkout) with cwd DIR and `--python` (default: the
Python running this script; gunicorn is started by bin/web with that same Python), MODEL_PATH=--model (default:
models/export.onnx when that Python has no fastai, else models/export.pkl, in DIR), WEB_CONCURRENCY=1, bound to a
free 127.0.0.1 port; nothing else is contacted and nothing is written. `--root` runs another checkout's stack (a
`git worktree` of it) the same way, for side-by-side figures.

After one request of each kind, `--clients` threads post for `--minutes`, each picking at random (fixed seed):
/api/predict without faces (25 %), with faces=auto (20 %), the page (POST / with faces=auto, 15 %),
/api/explain (10 %), /api/frame (20 %, 640x480 live camera frames) and /api/annotate (10 %), of photos made from
the app's example pictures (maskclassifier/web/static/examples) as the page sends them (2048 px long side, JPEG
quality 92; group photos among them), with 0.2 s between a client's requests. The worker's RSS is sampled every 2 s.

It prints, per minute, the worker's RSS at its end and the most it reached, the requests by status, and the
steady figure: the most RSS over the second half of the run. Goals (exit status 1 when one is missed): steady RSS
under --budget MB, by default 250 for the slim install and 450 for the full one; no 5xx but 503 busy (the
designed answer to overload, counted) and no missing answer; the worker never replaced. A CUDA build of torch
inflates the full install's absolute RSS by a few hundred MB (its libraries), so the RSS goal is then printed as
not judged and the growth from the worker's RSS when healthy is the figure to report (say so).
"""

from __future__ import annotations

import argparse
import http.client
import io
import os
import platform
import random
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from benchmarks.backends import memory_mb
from benchmarks.load import worker_pids
from harness.server import GunicornLog, free_port, procfile_web_command, stop, wait_healthy

ROOT = Path(__file__).resolve().parent.parent
PHOTO_SIZE = (2048, 1536)  # the page shrinks photos to a 2048 px long side
FRAME_SIZE = (640, 480)  # the live camera's frames
PAGE_JPEG_QUALITY = 92
# (name, method path, form fields, payload kind, weight)
MIX = [
    ("predict", "/api/predict", {}, "photo", 0.25),
    ("predict faces=auto", "/api/predict", {"faces": "auto"}, "photo", 0.20),
    ("page", "/", {"faces": "auto"}, "photo", 0.15),
    ("explain", "/api/explain", {}, "photo", 0.10),
    ("frame", "/api/frame", {}, "frame", 0.20),
    ("annotate", "/api/annotate", {}, "photo", 0.10),
]
PAUSE_S = 0.2
SAMPLE_EVERY_S = 2.0
READ_TIMEOUT_S = 60.0
BUDGET_MB = {"slim": 250, "full": 450}


def jpeg(image: Image.Image, quality: int = PAGE_JPEG_QUALITY) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


EXAMPLES = Path("maskclassifier/web/static/examples")


def payloads(root: Path) -> dict[str, list[bytes]]:
    """Photos (2048 px) and frames (640x480) made from the example pictures: each placed on a blurred, enlarged
    copy of itself, at several sizes and places, and the group photo filling the frame."""
    # this checkout's pictures, else the older layout's (static/ at the root) in --root
    examples = (sorted((ROOT / EXAMPLES).glob("*.jpg")) or sorted((root / EXAMPLES).glob("*.jpg"))
                or sorted((root / "static" / "examples").glob("*.jpg")))
    made: dict[str, list[bytes]] = {"photo": [], "frame": []}
    for index, path in enumerate(examples):
        picture = Image.open(path).convert("RGB")
        for kind, size in (("photo", PHOTO_SIZE), ("frame", FRAME_SIZE)):
            canvas = picture.resize(size, Image.Resampling.BILINEAR)
            side = int(size[1] * (0.9 if index % 2 else 0.5))
            scale = side / picture.height
            placed = picture.resize((max(1, round(picture.width * scale)), side), Image.Resampling.LANCZOS)
            canvas.paste(placed, ((size[0] - placed.width) * (index % 3) // 2, (size[1] - side) // 2))
            made[kind].append(jpeg(canvas))
    if not made["photo"]:
        raise SystemExit(f"no example pictures in {EXAMPLES}")
    return made


def form(fields: dict[str, str], photo: bytes) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
             for name, value in fields.items()]
    parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="photo.jpg"\r\n'
                 f"Content-Type: image/jpeg\r\n\r\n".encode() + photo + b"\r\n")
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


@dataclass
class Answer:
    kind: str
    status: int | None  # None: no HTTP answer
    at: float  # seconds since the load started
    seconds: float


def post(port: int, path: str, fields: dict[str, str], photo: bytes) -> int | None:
    body, content_type = form(fields, photo)
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=READ_TIMEOUT_S)
    try:
        connection.request("POST", path, body, {"Content-Type": content_type, "Accept": "application/json"})
        response = connection.getresponse()
        response.read()
        return response.status
    except OSError:
        return None
    finally:
        connection.close()


def client(index: int, port: int, made: dict[str, list[bytes]], seed: int, started: float, stop_at: float,
           answers: list[Answer]) -> None:
    rng = random.Random(seed * 1000 + index)
    weights = [entry[4] for entry in MIX]
    while time.monotonic() < stop_at:
        kind, path, fields, payload, _ = rng.choices(MIX, weights)[0]
        begun = time.monotonic()
        status = post(port, path, fields, rng.choice(made[payload]))
        answers.append(Answer(kind, status, begun - started, time.monotonic() - begun))
        time.sleep(PAUSE_S)


def install_of(python: Path) -> tuple[str, str | None]:
    """("slim" or "full", torch's CUDA version or None) of the install `python` belongs to."""
    probe = ("import importlib.util, sys\n"
             "if importlib.util.find_spec('fastai') is None: print('slim'); sys.exit()\n"
             "import torch; print('full', torch.version.cuda or '')")
    words = subprocess.run([str(python), "-c", probe], capture_output=True, text=True, timeout=120).stdout.split()
    if not words:
        raise SystemExit(f"{python} does not run")
    return words[0], (words[1] if len(words) > 1 and words[1] else None)


def commit_of(root: Path) -> str:
    found = subprocess.run(["git", "-C", str(root), "log", "-1", "--format=%h %s"], capture_output=True, text=True)
    return found.stdout.strip()[:90] or "unknown"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0, help="length of the load (0.5-60)")
    parser.add_argument("--python", type=Path, default=Path(sys.executable),
                        help="the Python (of a virtualenv with gunicorn) that serves")
    parser.add_argument("--model", type=Path, help="MODEL_PATH (default: by install, in --root)")
    parser.add_argument("--root", type=Path, default=ROOT, help="the checkout whose stack runs")
    parser.add_argument("--clients", type=int, default=3, help="concurrent clients (1-16)")
    parser.add_argument("--budget", type=float, help="steady RSS goal in MB (default: 250 slim, 450 full)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if not 0.5 <= args.minutes <= 60:
        parser.error("--minutes must be 0.5 to 60")
    if not 1 <= args.clients <= 16:
        parser.error("--clients must be 1 to 16")
    args.root = args.root.resolve()
    args.python = args.python.absolute()  # a venv's python is a symlink: keep the venv's path, not the target
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    install, cuda = install_of(args.python)
    model = (args.model or args.root / "models" / ("export.onnx" if install == "slim" else "export.pkl")).resolve()
    budget = args.budget or BUDGET_MB[install]
    made = payloads(args.root)
    port = free_port()
    env = {**os.environ, "PORT": str(port), "MODEL_PATH": str(model), "WEB_CONCURRENCY": "1"}
    command = procfile_web_command(args.root)
    command = [str(args.python), str(args.root / command[0]), *command[1:], "--bind", f"127.0.0.1:{port}"]
    server = subprocess.Popen(command, cwd=args.root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, errors="replace")
    log = GunicornLog(server.stdout)
    answers: list[Answer] = []
    samples: list[tuple[float, float]] = []  # (seconds since the load started, worker RSS MB)
    try:
        cold = wait_healthy(f"http://127.0.0.1:{port}", server, output=log.tail)
        (worker,) = worker_pids(server.pid)
        at_start = memory_mb(worker, "VmRSS")
        for kind, path, fields, payload, _ in MIX:  # warm-up: one of each
            answers.append(Answer(kind, post(port, path, fields, made[payload][0]), -1.0, 0.0))
        after_warm_up = memory_mb(worker, "VmRSS")
        started = time.monotonic()
        stop_at = started + args.minutes * 60
        threads = [threading.Thread(target=client, args=(index, port, made, args.seed, started, stop_at, answers),
                                    daemon=True) for index in range(args.clients)]
        for thread in threads:
            thread.start()
        while time.monotonic() < stop_at:
            try:
                samples.append((time.monotonic() - started, memory_mb(worker, "VmRSS")))
            except (OSError, RuntimeError):
                samples.append((time.monotonic() - started, float("nan")))  # the worker is gone: a restart
            time.sleep(SAMPLE_EVERY_S)
        for thread in threads:
            thread.join(timeout=READ_TIMEOUT_S + 10)
        at_end = memory_mb(worker, "VmRSS")
    finally:
        stop(server)

    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {platform.node() or 'this machine'}, "
          f"{os.cpu_count()} cores, load average {' '.join(f'{value:.2f}' for value in os.getloadavg())}")
    print(f"stack: {args.root} ({commit_of(args.root)}), Python {args.python}, {install} install"
          + (f", torch CUDA {cuda} build (inflates absolute RSS: compare the growth)" if cuda else "")
          + f", model {model}, 1 worker, {args.clients} clients, {args.minutes:g} min, started in {cold:.1f} s")
    print(f"worker RSS: {at_start:.0f} MB when healthy, {after_warm_up:.0f} MB after one request of each kind, "
          f"{at_end:.0f} MB at the end")
    print("minute | RSS at its end MB | most MB | requests by status")
    minutes = int(-(-args.minutes // 1))
    for minute in range(minutes):
        inside = [rss for at, rss in samples if minute * 60 <= at < (minute + 1) * 60]
        statuses = Counter(answer.status for answer in answers if minute * 60 <= answer.at < (minute + 1) * 60)
        if inside:
            print(f"{minute + 1} | {inside[-1]:.0f} | {max(inside):.0f} | "
                  + ", ".join(f"{status}: {count}" for status, count in sorted(statuses.items(), key=str)))
    second_half = [rss for at, rss in samples if at >= args.minutes * 30]
    steady = max(second_half, default=float("nan"))
    by_kind = Counter(answer.kind for answer in answers if answer.at >= 0)
    print("requests: " + ", ".join(f"{kind} {by_kind[kind]}" for kind, *_ in MIX))
    # 503 busy is the designed answer to overload (a slot stayed taken for QUEUE_TIMEOUT): counted, not a failure
    failed = [answer for answer in answers if answer.status is None or (answer.status >= 500 and answer.status != 503)]
    gone = sum(rss != rss for _, rss in samples)
    print(f"steady RSS (most over the second half): {steady:.0f} MB, growth from the RSS when healthy "
          f"{steady - at_start:+.0f} MB, from after the warm-up {steady - after_warm_up:+.0f} MB")
    goals = [(f"steady RSS under {budget:g} MB", steady < budget, f"{steady:.0f} MB")] if not cuda else []
    if cuda:
        print(f"not judged: steady RSS under {budget:g} MB (a CUDA build of torch; growth {steady - at_start:+.0f} MB)")
    goals += [("no 5xx but 503 busy, no missing answer", not failed, f"{len(failed)}"),
              ("the worker never replaced", gone == 0 and log.count("Booting worker") <= 1, f"{gone} samples missed")]
    for name, met, value in goals:
        print(f"{'met' if met else 'MISSED'}: {name} ({value})")
    return 0 if all(met for _, met, _ in goals) else 1


if __name__ == "__main__":
    raise SystemExit(main())
