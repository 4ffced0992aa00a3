"""Loopback load test: gunicorn as the Procfile starts it, concurrent clients, valid photos mixed with hostile uploads.

    .venv/bin/python -m benchmarks.load [--model models/export.pkl] [--clients 8] [--duration 60] [--warm-up 15]
                                        [--max-requests 20000] [--hostile 0.1]

It starts the Procfile's web command (`gunicorn app:app --config gunicorn.conf.py`, WEB_CONCURRENCY and the other
settings from the environment as on Heroku) bound to a free 127.0.0.1 port; nothing else is contacted.
`--clients` threads post for `--duration` seconds or until `--max-requests` requests, whichever comes first:
JPEG photos of 640x480 to 2016x1512 to POST /api/predict and, with probability `--hostile`, a case of
harness/hostile.py, at random to the API or the form, checked against the status the corpus names. Before
that, a warm-up posts every payload once and then runs the same load for `--warm-up` seconds, so that the RSS
compared is the workers' steady state, not the allocator filling up.

It prints throughput, latency percentiles (photos; hostile uploads apart), errors (no answer, or another status
than expected, warm-up included) and 5xx, worker timeouts and restarts from gunicorn's log, and the workers' RSS
after start, after the warm-up and after the load. It exits with 1 when a goal is missed: 0 errors, 0 worker
timeouts, p99 < 3 x p50, RSS growth during the load < 10 %.
"""

from __future__ import annotations

import argparse
import http.client
import os
import platform
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from benchmarks.backends import memory_mb, percentile_ms, photo_jpeg, training_running
from harness.hostile import OK, Upload, hostile_uploads
from harness.multipart import Part, multipart
from harness.server import ROOT, GunicornLog, free_port, procfile_command, wait_healthy

REQUEST_TIMEOUT_S = 60  # longer than gunicorn's worker timeout, so a stuck worker shows up as a 5xx or a reset
PHOTO_SIZES = [(640, 480), (1280, 960), (1600, 1200), (2016, 1512)]  # what phones and browsers typically send
DEFAULT_MAX_UPLOAD_MB = 10.0


@dataclass(frozen=True)
class Outcome:
    case: str
    hostile: bool
    status: int | None  # None: no HTTP answer (connection reset, timeout)
    expected: int
    seconds: float
    failure: str = ""

    @property
    def error(self) -> bool:
        return self.status != self.expected


def post(port: int, path: str, upload: Upload, hostile: bool) -> Outcome:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=REQUEST_TIMEOUT_S)
    url = f"{path}?{upload.query}" if upload.query else path
    started = time.perf_counter()
    try:
        try:
            connection.request("POST", url, body=upload.body, headers=upload.headers)
        except (BrokenPipeError, ConnectionResetError):
            pass  # gunicorn answers an over-limit body without reading it, then closes: read that answer
        response = connection.getresponse()
        response.read()
        status, failure = response.status, ""
    except (OSError, http.client.HTTPException) as error:
        status, failure = None, type(error).__name__
    finally:
        connection.close()
    return Outcome(f"{upload.name} to {path}", hostile, status, upload.status, time.perf_counter() - started,
                   failure)


def worker_pids(master: int) -> list[int]:
    return [int(pid) for pid in Path(f"/proc/{master}/task/{master}/children").read_text().split()]


def workers_rss_mb(master: int) -> float:
    return sum(memory_mb(pid, "VmRSS") for pid in worker_pids(master))


class RssTrend:
    """The workers' RSS every `every` seconds while the load runs: a leak climbs steadily, an allocator levels off."""

    def __init__(self, master: int, every: float) -> None:
        self.every = every
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, args=(master,), daemon=True)

    def _sample(self, master: int) -> None:
        while not self._stop.wait(self.every):
            try:
                self.samples.append(workers_rss_mb(master))
            except OSError:  # a worker was being replaced: the restart shows in gunicorn's log
                continue

    def __enter__(self) -> RssTrend:
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join()


@dataclass
class Budget:
    """Shared by the clients: stop at the deadline or after `remaining` requests, whichever comes first."""

    deadline: float
    remaining: int
    lock: threading.Lock

    def take(self) -> bool:
        with self.lock:
            if self.remaining <= 0 or time.perf_counter() >= self.deadline:
                return False
            self.remaining -= 1
            return True


def client(port: int, photos: list[Upload], hostile: list[Upload], share: float, seed: int, budget: Budget,
           outcomes: list[Outcome]) -> None:
    rng = random.Random(seed)
    while budget.take():
        if rng.random() < share:
            outcomes.append(post(port, rng.choice(["/api/predict", "/"]), rng.choice(hostile), hostile=True))
        else:
            outcomes.append(post(port, "/api/predict", rng.choice(photos), hostile=False))


