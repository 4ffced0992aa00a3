"""Quantize the ONNX twin to int8 (static, QDQ) with ONNX Runtime's quantization tools, calibrated on training images.

    python -m maskclassifier.modelfiles.quantize_onnx models/export.onnx --csv ../shared/data/masks/labels.csv
        [--images-root DIR] [--calibration 200] [--seed 0] [--no-per-channel] [--format qdq|qoperator]
        [--calibrate-method minmax|percentile|entropy] [--percentile 99.99] [--keep-float PREFIX ...] [--serve]

writes models/export.int8.onnx next to the float model and records it in the sidecar (models/export.json) as
`onnx_int8`: the file and its sha256, the float file it was made from, the format and the calibration images.
Calibration uses `--calibration` training images (rows whose `is_valid` is not True), shuffled with `--seed`, each
decoded and resized exactly as the app does before the graph (`load_image`, then the item Resize), so the
calibrated ranges are those of served inputs. `benchmarks/int8.py` compares the two models' speed and answers.

Mixed precision: `--keep-float PREFIX` leaves in float every node whose weight is a parameter of the learner's
module PREFIX (its PyTorch path, e.g. `model.0.0.3` for a MobileNetV2 body's block 3, `model.1` for fastai's head),
and every Add that sums such a node's output. ONNX Runtime's per-layer comparison (`qdq_loss_debug`) showed where
the shipped MobileNetV2 loses its answers: the activations (not the weights) of the first blocks, at full
resolution, of block 10 and of the 160-channel blocks 14-16, so for a `mobilenet_v2` model those and the head
stay float by default.

Needs the full install (`onnx`; ONNX Runtime's quantizer imports it). Defaults are the fastest variant tried that
kept the shipped model's answers (BENCHMARKS.md, "int8 on model 9"): per-channel int8 weights, uint8 activations,
percentile calibration (99.99), MobileNetV2's sensitive blocks in float. On model 9 that is exact-match within 0.5
point and the float model's labels for 98.9-99.1 % of the validation images depending on the calibration images
(the 99 % goal at the edge), for a forward pass only about 1.2x faster (1.37x on models 11 and 12, once the
graph's resample became a resize), which is why the app serves the float model unless told otherwise. When it
serves int8, answers near the threshold come from the float model (`onnx.INT8_RECHECK_MARGIN`): on model 12 that
took the float model's labels from 98.6 % to 99.9 % of the validation images for 1.30x on average.
"""

from __future__ import annotations

import argparse
import csv
import random
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import onnx
import onnxruntime
from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process

from maskclassifier.classifier.onnx_backend import INT8_SECTION, OnnxBackend, load_onnx_backend
from maskclassifier.core.errors import ImageError, ModelLoadError
from maskclassifier.core.images import load_image
from maskclassifier.core.sidecar import read_sidecar, sha256_file, sidecar_path

FORMATS = {"qdq": QuantFormat.QDQ, "qoperator": QuantFormat.QOperator}
CALIBRATE_METHODS = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
                     "entropy": CalibrationMethod.Entropy}
DEFAULT_PERCENTILE = 99.99  # of each activation's calibrated values: ranges ignore the rarest 0.01 %
# Learner modules left in float by default, by the sidecar's architecture. MobileNetV2 (fastai: body model.0.0,
# head model.1): the first conv and blocks 1-3 (128 and 64 px), block 10 and the 160-channel blocks 14-16, where
# qdq_loss_debug found the activations' SQNR dropping most, and the head; the smallest set of those tried that kept
# 99 % of the shipped model's validation answers (BENCHMARKS.md, "int8 on model 9").
DEFAULT_KEEP_FLOAT = {"mobilenet_v2": ("model.0.0.0", "model.0.0.1", "model.0.0.2", "model.0.0.3", "model.0.0.10",
                                       "model.0.0.14", "model.0.0.15", "model.0.0.16", "model.1")}
# calibration runs this many images at a time at most (ServedInputs), so its memory stays bounded
_CALIBRATION_CHUNK = 25


def int8_path(float_path: Path) -> Path:
    """models/export.onnx -> models/export.int8.onnx"""
    return float_path.with_name(float_path.stem + ".int8.onnx")


