"""Where the forward pass's time goes, float vs int8: ONNX Runtime's profiler, time summed by kind of operator.

    .venv/bin/python -m benchmarks.int8_profile [--model models/export.onnx] [--runs 30]

Both models (MODEL and the int8 twin its sidecar records, `python -m maskclassifier.modelfiles.quantize_onnx`) run
`--runs` single-image forward passes on one ONNX Runtime thread, as the app serves them (graph optimisations on), with
`SessionOptions.enable_profiling`, their passes interleaved. Each node's kernel time (its median over the passes)
is summed by kind: Conv split into the first (full 3x3)
conv, depthwise (group > 1) and pointwise (1x1) convs, whatever op the optimiser made of them (`Conv`,
`FusedConv`, `QLinearConv`, ...), and every other op type on its own (QuantizeLinear, DequantizeLinear, the
graph's own preprocessing: GridSample, ...). The input is a fixed seeded random image: the kernels' time does not
depend on the pixels. It then states Amdahl's bound: the share of the float pass in convolutions, and the best
speed-up int8 could give if every convolution ran k times faster and nothing else changed. Under a minute on
one idle core; it prints the load average, since the machine may be shared. Kernel times are wall-clock inside
ONNX Runtime, so on a busy machine compare the shares rather than the milliseconds.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np
import onnx
import onnxruntime

from maskclassifier.classifier.onnx_backend import INT8_SECTION
from maskclassifier.core.sidecar import read_sidecar

CONV_OPS = {"Conv", "FusedConv", "QLinearConv", "NhwcFusedConv", "NchwcConv", "ConvInteger"}


def conv_kinds(optimized: Path) -> dict[str, str]:
    """Node name -> 'Conv first/depthwise/pointwise, int8/float' for every convolution of an optimised graph."""
    model = onnx.load(str(optimized), load_external_data=False)
    weights = {tensor.name: list(tensor.dims) for tensor in model.graph.initializer}
    kinds = {}
    for node in model.graph.node:
        if node.op_type not in CONV_OPS:
            continue
        attributes = {attribute.name: onnx.helper.get_attribute_value(attribute) for attribute in node.attribute}
        weight = node.input[3] if node.op_type == "QLinearConv" else node.input[1]
        kernel = attributes.get("kernel_shape") or weights.get(weight, [0, 0, 0, 0])[2:]
        precision = "int8" if node.op_type in ("QLinearConv", "ConvInteger") else "float"
        if attributes.get("group", 1) > 1:
            kinds[node.name] = f"Conv depthwise 3x3, {precision}"
        elif list(kernel) == [1, 1]:
            kinds[node.name] = f"Conv pointwise 1x1, {precision}"
        else:
            kinds[node.name] = f"Conv first 3x3, {precision}"
    return kinds


def profile(paths: dict[str, Path], runs: int, folder: Path) -> dict[str, tuple[dict[str, float], float]]:
    """For each model: (ms per forward pass by kind, ms per forward pass in all kernels), one thread each, the
    models' passes interleaved; each node's time is its median over the passes, so a pass slowed by another
    process on a shared core counts little."""
    sessions, optimized = {}, {}
    for name, path in paths.items():
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = 1
        optimized[name] = folder / f"{name}.optimized.onnx"
        options.optimized_model_filepath = str(optimized[name])
        options.enable_profiling = True
        options.profile_file_prefix = str(folder / name)
        sessions[name] = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    graph_input = next(iter(sessions.values())).get_inputs()[0]
    height, width = graph_input.shape[1:3]
    pixels = np.random.default_rng(0).integers(0, 256, (1, height, width, 3), dtype=np.uint8)
    for _ in range(3 + runs):  # three warm-up passes, left out below
        for session in sessions.values():
            session.run(None, {graph_input.name: pixels})
    results = {}
    for name, session in sessions.items():
        events = json.loads(Path(session.end_profiling()).read_text())
        kinds = conv_kinds(optimized[name])
        by_node: dict[str, list[float]] = defaultdict(list)
        ops: dict[str, str] = {}
        for event in events:
            if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
                by_node[event["name"]].append(event["dur"])
                ops[event["name"]] = event["args"]["op_name"]
        totals: dict[str, float] = defaultdict(float)
        for node, durations in by_node.items():
            kind = kinds.get(node[: -len("_kernel_time")], ops[node])
            totals[kind] += float(np.median(durations[-runs:])) / 1000  # µs -> ms
        results[name] = (dict(totals), sum(totals.values()))
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.int8_profile", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=Path("models/export.onnx"))
    parser.add_argument("--runs", type=int, default=30, help="profiled forward passes per model (1-200)")
    args = parser.parse_args(argv)
    if not 1 <= args.runs <= 200:
        parser.error("--runs must be between 1 and 200")
    section = getattr(read_sidecar(args.model), INT8_SECTION, None) or {}
    if not section.get("file"):
        parser.error(f"{args.model}'s sidecar records no int8 twin: "
                     "run python -m maskclassifier.modelfiles.quantize_onnx first")
    models = {"float": args.model, "int8": args.model.with_name(section["file"])}
    with tempfile.TemporaryDirectory() as tmp:
        results = profile(models, args.runs, Path(tmp))
    print(f"ONNX Runtime {onnxruntime.__version__}, 1 thread, {args.runs} profiled passes each, load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}; int8: {section.get('file')}")
    kinds = sorted(set(results["float"][0]) | set(results["int8"][0]),
                   key=lambda kind: -max(results["float"][0].get(kind, 0), results["int8"][0].get(kind, 0)))
    print("op kind | float ms | float share | int8 ms | int8 share")
    for kind in kinds:
        cells = []
        for name in ("float", "int8"):
            by_kind, total = results[name]
            value = by_kind.get(kind, 0.0)
            cells.append(f"{value:7.2f} | {value / total:6.1%}")
        print(f"{kind} | {' | '.join(cells)}")
    float_total, int8_total = results["float"][1], results["int8"][1]
    print(f"all kernels | {float_total:7.2f} | 100% | {int8_total:7.2f} | 100%  "
          f"(int8 speed-up in kernel time {float_total / int8_total:.2f}x)")
    conv = sum(value for kind, value in results["float"][0].items() if kind.startswith("Conv"))
    share = conv / float_total
    bounds = ", ".join(f"k={k}: {1 / ((1 - share) + share / k):.2f}x" for k in (2, 4, float("inf")))
    print(f"Amdahl: convolutions are {share:.1%} of the float pass; if int8 made every one k times faster and "
          f"added nothing: {bounds}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
