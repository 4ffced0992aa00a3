"""Per-face mode latency on 12-megapixel group photos with 1, 5 and 20 faces, and the face detector's share of it.

    .venv/bin/python -m benchmarks.faces_latency [--model models/export.pkl] [--repeat 3] [--threads 2]

The photos are built from scikit-image's public-domain astronaut photo (no download): her head is tiled into a
grid on a textured background and saved as a JPEG, so decoding is part of the measurement. For each photo it
prints the median of `--repeat` runs of
  api    POST /api/predict?faces=on end to end (decode, whole-photo answer, detection, face crops, JSON)
  page   POST / in "every face" mode (the same, plus the annotated photo and the face thumbnails)
and the stages of the API request measured on their own: decode, whole-photo classification, detection, and the
classification of the face crops. "detector share" is detection's part of those four stages.
Figures are only meaningful on an otherwise idle machine: record the core count with them.
"""

from __future__ import annotations

import argparse
import io
import math
import os
import platform
import statistics
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from PIL import Image
from skimage import data

from maskclassifier.web import create_app
from maskclassifier.config import Settings
from maskclassifier.errors import ConfigError, ModelLoadError
from maskclassifier.facebox import face_crops
from maskclassifier.images import load_image

PHOTO_SIZE = (4000, 3000)  # 12 megapixels, a phone's default
HEAD = (140, 20, 310, 230)  # the astronaut's head (and room for a mask) in her 512x512 photo
FACE_COUNTS = (1, 5, 20)


def group_photo(faces: int, size: tuple[int, int] = PHOTO_SIZE, background: Image.Image | None = None) -> Image.Image:
    """`faces` heads in a grid filling a photo of `size`, like a posed group photo, on `background` (default: the
    coffee photo, texture rather than a flat background)."""
    width, height = size
    cols = math.ceil(math.sqrt(faces * width / height))
    rows = math.ceil(faces / cols)
    head = Image.fromarray(data.astronaut()).crop(HEAD)
    scale = 0.8 * min(width / cols / head.width, height / rows / head.height)
    head = head.resize((round(head.width * scale), round(head.height * scale)), Image.LANCZOS)
    photo = background.copy() if background else Image.fromarray(data.coffee()).resize(size, Image.BILINEAR)
    for index in range(faces):
        row, col = divmod(index, cols)
        cell_x, cell_y = col * width // cols, row * height // rows
        photo.paste(head, (cell_x + (width // cols - head.width) // 2, cell_y + (height // rows - head.height) // 2))
    return photo


def group_photo_jpeg(faces: int, size: tuple[int, int] = PHOTO_SIZE) -> bytes:
    """A JPEG of group_photo(faces, size)."""
    buffer = io.BytesIO()
    group_photo(faces, size).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def timed(action: Callable[[], object]) -> tuple[float, object]:
    start = time.perf_counter()
    result = action()
    return time.perf_counter() - start, result


def median_seconds(action: Callable[[], object], repeat: int) -> float:
    return statistics.median(timed(action)[0] for _ in range(repeat))


def post(client, path: str, jpeg: bytes, **form) -> None:
    response = client.post(path, data={"file": (io.BytesIO(jpeg), "group.jpg", "image/jpeg"), **form})
    if response.status_code != 200:
        raise SystemExit(f"{path} answered {response.status_code}: {response.get_data(as_text=True)[:300]}")


def stage_times(app, jpeg: bytes) -> dict:
    """The API's per-face work, stage by stage, in the order the request runs it."""
    classifier, detector = app.extensions["maskclassifier"], app.extensions["face_detector"]
    times = {}
    times["decode"], image = timed(lambda: load_image(jpeg))
    times["whole"], _ = timed(lambda: classifier.predict(image))
    times["detect"], scan = timed(lambda: detector.detect(image))
    margin = app.config["SETTINGS"].face_margin
    times["crops"], _ = timed(lambda: classifier.predict_many(face_crops(image, scan.faces, margin)))
    times["found"] = len(scan.faces)
    return times


def measure(app, faces: int, repeat: int) -> dict:
    jpeg = group_photo_jpeg(faces)
    client = app.test_client()
    stages = [stage_times(app, jpeg) for _ in range(repeat)]
    row = {key: statistics.median(run[key] for run in stages) for key in ("decode", "whole", "detect", "crops")}
    row["share"] = statistics.median(run["detect"] / (run["decode"] + run["whole"] + run["detect"] + run["crops"])
                                     for run in stages)
    row["found"] = stages[0]["found"]
    row["faces"] = faces
    row["api"] = median_seconds(lambda: post(client, "/api/predict?faces=on", jpeg), repeat)
    row["page"] = median_seconds(lambda: post(client, "/", jpeg, faces="on"), repeat)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=Path("models/export.pkl"))
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: the app's, cores / WEB_CONCURRENCY)")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    try:
        app = create_app(Settings(model_path=args.model, torch_threads=args.threads))
    except (ConfigError, ModelLoadError) as exc:
        raise SystemExit(str(exc)) from None
    if app.extensions["face_detector"] is None:
        raise SystemExit("per-face mode needs torch and facenet-pytorch (the full install)")
    print(f"{platform.node()}: {os.cpu_count()} cores, {torch.get_num_threads()} torch threads, "
          f"{PHOTO_SIZE[0]}x{PHOTO_SIZE[1]} JPEG, model {args.model} "
          f"({app.extensions['maskclassifier'].backend.architecture}), median of {args.repeat}")
    print("faces found |   api  |  page  | decode | whole  | detect | crops  | detector share")
    for faces in FACE_COUNTS:
        row = measure(app, faces, args.repeat)
        print(f"{row['faces']:>5} {row['found']:>5} | " + " | ".join(
            f"{row[key]:5.2f}s" for key in ("api", "page", "decode", "whole", "detect", "crops"))
            + f" | {row['share']:>6.0%}")


if __name__ == "__main__":
    main()
