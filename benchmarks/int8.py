"""float vs int8 ONNX model, side by side in one run: forward time, validation exact-match and same labels.

    .venv/bin/python -m benchmarks.int8 --csv ../shared/data/masks/labels.csv [--model models/export.onnx]
        [--images-root DIR] [--timed 60] [--threads 1] [--limit N] [--save RUN.npz] [--against RUN.npz]

The int8 model is the twin `python -m maskclassifier.modelfiles.quantize_onnx MODEL --csv LABELS.csv` wrote and recorded
in MODEL's sidecar. Every validation image (is_valid True) is decoded and resized once as the app does it; three
ways of answering then classify all of them (exact-match against the labels, at the sidecar's threshold, and the
share of images given the very same labels as the float model): float, int8 alone, and int8 as the app serves it,
where an image with a category within `onnx.INT8_RECHECK_MARGIN` of the threshold is answered by the float model
(`int8+recheck`). The forward pass (`OnnxBackend.run` on one image, the graph's own preprocessing and sigmoid
included, and for int8+recheck the float pass when it rechecks) is timed on `--timed` of them, the three
alternating, on `--threads` ONNX Runtime threads: p50 of wall-clock time and of the thread's CPU time (a busy
machine inflates CPU time less), and the mean CPU time, which counts the rechecks.
Issue 20's goal: int8 at least 2x faster, exact-match within 0.5 point, at least 99 % same labels. Takes about a
minute for 982 images on 2 cores; it prints the load average, since the machine may be shared.

Other CPUs: ONNX Runtime picks its int8 kernels by what the CPU has (AVX-512 VNNI or AMX here; on CPUs without
VNNI, AVX2 kernels whose 8-bit products can saturate). `--save` keeps both models' probabilities; `--against` a
saved run compares this run's with them, image by image. To see the answers of a CPU without VNNI on this one,
run under QEMU's user-mode emulator with a Haswell CPU (AVX2, no AVX-512; Debian's qemu-user):

    .venv-slim/bin/python -m benchmarks.int8 --csv ... --limit 200 --save /tmp/vnni.npz
    qemu-x86_64 -cpu Haswell .venv-slim/bin/python -m benchmarks.int8 --csv ... --limit 200 --timed 1 \
        --against /tmp/vnni.npz

(emulated, so its times mean nothing; about 4 s an image).
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

from maskclassifier.classifier.onnx_backend import OnnxBackend, load_onnx_backend
from maskclassifier.core.images import load_image
from maskclassifier.core.sidecar import DEFAULT_THRESHOLD, read_sidecar, resolve
from maskclassifier.core.threshold import above_threshold


def validation(csv_path: Path) -> list[dict]:
    """The CSV's validation rows (is_valid True)."""
    with open(csv_path, newline="") as handle:
        return [row for row in csv.DictReader(handle) if str(row.get("is_valid", "")).lower() == "true"]


def cpu_flags() -> str:
    """The int8-relevant instruction sets this process sees: numpy's own CPUID reading (so an emulated CPU
    shows its features, not the host's), and AMX from /proc/cpuinfo, which numpy does not read."""
    from numpy._core._multiarray_umath import __cpu_features__  # numpy 2's runtime dispatch table

    seen = [name for name in ("AVX2", "AVX512F", "AVX512VNNI", "AVX512BF16") if __cpu_features__.get(name)]
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):
        flags = ""
    if " amx_int8" in flags and "AVX512F" in seen:
        seen.append("AMX-INT8")
    return ", ".join(seen) or "no AVX2"