def run_clients(port: int, photos: list[Upload], hostile: list[Upload], args: argparse.Namespace,
                seconds: float) -> tuple[list[Outcome], float]:
    """`args.clients` threads posting for `seconds` or `args.max_requests` requests; the outcomes and the time taken."""
    budget = Budget(time.perf_counter() + seconds, args.max_requests, threading.Lock())
    outcomes: list[Outcome] = []  # list.append is atomic: the threads share it
    threads = [threading.Thread(target=client, args=(port, photos, hostile, args.hostile, seed, budget, outcomes))
               for seed in range(args.clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return outcomes, time.perf_counter() - started


def warm_up(port: int, photos: list[Upload], hostile: list[Upload], args: argparse.Namespace) -> list[Outcome]:
    """Every payload once, then `args.warm_up` seconds of the load itself: the allocator and caches settle."""
    outcomes = [post(port, "/api/predict", upload, hostile=upload in hostile) for upload in photos + hostile]
    return outcomes + run_clients(port, photos, hostile, args, args.warm_up)[0]


def valid_photos() -> list[Upload]:
    uploads = []
    for size in PHOTO_SIZES:
        body, content_type = multipart([Part("file", photo_jpeg(size))])
        uploads.append(Upload(f"photo-{size[0]}x{size[1]}", body, content_type, OK))
    return uploads


def report(outcomes: list[Outcome], warmed: list[Outcome], elapsed: float, events: dict[str, int],
           rss: dict[str, float], trend: RssTrend, args: argparse.Namespace, workers: int,
           cold_start: float) -> tuple[str, bool]:
    valid = [o.seconds for o in outcomes if not o.hostile]
    hostile = [o.seconds for o in outcomes if o.hostile]
    errors = [o for o in warmed + outcomes if o.error]
    server_errors = sum(1 for o in warmed + outcomes if o.status is not None and o.status >= 500)
    p50, p95, p99 = (percentile_ms(valid, q) for q in (50, 95, 99))
    growth = (rss["after the load"] / rss["after warm-up"] - 1) * 100
    goals = {
        "0 errors": not errors,
        "0 worker timeouts": events["worker timeouts"] == 0,
        "p99 < 3 x p50": p99 < 3 * p50,
        "RSS growth < 10 %": growth < 10,
    }
    lines = [
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores "
        f"({platform.processor() or platform.machine()}), Python {platform.python_version()}",
        f"gunicorn from the Procfile, {workers} worker(s), model {args.model}, "
        f"cold start to /healthz {cold_start:.1f} s",
        f"{args.clients} clients, {elapsed:.1f} s (limits: {args.duration:g} s, {args.max_requests} requests), "
        f"{args.hostile:.0%} hostile, after a warm-up of {len(warmed)} requests",
        "",
        "| | |",
        "|---|---|",
        f"| requests | {len(outcomes)} ({len(valid)} photos, {len(hostile)} hostile) |",
        f"| throughput | {len(outcomes) / elapsed:.1f} requests/s ({len(valid) / elapsed:.1f} photos/s) |",
        f"| photo latency p50 / p95 / p99 | {p50:.0f} / {p95:.0f} / {p99:.0f} ms (p99 = {p99 / p50:.2f} x p50) |",
        f"| hostile latency p50 / p99 | {percentile_ms(hostile, 50):.0f} / {percentile_ms(hostile, 99):.0f} ms |",
        f"| errors (no answer or unexpected status; warm-up included) | {len(errors)} |",
        f"| 5xx | {server_errors} |",
        *[f"| {name} | {value} |" for name, value in events.items()],
        *[f"| workers' RSS {moment} | {value:.0f} MB |" for moment, value in rss.items()],
        f"| workers' RSS every {trend.every:.0f} s of the load | {', '.join(f'{v:.0f}' for v in trend.samples)} MB |",
        f"| RSS growth during the load | {growth:+.1f} % |",
        "",
        "Goals: " + ", ".join(f"{name} {'met' if met else 'MISSED'}" for name, met in goals.items()),
    ]
    answers = Counter(f"{o.case}: {o.failure or o.status} instead of {o.expected}" for o in errors)
    lines += [f"  {count} x {answer}" for answer, count in answers.most_common()]
    if training_running():
        lines += ["", "WARNING: a training run (maskclassifier.train) was using the CPU: these figures are inflated."]
    return "\n".join(lines), all(goals.values())


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.load", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=Path(os.environ.get("MODEL_PATH") or "models/export.pkl"),
                        help="the model to serve (default: $MODEL_PATH, else models/export.pkl)")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients, 1 to 64 (default: 8)")
    parser.add_argument("--duration", type=float, default=60, help="seconds of load, 1 to 600 (default: 60)")
    parser.add_argument("--max-requests", type=int, default=20000,
                        help="requests in all, at most 100000 (default: 20000)")
    parser.add_argument("--warm-up", type=float, default=15,
                        help="seconds of the same load before the measured one, 0 to 300 (default: 15)")
    parser.add_argument("--hostile", type=float, default=0.1, help="share of hostile uploads, 0 to 1 (default: 0.1)")
    args = parser.parse_args(argv)
    if not (1 <= args.clients <= 64 and 1 <= args.duration <= 600 and 0 <= args.warm_up <= 300
            and 1 <= args.max_requests <= 100000 and 0 <= args.hostile <= 1):
        parser.error("out of range: see --help for the limits")
    if not args.model.is_file():
        parser.error(f"{args.model} not found: train one (python -m maskclassifier.train) or pass --model")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    port = free_port()
    env = {**os.environ, "MODEL_PATH": str(args.model.resolve()), "PORT": str(port)}
    workers = int(env.get("WEB_CONCURRENCY") or 1)
    max_upload_mb = float(env.get("MAX_UPLOAD_MB") or DEFAULT_MAX_UPLOAD_MB)
    photos, hostile = valid_photos(), hostile_uploads(int(max_upload_mb * 1024 * 1024))
    server = subprocess.Popen(procfile_command(port), cwd=ROOT, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, errors="replace")
    log = GunicornLog(server.stdout)
    try:
        cold_start = wait_healthy(f"http://127.0.0.1:{port}", server, output=log.tail)
        rss = {"after start": workers_rss_mb(server.pid)}
        warmed = warm_up(port, photos, hostile, args)
        rss["after warm-up"] = workers_rss_mb(server.pid)
        with RssTrend(server.pid, every=max(1.0, args.duration / 10)) as trend:
            outcomes, elapsed = run_clients(port, photos, hostile, args, args.duration)
        rss["after the load"] = workers_rss_mb(server.pid)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
    text, met = report(outcomes, warmed, elapsed, log.events(workers), rss, trend, args, workers, cold_start)
    print(text)
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
