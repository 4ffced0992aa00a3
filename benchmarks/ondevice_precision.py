"""Which precision on-device mode downloads (issue 30): the float ONNX twin against a float16-weights copy of it,
by size and by parity with the served float model on validation photos.

    PYTHONPATH=. .venv/bin/python -m benchmarks.ondevice_precision [--count 300] [--csv ../shared/data/masks/labels.csv]

The float16 copy stores every float initializer as float16 with a Cast back to float32 before use (the arithmetic
stays float32, as ONNX Runtime Web's wasm backend runs it); it is written to a temporary folder, never to models/.
Both run in ONNX Runtime (Python, CPU), on the server's own preprocessing (load_image, the item Resize). The int8
twin's figures are in BENCHMARKS.md ("Issue 20 again, model 12"): 98.6 % of validation photos keep their labels
without the float recheck, which a browser would need both models for.
"""

from __future__ import annotations

import argparse
import gzip
import tempfile
from pathlib import Path

import numpy as np

from benchmarks.ondevice import ROOT, percentile, sample


def float16_weights(source: Path, target: Path) -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(source))
    graph = model.graph
    casts = []
    for initializer in list(graph.initializer):
        if initializer.data_type != TensorProto.FLOAT or np.prod(initializer.dims) < 16:
            continue  # small constants (shapes, scales) stay float32
        values = numpy_helper.to_array(initializer).astype(np.float16)
        name = initializer.name
        initializer.CopyFrom(numpy_helper.from_array(values, name + "_fp16"))
        casts.append(helper.make_node("Cast", [name + "_fp16"], [name], to=TensorProto.FLOAT))
    for node in reversed(casts):
        graph.node.insert(0, node)
    onnx.save(model, str(target))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "export.onnx")
    parser.add_argument("--csv", type=Path, default=ROOT.parent / "shared" / "data" / "masks" / "labels.csv")
    args = parser.parse_args()

    import onnxruntime

    from maskclassifier.core.images import load_image
    from maskclassifier.core.resize import item_resize_from
    from maskclassifier.core.sidecar import read_sidecar

    sidecar = read_sidecar(args.model)
    resize = item_resize_from(sidecar.preprocessing)
    threshold = sidecar.threshold
    with tempfile.TemporaryDirectory() as folder:
        half = Path(folder) / "export.fp16.onnx"
        float16_weights(args.model, half)
        sessions = {name: onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
                    for name, path in (("float", args.model), ("float16 weights", half))}
        sizes = {name: (path.stat().st_size, len(gzip.compress(path.read_bytes(), 6)))
                 for name, path in (("float", args.model), ("float16 weights", half))}
        rows = {name: [] for name in sessions}
        for path in sample(args.csv, args.count):
            pixels = resize(load_image(path.read_bytes()))[None]
            for name, session in sessions.items():
                rows[name].append(session.run(None, {session.get_inputs()[0].name: pixels})[0][0])
    reference = np.array(rows["float"])
    for name in sessions:
        values = np.array(rows[name])
        same = ((values > threshold) == (reference > threshold)).all(axis=1).mean()
        difference = np.abs(values - reference).max(axis=1)
        print(f"{name}: {sizes[name][0] / 1e6:.1f} MB ({sizes[name][1] / 1e6:.1f} MB gzipped); same labels as float "
              f"{same:.1%} of {len(values)}; probability difference p99 {percentile(list(difference), 99):.2e}, "
              f"max {difference.max():.2e}")


if __name__ == "__main__":
    main()
