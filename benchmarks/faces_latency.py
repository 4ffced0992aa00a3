"""Per-face mode latency on 12-megapixel group photos with 1, 5 and 20 faces, and the face detector's share of it.

    .venv/bin/python -m benchmarks.faces_latency [--model models/export.pkl] [--repeat 3] [--threads 2]
        [--part groups|detectors|served|all] [--requests 40]

The photos are built from scikit-image's public-domain astronaut photo (no download): her head is tiled into a
grid on a textured background and saved as a JPEG, so decoding is part of the measurement. For each photo it
prints the median of `--repeat` runs of
  api    POST /api/predict?faces=on end to end (decode, whole-photo answer, detection, face crops, JSON)
  page   POST / in "every face" mode (the same, plus the annotated photo and the face thumbnails)
and the stages of the API request measured on their own: decode, whole-photo classification, detection, and the
classification of the face crops. "detector share" is detection's part of those four stages.

--part detectors times the two MTCNN detectors on their own, interleaved, 1 thread each: the app's
(`maskclassifier.classifier.mtcnn_onnx`, ONNX Runtime and NumPy) and facenet-pytorch's (torch), on a one-face 640x480
photo and the 12-megapixel group photos (p50 of wall time and of the thread's CPU time, which a busy machine inflates
less).

--part served starts gunicorn the way the Procfile does (one worker, bound to a loopback port) in the full install
(.venv, MODEL.pkl) and in the slim one (.venv-slim, MODEL.onnx; see benchmarks/backends.py for how to make it) and
sends `--requests` POST /api/predict?faces=auto of a one-face 640x480 JPEG, one after another: p50 / p95, the
faces found, and the worker's RSS and peak RSS (VmHWM) afterwards. Issue 20's goals: p50 under 150 ms, slim worker
under 250 MB with faces on.

Every part takes well under two minutes on 2 cores. Figures are only meaningful on an otherwise idle machine:
record the core count and `uptime`'s load with them (the script prints both).
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import platform
import signal
import statistics
import time
import urllib.request
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from skimage import data

from benchmarks.backends import memory_mb, start_one_worker, worker_pid
from harness.multipart import Part, multipart
from harness.server import ROOT, wait_healthy
from maskclassifier.classifier.faces import load_detector
from maskclassifier.core.config import Settings
from maskclassifier.core.errors import ConfigError, ModelLoadError
from maskclassifier.core.facebox import face_crops
from maskclassifier.core.images import load_image
from maskclassifier.web import create_app

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


ONE_FACE_SIZE = (640, 480)  # issue 20: a one-face 640 px photo with faces=auto answers in under 150 ms p50


def compare_detectors(repeat: int) -> None:
    """Both detectors on the same photos, interleaved, one thread each: p50 wall and thread CPU time."""
    detectors = {"onnx": load_detector(1, "onnx"), "torch": load_detector(1, "torch")}
    print("detect only, 1 thread, p50 of", repeat, "(wall / thread CPU)")
    print("photo                 | faces onnx / torch |    ONNX Runtime + NumPy |   facenet-pytorch (torch) "
          "| torch / onnx")
    photos = [("1 face 640x480", group_photo(1, ONE_FACE_SIZE))]
    photos += [(f"{faces} faces 4000x3000", group_photo(faces)) for faces in FACE_COUNTS]
    for label, photo in photos:
        times: dict[str, list[tuple[float, float]]] = {name: [] for name in detectors}
        found = {}
        for name, detector in detectors.items():  # warm-up, and what each finds
            found[name] = detector.detect(photo).found
        for _ in range(repeat):
            for name, detector in detectors.items():
                wall, cpu = time.perf_counter(), time.thread_time()
                detector.detect(photo)
                times[name].append((time.perf_counter() - wall, time.thread_time() - cpu))
        p50 = {name: (statistics.median(t[0] for t in runs) * 1000, statistics.median(t[1] for t in runs) * 1000)
               for name, runs in times.items()}
        print(f"{label:<21} | {found['onnx']:>10} / {found['torch']:<5} | "
              f"{p50['onnx'][0]:8.1f} / {p50['onnx'][1]:6.1f} ms | {p50['torch'][0]:10.1f} / {p50['torch'][1]:6.1f} ms "
              f"| {p50['torch'][0] / p50['onnx'][0]:5.2f}x")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process `pid` so far (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def served_one_face(python: Path, model: Path, requests: int, jpeg: bytes) -> dict:
    """gunicorn as the Procfile starts it (one worker) in `python`'s install; `requests` faces=auto requests."""
    server, url = start_one_worker(python, model)
    try:
        wait_healthy(url, server)
        body, content_type = multipart([Part("file", jpeg, b"one-face.jpg")])
        latencies, answers = [], []
        worker = worker_pid(server.pid)
        cpu_before = cpu_seconds(worker)
        for _ in range(requests):
            request = urllib.request.Request(url + "/api/predict?faces=auto", data=body,
                                             headers={"Content-Type": content_type})
            started = time.perf_counter()
            with urllib.request.urlopen(request, timeout=30) as response:
                answers.append(json.loads(response.read()))
            latencies.append(time.perf_counter() - started)
        cpu_ms = (cpu_seconds(worker) - cpu_before) / requests * 1000
        return {"cpu": cpu_ms, "p50": np.percentile(latencies, 50) * 1000, "p95": np.percentile(latencies, 95) * 1000,
                "modes": sorted({answer["mode"] for answer in answers}), "found": answers[-1].get("faces_found"),
                "rss": memory_mb(worker, "VmRSS"), "peak": memory_mb(worker, "VmHWM")}
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)