def calibration_files(csv_path: Path, images_root: Path, count: int, seed: int) -> list[Path]:
    """`count` training images of the labelled CSV (fname, is_valid), in a shuffled order fixed by `seed`."""
    with open(csv_path, newline="") as handle:
        rows = [row for row in csv.DictReader(handle) if str(row.get("is_valid", "")).lower() != "true"]
    random.Random(seed).shuffle(rows)
    return [images_root / row["fname"] for row in rows[:count]]


class ServedInputs(CalibrationDataReader):
    """The graph's input for each image, made as the app makes it; unreadable images are skipped and counted.

    ONNX Runtime's calibrators keep every image's activations until they compute the ranges (about 40 MB an image
    for MobileNetV2 at 256 px: 400 images did not fit in this machine's memory), unless the reader has a length
    and `set_range`: quantize_static then calibrates `CalibStridedMinMax` images at a time, merging the ranges or
    histograms as it goes."""

    def __init__(self, backend: OnnxBackend, files: list[Path]):
        self.backend, self.files, self.used, self.skipped = backend, files, 0, 0
        self._inputs = self._read(files)

    def __len__(self) -> int:
        return len(self.files)

    def set_range(self, start_index: int, end_index: int) -> None:
        self._inputs = self._read(self.files[start_index:end_index])

    def _read(self, files: list[Path]) -> Iterator[dict]:
        name = self.backend.session.get_inputs()[0].name
        for file in files:
            try:
                pixels = self.backend.resize(load_image(file.read_bytes()))
            except (OSError, ImageError):
                self.skipped += 1
                continue
            self.used += 1
            yield {name: pixels[None]}

    def get_next(self) -> dict | None:
        return next(self._inputs, None)


def calibration_stride(count: int, at_most: int = _CALIBRATION_CHUNK) -> int:
    """The largest number of images, up to `at_most`, that divides `count` (quantize_static requires it)."""
    return max(size for size in range(1, min(count, at_most) + 1) if count % size == 0)


def float_nodes(model: onnx.ModelProto, prefixes: tuple[str, ...]) -> list[str]:
    """Names of the nodes `--keep-float` leaves in float: each node with a weight (initializer) named PREFIX.*, and
    each Add fed by one of them (a residual sum). ModelLoadError names a prefix that matches no node."""
    weights = {tensor.name for tensor in model.graph.initializer}
    chosen, outputs, unmatched = [], set(), set(prefixes)
    for node in model.graph.node:
        matched = [prefix for prefix in prefixes if any(name in weights and name.startswith(prefix + ".")
                                                        for name in node.input)]
        if matched:
            chosen.append(node.name)
            outputs.update(node.output)
            unmatched.difference_update(matched)
    if unmatched:
        raise ModelLoadError(f"--keep-float {' '.join(sorted(unmatched))}: no layer of the model has weights named "
                             f"so (give a learner module path, e.g. model.0.0.1)")
    chosen += [node.name for node in model.graph.node if node.op_type == "Add" and outputs & set(node.input)]
    return chosen


