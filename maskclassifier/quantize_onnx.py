"""Quantize the ONNX twin to int8 (static, QDQ) with ONNX Runtime's quantization tools, calibrated on training images.

    python -m maskclassifier.quantize_onnx models/export.onnx --csv ../shared/data/masks/labels.csv
        [--images-root DIR] [--calibration 200] [--seed 0] [--no-per-channel] [--format qdq|qoperator] [--serve]

writes models/export.int8.onnx next to the float model and records it in the sidecar (models/export.json) as
`onnx_int8`: the file and its sha256, the float file it was made from, the format and the calibration images.
Calibration uses `--calibration` training images (rows whose `is_valid` is not True), shuffled with `--seed`, each
decoded and resized exactly as the app does before the graph (`load_image`, then the item Resize), so the
calibrated ranges are those of served inputs. `benchmarks/int8.py` compares the two models' speed and answers.

Needs the full install (`onnx`; ONNX Runtime's quantizer imports it). Defaults are the variant that kept most of
the float model's answers on the shipped model (see BENCHMARKS.md, "int8"): per-channel weights, uint8
activations, MinMax calibration; the shipped model still lost accuracy with it, which is why the app serves the
float model unless told otherwise.
"""

from __future__ import annotations

import argparse
import csv
import random
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import onnxruntime
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process

from maskclassifier.errors import ImageError, ModelLoadError
from maskclassifier.images import load_image
from maskclassifier.onnx import INT8_SECTION, OnnxBackend, load_onnx_backend
from maskclassifier.sidecar import read_sidecar, sha256_file, sidecar_path

FORMATS = {"qdq": QuantFormat.QDQ, "qoperator": QuantFormat.QOperator}


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
    """The graph's input for each image, made as the app makes it; unreadable images are skipped and counted."""

    def __init__(self, backend: OnnxBackend, files: list[Path]):
        self.backend, self.files, self.used, self.skipped = backend, files, 0, 0
        self._inputs = self._read()

    def _read(self) -> Iterator[dict]:
        name = self.backend.session.get_inputs()[0].name
        for file in self.files:
            try:
                pixels = self.backend.resize(load_image(file.read_bytes()))
            except (OSError, ImageError):
                self.skipped += 1
                continue
            self.used += 1
            yield {name: pixels[None]}

    def get_next(self) -> dict | None:
        return next(self._inputs, None)


def quantize(float_path: Path, files: list[Path], per_channel: bool = True, quant_format: str = "qdq",
             serve: bool = False) -> dict:
    """Write int8_path(float_path) and record it in the sidecar (`serve`: the app serves it unless ONNX_PRECISION
    says otherwise); returns the sidecar's new `onnx_int8` section."""
    sidecar = read_sidecar(float_path)
    backend = load_onnx_backend(float_path, sidecar, threads=None)
    target = int8_path(float_path)
    prepared = target.with_name(target.stem + ".prepared.onnx")
    reader = ServedInputs(backend, files)
    try:
        # shape inference and graph clean-up first, as ONNX Runtime's quantization guide recommends
        quant_pre_process(str(float_path), str(prepared), skip_symbolic_shape=True)
        quantize_static(str(prepared), str(target), reader, quant_format=FORMATS[quant_format],
                        per_channel=per_channel, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
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
        "calibration": {"method": "minmax", "images": reader.used, "skipped": reader.skipped,
                        "split": "training"},
        "serve": serve,
        "onnxruntime": onnxruntime.__version__,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    sidecar.onnx_int8 = section
    sidecar.write(float_path)  # models/export.json, beside both
    return section


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m maskclassifier.quantize_onnx", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", type=Path, help="the float ONNX twin (models/export.onnx)")
    parser.add_argument("--csv", type=Path, required=True, help="labelled CSV (fname, is_valid): calibration images")
    parser.add_argument("--images-root", type=Path, help="folder the fname paths start in (default: the CSV's)")
    parser.add_argument("--calibration", type=int, default=200, help="training images to calibrate on (default 200)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-per-channel", dest="per_channel", action="store_false",
                        help="one scale per weight tensor instead of one per output channel")
    parser.add_argument("--format", choices=sorted(FORMATS), default="qdq")
    parser.add_argument("--serve", action="store_true",
                        help="record that the app serves the int8 model by default (ONNX_PRECISION overrides it)")
    args = parser.parse_args(argv)
    if args.model.suffix != ".onnx" or args.model.name.endswith(".int8.onnx"):
        parser.error("pass the float ONNX twin, e.g. models/export.onnx")
    if not 1 <= args.calibration <= 5000:
        parser.error("--calibration must be between 1 and 5000")
    files = calibration_files(args.csv, args.images_root or args.csv.parent, args.calibration, args.seed)
    if not files:
        parser.error(f"{args.csv} lists no training images")
    try:
        section = quantize(args.model, files, args.per_channel, args.format, args.serve)
    except ModelLoadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {section['file']} (sha256 {section['sha256'][:12]}…, calibrated on "
          f"{section['calibration']['images']} training images) and recorded it in "
          f"{sidecar_path(args.model).name} as {INT8_SECTION}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
