"""gunicorn started the way the Procfile starts it, on a free loopback port, and waited for until healthy."""

from __future__ import annotations

import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT_S = 180  # the full install's worker imports torch and fastai and loads the model: slow on a busy CI


class NotHealthy(RuntimeError):
    """The server exited, or did not answer GET /healthz with 200 in time; the message ends with its output."""


def free_port() -> int:
    """A loopback port nothing listens on now (the OS picks it; another process could take it before we bind)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def procfile_web_command(root: Path = ROOT) -> list[str]:
    """The words of the web command in `root`'s Procfile, which must start gunicorn, itself or through bin/web with
    gunicorn's arguments (benchmarks/crowd.py runs another checkout's)."""
    for line in (root / "Procfile").read_text().splitlines():
        if line.startswith("web:"):
            command = shlex.split(line.removeprefix("web:"))
            if command[0] not in ("gunicorn", "bin/web"):  # bin/web: checks the settings, then starts gunicorn
                raise ValueError(f"the Procfile's web process is not gunicorn: {line}")
            return command
    raise ValueError(f"{root / 'Procfile'} has no web process")


def procfile_command(port: int, root: Path = ROOT, python: str = sys.executable) -> list[str]:
    """The Procfile's gunicorn arguments run with `python`'s gunicorn, bound to 127.0.0.1 only (not through
    bin/web: a benchmark measures gunicorn itself)."""
    return [python, "-m", "gunicorn", *procfile_web_command(root)[1:], "--bind", f"127.0.0.1:{port}"]


def start_gunicorn(model_path: Path, port: int, **environ: str) -> subprocess.Popen:
    """The Procfile's command as it is (bin/web included) with this Python, one worker, and `environ` on top of
    this process's; stdout and stderr together in one text pipe."""
    env = {**os.environ, "PORT": str(port), "MODEL_PATH": str(model_path), "WEB_CONCURRENCY": "1", **environ}
    command = procfile_web_command()
    # this Python: bin/web (the launcher that checks the settings) starts gunicorn with the Python that runs it
    command = [sys.executable, str(ROOT / command[0]), *command[1:]]
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@dataclass
class Stack:
    """A served stack: where it listens, and (once stopped) all it wrote."""

    port: int
    url: str
    output: str = ""


def stop(server: subprocess.Popen, grace_s: float = 40) -> bool:
    """SIGTERM to the master and a graceful wait of `grace_s`, then SIGKILL; True when it had to be killed."""
    if server.poll() is None:
        server.send_signal(signal.SIGTERM)
    try:
        server.wait(timeout=grace_s)
        return False
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait(timeout=10)
        return True


@contextmanager
def serving(model_path: Path, **environ: str) -> Iterator[Stack]:
    """start_gunicorn on a free port, healthy on entry, stopped (SIGTERM, then its output read) on the way out."""
    port = free_port()
    process = start_gunicorn(model_path, port, **environ)
    stack = Stack(port, f"http://127.0.0.1:{port}")
    try:
        wait_healthy(stack.url, process)
        yield stack
    finally:
        process.terminate()
        stack.output, _ = process.communicate(timeout=60)


def _pipes_tail(server: subprocess.Popen, chars: int = 2000) -> str:
    """The end of what an exited server wrote to whichever of its streams is a pipe nobody else reads."""
    return "".join(stream.read() for stream in (server.stdout, server.stderr) if stream is not None)[-chars:]


def wait_healthy(url: str, server: subprocess.Popen, seconds: float = START_TIMEOUT_S,
                 output: Callable[[], str] | None = None) -> float:
    """Seconds until GET `url`/healthz answers 200, or NotHealthy with the server's output (`output()` where
    another reader owns its pipe, e.g. GunicornLog.tail). The master accepts connections before the worker has
    booted, so one request may wait for the whole boot: it gets as long as is left."""
    started = time.monotonic()
    deadline = started + seconds
    while time.monotonic() < deadline:
        if server.poll() is not None:
            tail = output() if output is not None else _pipes_tail(server)
            raise NotHealthy(f"gunicorn exited with status {server.returncode}:\n{tail}")
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=max(1.0, deadline - time.monotonic())) as response:
                if response.status == 200:
                    return time.monotonic() - started
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.02)  # short: cold-start benchmarks time this loop
    tail = output() if output is not None else ""
    raise NotHealthy(f"{url} was not healthy after {seconds:g} s\n{tail}")


class GunicornLog:
    """Keeps gunicorn's log in memory (not its access log: one line a request) and counts the events that matter."""

    def __init__(self, stream) -> None:
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream) -> None:
        self.lines += (line.rstrip("\n") for line in stream if not line.startswith("127.0.0.1 "))

    def count(self, pattern: str) -> int:
        return sum(1 for line in self.lines if re.search(pattern, line))

    def tail(self, lines: int = 20) -> str:
        return "\n".join(self.lines[-lines:])

    def events(self, workers: int) -> dict[str, int]:
        return {
            "worker timeouts": self.count(r"WORKER TIMEOUT"),
            "worker restarts": max(0, self.count(r"Booting worker with pid") - workers),
            "workers killed or crashed": self.count(r"Worker \(pid:\d+\) (was sent|exited)"),
            "app errors logged": self.count(r"unexpected error while handling|Exception in worker process"),
        }
