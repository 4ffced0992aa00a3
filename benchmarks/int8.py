"""float vs int8 ONNX model, side by side in one run: forward time, validation exact-match and same labels.

    .venv/bin/python -m benchmarks.int8 --csv ../shared/data/masks/labels.csv [--model models/export.onnx]
        [--images-root DIR] [--timed 60] [--threads 1]

The int8 model is the twin `python -m maskclassifier.quantize_onnx MODEL --csv LABELS.csv` wrote and recorded in
MODEL's sidecar. Every validation image (is_valid True) is decoded and resized once as the app does it; both models
then classify all of them (exact-match against the labels, at the sidecar's threshold, and the share of images
given the very same labels by both). The forward pass (`session.run` on one image, the graph's own preprocessing
and sigmoid included) is timed on `--timed` of them, float and int8 alternating, on `--threads` ONNX Runtime
threads: p50 of wall-clock time and of the thread's CPU time (a busy machine inflates CPU time less).
Issue 20's goal: int8 at least 2x faster, exact-match within 0.5 point, at least 99 % same labels. Takes about a
minute for 982 images on 2 cores; it prints the load average, since the machine may be shared.
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import onnxruntime

from maskclassifier.images import load_image
from maskclassifier.onnx import OnnxBackend, load_onnx_backend
from maskclassifier.sidecar import DEFAULT_THRESHOLD, read_sidecar, resolve


def validation(csv_path: Path) -> list[dict]:
    """The CSV's validation rows (is_valid True)."""
    with open(csv_path, newline="") as handle:
        return [row for row in csv.DictReader(handle) if str(row.get("is_valid", "")).lower() == "true"]


def cpu_flags() -> str:
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):
        return "unknown"
    wanted = ("avx512_vnni", "avx_vnni", "amx_int8", "avx512_bf16")
    return ", ".join(flag for flag in wanted if f" {flag}" in flags) or "no VNNI/AMX"


def forward_times(backends: dict[str, OnnxBackend], pixels: np.ndarray, count: int) -> dict[str, list[tuple]]:
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in backends}
    for index in range(count):
        for name, backend in backends.items():
            batch = {backend.session.get_inputs()[0].name: pixels[index:index + 1]}
            wall, cpu = time.perf_counter(), time.thread_time()
            backend.session.run(None, batch)
            times[name].append((time.perf_counter() - wall, time.thread_time() - cpu))
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.int8", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=Path("models/export.onnx"))
    parser.add_argument("--csv", type=Path, required=True)
    parser.add_argument("--images-root", type=Path)
    parser.add_argument("--timed", type=int, default=60, help="images whose forward pass is timed (1-500)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    if not 1 <= args.timed <= 500:
        parser.error("--timed must be between 1 and 500")
    sidecar = read_sidecar(args.model)
    backends = {precision: load_onnx_backend(args.model, sidecar, args.threads, precision)
                for precision in ("float", "int8")}
    threshold = resolve(None, sidecar.threshold if sidecar else None, DEFAULT_THRESHOLD)
    rows = validation(args.csv)
    root = args.images_root or args.csv.parent
    pixels = np.stack([backends["float"].resize(load_image((root / row["fname"]).read_bytes())) for row in rows])
    vocab = backends["float"].vocab
    truth = np.array([[name in row["labels"].split() for name in vocab] for row in rows])
    probabilities = {name: np.concatenate([backend.session.run(None, {backend.session.get_inputs()[0].name:
                                                                      pixels[start:start + 64]})[0]
                                           for start in range(0, len(pixels), 64)])
                     for name, backend in backends.items()}
    times = forward_times(backends, pixels, min(args.timed, len(pixels)))

    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {platform.node()}: {os.cpu_count()} cores "
          f"({cpu_flags()}), ONNX Runtime {onnxruntime.__version__}, {args.threads} thread(s), load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    section = sidecar.onnx_int8 or {}
    calibration, kept = section.get("calibration", {}), section.get("keep_float", {})
    print(f"model {args.model} vs {section.get('file')} ({section.get('format')}, per-channel "
          f"{section.get('per_channel')}, {calibration.get('method')} calibration on {calibration.get('images')} "
          f"training images, {kept.get('nodes', 0)} nodes left in float: {' '.join(kept.get('modules', [])) or '-'}"
          f"); {len(rows)} validation images at threshold {threshold:g}")
    float_labels = probabilities["float"] > threshold
    print("model | forward p50 wall | forward p50 CPU | exact-match | same labels as float | max |p - p_float|")
    p50 = {}
    for name in backends:
        labels = probabilities[name] > threshold
        p50[name] = (statistics.median(t[0] for t in times[name]) * 1000,
                     statistics.median(t[1] for t in times[name]) * 1000)
        print(f"{name:<5} | {p50[name][0]:13.1f} ms | {p50[name][1]:12.1f} ms | "
              f"{(labels == truth).all(1).mean():11.4f} | {(labels == float_labels).all(1).mean():19.2%} | "
              f"{np.abs(probabilities[name] - probabilities['float']).max():.3f}")
    print(f"speed-up float / int8: {p50['float'][0] / p50['int8'][0]:.2f}x wall, "
          f"{p50['float'][1] / p50['int8'][1]:.2f}x CPU (goal: at least 2x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
