"""The served forward pass of two or more ONNX graphs side by side: thread CPU per pass and how far apart they answer.

    .venv/bin/python -m benchmarks.forward models/export.onnx OTHER.onnx [--runs 60] [--batch 1] [--arena both]
                                                                           [--pattern both]

For comparing two exports of the same learner (e.g. an older graph: `git show COMMIT:models/export.onnx >
/tmp/old.onnx`). Each graph gets the ONNX Runtime session the app would open on one thread
(`maskclassifier.classifier.onnx_backend.open_session`), with the C allocator's settings of the app's worker
(`limit_allocator_retention`), the same seeded random uint8 image at the graph's item size (read from its input
shape, else 288 px), and `--runs` passes interleaved with the others' after one warm-up. It prints the p50 and p95
of each pass's thread CPU time (the whole pass runs on the calling thread with one intra-op thread, so a busy
machine inflates it less than wall-clock) and the largest difference between the first graph's probabilities and
each other's. Bounded: under 10 s for two graphs at 60 runs.

`--arena both` runs every graph twice, with ONNX Runtime's CPU memory arena off
(`maskclassifier.classifier.onnx_backend.CPU_MEM_ARENA`) and on, and also prints each one's wall-clock p50 and the
process's RSS growth over the timed passes; `--pattern both` does the same with ONNX Runtime's memory pattern
(`maskclassifier.classifier.onnx_backend.MEM_PATTERN`); `--batch 8` times batches of 8 images, as /api/explain's
occlusion runs them.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import onnxruntime

import maskclassifier.classifier.onnx_backend
from maskclassifier.classifier.onnx_backend import open_session
from maskclassifier.web.worker import limit_allocator_retention


def item_size(session: onnxruntime.InferenceSession) -> tuple[int, int]:
    """(height, width) of the graph's uint8 input (batch, height, width, 3); 288 x 288 where it is symbolic."""
    shape = session.get_inputs()[0].shape
    return tuple(value if isinstance(value, int) else 288 for value in shape[1:3])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.forward", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", type=Path, nargs="+")
    parser.add_argument("--runs", type=int, default=60, help="timed passes per graph (1-1000)")
    parser.add_argument("--batch", type=int, default=1, help="images per pass (1-64)")
    parser.add_argument("--arena", choices=["off", "on", "both"], default="off",
                        help="ONNX Runtime's CPU memory arena (the app: on)")
    parser.add_argument("--pattern", choices=["off", "on", "both"], default="off",
                        help="ONNX Runtime's memory pattern (the app: off)")
    args = parser.parse_args(argv)
    if not 1 <= args.runs <= 1000:
        parser.error("--runs must be 1 to 1000")
    if not 1 <= args.batch <= 64:
        parser.error("--batch must be 1 to 64")
    limit_allocator_retention()  # glibc's settings as in the app's worker: buffers over 1 MB are fresh mappings
    choices = {"off": [False], "on": [True], "both": [False, True]}
    labels, sessions = [], []
    for path in args.models:
        for arena in choices[args.arena]:
            for pattern in choices[args.pattern]:
                maskclassifier.classifier.onnx_backend.CPU_MEM_ARENA = arena
                maskclassifier.classifier.onnx_backend.MEM_PATTERN = pattern
                sessions.append(open_session(path, 1))
                labels.append(f"{path}, arena {'on' if arena else 'off'}, pattern {'on' if pattern else 'off'}")
    height, width = item_size(sessions[0])
    pixels = np.random.default_rng(0).integers(0, 256, (args.batch, height, width, 3), dtype=np.uint8)
    answers = [session.run(None, {session.get_inputs()[0].name: pixels})[0] for session in sessions]
    times: list[list[float]] = [[] for _ in sessions]
    walls: list[list[float]] = [[] for _ in sessions]
    growth = [0.0 for _ in sessions]
    for _ in range(args.runs):
        for index, session in enumerate(sessions):
            before = rss_mb()
            start, wall = time.thread_time(), time.perf_counter()
            session.run(None, {session.get_inputs()[0].name: pixels})
            times[index].append(time.thread_time() - start)
            walls[index].append(time.perf_counter() - wall)
            growth[index] += rss_mb() - before
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} cores, load average "
          f"{' '.join(f'{value:.2f}' for value in os.getloadavg())}, ONNX Runtime {onnxruntime.__version__}, "
          f"1 thread, {args.runs} passes each, batches of {args.batch} {width}x{height} images")
    print("graph | forward p50 thread CPU | p95 | p50 wall | RSS kept by its passes | largest |p - p_first|")
    for label, spent, wall, kept, answer in zip(labels, times, walls, growth, answers, strict=True):
        print(f"{label} | {np.median(spent) * 1000:.2f} ms | {np.percentile(spent, 95) * 1000:.2f} ms | "
              f"{np.median(wall) * 1000:.2f} ms | {kept:+.0f} MB | {float(np.abs(answer - answers[0]).max()):.1e}")
    return 0


def rss_mb() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


if __name__ == "__main__":
    raise SystemExit(main())