def quantize(float_path: Path, files: list[Path], per_channel: bool = True, quant_format: str = "qdq",
             serve: bool = False, calibrate_method: str = "percentile", percentile: float = DEFAULT_PERCENTILE,
             keep_float: tuple[str, ...] | None = None) -> dict:
    """Write int8_path(float_path) and record it in the sidecar (`serve`: the app serves it unless ONNX_PRECISION
    says otherwise); returns the sidecar's new `onnx_int8` section. `keep_float`: learner module paths left in
    float (None: DEFAULT_KEEP_FLOAT for the sidecar's architecture, () : quantize every layer it can)."""
    sidecar = read_sidecar(float_path)
    if keep_float is None:
        keep_float = DEFAULT_KEEP_FLOAT.get(str(sidecar.architecture if sidecar else ""), ())
    backend = load_onnx_backend(float_path, sidecar, threads=None)
    target = int8_path(float_path)
    prepared = target.with_name(target.stem + ".prepared.onnx")
    reader = ServedInputs(backend, files)
    try:
        # shape inference and graph clean-up first, as ONNX Runtime's quantization guide recommends
        quant_pre_process(str(float_path), str(prepared), skip_symbolic_shape=True)
        excluded = float_nodes(onnx.load(str(prepared)), tuple(keep_float))
        method = CALIBRATE_METHODS[calibrate_method]
        options = {"CalibStridedMinMax": calibration_stride(len(files))}  # despite its name, for every method
        if method == CalibrationMethod.Percentile:
            options["CalibPercentile"] = percentile
        quantize_static(str(prepared), str(target), reader, quant_format=FORMATS[quant_format],
                        per_channel=per_channel, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=method, nodes_to_exclude=excluded, extra_options=options)
    finally:
        prepared.unlink(missing_ok=True)
    if reader.used == 0:
        target.unlink(missing_ok=True)
        raise ModelLoadError(f"none of the {len(files)} calibration images could be read (first: {files[0]})")
    section = {
        "file": target.name,
        "sha256": sha256_file(target),
        "quantized_from": {"file": float_path.name, "sha256": sha256_file(float_path)},
        "format": quant_format,
        "per_channel": per_channel,
        "activations": "uint8",
        "weights": "int8",
        "calibration": {"method": calibrate_method, "images": reader.used, "skipped": reader.skipped,
                        "split": "training",
                        **({"percentile": percentile} if calibrate_method == "percentile" else {})},
        "keep_float": {"modules": list(keep_float), "nodes": len(excluded)},
        "serve": serve,
        "onnxruntime": onnxruntime.__version__,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    sidecar.onnx_int8 = section
    sidecar.write(float_path)  # models/export.json, beside both
    return section


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m maskclassifier.modelfiles.quantize_onnx", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", type=Path, help="the float ONNX twin (models/export.onnx)")
    parser.add_argument("--csv", type=Path, required=True, help="labelled CSV (fname, is_valid): calibration images")
    parser.add_argument("--images-root", type=Path, help="folder the fname paths start in (default: the CSV's)")
    parser.add_argument("--calibration", type=int, default=200, help="training images to calibrate on (default 200)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-per-channel", dest="per_channel", action="store_false",
                        help="one scale per weight tensor instead of one per output channel")
    parser.add_argument("--format", choices=sorted(FORMATS), default="qdq")
    parser.add_argument("--calibrate-method", choices=sorted(CALIBRATE_METHODS), default="percentile",
                        help="how each activation's range is chosen from the calibration images (default percentile)")
    parser.add_argument("--percentile", type=float, default=DEFAULT_PERCENTILE,
                        help=f"with percentile calibration: the share of values each range covers "
                             f"(default {DEFAULT_PERCENTILE})")
    parser.add_argument("--keep-float", nargs="+", metavar="PREFIX",
                        help="learner modules left in float, by PyTorch path (e.g. model.0.0.1 model.1); 'none' "
                             "quantizes every layer; default: " + "; ".join(
                                 f"{arch}: {' '.join(mods)}" for arch, mods in DEFAULT_KEEP_FLOAT.items())
                             + ", nothing for other architectures")
    parser.add_argument("--serve", action="store_true",
                        help="record that the app serves the int8 model by default (ONNX_PRECISION overrides it)")
    args = parser.parse_args(argv)
    if args.model.suffix != ".onnx" or args.model.name.endswith(".int8.onnx"):
        parser.error("pass the float ONNX twin, e.g. models/export.onnx")
    if not 1 <= args.calibration <= 5000:
        parser.error("--calibration must be between 1 and 5000")
    if not 50 < args.percentile <= 100:
        parser.error("--percentile must be above 50 and at most 100")
    if args.keep_float and "none" in args.keep_float and len(args.keep_float) > 1:
        parser.error("--keep-float none cannot be combined with module paths")
    keep_float = None if args.keep_float is None else tuple(p for p in args.keep_float if p != "none")
    files = calibration_files(args.csv, args.images_root or args.csv.parent, args.calibration, args.seed)
    if not files:
        parser.error(f"{args.csv} lists no training images")
    try:
        section = quantize(args.model, files, args.per_channel, args.format, args.serve, args.calibrate_method,
                           args.percentile, keep_float)
    except ModelLoadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {section['file']} (sha256 {section['sha256'][:12]}…, calibrated on "
          f"{section['calibration']['images']} training images) and recorded it in "
          f"{sidecar_path(args.model).name} as {INT8_SECTION}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
