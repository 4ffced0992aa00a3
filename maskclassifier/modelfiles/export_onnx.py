"""Export a fastai learner to ONNX for the slim server, and describe its preprocessing in the JSON sidecar.

    python -m maskclassifier.export_onnx models/export.pkl

writes models/export.onnx next to the learner and adds to models/export.json (created when absent, other keys
kept) the vocab, threshold, the preprocessing the learner applies at inference and the .onnx file's sha256.

The learner's validation pipeline is rebuilt by `maskclassifier.classifier.pipeline`: the item Resize, which the slim
backend repeats with Pillow, and the batch transforms as torch modules, which are baked into the ONNX graph in
front of the model, together with the final sigmoid. The graph takes uint8 pixels (batch, height, width, 3) at
the item size and returns probabilities. A transform that cannot be rebuilt stops the export, and the export is
checked against the learner's own fastai pipeline before the sidecar is written.

When the sidecar already records an export of this very .pkl at this opset, and the .onnx file is the one it
records, nothing is written (the shipped models/export.onnx stays as committed: an export is not byte-for-byte
reproducible); --force exports again anyway.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path

from maskclassifier.core.cli import silence_fastai_jit_warning

silence_fastai_jit_warning()  # before fastai is imported below: it warns at import time

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import onnxruntime  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from maskclassifier.classifier.fastai_backend import FastaiBackend, load_fastai_backend  # noqa: E402
from maskclassifier.classifier.onnx_backend import load_onnx_backend  # noqa: E402
from maskclassifier.classifier.pipeline import (  # noqa: E402
    BatchSteps,
    PipelineError,
    Standardise,
    ValidationPipeline,
    probe_images,
    rebuild,
    size_json,
)
from maskclassifier.core.errors import ModelLoadError  # noqa: E402
from maskclassifier.core.sidecar import DEFAULT_THRESHOLD, Sidecar, read_sidecar, resolve, sha256_file, sidecar_path  # noqa: E402

OPSET = 18
PARITY_TOLERANCE = 1e-3
INPUT_NAME = "pixels"
OUTPUT_NAME = "probabilities"


class ExportError(PipelineError):
    """The learner cannot be exported faithfully; the message says why and what to do."""


class InferenceGraph(nn.Module):
    """uint8 pixels (batch, height, width, 3) after the item Resize -> sigmoid probabilities (batch, categories)."""

    def __init__(self, model: nn.Module, steps: BatchSteps):
        super().__init__()
        self.steps = steps
        self.model = model

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.model(self.steps(pixels)))


def preprocessing(pipeline: ValidationPipeline) -> dict:
    """The sidecar's description: the keys the training command writes, plus each batch step the graph performs."""
    normalize = next((step.describe() for step in pipeline.steps if isinstance(step, Standardise)), None)
    return {
        **pipeline.item,
        "size": size_json(*pipeline.out_hw),
        "normalize": None if normalize is None else {"mean": normalize["mean"], "std": normalize["std"]},
        "batch_steps_in_onnx_graph": [step.describe() for step in pipeline.steps],
    }


def write_onnx(graph: InferenceGraph, item_hw: tuple[int, int], path: Path, opset: int) -> None:
    example = torch.zeros(2, *item_hw, 3, dtype=torch.uint8)
    batch = torch.export.Dim("batch", min=1, max=1024)
    graph.eval()
    program = torch.onnx.export(graph, (example,), input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                                opset_version=opset, dynamo=True, external_data=False,
                                dynamic_shapes={"pixels": {0: batch}}, verbose=False)
    program.save(str(path), external_data=False)
    onnx.checker.check_model(str(path))


def check_parity(fastai_backend: FastaiBackend, onnx_path: Path, sidecar: Sidecar) -> float:
    """Largest absolute difference from the learner's own fastai pipeline; ExportError above the tolerance."""
    images = probe_images()
    expected = fastai_backend.learner_probabilities(images)
    actual = load_onnx_backend(onnx_path, sidecar, 1).probabilities(images)
    difference = float(np.abs(expected - actual).max())
    if difference > PARITY_TOLERANCE:
        raise ExportError(f"the ONNX export differs from the fastai learner by {difference:.2e} "
                          f"(tolerance {PARITY_TOLERANCE:g}); {onnx_path} was not recorded in the sidecar")
    return difference


