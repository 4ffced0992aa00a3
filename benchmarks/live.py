"""The live camera's frame rate: a short synthetic video replayed through the Procfile's stack, one frame in flight.

    .venv/bin/python -m benchmarks.live [--model models/export.pkl] [--seconds 20] [--path /api/frame]

The video is 40 frames of 640x480 (what the page sends): scikit-image's public-domain astronaut photo's head moving
across and growing on the coffee photo, as JPEGs of quality 80, as the page encodes them. gunicorn runs as the
Procfile says with one worker (WEB_CONCURRENCY=1) on a loopback port; one client sends frame after frame over one
keep-alive connection, each only after the answer to the one before, as maskclassifier/web/static/live.js does, for
`--seconds`. It prints answered frames per second, latency p50/p95, the share of frames where the face was found, and
the server's own time per frame. Goal: at least 3 answered frames per second for one face. Bounded: about 1 minute.
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import platform
import statistics
import subprocess
import time
from pathlib import Path

from PIL import Image
from skimage import data

from benchmarks.backends import percentile_ms
from harness.multipart import Part, multipart
from harness.server import GunicornLog, free_port, procfile_command, wait_healthy

HEAD = (140, 20, 310, 230)  # the astronaut's head (and room for a mask) in her 512x512 photo
FRAME_SIZE = (640, 480)


def video(frames: int = 40) -> list[bytes]:
    """JPEG frames of a head moving left to right and growing from 0.6x to 1.2x its size."""
    head = Image.fromarray(data.astronaut()).crop(HEAD)
    background = Image.fromarray(data.coffee()).resize(FRAME_SIZE, Image.Resampling.BILINEAR)
    encoded = []
    for index in range(frames):
        progress = index / (frames - 1)
        scale = 0.6 + 0.6 * progress
        face = head.resize((round(head.width * scale), round(head.height * scale)), Image.Resampling.BILINEAR)
        frame = background.copy()
        frame.paste(face, (round(20 + progress * (FRAME_SIZE[0] - face.width - 40)), 20))
        buffer = io.BytesIO()
        frame.save(buffer, "JPEG", quality=80)
        encoded.append(buffer.getvalue())
    return encoded


def replay(port: int, path: str, frames: list[bytes], seconds: float) -> dict:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    latencies, server_ms, found, statuses = [], [], 0, []
    started = time.perf_counter()
    index = 0
    while time.perf_counter() - started < seconds:
        body, content_type = multipart([Part("file", frames[index % len(frames)], b"frame.jpg")])
        index += 1
        sent = time.perf_counter()
        connection.request("POST", path, body=body, headers={"Content-Type": content_type})
        response = connection.getresponse()
        answer = json.loads(response.read())
        statuses.append(response.status)
        if response.status != 200:
            continue
        latencies.append(time.perf_counter() - sent)
        found += bool(answer.get("faces"))
        if "server_ms" in answer:
            server_ms.append(answer["server_ms"])
    elapsed = time.perf_counter() - started
    connection.close()
    return {"answered": len(latencies), "elapsed": elapsed, "fps": len(latencies) / elapsed,
            "p50": percentile_ms(latencies, 50), "p95": percentile_ms(latencies, 95),
            "found": found / max(1, len(latencies)), "server": statistics.median(server_ms) if server_ms else None,
            "errors": sum(status != 200 for status in statuses)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", type=Path, default=Path("models/export.pkl"))
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--path", action="append", help="default: /api/frame and /api/predict?faces=on")
    args = parser.parse_args()
    frames = video()
    port = free_port()
    env = {**os.environ, "MODEL_PATH": str(args.model), "WEB_CONCURRENCY": "1"}
    server = subprocess.Popen(procfile_command(port), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True)
    log = GunicornLog(server.stdout)
    try:
        wait_healthy(f"http://127.0.0.1:{port}", server, output=log.tail)
        print(f"{platform.machine()}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} at the start; "
              f"{len(frames)} frames of {FRAME_SIZE[0]}x{FRAME_SIZE[1]} JPEG "
              f"({statistics.mean(map(len, frames)) / 1024:.0f} KB each); one worker, one frame in flight")
        for path in args.path or ["/api/frame", "/api/predict?faces=on"]:
            replay(port, path, frames, 2)  # warm-up
            result = replay(port, path, frames, args.seconds)
            server_time = f", server {result['server']:.0f} ms" if result["server"] is not None else ""
            print(f"{path}: {result['fps']:.2f} answered frames/s ({result['answered']} in {result['elapsed']:.1f} s), "
                  f"latency p50 {result['p50']:.0f} ms / p95 {result['p95']:.0f} ms{server_time}, face found in "
                  f"{result['found']:.0%} of frames, {result['errors']} errors")
        print(f"load average at the end {os.getloadavg()[0]:.2f}")
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
