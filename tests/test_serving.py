"""Serving under a crowd: slow and stalled clients, overload, the per-face budget, memory bombs, one answer per photo.

The connection tests run the Procfile's real stack (gunicorn with its worker class) on a loopback port.
"""

from __future__ import annotations

import csv
import json
import select
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from datasets import face_like_image
from harness.files import png_one_row_of
from harness.multipart import Part, multipart
from harness.server import serving
from helpers import encode, upload
from maskclassifier.classifier import mtcnn_onnx
from maskclassifier.classifier.classifier import VIEWS_ASPECT, answer_from_views, square_views
from maskclassifier.core import facebox
from maskclassifier.core.capacity import Busy, Deadline, InferenceSlots, OutOfTime
from maskclassifier.web.frontdoor import HEADER_TIMEOUT_S

UPLOAD_TIMEOUT_S = 2


@pytest.fixture(scope="module")
def server(tiny_model):
    """The Procfile's stack with a short upload deadline; yields its port."""
    with serving(tiny_model, UPLOAD_TIMEOUT=str(UPLOAD_TIMEOUT_S)) as served:
        yield served.port
    assert "WORKER TIMEOUT" not in served.output and "Traceback" not in served.output, served.output


def request_bytes(data: bytes, path: str = "/api/predict") -> tuple[bytes, bytes]:
    body, content_type = multipart([Part("file", data)])
    head = (f"POST {path} HTTP/1.1\r\nHost: test\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
    return head, body


def read_response(sock: socket.socket, timeout: float = 30) -> tuple[int | None, dict, bytes]:
    """Status, headers and body of the answer; status None when the server closed without one."""
    sock.settimeout(timeout)
    data = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    if not data:
        return None, {}, b""
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
    return int(lines[0].split()[1]), {name.lower(): value for name, value in headers.items()}, body


def fast_predictions(port: int, jpeg: bytes, seconds: float) -> list[int | None]:
    """POST the photo again and again for `seconds`: the statuses, while other clients misbehave."""
    head, body = request_bytes(jpeg)
    statuses = []
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(head + body)
            statuses.append(read_response(sock)[0])
    return statuses


def test_a_stalled_upload_gets_a_json_408_and_delays_no_one_else(server, face_jpeg):
    head, body = request_bytes(face_jpeg)
    with socket.create_connection(("127.0.0.1", server)) as slow:
        slow.sendall(head + body[: len(body) // 3])  # then nothing: a phone that lost its signal
        started = time.monotonic()
        statuses = fast_predictions(server, face_jpeg, UPLOAD_TIMEOUT_S + 1)
        status, headers, answer = read_response(slow)
        waited = time.monotonic() - started
    assert status == 408 and headers["content-type"] == "application/json"
    assert json.loads(answer)["error"] == "upload_timeout"
    assert UPLOAD_TIMEOUT_S - 0.5 < waited < UPLOAD_TIMEOUT_S + 5
    assert len(statuses) >= 5 and set(statuses) == {200}


def test_a_trickling_upload_is_cut_at_the_deadline(server, face_jpeg):
    """A byte at a time keeps every single read short: the deadline is for the whole body."""
    head, body = request_bytes(face_jpeg)
    with socket.create_connection(("127.0.0.1", server)) as slow:
        slow.sendall(head)
        started = time.monotonic()
        try:
            for byte in body:
                slow.sendall(bytes([byte]))
                time.sleep(0.2)
                if time.monotonic() - started > UPLOAD_TIMEOUT_S + 5:
                    break
        except OSError:  # the server answered and closed while we were still sending
            pass
        status, _, answer = read_response(slow)
    assert status == 408 and json.loads(answer)["error"] == "upload_timeout"
    assert time.monotonic() - started < UPLOAD_TIMEOUT_S + 6


def test_a_chunked_upload_is_read_whole_or_cut_at_the_deadline(server, face_jpeg):
    body, content_type = multipart([Part("file", face_jpeg)])
    head = (f"POST /api/predict HTTP/1.1\r\nHost: test\r\nContent-Type: {content_type}\r\n"
            "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n").encode()
    chunk = f"{len(body):x}\r\n".encode() + body + b"\r\n"
    with socket.create_connection(("127.0.0.1", server)) as whole:
        whole.sendall(head + chunk + b"0\r\n\r\n")
        assert read_response(whole)[0] == 200
    with socket.create_connection(("127.0.0.1", server)) as cut:
        cut.sendall(head + chunk[: len(chunk) // 2])  # then nothing
        status, _, answer = read_response(cut)
    assert status == 408 and json.loads(answer)["error"] == "upload_timeout"


def test_connections_that_send_nothing_or_trickle_headers_are_closed_without_blocking(server, face_jpeg):
    idle = socket.create_connection(("127.0.0.1", server))
    trickle = socket.create_connection(("127.0.0.1", server))
    trickle.sendall(b"POST /api/predict HTTP/1.1\r\n")
    outcome: dict[str, object] = {}

    def keep_trickling() -> None:
        started = time.monotonic()
        try:
            for number in range(40):
                if select.select([trickle], [], [], 1.0)[0]:
                    break  # the server has answered (it then reads on for a moment before closing): stop sending
                trickle.sendall(f"X-Slow-{number}: y\r\n".encode())
        except OSError:
            pass
        outcome["trickle"] = read_response(trickle, timeout=10)
        outcome["trickle_s"] = time.monotonic() - started

    thread = threading.Thread(target=keep_trickling)
    thread.start()
    started = time.monotonic()
    statuses = fast_predictions(server, face_jpeg, 3)
    idle.settimeout(30)
    assert idle.recv(100) == b""  # closed by the server, no answer
    idle_s = time.monotonic() - started
    thread.join(timeout=60)
    idle.close()
    trickle.close()
    assert set(statuses) == {200} and len(statuses) >= 5
    assert idle_s < 20
    status, _, answer = outcome["trickle"]
    assert outcome["trickle_s"] < HEADER_TIMEOUT_S + 5
    assert status == 408 and json.loads(answer)["error"] == "request_timeout"


def test_overload_is_answered_503_with_retry_after_on_api_and_page(make_app, face_jpeg):
    app = make_app(queue_timeout_s=0.2)
    slots = app.extensions["inference_slots"]
    client = app.test_client()
    with slots.hold(exclusive=True):  # other requests hold every slot
        started = time.monotonic()
        response = client.post("/api/predict", data=upload(face_jpeg))
        assert time.monotonic() - started < 2
        page = client.post("/", data=upload(face_jpeg))
    assert response.status_code == 503 and response.get_json()["error"] == "busy"
    assert 2 <= int(response.headers["Retry-After"]) <= 30
    assert "try again in" in response.get_json()["message"]
    assert page.status_code == 503 and "The server is busy, try again in a few seconds" in page.get_data(as_text=True)
    assert client.post("/api/predict", data=upload(face_jpeg)).status_code == 200  # the slot is free again


def test_inference_slots_bound_the_work_and_the_wait():
    slots = InferenceSlots(2, max_wait_s=0.1)
    inside, peak = [], []
    lock = threading.Lock()

    def work() -> None:
        try:
            with slots.hold():
                with lock:
                    inside.append(1)
                    peak.append(len(inside))
                time.sleep(0.3)
                with lock:
                    inside.pop()
        except Busy:
            with lock:
                peak.append(-1)

    threads = [threading.Thread(target=work) for _ in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert max(peak) == 2 and peak.count(-1) == 3 and slots.waiting == 0


def test_deadline_stops_work_between_stages():
    deadline = Deadline.after(0.05)
    deadline.check("first")
    time.sleep(0.06)
    with pytest.raises(OutOfTime, match="second would start after the 0.05 s budget"):
        deadline.check("second")


def tiled_faces(count: int, tile: int = 90) -> Image.Image:
    """`count` copies of a small face-like drawing, tiled: a photo with far more faces than MAX_FACES."""
    from skimage import data

    head = Image.fromarray(data.astronaut()).crop((140, 20, 310, 230)).resize((tile, round(tile * 1.24)))
    columns = int(np.ceil(np.sqrt(count)))
    rows = int(np.ceil(count / columns))
    photo = Image.new("RGB", (columns * tile, rows * head.height), "grey")
    for index in range(count):
        photo.paste(head, ((index % columns) * tile, (index // columns) * head.height))
    return photo


def test_per_face_work_past_the_budget_is_a_422_with_the_whole_photo_answer(make_app):
    app = make_app(face_time_budget_s=0.1)
    client = app.test_client()
    jpeg = encode(tiled_faces(60), quality=90)
    calls = []
    real_check = Deadline.check

    def slow_check(self, stage):  # the detector's first stage takes longer than the budget
        calls.append(stage)
        time.sleep(0.11)
        real_check(self, stage)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Deadline, "check", slow_check)
        response = client.post("/api/predict?faces=on", data=upload(jpeg))
        page = client.post("/", data={**upload(jpeg), "faces": "auto"})
    body = response.get_json()
    assert response.status_code == 422 and body["error"] == "too_many_faces"
    assert "too many faces" in body["message"] and "0.1 seconds" in body["message"]
    assert set(body["photo"]) == {"labels", "probabilities", "threshold", "message"}
    assert calls[0] == "face proposals" and len(calls) <= 3
    text = page.get_data(as_text=True)
    assert page.status_code == 422 and "too many faces" in text and "How sure the model is" in text


@pytest.mark.slow  # ~5 s
def test_a_photo_of_hundreds_of_faces_is_answered_with_bounded_candidates(make_app, monkeypatch):
    """P-Net passes on at most MAX_CANDIDATES_PER_SCALE windows per scale; at most facebox.MAX_FACES faces are
    classified (a fair sample of those found, tests/test_crowd.py)."""
    proposals = []
    real_proposals = mtcnn_onnx.proposals

    def counting_proposals(*args):
        windows = real_proposals(*args)
        proposals.append(len(windows))
        return windows

    monkeypatch.setattr(mtcnn_onnx, "proposals", counting_proposals)
    client = make_app(face_time_budget_s=25).test_client()  # the cap, not the budget, is under test here
    body = client.post("/api/predict?faces=on", data=upload(encode(tiled_faces(300, tile=60), quality=90))).get_json()
    assert proposals and max(proposals) == mtcnn_onnx.MAX_CANDIDATES_PER_SCALE
    assert body["mode"] == "faces" and 20 <= len(body["faces"]) <= facebox.MAX_FACES
    assert body["faces_found"] >= len(body["faces"])


# Each case: how to make the file, what the app must answer, and where it is posted. Every accepted upload (and every
# refused one) may raise the worker's peak memory by at most MEMORY_BOUND_MB, whatever its mode and format within
# 50 megapixels; and once its answer has been sent, the worker may keep at most RESIDENT_BOUND_MB more resident than
# after its warm-up (measured: up to 49 MB after every case on every address, Pillow's cache of up to 32 freed
# image blocks among it; without returning freed memory to the kernel, 113-122 MB after one 49 MP JPEG).
MEMORY_BOUND_MB = 300
RESIDENT_BOUND_MB = 60
BIG = (7071, 7071)
FORM_URLS = ("/api/predict?faces=auto", "/")  # the API, and the page with its preview and annotated photo
# Every address that takes an upload; /api/frame refuses anything over 1280x960 before decoding it (400).
EVERY_URL = ("/api/predict?faces=off", "/api/predict?faces=auto", "/", "/api/explain?faces=auto", "/api/frame",
             "/api/annotate")


def _saved(mode: str, size: tuple[int, int], fmt: str, colour, **params) -> bytes:
    return encode(Image.new(mode, size, colour), fmt, **params)


def _photo(size: tuple[int, int], fmt: str, **params) -> bytes:
    """A photo-like image (smooth colour fields with texture: real decoders' and detectors' work) of `size`."""
    from benchmarks.decoders import photo_like

    return encode(photo_like(size), fmt, **params)


def _heic(size: tuple[int, int]) -> bytes:
    """A photo-like HEIC (x265's fastest preset: the default takes minutes for 33 MP on a busy machine)."""
    pytest.importorskip("pillow_heif")
    return _photo(size, "HEIF", quality=50, enc_params={"preset": "ultrafast"})


def _heic_claiming(size: tuple[int, int]) -> bytes:
    """A small HEIC whose image size property (ispe) claims `size`: what a 49 MP iPhone photo's header says, without
    minutes of encoding. It must be refused from the header, as a real one is."""
    data = _saved("RGB", (64, 64), "HEIF", (90, 90, 200), quality=50)
    at = data.index(b"ispe") + 8  # after the box type and its version and flags
    return data[:at] + struct.pack(">II", *size) + data[at + 8:]


MEMORY_CASES = {
    "png-one-row-of-16-bit-grey": (lambda: png_one_row_of(*BIG), 400, FORM_URLS),
    "png-16-bit-grey": (lambda: _saved("I;16", BIG, "PNG", 40000), 200, FORM_URLS),
    "png-rgba": (lambda: _saved("RGBA", BIG, "PNG", (200, 10, 10, 128)), 200, FORM_URLS),
    "png-rgb-flat": (lambda: _saved("RGB", BIG, "PNG", (20, 120, 20)), 200, FORM_URLS),
    "png-palette": (lambda: _saved("P", BIG, "PNG", 3), 200, FORM_URLS),
    "tiff-float32": (lambda: _saved("F", (8660, 5773), "TIFF", 0.5, compression="tiff_adobe_deflate"), 200, FORM_URLS),
    "jpeg-cmyk": (lambda: _saved("CMYK", BIG, "JPEG", (0, 200, 200, 0), quality=80), 200, FORM_URLS),
    "jpeg-rgb": (lambda: _saved("RGB", BIG, "JPEG", (90, 90, 200), quality=80), 200, FORM_URLS),
    # Issue 27: the formats whose decoders cannot work in parts, at 49 MP (refused before decoding: 422) and just
    # within their limits (maskclassifier/images.py), and a 49 MP baseline photo, on every address.
    "jpeg-photo-49mp": (lambda: _photo((7000, 7000), "JPEG", quality=85), 200, EVERY_URL),
    "webp-lossy-49mp": (lambda: _photo((7000, 7000), "WEBP", quality=80, method=0), 422, EVERY_URL),
    "webp-lossless-49mp": (lambda: _saved("RGB", (7000, 7000), "WEBP", (90, 90, 200), lossless=True), 422, EVERY_URL),
    "webp-lossy-15mp": (lambda: _photo((4743, 3162), "WEBP", quality=80, method=0), 200, EVERY_URL),
    "jpeg-progressive-444-49mp": (lambda: _photo((7000, 7000), "JPEG", quality=85, progressive=True, subsampling=0),
                                  422, EVERY_URL),
    "jpeg-progressive-444-25mp": (lambda: _photo((6100, 4100), "JPEG", quality=85, progressive=True, subsampling=0),
                                  200, EVERY_URL),
    "jpeg-progressive-420-35mp": (lambda: _photo((7200, 4950), "JPEG", quality=85, progressive=True, subsampling=2),
                                  200, EVERY_URL),
    "heic-49mp": (lambda: _heic_claiming((7000, 7000)), 422, EVERY_URL),
    "heic-33mp": (lambda: _heic((7000, 4700)), 200, EVERY_URL),
}

# In a fresh interpreter with the worker's allocator settings (maskclassifier/web/worker.py), as gunicorn runs it.
MEASURE_MEMORY = r"""
import io, json, sys
from pathlib import Path
from maskclassifier.web.worker import limit_allocator_retention, reuse_image_blocks
limit_allocator_retention()
reuse_image_blocks()
from maskclassifier.web import create_app
from maskclassifier.core.config import Settings

def vm(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024

app = create_app(Settings(model_path=Path(sys.argv[1]), threshold=0.5, max_upload_mb=12, torch_threads=1,
                          face_time_budget_s=25))  # the bound under test is memory; a busy machine is slow
client = app.test_client()
small = Path(sys.argv[2]).read_bytes()
cases = json.loads(sys.argv[3])

def post(url, data):
    response = client.post(url, data={"file": (io.BytesIO(data), "a.png")})
    status, code = response.status_code, (response.get_json(silent=True) or {}).get("error")
    response.close()  # the response is sent: what runs after it (returning freed memory) runs now
    return status, code

for url in ("/api/predict?faces=off", "/api/predict?faces=auto", "/", "/api/explain?faces=auto", "/api/frame",
            "/api/annotate"):  # warm up every code path once: caches, thread pools, allocator arenas
    post(url, small)
at_rest = vm("VmRSS")
results = {}
for name, (path, urls) in cases.items():
    data = Path(path).read_bytes()
    result = results.setdefault(name, {"answers": {}, "growth_mb": 0, "resident_mb": 0})
    for url in urls:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")  # reset the peak (VmHWM) to the current RSS
        before = vm("VmRSS")
        result["answers"][url] = post(url, data)
        result["growth_mb"] = max(result["growth_mb"], vm("VmHWM") - before)
        result["resident_mb"] = max(result["resident_mb"], vm("VmRSS") - at_rest)
    del data
print(json.dumps(results))
"""


@pytest.fixture(scope="module")
def memory_case_files(tmp_path_factory) -> dict[str, Path]:
    """Every MEMORY_CASES file, made once for both backends' tests."""
    folder = tmp_path_factory.mktemp("memory")
    paths = {}
    for name, (make, _, _) in MEMORY_CASES.items():
        paths[name] = folder / f"{name}.bin"
        paths[name].write_bytes(make())
        assert paths[name].stat().st_size < 10 * 1024 * 1024, name  # within MAX_UPLOAD_MB: the app must accept it
    return paths


def _measure_memory(model_path: Path, tmp_path: Path, face_jpeg: bytes, files: dict[str, Path],
                    names: list[str]) -> dict:
    cases = {name: (str(files[name]), MEMORY_CASES[name][2]) for name in names}
    (tmp_path / "small.jpg").write_bytes(face_jpeg)
    result = subprocess.run([sys.executable, "-c", MEASURE_MEMORY, str(model_path), str(tmp_path / "small.jpg"),
                             json.dumps(cases)], capture_output=True, text=True, timeout=900,
                            cwd=Path(__file__).parent.parent)
    assert result.returncode == 0, result.stderr[-3000:]
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    print({name: (round(value["growth_mb"]), round(value["resident_mb"])) for name, value in measured.items()})
    return measured


def _check_memory(measured: dict) -> None:
    for name, result in measured.items():
        _, status, urls = MEMORY_CASES[name]
        for url in urls:
            # /api/frame refuses a photo over 1280x960 from its header, before anything else
            expected = (400, "frame_too_large") if url == "/api/frame" else status
            got = tuple(result["answers"][url])  # (status, error code or None)
            assert (got if isinstance(expected, tuple) else got[0]) == expected, (name, url, got)
            if status == 422 and url.startswith("/api/") and url != "/api/frame":  # the page answers in HTML
                assert got[1] == "image_too_large_for_format", (name, url, got)
        assert result["growth_mb"] <= MEMORY_BOUND_MB, (name, result)
        assert result["resident_mb"] <= RESIDENT_BOUND_MB, (name, result)


@pytest.mark.slow  # a fresh Python serves uploads: over a minute
def test_no_upload_raises_peak_memory_by_more_than_300_mb(tiny_model, tmp_path, face_jpeg, memory_case_files):
    """The fastai backend, every case (shown with pytest -s: peak growth and what stayed resident, MB)."""
    measured = _measure_memory(tiny_model, tmp_path, face_jpeg, memory_case_files, list(MEMORY_CASES))
    _check_memory(measured)
    # refused before it is decoded (decoded, it cost 1.2 GB); the same 40 MB of allocator noise as the refusals below
    # (20 MB was passed by 21.7 once, with Pillow's 2 MB blocks)
    assert measured["png-one-row-of-16-bit-grey"]["growth_mb"] < 40
    for name in ("webp-lossy-49mp", "webp-lossless-49mp", "jpeg-progressive-444-49mp", "heic-49mp"):
        assert measured[name]["growth_mb"] < 40, name  # refused from the header: nothing decoded


@pytest.mark.slow  # a fresh Python serves uploads: half a minute
def test_no_upload_raises_peak_memory_by_more_than_300_mb_on_the_onnx_backend(tmp_path, face_jpeg, memory_case_files):
    """The slim install's backend (the committed ONNX export; ONNX Runtime's arena, the classifier a photo a pass),
    on the formats of issue 27."""
    pytest.importorskip("onnxruntime")
    names = [name for name, (_, _, urls) in MEMORY_CASES.items() if urls == EVERY_URL]
    _check_memory(_measure_memory(Path(__file__).parent.parent / "models" / "export.onnx", tmp_path, face_jpeg,
                                  memory_case_files, names))


# One answer per photo: what fastai's own learn.predict gives for the file, every path gives, to 1e-4 (for a photo
# taller than VIEWS_ASPECT, learn.predict's answers for it and its square views, combined by answer_from_views).
PARITY_SIZES = [(256, 256), (1000, 1000), (3000, 2000), (5000, 3000), (97, 301), (1200, 300)]


@pytest.mark.parametrize("learner", ["tiny_model", "cli_model"])
@pytest.mark.slow  # fastai's own DataLoader on every size
def test_every_path_gives_learn_predicts_answer_for_jpegs_of_any_size(request, learner, tmp_path, make_app):
    from fastai.learner import load_learner
    from fastai.vision.core import PILImage

    model_path = request.getfixturevalue(learner)
    learn = load_learner(model_path, cpu=True) if learner == "cli_model" else None
    app = make_app(model_path=model_path)
    classifier = app.extensions["maskclassifier"]
    learn = learn or classifier.backend.learner
    client = app.test_client()
    rows, answers = [], []
    for number, size in enumerate(PARITY_SIZES):
        photo = face_like_image(["Medical"], seed=number, size=size)
        path = tmp_path / f"photo{number}.jpg"
        photo.save(path, quality=90)
        rows.append(path.name)
        with learn.no_bar():
            expected = learn.predict(path)[2].numpy()  # fastai decodes the file itself
            if max(size) > VIEWS_ASPECT * min(size):  # a tall photo: its square views too, by the documented rule
                decoded = Image.open(path).convert("RGB")
                views = np.stack([learn.predict(PILImage.create(decoded.crop(box)))[2].numpy()
                                  for box in square_views(*size)])
                expected = answer_from_views(expected, views, list(learn.dls.vocab), classifier.threshold)
        answers.append(expected)
        data = path.read_bytes()
        for query in ("", "?faces=off", "?faces=auto"):
            body = client.post("/api/predict" + query, data=upload(data)).get_json()
            if body.get("mode", "whole") != "whole":
                continue  # a face was found: the answer is another view on purpose
            np.testing.assert_allclose(list(body["probabilities"].values()), expected, atol=1e-4,
                                       err_msg=f"{size} {query}")
        page = client.post("/", data=upload(data)).get_data(as_text=True)
        assert "How sure the model is" in page
    (tmp_path / "labels.csv").write_text("fname,labels\n" + "".join(f"{name},Medical\n" for name in rows))
    from maskclassifier.training import evaluate

    predictions = tmp_path / "predictions.csv"
    assert evaluate.main(["--csv", str(tmp_path / "labels.csv"), "--model", str(model_path),
                          "--predictions", str(predictions)]) == 0
    for row, expected in zip(csv.DictReader(open(predictions)), answers, strict=True):
        np.testing.assert_allclose([float(row[name]) for name in learn.dls.vocab], expected, atol=1e-4)


@pytest.mark.parametrize("size,out,resample", [
    ((3000, 2000), (460, 460), Image.Resampling.BILINEAR), ((2000, 3100), (85, 85), Image.Resampling.BICUBIC),
    ((4001, 1999), (128, 96), Image.Resampling.LANCZOS), ((2600, 2500), (3000, 3000), Image.Resampling.BILINEAR),
])
def test_a_big_crop_resized_in_strips_is_pixel_for_pixel_fastais_crop_then_resize(size, out, resample):
    from maskclassifier.core.resize import ItemResize, fastai_crop_box

    photo = Image.fromarray(np.random.default_rng(1).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    expected = photo.crop(fastai_crop_box(*size, *out)).resize(out, resample)
    assert np.array_equal(ItemResize(out[0], out[1], resample)(photo), np.asarray(expected))


def test_an_exclusive_holder_waits_for_every_slot_and_runs_alone():
    slots = InferenceSlots(2, max_wait_s=2)
    events = []
    with slots.hold():  # one ordinary request is running
        def big() -> None:
            with slots.hold(exclusive=True):
                events.append("big starts")
                time.sleep(0.2)
                events.append("big ends")

        thread = threading.Thread(target=big)
        thread.start()
        time.sleep(0.2)
        assert events == []  # it waits for the running request's slot too
        events.append("small ends")
    thread.join()
    assert events == ["small ends", "big starts", "big ends"]
    with slots.hold(exclusive=True):
        with pytest.raises(Busy):
            with slots.hold():  # nothing else gets in while it runs
                pass


def until(condition, what: str) -> None:
    """Wait for another thread to reach a state (polled; the bound only stops a broken build hanging the run)."""
    deadline = time.monotonic() + 30
    while not condition():
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.005)


def test_waiting_clients_take_turns_for_the_slots():
    slots = InferenceSlots(1, max_wait_s=60)
    served = []

    def request(client: str, name: str) -> None:
        with slots.hold(client=client):
            served.append(name)

    threads = []
    with slots.hold(client="someone"):  # the one slot is taken while the queue forms
        for name in ["A1", "A2", "A3", "A4", "A5", "B1"]:
            threads.append(threading.Thread(target=request, args=(name[0], name)))
            threads[-1].start()
            until(lambda: slots.waiting == len(threads), f"{name} waits")  # so the queue's order is known
    for thread in threads:
        thread.join()
    # in arrival order (semaphore order) B1 came sixth; in turns, A's first request, then B's, then A's others
    assert served == ["A1", "B1", "A2", "A3", "A4", "A5"] and slots.waiting == 0


def test_an_exclusive_holder_next_in_line_is_not_overtaken():
    slots = InferenceSlots(2, max_wait_s=60)
    events = []

    def big() -> None:
        with slots.hold(exclusive=True, client="A"):
            events.append("big starts")
            events.append("big ends")

    def small() -> None:
        with slots.hold(client="B"):
            events.append("small starts")

    with slots.hold(client="someone"):  # one of the two slots is taken: the big photo waits for it
        first = threading.Thread(target=big)
        first.start()
        until(lambda: slots.waiting == 1, "the big photo waits")
        second = threading.Thread(target=small)
        second.start()
        until(lambda: slots.waiting == 2 or events, "the small photo waits or runs")
        assert events == []  # a slot is free, but the big photo is first in line for it
    first.join()
    second.join()
    assert events == ["big starts", "big ends", "small starts"]


def test_waiters_that_give_up_leave_the_line():
    slots = InferenceSlots(1, max_wait_s=0.2)
    outcomes = []

    def request(client: str) -> None:
        try:
            with slots.hold(client=client):
                outcomes.append("served")
        except Busy as busy:
            outcomes.append(busy.retry_after_s)

    with slots.hold(client="someone"):
        threads = [threading.Thread(target=request, args=(client,)) for client in "AAB"]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert len(outcomes) == 3 and all(isinstance(it, int) and 2 <= it <= 30 for it in outcomes)
    assert slots.waiting == 0
    request("A")  # nobody who gave up is still ahead of it
    assert outcomes[-1] == "served"


@pytest.mark.parametrize("dyno,peer,forwarded_for,key", [
    ("", "127.0.0.1", "198.51.100.7", "198.51.100.7"),  # a proxy on this machine: its client's turn
    ("", "127.0.0.1", "203.0.113.1, 198.51.100.7", "198.51.100.7"),  # the address the proxy saw, not the client's claim
    ("", "203.0.113.9", "198.51.100.7", "203.0.113.9"),  # anyone else can write any X-Forwarded-For
    ("", "203.0.113.9", None, "203.0.113.9"),
    ("web.1", "10.1.2.3", "203.0.113.1, 198.51.100.7", "198.51.100.7"),  # on Heroku the router is the only peer
])
def test_each_request_waits_in_its_clients_turn(make_app, monkeypatch, face_jpeg, dyno, peer, forwarded_for, key):
    monkeypatch.delenv("FORWARDED_ALLOW_IPS", raising=False)
    monkeypatch.setenv("DYNO", dyno)
    app = make_app()
    clients = []
    real_hold = app.extensions["inference_slots"].hold
    monkeypatch.setattr(app.extensions["inference_slots"], "hold",
                        lambda exclusive=False, client="": clients.append(client) or real_hold(exclusive, client))
    headers = {"X-Forwarded-For": forwarded_for} if forwarded_for else {}
    response = app.test_client().post("/api/predict", data=upload(face_jpeg), headers=headers,
                                      environ_base={"REMOTE_ADDR": peer})
    assert response.status_code == 200 and clients == [key]


def test_a_bad_forwarded_allow_ips_stops_the_app_with_one_line(make_app, monkeypatch):
    from maskclassifier.core.errors import ConfigError

    monkeypatch.setenv("FORWARDED_ALLOW_IPS", "127.0.0.1,proxy.example")
    with pytest.raises(ConfigError, match="^FORWARDED_ALLOW_IPS must be IP addresses or networks .* 'proxy.example'$"):
        make_app()


def test_photos_over_12_megapixels_take_every_slot(make_app, monkeypatch):
    from maskclassifier.web import inference

    taken = []
    app = make_app()
    real_hold = app.extensions["inference_slots"].hold
    monkeypatch.setattr(app.extensions["inference_slots"], "hold",
                        lambda exclusive=False, client="": taken.append(exclusive) or real_hold(exclusive, client))
    client = app.test_client()
    client.post("/api/predict", data=upload(encode(Image.new("RGB", (400, 300)))))
    monkeypatch.setattr(inference, "SHARED_SLOT_PIXELS", 100_000)
    client.post("/api/predict", data=upload(encode(Image.new("RGB", (400, 300)))))
    client.post("/api/predict", data=upload(b"not an image"))
    assert taken == [False, True, False]


def test_the_worker_has_pillow_keep_freed_image_blocks_for_the_next_photo():
    from PIL import Image

    from maskclassifier.web.worker import (
        MMAP_THRESHOLD_BYTES,
        PILLOW_BLOCK_BYTES,
        PILLOW_BLOCKS_MAX,
        reuse_image_blocks,
    )

    before = Image.core.get_block_size(), Image.core.get_blocks_max()
    try:
        reuse_image_blocks()
        assert (Image.core.get_block_size(), Image.core.get_blocks_max()) == (PILLOW_BLOCK_BYTES, PILLOW_BLOCKS_MAX)
        Image.core.reset_stats()
        for _ in range(3):  # a 2048x1536 photo, its crop and the resize's scratch image, as a request makes them
            photo = Image.new("RGB", (2048, 1536))
            photo.crop((256, 0, 1792, 1536)).resize((288, 288), Image.Resampling.BILINEAR)
            del photo
        stats = Image.core.get_stats()
        # the 2nd and 3rd photo each take every block the cache kept of the one before
        assert stats["reused_blocks"] >= 2 * PILLOW_BLOCKS_MAX and stats["allocated_blocks"] > 0
        assert stats["blocks_cached"] <= PILLOW_BLOCKS_MAX
        # A block holds whole rows: for any width Pillow opens (4 bytes a pixel), it is over glibc's mmap threshold,
        # so the blocks Pillow does not keep go back to the kernel when freed instead of staying in an arena.
        assert PILLOW_BLOCK_BYTES - 4 * 65535 > MMAP_THRESHOLD_BYTES
    finally:
        Image.core.set_block_size(before[0])
        Image.core.set_blocks_max(before[1])
        Image.core.clear_cache()