def compare_served(model: Path, requests: int, full_python: Path, slim_python: Path) -> None:
    jpeg_buffer = io.BytesIO()
    group_photo(1, ONE_FACE_SIZE).save(jpeg_buffer, format="JPEG", quality=90)
    installs = {"full (.pkl)": (full_python, model.with_suffix(".pkl")),
                "slim (.onnx)": (slim_python, model.with_suffix(".onnx"))}
    print(f"POST /api/predict?faces=auto, one-face {ONE_FACE_SIZE[0]}x{ONE_FACE_SIZE[1]} JPEG, gunicorn (Procfile "
          f"settings, 1 worker), {requests} requests one after another")
    print("(worker CPU: the worker's user + system CPU time per request, which a busy machine inflates less than "
          "the wall-clock latency)")
    print("install      | mode      | faces |  p50 ms |  p95 ms | worker CPU ms | worker RSS / peak MB")
    for name, (python, path) in installs.items():
        if not python.is_file():
            print(f"{name:<12} | skipped: {python} not found")
            continue
        row = served_one_face(python, path.resolve(), requests, jpeg_buffer.getvalue())
        print(f"{name:<12} | {','.join(row['modes']):<9} | {row['found']!s:>5} | {row['p50']:7.1f} | "
              f"{row['p95']:7.1f} | {row['cpu']:13.1f} | {row['rss']:.0f} / {row['peak']:.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=Path("models/export.pkl"))
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: the app's, cores / WEB_CONCURRENCY)")
    parser.add_argument("--part", choices=["groups", "detectors", "served", "all"], default="groups")
    parser.add_argument("--requests", type=int, default=40, help="--part served: requests per install (1-500)")
    parser.add_argument("--full-python", type=Path, default=ROOT / ".venv/bin/python")
    parser.add_argument("--slim-python", type=Path, default=ROOT / ".venv-slim/bin/python")
    args = parser.parse_args()
    if not 1 <= args.requests <= 500:
        parser.error("--requests must be between 1 and 500")
    warnings.simplefilter("ignore")
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {platform.node()}: {os.cpu_count()} cores, "
          f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if args.part in ("detectors", "all"):
        compare_detectors(max(args.repeat, 5))
    if args.part in ("served", "all"):
        compare_served(args.model, args.requests, args.full_python, args.slim_python)
    if args.part not in ("groups", "all"):
        return
    try:
        app = create_app(Settings(model_path=args.model, torch_threads=args.threads))
    except (ConfigError, ModelLoadError) as exc:
        raise SystemExit(str(exc)) from None
    if app.extensions["face_detector"] is None:
        raise SystemExit("per-face mode needs the face detector's models/mtcnn/*.onnx")
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
