"""Latency of the "Why?" heat-map for a whole photo: POST /api/explain end to end, and its stages.

    .venv/bin/python -m benchmarks.explain [--model models/export.pkl] [--repeat 5]

The photo is scikit-image's public-domain astronaut photo scaled to 2048x2048 and saved as a JPEG (the size the
page sends), so decoding is part of the measurement. It prints the median of `--repeat` runs of the request
through Flask's test client (decode, heat-map, overlay, PNG, JSON) and of the heat-map alone, with one torch /
ONNX Runtime thread, as the app runs. Goal: under 1 s for the fastai model. Bounded: about 30 s for both models.
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import statistics
import time
import warnings
from pathlib import Path

from PIL import Image
from skimage import data

from maskclassifier.classifier.explain import explain
from maskclassifier.core.config import Settings
from maskclassifier.core.images import load_image
from maskclassifier.web import create_app


def photo_jpeg(side: int = 2048) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(data.astronaut()).resize((side, side), Image.Resampling.LANCZOS).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def median_s(action, repeat: int) -> float:
    action()  # warm-up
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def measure(model: Path, jpeg: bytes, repeat: int) -> str:
    app = create_app(Settings(model_path=model, torch_threads=1))
    client = app.test_client()
    classifier = app.extensions["maskclassifier"]
    image = load_image(jpeg)

    def request() -> None:
        response = client.post("/api/explain", data={"file": (io.BytesIO(jpeg), "photo.jpg", "image/jpeg")})
        assert response.status_code == 200, response.get_json()

    request_s = median_s(request, repeat)
    map_s = median_s(lambda: explain(classifier, image), repeat)
    predict_s = median_s(lambda: classifier.predict(image), repeat)
    method = explain(classifier, image).method
    return (f"{model}: /api/explain {request_s:.3f} s (heat-map alone, {method}: {map_s:.3f} s; "
            f"classification alone {predict_s:.3f} s)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", type=Path, action="append", help="default: models/export.pkl and .onnx")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    jpeg = photo_jpeg()
    print(f"{platform.machine()}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}; "
          f"photo 2048x2048 JPEG {len(jpeg) // 1024} KB; median of {args.repeat}")
    for model in args.model or [Path("models/export.pkl"), Path("models/export.onnx")]:
        print(measure(model, jpeg, args.repeat))
    print(f"load average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
