"""A room of phones on conference Wi-Fi: slow uploads of big photos, group photos, hostile files and stalled sockets.

    .venv/bin/python -m benchmarks.crowd [--root DIR] [--model PATH] [--phones 20] [--duration 120] [--trickles 2]
                                         [--attacker 0] [--on-device 0] [--seed 0] [--env KEY=VALUE ...]

It starts the web command of DIR's Procfile (default: this checkout) with cwd DIR, this virtualenv's gunicorn,
MODEL_PATH=--model (absolute), WEB_CONCURRENCY=1 and each --env KEY=VALUE (TORCH_NUM_THREADS, INFERENCE_SLOTS, ...),
bound to a free 127.0.0.1 port; nothing else is contacted. The same script so measures an older checkout (a
`git worktree` of it) side by side with this one.

The payloads are made before the server starts, from scikit-image's public-domain photos: one-face photos as the
page sends them (2048 px long side, JPEG quality 92), posted to /api/predict without a faces field (with
`--one-face-mode auto`, with faces=auto as the page's default mode sends them: face detection and a close-up, about
ten times the work); group photos (2048 px, 4 to 12 tiled copies of the astronaut's head) with faces=auto; and
hostile uploads: a
93-byte PNG claiming 7071x7071 16-bit grey with one row of data (must be 400 corrupt_image), a sub-MB JPEG of 60
faces with faces=auto (200, or 422 too_many_faces) and a few cases of harness/hostile.py (their own status).
After a warm-up that posts one payload of each kind, `--phones` threads each loop until `--duration` ends: pick a
kind (75 % one-face, 20 % group, 5 % hostile), an upload speed from 30 to 500 KB/s, send the headers and then the
body at that speed over a raw socket (Connection: close), read the whole answer (60 s limit), look at it for 1-3 s.
"Server time" runs from the last body byte sent to the end of the answer (waiting for a slot included), "total
time" from connecting. `--trickles` more threads hold sockets open as a bad network or a slowloris would: half send
a request line and then a header line every 2 s until the server closes, half connect and send nothing; each
reconnects when closed. `--attacker N` adds one hostile laptop: N connections that send a photo upload's headers
(Content-Length 300 KB) and then its body at 1 byte/s, reconnecting whenever the server closes one (issue 27: 32 of
them stalled every other request for a minute). Each phone's requests carry an X-Forwarded-For address of its own and
the attacker's all carry one other address, as Heroku's router would add them (gunicorn trusts it from 127.0.0.1);
a stack that ignores the header is measured the same way. Requests under way when the duration ends are finished
(each is bounded), then gunicorn is stopped; the run ends by itself. `--on-device SHARE` puts that share of the
phones (seeded) in on-device mode, as the page runs them: each first downloads the runtime's WebAssembly, the model
and the detector from the server (the addresses GET /api/model gives, gzipped, read at 250-2500 KB/s: the room's
downlink), then for each photo posts only the numbers its browser computed (POST /result/computed, JSON: the whole
photo's probabilities or 4-12 faces'), never a photo; the rest of the phones post photos as above.

It prints the machine, the root's commit and the settings; per kind the requests and p50/p95 of server and total
time; the answers by status and error code; the share of 503 busy; unexpected answers (no HTTP answer, a 5xx other
than 503 busy, a hostile case with another status than its own); how long trickling connections lived and how many
got a 408; worker kills, restarts and errors from gunicorn's log; each worker's RSS after the warm-up and its peak
(VmHWM) during the load. Goals, each printed as met or MISSED (exit status 1 if any is missed): 0 worker kills,
0 unexpected 5xx or missing answers, 503s under 5 % of requests, p95 server time of one-face photos under 3 s.
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import json
import math
import os
import platform
import random
import re
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from PIL import Image
from skimage import data

from benchmarks import faces_latency
from benchmarks.backends import memory_mb, training_running
from benchmarks.load import worker_pids
from harness.files import png_one_row_of
from harness.hostile import hostile_uploads
from harness.multipart import Part, multipart
from harness.server import ROOT, GunicornLog, free_port, procfile_web_command, stop, wait_healthy

PHOTO_SIZE = (2048, 1536)  # the page shrinks photos to a 2048 px long side (web.UPLOAD_MAX_SIDE)
PAGE_JPEG_QUALITY = 92  # the page's canvas.toBlob(..., "image/jpeg", 0.92)
HEAD = faces_latency.HEAD
KINDS = {"one-face": 0.75, "group": 0.20, "hostile": 0.05}  # what a phone on the server path sends
# What a phone in on-device mode (--on-device) asks of the server: its first visit's downloads (the runtime, the
# model and the detector, gzipped, read at DOWNLOAD_KB_S), then for each photo the numbers its browser computed,
# to be worded (POST /result/computed); never a photo.
DEVICE_KINDS = ("download", "device")
DOWNLOAD_KB_S = (250, 2500)  # the room's Wi-Fi downlink per phone: faster than its uplink
DOWNLOAD_TIMEOUT_S = 120.0
GROUP_FACES = (4, 6, 9, 12)
CROWDED_FACES = 60
SPEED_KB_S = (30, 500)  # conference Wi-Fi shared by a room, per phone (KB = 1000 bytes)
SEND_SLICE_S = 0.05  # a throttled body goes out in pieces of 50 ms worth
READ_TIMEOUT_S = 60.0
LOOK_S = (1.0, 3.0)  # a person looking at the answer before the next photo
TRICKLE_EVERY_S = 2.0
MAX_RESPONSE_BYTES = 16 << 20  # the model, gzipped, is 9.5 MB
MAX_REQUESTS = 100_000  # in all, whatever the duration
HOSTILE_CASES = (  # from harness/hostile.py; all under 1.1 MB, so a slow phone still sends one within 40 s
    "png-bomb-65535x65535", "png-ztxt-bomb", "jpeg-scan-bomb", "tiff-bomb-100000x100000", "gif-5000-frames",
    "tiff-2000-pages", "jpeg-2000-comment-segments", "random-1m", "truncated-jpeg", "200-files", "2000-form-parts",
    "multipart-never-closed",
)
SETTINGS = ("WEB_CONCURRENCY", "GUNICORN_THREADS", "TORCH_NUM_THREADS", "INFERENCE_SLOTS", "QUEUE_TIMEOUT",
            "UPLOAD_TIMEOUT", "FACE_TIME_BUDGET", "MAX_UPLOAD_MB", "MASK_TTA", "MASK_THRESHOLD", "FACE_MARGIN")
DEFAULT_MAX_UPLOAD_MB = 10.0
GOAL_BUSY_SHARE = 0.05
GOAL_ONE_FACE_P95_S = 3.0
KILL_PATTERN = r"WORKER TIMEOUT|was sent SIGKILL|Perhaps out of memory"
ERROR_PATTERN = r"Traceback|\[ERROR\]"


# ---- payloads ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Payload:
    kind: str
    name: str
    body: bytes
    content_type: str | None
    query: str = ""
    expected: frozenset[int] | None = None  # hostile cases: the right statuses; None: any answer but a 5xx
    expected_code: str | None = None
    path: str = "/api/predict"
    method: str = "POST"

    def head(self, port: int, forwarded_for: str = "") -> bytes:
        lines = [f"{self.method} {self.path}{'?' + self.query if self.query else ''} HTTP/1.1",
                 f"Host: 127.0.0.1:{port}", "User-Agent: benchmarks.crowd", "Accept: application/json",
                 "Accept-Encoding: gzip", f"Content-Length: {len(self.body)}",
                 "Connection: close"] + ([f"X-Forwarded-For: {forwarded_for}"] if forwarded_for else [])
        if self.content_type is not None:
            lines.append(f"Content-Type: {self.content_type}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def jpeg(image: Image.Image, quality: int = PAGE_JPEG_QUALITY) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def background(size: tuple[int, int], seed: int) -> Image.Image:
    """scikit-image's coffee photo stretched to `size`, with a phone sensor's noise so the JPEG has a real size."""
    pixels = np.asarray(Image.fromarray(data.coffee()).resize(size, Image.BILINEAR), dtype=np.float32)
    noise = np.random.default_rng(seed).normal(0, 4, pixels.shape)
    return Image.fromarray((pixels + noise).clip(0, 255).astype(np.uint8))


def one_face_photo(size: tuple[int, int], side: int, at: tuple[float, float], seed: int) -> Image.Image:
    """The astronaut's photo (one face) scaled to `side` px, placed at a fraction `at` of the free room."""
    photo = background(size, seed)
    astronaut = Image.fromarray(data.astronaut()).resize((side, side), Image.LANCZOS)
    photo.paste(astronaut, (round((size[0] - side) * at[0]), round((size[1] - side) * at[1])))
    return photo


