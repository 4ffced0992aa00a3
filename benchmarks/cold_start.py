"""Cold start of the full and the slim install: process start to the first 200 from /healthz, and where it goes.

    .venv/bin/python -m benchmarks.cold_start [--model models/export.pkl] [--runs 3]
        [--full-python .venv/bin/python] [--slim-python .venv-slim/bin/python]

For each install (full: MODEL.pkl with .venv; slim: MODEL.onnx with .venv-slim, see benchmarks/backends.py for
how to make it) it
  1. starts gunicorn the way the Procfile does (one worker, a loopback port) `--runs` times and prints the median
     and range of the time from starting it to the first 200 from GET /healthz (the worker has imported the app,
     loaded the model and the face detector);
  2. runs the same start-up once in a fresh process, phase by phase: importing the web app, loading the
     classifier, loading the face detector, building the Flask app;
  3. lists where `python -X importtime -c "import app"` spends its time, by top-level package.
Issue 20's goals: slim under 2 s, full under 6 s. Bounded: about 4 starts per install plus two imports; under two
minutes on 2 idle cores. It prints the load average, since the machine may be shared.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.backends import start_one_worker
from harness.server import ROOT, wait_healthy

PHASES = r"""
import json, sys, time
from pathlib import Path
started = time.perf_counter()
phases = {}
from maskclassifier.core.config import Settings
from maskclassifier.web import create_app
from maskclassifier.classifier.classifier import load_classifier
from maskclassifier.classifier.faces import load_detector
phases["import the web app"] = time.perf_counter() - started
mark = time.perf_counter()
load_classifier(Path(sys.argv[1]), torch_threads=1)
phases["load the classifier"] = time.perf_counter() - mark
mark = time.perf_counter()
load_detector(1)
phases["load the face detector"] = time.perf_counter() - mark
mark = time.perf_counter()
create_app(Settings(model_path=Path(sys.argv[1]), torch_threads=1))
phases["create_app (loads both again)"] = time.perf_counter() - mark
print(json.dumps(phases))
"""


def gunicorn_start_seconds(python: Path, model: Path) -> float:
    started = time.perf_counter()
    server, url = start_one_worker(python, model)
    try:
        wait_healthy(url, server)
        return time.perf_counter() - started
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)


def phases(python: Path, model: Path) -> dict[str, float]:
    result = subprocess.run([str(python), "-c", PHASES, str(model)], cwd=ROOT, capture_output=True, text=True,
                            timeout=300)
    if result.returncode != 0:
        raise RuntimeError(result.stderr[-2000:])
    return json.loads(result.stdout.strip().splitlines()[-1])


def slowest_imports(python: Path, model: Path, top: int = 8) -> list[tuple[str, float]]:
    """Top-level packages by the time their own modules took to import (importtime's self time, summed: no
    double counting), in seconds, while `import app` imports and creates the app (model loading included, under
    `app` itself)."""
    env = {**os.environ, "MODEL_PATH": str(model)}
    result = subprocess.run([str(python), "-X", "importtime", "-c", "import app"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=300)
    totals: dict[str, float] = {}
    for line in result.stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        own, _, name = line.removeprefix("import time:").split("|")
        if own.strip().isdigit():
            package = name.strip().split(".")[0]
            totals[package] = totals.get(package, 0.0) + int(own) / 1e6
    return sorted(totals.items(), key=lambda item: -item[1])[:top]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.cold_start", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=Path("models/export.pkl"))
    parser.add_argument("--runs", type=int, default=3, help="gunicorn starts per install (1-10)")
    parser.add_argument("--full-python", type=Path, default=ROOT / ".venv/bin/python")
    parser.add_argument("--slim-python", type=Path, default=ROOT / ".venv-slim/bin/python")
    args = parser.parse_args(argv)
    if not 1 <= args.runs <= 10:
        parser.error("--runs must be between 1 and 10")
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: {os.cpu_count()} cores, load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    installs = {"full": (args.full_python, args.model.with_suffix(".pkl").resolve()),
                "slim": (args.slim_python, args.model.with_suffix(".onnx").resolve())}
    for name, (python, model) in installs.items():
        if not python.is_file():
            print(f"{name}: skipped, {python} not found")
            continue
        starts = [gunicorn_start_seconds(python, model) for _ in range(args.runs)]
        print(f"\n{name} ({model.name}): gunicorn start to /healthz 200: median {statistics.median(starts):.2f} s "
              f"(runs: {', '.join(f'{s:.2f}' for s in starts)})")
        for phase, seconds in phases(python, model).items():
            print(f"  {phase:<32} {seconds:6.2f} s")
        print("  time by package (importtime's self time; `app` includes loading the model): " + ", ".join(
            f"{package} {seconds:.2f} s" for package, seconds in slowest_imports(python, model)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
