"""Which layers the int8 twin loses accuracy in: ONNX Runtime's per-layer comparison (`qdq_loss_debug`).

    .venv/bin/python -m benchmarks.int8_layers --csv ../shared/data/masks/labels.csv [--model models/export.onnx]
        [--images-root DIR] [--images 32] [--seed 1]

For MODEL and the int8 twin its sidecar records (`python -m maskclassifier.modelfiles.quantize_onnx`), on `--images`
validation images decoded and resized as the app does it: the weights' SQNR (float against dequantized, the worst
ten; `create_weight_matching`, `compute_weight_error`), then every quantized activation in graph order with its
SQNR in dB between the float model's tensor and the int8 model's dequantized one (`collect_activations`,
`create_activation_matching`; the same signal-to-noise ratio as `compute_activation_error`'s `xmodel_err`, summed
over all images), the drop from the tensor before it, and the learner module that makes it (the producing node's
weight name). A layer whose SQNR drops a lot is one to leave in float (`--keep-float`). The float side is the
graph after ONNX Runtime's quantization pre-processing, whose tensor names the int8 twin keeps. Images go through
in chunks of 8, so memory stays around a gigabyte; about a minute on one idle core for 32 images.
"""

from __future__ import annotations

import argparse
import math
import random
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import CalibrationDataReader
from onnxruntime.quantization.qdq_loss_debug import (
    collect_activations,
    compute_weight_error,
    create_activation_matching,
    create_weight_matching,
    modify_model_output_intermediate_tensors,
)
from onnxruntime.quantization.shape_inference import quant_pre_process

from benchmarks.int8 import validation
from maskclassifier.classifier.onnx_backend import INT8_SECTION, load_onnx_backend
from maskclassifier.core.images import load_image
from maskclassifier.core.sidecar import read_sidecar

CHUNK = 8


class Batches(CalibrationDataReader):
    """One image per run, as collect_activations reads them."""

    def __init__(self, pixels: np.ndarray, name: str):
        self._inputs = iter([{name: image[None]} for image in pixels])

    def get_next(self) -> dict | None:
        return next(self._inputs, None)


def module_of(model: onnx.ModelProto) -> dict[str, str]:
    """Tensor name -> the learner module whose weight makes it (e.g. model.0.0.3.conv.2; a Clip after a conv is
    named after the conv), or the op type."""
    weights = {tensor.name for tensor in model.graph.initializer}
    made = {}
    for node in model.graph.node:
        weight = next((name for name in node.input[1:] if name in weights and name.endswith(".weight")), None)
        if weight:
            label = weight.rsplit(".", 1)[0]
        elif node.op_type in ("Clip", "Relu") and node.input[0] in made:  # a conv's activation: name the conv
            label = f"{made[node.input[0]]} {node.op_type}"
        else:
            label = node.op_type
        made.update({output: label for output in node.output})
    return made


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.int8_layers", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=Path("models/export.onnx"))
    parser.add_argument("--csv", type=Path, required=True)
    parser.add_argument("--images-root", type=Path)
    parser.add_argument("--images", type=int, default=32, help="validation images compared (1-200)")
    parser.add_argument("--seed", type=int, default=1, help="which validation images (shuffled with this seed)")
    args = parser.parse_args(argv)
    if not 1 <= args.images <= 200:
        parser.error("--images must be between 1 and 200")
    sidecar = read_sidecar(args.model)
    section = getattr(sidecar, INT8_SECTION, None) or {}
    if not section.get("file"):
        parser.error(f"{args.model}'s sidecar records no int8 twin: "
                     "run python -m maskclassifier.modelfiles.quantize_onnx first")
    int8_path = args.model.with_name(section["file"])
    backend = load_onnx_backend(args.model, sidecar, threads=None)
    rows = validation(args.csv)
    random.Random(args.seed).shuffle(rows)
    root = args.images_root or args.csv.parent
    pixels = np.stack([backend.resize(load_image((root / row["fname"]).read_bytes())) for row in rows[:args.images]])
    name = backend.session.get_inputs()[0].name

    with tempfile.TemporaryDirectory() as tmp:
        prepared, float_saving, int8_saving = (str(Path(tmp) / file) for file in
                                               ("prepared.onnx", "float_saving.onnx", "int8_saving.onnx"))
        quant_pre_process(str(args.model), prepared, skip_symbolic_shape=True)
        weight_sqnr = compute_weight_error(create_weight_matching(prepared, str(int8_path)))
        modify_model_output_intermediate_tensors(prepared, float_saving)
        modify_model_output_intermediate_tensors(str(int8_path), int8_saving)
        signal: dict[str, float] = {}
        noise: dict[str, float] = {}
        for start in range(0, len(pixels), CHUNK):
            chunk = pixels[start:start + CHUNK]
            matching = create_activation_matching(collect_activations(int8_saving, Batches(chunk, name)),
                                                  collect_activations(float_saving, Batches(chunk, name)))
            for tensor, match in matching.items():
                if not match.get("float"):
                    continue
                float_values = np.concatenate([value.ravel() for value in match["float"]]).astype(np.float64)
                int8_values = np.concatenate([value.ravel() for value in match["post_qdq"]]).astype(np.float64)
                signal[tensor] = signal.get(tensor, 0.0) + float((float_values ** 2).sum())
                noise[tensor] = noise.get(tensor, 0.0) + float(((float_values - int8_values) ** 2).sum())
        graph = onnx.load(prepared)

    kept = section.get("keep_float", {})
    print(f"{args.model} vs {int8_path.name} ({section.get('calibration', {}).get('method')} calibration, left in "
          f"float: {' '.join(kept.get('modules', [])) or '-'}), {len(pixels)} validation images")
    print("weights, the 10 lowest SQNR (dB):")
    for weight, value in sorted(weight_sqnr.items(), key=lambda item: item[1])[:10]:
        print(f"  {value:5.1f}  {weight}")
    order = [output for node in graph.graph.node for output in node.output]
    made = module_of(graph)
    print("activation | module | SQNR float vs int8 (dB) | drop from the one before")
    previous = None
    for tensor in sorted(signal, key=lambda tensor: order.index(tensor) if tensor in order else len(order)):
        sqnr = 10 * math.log10(max(signal[tensor], 1e-30) / max(noise[tensor], 1e-30))
        drop = "" if previous is None else f"{previous - sqnr:+.1f}"
        print(f"{tensor} | {made.get(tensor, '?')} | {sqnr:.1f} | {drop}")
        previous = sqnr
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