def forward_times(backends: dict[str, OnnxBackend], pixels: np.ndarray, count: int) -> dict[str, list[tuple]]:
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in backends}
    for index in range(count):
        for name, backend in backends.items():
            wall, cpu = time.perf_counter(), time.thread_time()
            backend.run(pixels[index:index + 1])
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
    parser.add_argument("--limit", type=int, help="the first N validation images only")
    parser.add_argument("--save", type=Path, help="write both models' probabilities to this .npz")
    parser.add_argument("--against", type=Path, help="compare with the probabilities a run --save'd")
    args = parser.parse_args(argv)
    if not 1 <= args.timed <= 500:
        parser.error("--timed must be between 1 and 500")
    if args.limit is not None and args.limit < 1:
        parser.error("--limit must be at least 1")
    sidecar = read_sidecar(args.model)
    threshold = resolve(None, sidecar.threshold if sidecar else None, DEFAULT_THRESHOLD)
    backends = {precision: load_onnx_backend(args.model, sidecar, args.threads, precision)
                for precision in ("float", "int8")}
    # as the app serves int8: answers near the threshold from the float model (onnx.FloatRecheck)
    backends["int8+recheck"] = load_onnx_backend(args.model, sidecar, args.threads, "int8", threshold)
    rows = validation(args.csv)[:args.limit]
    root = args.images_root or args.csv.parent
    pixels = np.stack([backends["float"].resize(load_image((root / row["fname"]).read_bytes())) for row in rows])
    vocab = backends["float"].vocab
    truth = np.array([[name in row["labels"].split() for name in vocab] for row in rows])
    probabilities = {name: np.concatenate([backend.run(pixels[start:start + 64])
                                           for start in range(0, len(pixels), 64)])
                     for name, backend in backends.items()}
    rechecked = backends["int8+recheck"].recheck.unsure(probabilities["int8"]).mean()
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
    float_labels = above_threshold(probabilities["float"], threshold)
    print("model | forward p50 wall | forward p50 CPU | forward mean CPU | exact-match | same labels as float "
          "| max |p - p_float|")
    p50 = {}
    for name in backends:
        labels = above_threshold(probabilities[name], threshold)
        p50[name] = (statistics.median(t[0] for t in times[name]) * 1000,
                     statistics.median(t[1] for t in times[name]) * 1000)
        mean_cpu = statistics.mean(t[1] for t in times[name]) * 1000
        print(f"{name:<12} | {p50[name][0]:13.1f} ms | {p50[name][1]:12.1f} ms | {mean_cpu:13.1f} ms | "
              f"{(labels == truth).all(1).mean():11.4f} | {(labels == float_labels).all(1).mean():19.2%} | "
              f"{np.abs(probabilities[name] - probabilities['float']).max():.3f}")
    mean = {name: statistics.mean(t[1] for t in times[name]) for name in backends}
    print(f"speed-up float / int8: {p50['float'][0] / p50['int8'][0]:.2f}x wall, "
          f"{p50['float'][1] / p50['int8'][1]:.2f}x CPU (goal: at least 2x); with the float recheck of the "
          f"{rechecked:.1%} of images within {backends['int8+recheck'].recheck.margin:g} of the threshold: "
          f"{mean['float'] / mean['int8+recheck']:.2f}x mean CPU")
    if args.save:
        np.savez(args.save, fnames=[row["fname"] for row in rows], **probabilities)
    if args.against:
        compare_runs(np.load(args.against), rows, probabilities, threshold)
    return 0


def compare_runs(saved, rows: list[dict], probabilities: dict[str, np.ndarray], threshold: float) -> None:
    """Each model's answers in this run against a saved run's (another CPU's) on the same images."""
    if list(saved["fnames"]) != [row["fname"] for row in rows]:
        raise SystemExit("--against: the saved run classified other images (use the same --csv and --limit)")
    print("model | same labels as the saved run | max |p - p_saved|")
    for name, values in probabilities.items():
        same = (above_threshold(values, threshold) == above_threshold(saved[name], threshold)).all(1).mean()
        print(f"{name:<5} | {same:27.2%} | {np.abs(values - saved[name]).max():.4f}")


if __name__ == "__main__":
    raise SystemExit(main())
