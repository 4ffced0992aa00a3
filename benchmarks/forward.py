"""The served forward pass of two or more ONNX graphs side by side: thread CPU per pass and how far apart they answer.

    .venv/bin/python -m benchmarks.forward models/export.onnx OTHER.onnx [--runs 60]

For comparing two exports of the same learner (e.g. an older graph: `git show COMMIT:models/export.onnx >
/tmp/old.onnx`). Each graph gets the ONNX Runtime session the app would open on one thread
(`maskclassifier.classifier.onnx_backend.open_session`), the same seeded random uint8 image at the graph's item size
(read from its input shape, else 288 px), and `--runs` passes interleaved with the others' after one warm-up. It prints
the p50 and p95 of each pass's thread CPU time (the whole pass runs on the calling thread with one intra-op thread,
so a busy machine inflates it less than wall-clock) and the largest difference between the first graph's
probabilities and each other's. Bounded: under 10 s for two graphs at 60 runs.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import onnxruntime

from maskclassifier.classifier.onnx_backend import open_session


def item_size(session: onnxruntime.InferenceSession) -> tuple[int, int]:
    """(height, width) of the graph's uint8 input (batch, height, width, 3); 288 x 288 where it is symbolic."""
    shape = session.get_inputs()[0].shape
    return tuple(value if isinstance(value, int) else 288 for value in shape[1:3])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.forward", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", type=Path, nargs="+")
    parser.add_argument("--runs", type=int, default=60, help="timed passes per graph (1-1000)")
    args = parser.parse_args(argv)
    if not 1 <= args.runs <= 1000:
        parser.error("--runs must be 1 to 1000")
    sessions = [open_session(path, 1) for path in args.models]
    height, width = item_size(sessions[0])
    pixels = np.random.default_rng(0).integers(0, 256, (1, height, width, 3), dtype=np.uint8)
    answers = [session.run(None, {session.get_inputs()[0].name: pixels})[0] for session in sessions]
    times: list[list[float]] = [[] for _ in sessions]
    for _ in range(args.runs):
        for session, spent in zip(sessions, times, strict=True):
            start = time.thread_time()
            session.run(None, {session.get_inputs()[0].name: pixels})
            spent.append(time.thread_time() - start)
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} cores, load average "
          f"{' '.join(f'{value:.2f}' for value in os.getloadavg())}, ONNX Runtime {onnxruntime.__version__}, "
          f"1 thread, {args.runs} passes each, a {width}x{height} image")
    print("graph | forward p50 thread CPU | p95 | largest |p - p_first|")
    for path, spent, answer in zip(args.models, times, answers, strict=True):
        print(f"{path} | {np.median(spent) * 1000:.2f} ms | {np.percentile(spent, 95) * 1000:.2f} ms | "
              f"{float(np.abs(answer - answers[0]).max()):.1e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
