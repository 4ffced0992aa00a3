"""Export MTCNN's three networks (P-Net, R-Net, O-Net) to ONNX, for the torch-free face detector.

    python -m maskclassifier.modelfiles.export_mtcnn [--out models/mtcnn]

The weights are facenet-pytorch 2.6.0's (`pnet.pt`, `rnet.pt`, `onet.pt` inside its wheel, MIT licence, which is
copied next to the files as LICENCE.md). Each network is exported with its softmax, as facenet-pytorch runs it:

    pnet.onnx  pixels (n, 3, h, w)      ->  regression (n, 4, h', w'), probabilities (n, 2, h', w')

(pixels: float32, (x - 127.5) / 128, as facenet-pytorch feeds them.)
    rnet.onnx  pixels (n, 3, 24, 24)    ->  regression (n, 4), probabilities (n, 2)
    onet.onnx  pixels (n, 3, 48, 48)    ->  regression (n, 4), landmarks (n, 10), probabilities (n, 2)

The weights are stored as float16 (each Cast to float32 once, when ONNX Runtime loads the graph and folds the
constants) so the three files take about 1 MB instead of 2 MB: models/ must stay under 25 MB in all. Rounding
them moves the networks' outputs by about 1e-3; each export is checked against the torch network on random
inputs and refused above PARITY_TOLERANCE. The pyramid, NMS and box regression are
`maskclassifier.classifier.mtcnn_onnx`'s.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from importlib import metadata
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import torch
from facenet_pytorch.models.mtcnn import ONet, PNet, RNet
from onnx import helper, numpy_helper
from torch import nn

OUT_DIR = Path(__file__).resolve().parent.parent.parent / "models" / "mtcnn"
OPSET = 18
PARITY_TOLERANCE = 5e-3  # largest absolute difference in any output; float16 weights alone give about 1e-3
PROBE_SIZES = {"pnet": (37, 53), "rnet": (24, 24), "onet": (48, 48)}
OUTPUTS = {"pnet": ["regression", "probabilities"], "rnet": ["regression", "probabilities"],
           "onet": ["regression", "landmarks", "probabilities"]}


def networks() -> dict[str, nn.Module]:
    """facenet-pytorch's three networks with their shipped weights, in eval mode."""
    return {"pnet": PNet().eval(), "rnet": RNet().eval(), "onet": ONet().eval()}


def export_network(name: str, net: nn.Module, path: Path) -> None:
    """Write `net` to `path` (float32 weights); P-Net takes any height and width, all take any batch size."""
    height, width = PROBE_SIZES[name]
    example = torch.zeros(2, 3, height, width)
    batch = torch.export.Dim("batch", min=1, max=100_000)
    shapes = {0: batch}
    if name == "pnet":
        shapes |= {2: torch.export.Dim("height", min=12, max=10_000), 3: torch.export.Dim("width", min=12, max=10_000)}
    program = torch.onnx.export(net, (example,), input_names=["pixels"], output_names=OUTPUTS[name],
                                opset_version=OPSET, dynamo=True, external_data=False,
                                dynamic_shapes={"x": shapes}, verbose=False)
    program.save(str(path), external_data=False)


def store_float16(path: Path) -> None:
    """Rewrite the file with each float32 weight stored as float16 and a Cast back to float32 in front of its use."""
    model = onnx.load(str(path))
    graph = model.graph
    casts, kept = [], []
    for initializer in graph.initializer:
        if initializer.data_type != onnx.TensorProto.FLOAT:
            kept.append(initializer)
            continue
        half = numpy_helper.from_array(numpy_helper.to_array(initializer).astype(np.float16), initializer.name + "_f16")
        kept.append(half)
        casts.append(helper.make_node("Cast", [half.name], [initializer.name], to=onnx.TensorProto.FLOAT,
                                      name=initializer.name + "_cast"))
    del graph.initializer[:]
    graph.initializer.extend(kept)
    nodes = list(graph.node)
    del graph.node[:]
    graph.node.extend(casts + nodes)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def parity(name: str, net: nn.Module, path: Path, seed: int = 0) -> float:
    """Largest absolute difference between the torch network and the ONNX file on random normalised pixels."""
    height, width = (97, 131) if name == "pnet" else PROBE_SIZES[name]
    pixels = ((np.random.default_rng(seed).integers(0, 256, (8, 3, height, width)) - 127.5) / 128).astype(np.float32)
    with torch.inference_mode():
        expected = [output.numpy() for output in net(torch.from_numpy(pixels))]
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    actual = session.run(None, {"pixels": pixels})
    return max(float(np.abs(e - a).max()) for e, a in zip(expected, actual, strict=True))


def licence_text() -> str:
    distribution = metadata.distribution("facenet-pytorch")
    licence = next(file for file in distribution.files or [] if file.name.upper().startswith("LICEN"))
    return (f"# Licence of the MTCNN weights in this folder\n\n"
            f"`pnet.onnx`, `rnet.onnx` and `onet.onnx` hold the weights of facenet-pytorch "
            f"{distribution.version} (`facenet_pytorch/data/*.pt`, shipped inside its wheel), converted to ONNX "
            f"with `python -m maskclassifier.modelfiles.export_mtcnn` (weights stored as float16). "
            f"facenet-pytorch is published under the MIT licence:\n\n"
            + Path(distribution.locate_file(licence)).read_text())


def export(out: Path) -> dict[str, float]:
    """Write the three networks and the licence into `out`; the largest difference of each from torch."""
    out.mkdir(parents=True, exist_ok=True)
    differences = {}
    for name, net in networks().items():
        path = out / f"{name}.onnx"
        export_network(name, net, path)
        store_float16(path)
        differences[name] = parity(name, net, path)
        if differences[name] > PARITY_TOLERANCE:
            path.unlink()
            raise RuntimeError(f"{name}.onnx differs from facenet-pytorch's {name} by {differences[name]:.1e} "
                               f"(tolerance {PARITY_TOLERANCE:g}); removed")
    (out / "LICENCE.md").write_text(licence_text())
    for leftover in out.glob("*.data"):  # the exporter's external data, if any (all weights are inside)
        leftover.unlink()
    shutil.rmtree(out / "__pycache__", ignore_errors=True)
    return differences


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m maskclassifier.modelfiles.export_mtcnn", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=OUT_DIR, help=f"folder to write into (default: {OUT_DIR})")
    args = parser.parse_args(argv)
    differences = export(args.out)
    for name, difference in differences.items():
        size = (args.out / f"{name}.onnx").stat().st_size
        print(f"wrote {args.out / name}.onnx ({size / 1000:.0f} kB); largest difference from torch: {difference:.1e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