def close_up_photo(size: tuple[int, int], seed: int) -> Image.Image:
    """Her head filling most of the frame, as a selfie would."""
    photo = background(size, seed)
    head = Image.fromarray(data.astronaut()).crop(HEAD)
    scale = 0.9 * size[1] / head.height
    head = head.resize((round(head.width * scale), round(head.height * scale)), Image.LANCZOS)
    photo.paste(head, ((size[0] - head.width) // 2, (size[1] - head.height) // 2))
    return photo


def group_photo(faces: int, size: tuple[int, int] = PHOTO_SIZE, seed: int = 0) -> Image.Image:
    """`faces` copies of the astronaut's head in a grid filling the photo, like a posed group photo."""
    return faces_latency.group_photo(faces, size, background(size, seed))


def under_a_megabyte(image: Image.Image) -> bytes:
    for quality in range(PAGE_JPEG_QUALITY, 40, -4):
        body = jpeg(image, quality)
        if len(body) < 1_000_000:
            return body
    raise RuntimeError("could not make the crowded photo smaller than 1 MB")


def form(photo: bytes, faces: str | None = None) -> tuple[bytes, str]:
    parts = [Part("faces", faces.encode(), None, None)] if faces else []
    return multipart(parts + [Part("file", photo)])


def device_payloads(categories: int) -> list[Payload]:
    """What an on-device browser posts for a photo (static/ondevice.js classify) of a model with `categories`
    categories: the whole photo's probabilities, or in automatic mode also each face found (4 to 12), as JSON to
    /result/computed."""
    rng = random.Random(0)
    made = [Payload("device", "whole-photo", json.dumps({"mode": "off", "probabilities": [
        rng.random() for _ in range(categories)]}).encode(), "application/json", path="/result/computed")]
    for faces in GROUP_FACES:
        boxes = [[80 + 150 * index, 300, 200 + 150 * index, 450] for index in range(faces)]
        made.append(Payload("device", f"faces-{faces}", json.dumps({
            "mode": "auto", "size": list(PHOTO_SIZE), "found": faces,
            "probabilities": [rng.random() for _ in range(categories)],
            "faces": [{"box": box, "score": 0.99, "probabilities": [rng.random() for _ in range(categories)]}
                      for box in boxes]}).encode(), "application/json", path="/result/computed"))
    return made


def on_device_payloads(port: int) -> dict[str, list[Payload]]:
    """What on-device phones send the server, as GET /api/model describes the served model: "download", the files
    a first visit downloads, and "device", the numbers posted for each photo (both empty: no on-device mode)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/model", timeout=30) as response:
        model = json.load(response)
    device = model.get("on_device")
    if not device:
        return {"download": [], "device": []}
    urls = [device["model_url"], device["runtime"]["wasm_url"], *device.get("detector", {}).values()]
    return {"download": [Payload("download", url.rsplit("/", 1)[-1].split("-")[0], b"", None, path=url,
                                 method="GET") for url in urls],
            "device": device_payloads(len(model["categories"]))}


def make_payloads(max_upload_bytes: int, one_face_mode: str | None = None) -> dict[str, list[Payload]]:
    portrait = (PHOTO_SIZE[1], PHOTO_SIZE[0])
    one_face = {"astronaut-centre": one_face_photo(PHOTO_SIZE, 1400, (0.5, 0.5), 1),
                "astronaut-left": one_face_photo(PHOTO_SIZE, 1000, (0.1, 0.3), 2),
                "astronaut-portrait": one_face_photo(portrait, 1536, (0.5, 0.2), 3),
                "astronaut-close-up": close_up_photo(PHOTO_SIZE, 4)}
    payloads: dict[str, list[Payload]] = {kind: [] for kind in (*KINDS, *DEVICE_KINDS)}
    for name, image in one_face.items():
        payloads["one-face"].append(Payload("one-face", name, *form(jpeg(image), one_face_mode)))
    for faces in GROUP_FACES:
        payloads["group"].append(Payload("group", f"group-{faces}-faces",
                                         *form(jpeg(group_photo(faces, seed=faces)), "auto")))
    payloads["hostile"] += [
        Payload("hostile", "png-7071x7071-16-bit-one-row", *form(png_one_row_of(7071, 7071)),
                expected=frozenset({400}), expected_code="corrupt_image"),
        Payload("hostile", f"jpeg-{CROWDED_FACES}-faces", *form(under_a_megabyte(group_photo(CROWDED_FACES)), "auto"),
                expected=frozenset({200, 422}), expected_code="too_many_faces"),
    ]
    corpus = {upload.name: upload for upload in hostile_uploads(max_upload_bytes)}
    for name in HOSTILE_CASES:
        upload = corpus[name]
        payloads["hostile"].append(Payload("hostile", name, upload.body, upload.content_type, upload.query,
                                           frozenset({upload.status}), upload.code))
    return payloads


# ---- one phone's request ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    payload: Payload
    speed_kb_s: float | None  # None: sent at full speed (the warm-up)
    status: int | None  # None: no HTTP answer
    code: str | None  # the JSON "error" code
    retry_after: str | None
    total_s: float
    server_s: float  # from the last body byte sent (or the send failing) to the end of the answer
    failure: str = ""  # what went wrong on the socket, if anything
    warm_up: bool = False

    @property
    def unexpected(self) -> str | None:
        """Why this answer is wrong, or None."""
        if self.status is None:
            return f"no HTTP answer ({self.failure})"
        if self.status >= 500 and not (self.status == 503 and self.code == "busy"):
            return f"{self.status} {self.code or '-'}"
        expected = self.payload.expected
        if expected is not None and self.status not in expected:
            wanted = "/".join(map(str, sorted(expected))) + (f" {self.payload.expected_code}" if len(expected) == 1
                                                             and self.payload.expected_code else "")
            return f"{self.status} {self.code or '-'} instead of {wanted}"
        return None

    @property
    def missing_or_5xx(self) -> bool:
        return self.status is None or (self.status >= 500 and not (self.status == 503 and self.code == "busy"))


def send_throttled(sock: socket.socket, body: bytes, bytes_per_s: float | None, stop: threading.Event) -> None:
    """Send `body` at `bytes_per_s`: each slice leaves when a link of that speed would have finished sending it."""
    if bytes_per_s is None:
        sock.sendall(body)
        return
    size = max(256, int(bytes_per_s * SEND_SLICE_S))
    started = time.monotonic()
    for offset in range(0, len(body), size):
        piece = body[offset:offset + size]
        delay = started + (offset + len(piece)) / bytes_per_s - time.monotonic()
        if delay > 0 and stop.wait(delay):
            raise InterruptedError("the run was stopped")
        sock.sendall(piece)


def read_all(sock: socket.socket, deadline: float, bytes_per_s: float | None = None) -> tuple[bytes, str]:
    """Everything the server sends until it closes, within `deadline` (time.monotonic()), read no faster than
    `bytes_per_s` (a phone's downlink; None: as it comes); and what went wrong."""
    chunks, size, started = [], 0, time.monotonic()
    while size < MAX_RESPONSE_BYTES:
        if bytes_per_s:
            ahead = started + size / bytes_per_s - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return b"".join(chunks), f"no end of answer in {deadline - started:.0f} s"
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        except OSError as error:
            return b"".join(chunks), f"{type(error).__name__} while reading"
        if not chunk:
            return b"".join(chunks), ""
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks), "answer over 16 MB"


def parse_response(raw: bytes) -> tuple[int | None, str | None, str | None, str]:
    """Status, JSON error code, Retry-After, and a note when the answer is cut short."""
    head, separator, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    match = re.match(r"HTTP/\d\.\d (\d{3})", lines[0])
    if not match:
        return None, None, None, ""
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    note = "" if separator else "answer cut short in its headers"
    length = headers.get("content-length", "")
    if length.isdigit() and len(body) < int(length):
        note = "answer cut short in its body"
    code = None
    if headers.get("content-type", "").startswith("application/json"):
        try:
            code = json.loads(body).get("error")
        except (ValueError, AttributeError):
            pass
    return int(match.group(1)), code, headers.get("retry-after"), note


def post(port: int, payload: Payload, speed_kb_s: float | None, stop: threading.Event,
         warm_up: bool = False, forwarded_for: str = "", read_kb_s: float | None = None) -> Answer:
    started = time.monotonic()
    failure, raw = "", b""
    try:
        sock = socket.create_connection(("127.0.0.1", port), timeout=READ_TIMEOUT_S)
    except OSError as error:
        now = time.monotonic()
        return Answer(payload, speed_kb_s, None, None, None, now - started, 0.0, f"connect: {type(error).__name__}",
                      warm_up)
    with sock:
        try:
            sock.sendall(payload.head(port, forwarded_for))
            send_throttled(sock, payload.body, None if speed_kb_s is None else speed_kb_s * 1000, stop)
        except InterruptedError:
            failure = "stopped"
        except OSError as error:  # the server answered (or gave up) before the whole body was sent: read on
            failure = f"{type(error).__name__} while sending"
        body_sent = time.monotonic()
        if failure != "stopped":
            raw, read_failure = read_all(sock, body_sent + (DOWNLOAD_TIMEOUT_S if read_kb_s else READ_TIMEOUT_S),
                                         None if read_kb_s is None else read_kb_s * 1000)
            failure = "; ".join(filter(None, [failure, read_failure]))
    ended = time.monotonic()
    status, code, retry_after, note = parse_response(raw)
    if note:
        failure = "; ".join(filter(None, [failure, note]))
    return Answer(payload, speed_kb_s, status, code, retry_after, ended - started, ended - body_sent, failure, warm_up)


_budget_lock = threading.Lock()


def phone(index: int, port: int, payloads: dict[str, list[Payload]], seed: int, stop_at: float,
          stop: threading.Event, budget: list[int], answers: list[Answer], on_device: float = 0.0) -> None:
    """One phone until `stop_at`: on the server path (posting photos), or with probability `on_device` in
    on-device mode (its first visit's downloads, then only numbers to word)."""
    rng = random.Random(f"{seed}-phone-{index}")
    kinds, weights = list(KINDS), list(KINDS.values())
    device = bool(payloads["download"]) and rng.random() < on_device
    if stop.wait(rng.uniform(0, LOOK_S[1])):  # people do not all press the button in the same instant
        return
    if device:
        downlink = rng.uniform(*DOWNLOAD_KB_S)
        for payload in payloads["download"]:
            if time.monotonic() >= stop_at or stop.is_set():
                return
            answers.append(post(port, payload, None, stop, forwarded_for=phone_address(index), read_kb_s=downlink))
    while time.monotonic() < stop_at and not stop.is_set():
        with _budget_lock:
            if budget[0] <= 0:
                return
            budget[0] -= 1
        payload = rng.choice(payloads["device"] if device else payloads[rng.choices(kinds, weights)[0]])
        answers.append(post(port, payload, rng.uniform(*SPEED_KB_S), stop,  # list.append is atomic
                            forwarded_for=phone_address(index)))
        stop.wait(rng.uniform(*LOOK_S))


# ---- trickling and silent connections ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Trickle:
    mode: str  # "headers": a header line every 2 s; "silent": nothing at all; "body": a body at 1 byte/s
    lived_s: float
    closed_by_server: bool  # False: still open when the run ended (closed here)
    answer: str  # the status line the server sent, if any

    @property
    def got_408(self) -> bool:
        return bool(re.match(r"HTTP/\d\.\d 408", self.answer))


ATTACKER_ADDRESS = "198.51.100.66"  # documentation addresses (RFC 5737): header values only, never contacted
ATTACKER_BODY_BYTES = 300_000


def phone_address(index: int) -> str:
    return f"203.0.113.{index % 250 + 1}"


def trickle(index: int, port: int, stop_at: float, stop: threading.Event, out: list[Trickle],
            mode: str = "") -> None:
    mode = mode or ("headers" if index % 2 == 0 else "silent")
    while time.monotonic() < stop_at and not stop.is_set():
        try:
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        except OSError:
            stop.wait(1)
            continue
        opened = time.monotonic()
        received, closed, sent = b"", False, 0
        with sock:
            try:
                if mode == "headers":
                    sock.sendall(b"POST /api/predict HTTP/1.1\r\n")
                elif mode == "body":
                    sock.sendall(f"POST /api/predict HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: multipart/"
                                 f"form-data; boundary=x\r\nX-Forwarded-For: {ATTACKER_ADDRESS}\r\nContent-Length: "
                                 f"{ATTACKER_BODY_BYTES}\r\nConnection: close\r\n\r\n".encode())
                every_s = 1.0 if mode == "body" else TRICKLE_EVERY_S
                next_line = opened + every_s
                while not stop.is_set() and (now := time.monotonic()) < stop_at:
                    wake = min(stop_at, next_line) if mode != "silent" else stop_at
                    readable, _, _ = select.select([sock], [], [], max(0.0, min(1.0, wake - now)))
                    if readable:
                        chunk = sock.recv(4096)
                        if not chunk:
                            closed = True
                            break
                        received = (received + chunk)[:4096]
                    elif mode == "body" and time.monotonic() >= next_line:
                        sock.sendall(b"x")
                        next_line += every_s
                    elif mode == "headers" and time.monotonic() >= next_line:
                        line = f"Host: 127.0.0.1:{port}" if sent == 0 else f"X-Trickle-{sent}: {sent}"
                        sock.sendall(line.encode() + b"\r\n")
                        sent += 1
                        next_line += every_s
            except OSError:  # reset, or a write after the server closed
                closed = True
        out.append(Trickle(mode, time.monotonic() - opened, closed,
                           received.split(b"\r\n", 1)[0].decode("latin-1") if received else ""))
        stop.wait(0.1)


# ---- the workers' memory ----------------------------------------------------------------------------------------


class WorkerMemory:
    """Each worker's RSS after the warm-up, then its peak (VmHWM) sampled every second, replaced workers included."""

    def __init__(self, master: int) -> None:
        self.master = master
        self.after_warm_up: dict[int, float] = {}
        self.peak: dict[int, float] = {}
        self.last_rss: dict[int, float] = {}
        self.peak_reset = False  # VmHWM reset after the warm-up: the peak is the load's, not the start-up's
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample_every_second, daemon=True)

    def pids(self) -> list[int]:
        try:
            return worker_pids(self.master)
        except OSError:
            return []

    def start(self) -> None:
        resets = []
        for pid in self.pids():
            try:
                self.after_warm_up[pid] = memory_mb(pid, "VmRSS")
                Path(f"/proc/{pid}/clear_refs").write_text("5")  # Linux: VmHWM starts again from VmRSS
                resets.append(True)
            except (OSError, RuntimeError):
                resets.append(False)
        self.peak_reset = bool(resets) and all(resets)
        self.sample()
        self._thread.start()

    def sample(self) -> None:
        for pid in self.pids():
            try:
                self.peak[pid] = max(self.peak.get(pid, 0.0), memory_mb(pid, "VmHWM"))
                self.last_rss[pid] = memory_mb(pid, "VmRSS")
            except (OSError, RuntimeError):  # it is exiting
                continue

    def _sample_every_second(self) -> None:
        while not self._stop.wait(1.0):
            self.sample()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self.sample()

    @property
    def replaced(self) -> list[int]:
        return sorted(set(self.peak) - set(self.after_warm_up))


# ---- running it -------------------------------------------------------------------------------------------------


def server_command(root: Path, port: int) -> list[str]:
    gunicorn = Path(sys.executable).parent / "gunicorn"
    return [str(gunicorn), *procfile_web_command(root)[1:], "--bind", f"127.0.0.1:{port}"]


def stop_server(server: subprocess.Popen, workers: set[int]) -> str:
    """SIGTERM to the master and a graceful wait; SIGKILL to it and to any worker of it that outlives it."""
    started = time.monotonic()
    note = " (did not stop within 40 s of SIGTERM: killed)" if stop(server) else ""
    for pid in workers:
        try:
            if b"gunicorn" in Path(f"/proc/{pid}/cmdline").read_bytes():
                os.kill(pid, signal.SIGKILL)
                note += f" (worker {pid} outlived the master: killed)"
        except (OSError, ProcessLookupError):
            continue
    return f"gunicorn stopped in {time.monotonic() - started:.1f} s{note}"


@dataclass
class Run:
    answers: list[Answer]
    trickles: list[Trickle]
    load_s: float
    stragglers: int  # phones still busy when the join gave up (should be 0)
    cold_start_s: float
    memory: WorkerMemory
    events: dict[str, int]  # from gunicorn's log, before the shutdown
    errors: list[str]  # its Traceback and [ERROR] lines
    shutdown: str


def _pid_or_line(line: str) -> str:
    found = re.search(r"pid:(\d+)", line)
    return found.group(1) if found else line


def log_events(log: GunicornLog, workers: int) -> tuple[dict[str, int], list[str]]:
    """Counts from gunicorn's log, and its error lines (a traceback as its first line and its exception)."""
    lines = list(log.lines)
    # A timeout logs "WORKER TIMEOUT (pid:N)" and then, often, "Worker (pid:N) was sent SIGKILL! Perhaps out of
    # memory?": one kill, counted once per worker pid.
    killed = {_pid_or_line(line) for line in lines if re.search(KILL_PATTERN, line)}
    events = {"kills": len(killed), "WORKER TIMEOUT": log.count("WORKER TIMEOUT"),
              "SIGKILL": log.count("was sent SIGKILL"),
              "restarts": max(0, log.count(r"Booting worker with pid") - workers)}
    errors = []
    for index, line in enumerate(lines):
        if line.startswith("Traceback"):
            raised = next((later for later in lines[index + 1:index + 200] if later and not later[0].isspace()), "?")
            errors.append(f"Traceback ... {raised}")
        elif re.search(ERROR_PATTERN, line):
            errors.append(line)
    return events, errors


def run(args: argparse.Namespace, payloads: dict[str, list[Payload]], env: dict[str, str], workers: int) -> Run:
    port = free_port()
    env = {**env, "PORT": str(port)}
    stop = threading.Event()
    server = subprocess.Popen(server_command(args.root, port), cwd=args.root, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, errors="replace")
    log = GunicornLog(server.stdout)
    memory = WorkerMemory(server.pid)
    answers: list[Answer] = []
    trickles: list[Trickle] = []
    try:
        cold_start = wait_healthy(f"http://127.0.0.1:{port}", server, output=log.tail)
        if args.on_device:
            payloads.update(on_device_payloads(port))
        for kind in (*KINDS, *DEVICE_KINDS):
            if payloads[kind]:  # the device kinds only with --on-device
                answers.append(post(port, payloads[kind][0], None, stop, warm_up=True))
        memory.start()
        started = time.monotonic()
        stop_at = started + args.duration
        budget = [MAX_REQUESTS]
        threads = [threading.Thread(target=phone, daemon=True,
                                    args=(index, port, payloads, args.seed, stop_at, stop, budget, answers,
                                          args.on_device))
                   for index in range(args.phones)]
        threads += [threading.Thread(target=trickle, args=(index, port, stop_at, stop, trickles), daemon=True)
                    for index in range(args.trickles)]
        threads += [threading.Thread(target=trickle, args=(index, port, stop_at, stop, trickles, "body"), daemon=True)
                    for index in range(args.attacker)]
        for thread in threads:
            thread.start()
        # A request started just before the end sends for at most ~40 s (1.1 MB at 30 KB/s), then reads for 60.
        join_by = stop_at + 2 * READ_TIMEOUT_S + 30
        for thread in threads:
            thread.join(timeout=max(0.0, join_by - time.monotonic()))
        stragglers = sum(thread.is_alive() for thread in threads)
        load_s = time.monotonic() - started
        memory.stop()
        events, errors = log_events(log, workers)  # before the shutdown's own lines
    finally:
        stop.set()
        shutdown = stop_server(server, set(memory.peak) | set(memory.after_warm_up))
    return Run(list(answers), list(trickles), load_s, stragglers, cold_start, memory, events, errors, shutdown)


# ---- the report -------------------------------------------------------------------------------------------------


def seconds(values: list[float], q: float) -> str:
    return f"{np.percentile(values, q):.2f}" if values else "-"


def commit_of(root: Path) -> str:
    found = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    if found.returncode != 0:
        return "(not a git checkout)"
    dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip()
    return found.stdout.strip() + (" with uncommitted changes" if dirty else "")


def processor() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def torch_build() -> str:
    """torch's version with its build tag (+cpu, +cu130), read from torch/version.py without importing torch."""
    spec = importlib.util.find_spec("torch")
    if spec is None or spec.origin is None:
        return "(no torch)"
    try:
        found = re.search(r"__version__\s*=\s*['\"]([^'\"]+)", (Path(spec.origin).parent / "version.py").read_text())
    except OSError:
        found = None
    return found.group(1) if found else "(unknown version)"


def size_range(payloads: list[Payload]) -> str:
    sizes = sorted(len(p.body) for p in payloads)
    return f"{sizes[0] / 1000:.0f}-{sizes[-1] / 1000:.0f} KB"


def report(args: argparse.Namespace, payloads: dict[str, list[Payload]], settings: list[str], workers: int,
           result: Run) -> tuple[str, bool]:
    load = [a for a in result.answers if not a.warm_up]
    load_avg = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    lines = [
        f"# Crowd of phones, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "",
        f"Machine: {os.cpu_count()} cores ({processor()}), load average {load_avg} at the end, "
        f"Python {platform.python_version()}, torch {torch_build()}",
        f"Root: {args.root} at {commit_of(args.root)}; `{' '.join(procfile_web_command(args.root))}` with "
        f"{Path(sys.executable).parent / 'gunicorn'}, bound to 127.0.0.1; model {args.model}",
        f"Settings: {', '.join(settings)}",
        f"{args.phones} phones, {args.trickles} trickling sockets and an attacker with {args.attacker} body "
        f"tricklers for {args.duration:g} s (seed {args.seed}); "
        f"the last answer came {result.load_s:.1f} s after the start; cold start to /healthz "
        f"{result.cold_start_s:.1f} s; {result.shutdown}",
        f"Payloads: one-face {len(payloads['one-face'])} ({size_range(payloads['one-face'])}, "
        f"{'faces=auto' if args.one_face_mode else 'no faces field'}), group "
        f"{len(payloads['group'])} ({'/'.join(map(str, GROUP_FACES))} faces, {size_range(payloads['group'])}), "
        f"hostile {len(payloads['hostile'])}; uploads at {SPEED_KB_S[0]}-{SPEED_KB_S[1]} KB/s",
        "",
        "| kind | requests | answered | 200 | server time p50 / p95 (s) | total time p50 / p95 (s) |",
        "|---|---|---|---|---|---|",
    ]
    for kind in (*KINDS, *(DEVICE_KINDS if args.on_device else ())):
        answered = [a for a in load if a.payload.kind == kind and a.status is not None]
        server = [a.server_s for a in answered]
        total = [a.total_s for a in answered]
        lines.append(f"| {kind} | {sum(a.payload.kind == kind for a in load)} | {len(answered)} | "
                     f"{sum(a.status == 200 for a in answered)} | {seconds(server, 50)} / {seconds(server, 95)} | "
                     f"{seconds(total, 50)} / {seconds(total, 95)} |")
    lines += ["", "Answers by status and error code (warm-up apart):", "",
              "| kind | status | error | count |", "|---|---|---|---|"]
    by_status = Counter((a.payload.kind, a.status, a.code) for a in load)
    for (kind, status, code), count in sorted(by_status.items(),
                                              key=lambda item: ([*KINDS, *DEVICE_KINDS].index(item[0][0]),
                                                                item[0][1] or 0)):
        lines.append(f"| {kind} | {status if status is not None else 'no answer'} | {code or '-'} | {count} |")
    busy = [a for a in load if a.status == 503]
    busy_share = len(busy) / len(load) if load else 0.0
    retry_after = Counter(a.retry_after or "none" for a in busy)
    lines += ["", f"503s: {len(busy)} of {len(load)} requests ({busy_share:.1%})"
              + (f", Retry-After: {', '.join(f'{v} s x {n}' for v, n in sorted(retry_after.items()))}" if busy else "")]

    unexpected = Counter((a.payload.kind, a.payload.name, a.unexpected, a.warm_up) for a in result.answers
                         if a.unexpected)
    lines += ["", f"Unexpected answers (warm-up included): {sum(unexpected.values())}"]
    lines += [f"  {count} x {kind} {name}{' (warm-up)' if warm else ''}: {why}"
              for (kind, name, why, warm), count in unexpected.most_common(15)]
    socket_notes = Counter(a.failure for a in result.answers if a.failure and a.status is not None)
    lines += [f"  (answered, but the socket said: {note}) x {count}" for note, count in socket_notes.most_common(5)]

    lines += ["", "Trickling connections:"]
    for mode in ("headers", "silent", "body"):
        these = [t for t in result.trickles if t.mode == mode]
        if not these:
            continue
        closed = [t.lived_s for t in these if t.closed_by_server]
        still_open = [t.lived_s for t in these if not t.closed_by_server]
        lines.append(f"  {mode}: {len(these)} connections; "
                     + (f"{len(closed)} closed by the server after {min(closed):.1f} to {max(closed):.1f} s (max); "
                        if closed else "none closed by the server; ")
                     + (f"{len(still_open)} still open when the load ended, after up to {max(still_open):.1f} s; "
                        if still_open else "")
                     + f"{sum(t.got_408 for t in these)} got a 408; first lines: "
                     + ", ".join(f"{a or 'none'} x {n}" for a, n in Counter(t.answer for t in these).most_common(3)))

    events, errors = result.events, result.errors
    kills = events["kills"]
    lines += ["", f"gunicorn's log: {kills} worker(s) killed ({events['WORKER TIMEOUT']} WORKER TIMEOUT, "
                  f"{events['SIGKILL']} 'was sent SIGKILL! Perhaps out of memory?', which gunicorn says of every "
                  f"SIGKILL, timeouts' too), {events['restarts']} worker restarts, "
                  f"{len(errors)} Traceback/[ERROR] lines"]
    distinct = Counter(re.sub(r"^\[[^]]*\] \[\d+\] ", "", line)[:160] for line in errors)
    lines += [f"  {count} x {line}" for line, count in distinct.most_common(6)]

    memory = result.memory
    lines += ["", "Workers' memory (the CUDA build of torch inflates absolute RSS: compare the growth):"
              if "+cu" in torch_build() else "Workers' memory:"]
    growth = []
    for pid, rss in memory.after_warm_up.items():
        peak = memory.peak.get(pid)
        if peak is None:
            lines.append(f"  worker {pid}: RSS after warm-up {rss:.0f} MB, gone before its peak could be read")
            continue
        growth.append(peak - rss)
        lines.append(f"  worker {pid}: RSS after warm-up {rss:.0f} MB, peak {peak:.0f} MB "
                     f"(growth {peak - rss:+.0f} MB, {(peak / rss - 1) * 100:+.0f} %), "
                     f"RSS at the end {memory.last_rss[pid]:.0f} MB")
    for pid in memory.replaced:
        lines.append(f"  worker {pid} (a replacement): peak {memory.peak[pid]:.0f} MB, "
                     f"last RSS {memory.last_rss[pid]:.0f} MB")
    lines.append(f"  peak growth over the after-warm-up RSS: {max(growth, default=float('nan')):+.0f} MB; "
                 f"{len(memory.replaced)} worker(s) replaced during the load"
                 + ("" if memory.peak_reset else "; VmHWM could not be reset: peaks include the start-up"))
    if result.stragglers:
        lines.append(f"  {result.stragglers} client threads were still busy when the run gave up on them")

    one_face = [a.server_s for a in load if a.payload.kind == "one-face" and a.status is not None]
    p95 = float(np.percentile(one_face, 95)) if one_face else math.inf
    goals = {
        "0 worker kills": kills == 0,
        "0 unexpected 5xx or missing answers": not any(a.missing_or_5xx for a in result.answers),
        f"503s < {GOAL_BUSY_SHARE:.0%} of requests": busy_share < GOAL_BUSY_SHARE,
        f"p95 server time of one-face photos < {GOAL_ONE_FACE_P95_S:g} s ({p95:.2f} s)": p95 < GOAL_ONE_FACE_P95_S,
    }
    lines += ["", "Goals:"] + [f"  {'met   ' if met else 'MISSED'} {name}" for name, met in goals.items()]
    if training_running():
        lines += ["", "WARNING: a training run (maskclassifier.train) was using the CPU: these figures are inflated."]
    return "\n".join(lines), all(goals.values())


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.crowd", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=ROOT,
                        help="the checkout whose Procfile to start, e.g. a worktree of an older commit (default: this)")
    parser.add_argument("--model", type=Path, default=ROOT / "models/export.pkl",
                        help="the model to serve (default: models/export.pkl of this checkout)")
    parser.add_argument("--phones", type=int, default=20, help="phones posting photos, 1 to 200 (default: 20)")
    parser.add_argument("--duration", type=float, default=120, help="seconds of load, 5 to 1800 (default: 120)")
    parser.add_argument("--trickles", type=int, default=2,
                        help="sockets that trickle headers or send nothing, 0 to 50 (default: 2)")
    parser.add_argument("--attacker", type=int, default=0,
                        help="one laptop's connections sending upload bodies at 1 byte/s, 0 to 100 (default: 0)")
    parser.add_argument("--seed", type=int, default=0, help="for the phones' choices (default: 0)")
    parser.add_argument("--one-face-mode", choices=("auto",), default=None,
                        help="send one-face photos with faces=auto, as the page's default mode does "
                             "(default: no faces field, the whole-photo answer)")
    parser.add_argument("--on-device", type=float, default=0.0, metavar="SHARE",
                        help="the share of phones in on-device mode, 0 to 1: they download the model once, then "
                             "send only numbers (POST /result/computed); the rest post photos (default: 0)")
    parser.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                        help="a setting for the server, e.g. TORCH_NUM_THREADS=2 (repeatable)")
    args = parser.parse_args(argv)
    if not (1 <= args.phones <= 200 and 5 <= args.duration <= 1800 and 0 <= args.trickles <= 50
            and 0 <= args.attacker <= 100 and 0 <= args.on_device <= 1):
        parser.error("out of range: see --help for the limits")
    args.root, args.model = args.root.resolve(), args.model.resolve()
    if not (args.root / "Procfile").is_file():
        parser.error(f"{args.root} has no Procfile")
    if not args.model.is_file():
        parser.error(f"{args.model} not found: train one (python -m maskclassifier.train) or pass --model")
    if not (Path(sys.executable).parent / "gunicorn").is_file():
        parser.error(f"no gunicorn beside {sys.executable}: run this with the project's virtualenv")
    pairs = {}
    for item in args.env:
        key, equals, value = item.partition("=")
        if not equals or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            parser.error(f"--env needs KEY=VALUE, got {item!r}")
        if key in ("PORT", "MODEL_PATH"):
            parser.error(f"{key} is set by the script (use --model for the model)")
        pairs[key] = value
    args.env = pairs
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # Stopped by `timeout` or kill: unwind, so that the finally in run() stops gunicorn.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    env = {**os.environ, "MODEL_PATH": str(args.model), "WEB_CONCURRENCY": "1", **args.env}
    try:
        workers = int(env["WEB_CONCURRENCY"])
        max_upload_mb = float(env.get("MAX_UPLOAD_MB") or DEFAULT_MAX_UPLOAD_MB)
    except ValueError as error:
        raise SystemExit(f"bad setting: {error}") from None
    settings = [f"{key}={env[key]}" + ("" if key in args.env or key == "WEB_CONCURRENCY" else " (from the shell)")
                for key in SETTINGS if key in env] + [f"{key}={value}" for key, value in args.env.items()
                                                      if key not in SETTINGS]
    payloads = make_payloads(int(max_upload_mb * 1024 * 1024), args.one_face_mode)
    result = run(args, payloads, env, workers)
    text, met = report(args, payloads, settings, workers, result)
    print(text)
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