def is_up_to_date(model_path: Path, opset: int = OPSET) -> bool:
    """Whether MODEL.onnx is already the export of MODEL.pkl at `opset`, as MODEL.json records it: the sidecar's
    onnx section names this .onnx file with its current sha256, and was exported from the .pkl's current sha256."""
    model_path = Path(model_path)
    onnx_path = model_path.with_suffix(".onnx")
    if not (model_path.is_file() and onnx_path.is_file()):
        return False
    recorded = (read_sidecar(model_path) or Sidecar()).onnx or {}
    return (recorded.get("file") == onnx_path.name and recorded.get("opset") == opset
            and recorded.get("sha256") == sha256_file(onnx_path)
            and (recorded.get("exported_from") or {}).get("sha256") == sha256_file(model_path))


def export(model_path: Path, opset: int = OPSET) -> Sidecar:
    """Write MODEL.onnx beside MODEL.pkl (they share the sidecar MODEL.json) and return the updated sidecar."""
    model_path = Path(model_path)
    if model_path.suffix != ".pkl" or not model_path.is_file():
        raise ExportError(f"{model_path} is not a learner export: pass the .pkl written by learn.export() "
                          "(e.g. models/export.pkl)")
    onnx_path = model_path.with_suffix(".onnx")
    backend = load_fastai_backend(model_path)
    pipeline = rebuild(backend.learner.dls.valid)
    item_hw = (pipeline.resize.height, pipeline.resize.width)
    write_onnx(InferenceGraph(backend.learner.model, pipeline.batch_steps), item_hw, onnx_path, opset)

    sidecar = read_sidecar(model_path) or Sidecar()
    sidecar.vocab = backend.vocab
    sidecar.threshold = float(resolve(None, sidecar.threshold, DEFAULT_THRESHOLD))
    sidecar.architecture = resolve(None, sidecar.architecture, backend.architecture)
    sidecar.input_size = pipeline.out_hw[1]
    sidecar.preprocessing = {**sidecar.preprocessing, **preprocessing(pipeline)}
    sidecar.onnx = {
        "file": onnx_path.name,
        "sha256": sha256_file(onnx_path),
        "opset": opset,
        "input": {"name": INPUT_NAME, "dtype": "uint8", "layout": "NHWC", "height": item_hw[0], "width": item_hw[1]},
        "output": {"name": OUTPUT_NAME, "activation": "sigmoid"},
        "exported_from": {"file": model_path.name, "sha256": sha256_file(model_path)},
        "versions": {"torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__},
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    sidecar.onnx["parity"] = {"images": len(probe_images()), "max_abs_difference": check_parity(
        backend, onnx_path, sidecar)}
    sidecar.write(model_path)
    return sidecar


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m maskclassifier.export_onnx", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", type=Path, help="a fastai learner exported with learn.export() (.pkl)")
    parser.add_argument("--opset", type=int, default=OPSET, help=f"ONNX opset (default: {OPSET})")
    parser.add_argument("--force", action="store_true",
                        help="export even when the .onnx beside the .pkl is already its recorded export")
    args = parser.parse_args(argv)
    try:
        if not args.force and is_up_to_date(args.model, args.opset):
            print(f"{args.model.with_suffix('.onnx')} is up to date: the sidecar records it as exported from this "
                  f"{args.model.name} at opset {args.opset}; nothing written (pass --force to export again)")
            return 0
        sidecar = export(args.model, args.opset)
    except (ModelLoadError, PipelineError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    onnx_info = sidecar.onnx
    print(f"wrote {onnx_info['file']} (sha256 {onnx_info['sha256'][:12]}…) and updated "
          f"{sidecar_path(args.model).name}; largest difference from the fastai learner on "
          f"{onnx_info['parity']['images']} images: {onnx_info['parity']['max_abs_difference']:.1e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
