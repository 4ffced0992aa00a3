"""On-device mode (issue 30) against the server, in this machine's headless Chromium (or Firefox ESR).

    PYTHONPATH=. .venv/bin/python -m benchmarks.ondevice [--count 300] [--model models/export.onnx]
        [--csv ../shared/data/masks/labels.csv] [--browser firefox]

The app (the `.onnx` model, the face detector) is served on a loopback port by Werkzeug's threaded server; a
headless Chromium (or Firefox, over WebDriver BiDi; a fresh profile: a first visit) opens the page and waits until
on-device mode is ready. Then `--count` validation photos (is_valid, a seeded sample) are classified three ways:
in the browser (`MaskOnDevice.probabilities`, the page's own code: decoding, item Resize, the ONNX graph, the
decision rules),
by POST /api/predict (the whole photo: the reference), and per face in the browser (`MaskOnDevice.faces`: the
ported detector and each crop) and by POST /api/predict?faces=auto (the page's default mode). It prints:

- parity: the share of photos whose labels on the device are the server's, and the 99th percentile and maximum
  of the largest probability difference per photo; per face (faces=auto, the page's default mode): the server's
  faces found on the device (IoU >= 0.8), their labels, and the page's answer (the close-up rule applied);
- latency: p50/p95 per photo on the device (decode, resize, forward pass, the rules; no network) and through
  the API (a loopback round trip, so the network a real visitor has is not counted);
- time from the start of navigation to on-device ready, and the first visit's bytes (every response body the
  server sent by then, once the service worker controls the page: the page, its scripts and styles, the runtime,
  the model, the detector, and the worker's own copies), counted by the server.
"""

from __future__ import annotations

import argparse
import base64
import csv
import json
import platform
import random
import statistics
import threading
import time
import urllib.request
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def sample(csv_path: Path, count: int, seed: int = 0) -> list[Path]:
    with csv_path.open(newline="") as handle:
        rows = [row for row in csv.DictReader(handle) if row.get("is_valid", "").lower() in ("true", "1")]
    rows.sort(key=lambda row: row["fname"])
    random.Random(seed).shuffle(rows)
    return [csv_path.parent / row["fname"] for row in rows[:count]]


def post(url: str, data: bytes) -> tuple[dict, float]:
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"photo.jpg\"\r\n"
            "Content-Type: image/jpeg\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    request = urllib.request.Request(url, body, {"Content-Type": f"multipart/form-data; boundary={boundary}"})
    started = time.perf_counter()
    with urllib.request.urlopen(request, timeout=60) as response:
        answer = json.load(response)
    return answer, (time.perf_counter() - started) * 1000


def labels(probabilities: list[float], vocab: list[str], threshold: float) -> list[str]:
    return sorted((name for name, p in zip(vocab, probabilities, strict=True) if p > threshold),
                  key=lambda name: -probabilities[vocab.index(name)])


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


class SentBytes:
    """WSGI middleware: every response body's bytes, as sent (gzipped where the app gzips), by request path. The
    first visit's weight is counted here rather than from the page's Resource Timing, which does not see what the
    service worker fetches (the model, the runtime and its own copy of the page's files) and counts what it
    answers from its cache as 0 bytes."""

    def __init__(self, app):
        self.app = app
        self.sent: list[tuple[str, int]] = []
        self._lock = threading.Lock()

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        total = 0
        for chunk in self.app(environ, start_response):
            total += len(chunk)
            yield chunk
        with self._lock:
            self.sent.append((path, total))

    def snapshot(self) -> list[tuple[str, int]]:
        with self._lock:
            return list(self.sent)


def serve(model: Path) -> tuple[str, object, SentBytes]:
    from werkzeug.serving import make_server

    from maskclassifier.core.config import Settings
    from maskclassifier.web import create_app

    app = create_app(Settings(model_path=model, torch_threads=1))
    counted = SentBytes(app.wsgi_app)
    app.wsgi_app = counted
    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_port}", server, counted


def browser(profile: Path, *flags: str):
    import shutil

    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", f"--user-data-dir={profile}",
                 *flags):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    driver.set_script_timeout(120)
    return driver


class Firefox:
    """Firefox (headless) driven over WebDriver BiDi, its built-in remote protocol (no geckodriver here: neither
    Debian nor PyPI ships it), with the three calls of selenium's driver this benchmark uses. Its fake camera
    (`media.navigator.streams.fake`) shows a moving colour pattern, not a video file, so the live camera's rate
    with a face is measured in Chromium only."""

    def __init__(self, profile: Path, port: int = 9333):
        import shutil
        import subprocess

        import websocket

        profile.mkdir(parents=True, exist_ok=True)
        (profile / "user.js").write_text('user_pref("media.navigator.streams.fake", true);\n')
        binary = shutil.which("firefox-esr") or shutil.which("firefox")
        if binary is None:
            raise SystemExit("no Firefox here (apt-get install firefox-esr)")
        self.process = subprocess.Popen([binary, "--headless", "--no-remote", "--profile", str(profile),
                                         "--remote-debugging-port", str(port)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 60
        while True:
            try:  # Firefox refuses a handshake that carries an Origin header
                self.socket = websocket.create_connection(f"ws://127.0.0.1:{port}/session", timeout=180,
                                                          suppress_origin=True)
                break
            except OSError:
                if time.time() > deadline:
                    self.process.kill()
                    raise
                time.sleep(0.5)
        self.calls = 0
        self.version = self.call("session.new", capabilities={})["capabilities"]["browserVersion"]
        self.context = self.call("browsingContext.getTree")["contexts"][0]["context"]

    def call(self, method: str, **params) -> dict:
        self.calls += 1
        self.socket.send(json.dumps({"id": self.calls, "method": method, "params": params}))
        while True:
            message = json.loads(self.socket.recv())
            if message.get("id") == self.calls:
                if message.get("type") == "error":
                    raise RuntimeError(f"{method}: {message.get('message') or message.get('error')}")
                return message["result"]

    @staticmethod
    def value(remote: dict):
        """A BiDi remote value as Python's."""
        kind, inner = remote["type"], remote.get("value")
        if kind in ("undefined", "null"):
            return None
        if kind == "array":
            return [Firefox.value(item) for item in inner]
        if kind == "object":
            return {key if isinstance(key, str) else Firefox.value(key): Firefox.value(item) for key, item in inner}
        return inner

    def _run(self, declaration: str, *arguments, asynchronous: bool = False):
        result = self.call("script.callFunction", functionDeclaration=declaration, awaitPromise=asynchronous,
                           target={"context": self.context},
                           arguments=[{"type": "string", "value": item} for item in arguments],
                           serializationOptions={"maxObjectDepth": 8})
        if result["type"] == "exception":
            raise RuntimeError(result["exceptionDetails"]["text"])
        return self.value(result["result"])

    def get(self, url: str) -> None:
        self.call("browsingContext.navigate", context=self.context, url=url, wait="complete")

    def execute_script(self, script: str):
        return self._run(f"function () {{ {script} }}")

    def execute_async_script(self, script: str, *arguments):
        """As selenium's: the script's last argument is the callback that gives its result."""
        return self._run("function () { var given = Array.prototype.slice.call(arguments);"
                         " return new Promise(function (done) { (function () { " + script + " }).apply(null,"
                         " given.concat([done])); }); }", *arguments, asynchronous=True)

    def quit(self) -> None:
        try:
            self.call("session.end")
        except (OSError, RuntimeError):
            pass
        self.process.terminate()
        self.process.wait(timeout=30)


def wait_ready(driver, seconds: float = 120) -> str:
    deadline = time.time() + seconds
    while time.time() < deadline:
        state = driver.execute_script("return window.MaskOnDevice ? window.MaskOnDevice.state() : 'idle'")
        if state not in ("idle", "loading"):
            return state
        time.sleep(0.1)
    return "timeout"


DEVICE_FACES = """
var done = arguments[arguments.length - 1];
var bytes = Uint8Array.from(atob(arguments[0]), function (c) { return c.charCodeAt(0); });
window.MaskOnDevice.faces(new Blob([bytes], {type: 'image/jpeg'}))
  .then(function (answer) { done(answer); }, function (error) { done({error: String(error)}); });
"""

DEVICE_PROBABILITIES = """
var done = arguments[arguments.length - 1];
var bytes = Uint8Array.from(atob(arguments[0]), function (c) { return c.charCodeAt(0); });
window.MaskOnDevice.probabilities(new Blob([bytes], {type: 'image/jpeg'}))
  .then(function (answer) { done({probabilities: answer.probabilities, ms: answer.ms}); },
        function (error) { done({error: String(error)}); });
"""


def iou(a: list[int], b: list[int]) -> float:
    width = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = width * height
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union else 0.0


def page_answer(device: dict, vocab: list[str], threshold: float) -> list[str]:
    """The page's default (automatic) answer from the device's numbers, as faces.analyse decides it: with exactly
    one face, the mean of the whole photo's and the face's probabilities; otherwise the whole photo's."""
    photo = device["probabilities"]
    if len(device["faces"]) == 1:
        photo = [(a + b) / 2 for a, b in zip(photo, device["faces"][0]["probabilities"], strict=True)]
    return labels(photo, vocab, threshold)


def faces_report(rows: list, vocab: list[str], threshold: float) -> None:
    """Per-face parity: the server's faces (faces=auto) matched to the device's by IoU, and their labels."""
    server_faces = matched = same_labels = same_page = answered = 0
    extra, device_ms, differences = 0, [], []
    for _path, _device, _whole, _whole_ms, auto, _auto_ms, device in rows:
        if "error" in device:  # the page hands such a photo to the server (e.g. no face found in a dark photo)
            continue
        answered += 1
        device_ms.append(device["ms"])
        same_page += page_answer(device, vocab, threshold) == auto["labels"]
        used = set()
        for face in auto.get("faces", []):
            server_faces += 1
            best = max(range(len(device["faces"])), key=lambda i: iou(face["box"], device["faces"][i]["box"]),
                       default=None)
            if best is None or iou(face["box"], device["faces"][best]["box"]) < 0.8:
                continue
            used.add(best)
            matched += 1
            mine = device["faces"][best]["probabilities"]
            same_labels += labels(mine, vocab, threshold) == face["labels"]
            differences.append(max(abs(a - face["probabilities"][name]) for a, name in zip(mine, vocab, strict=True)))
        extra += len(device["faces"]) - len(used)
    print(f"per face (faces=auto): {answered}/{len(rows)} photos answered on the device (the rest go to the server); "
          f"server's faces found on the device with IoU >= 0.8: {matched}/{server_faces} = "
          f"{matched / max(1, server_faces):.1%}, faces the server did not find: {extra}; same labels for "
          f"{same_labels}/{matched} = {same_labels / max(1, matched):.1%} of matched faces (p99 probability "
          f"difference {percentile(differences or [0], 99):.2e})")
    print(f"page's default mode (automatic): device answer's labels equal the server's for {same_page}/{answered} = "
          f"{same_page / max(1, answered):.1%}; device latency p50 / p95 {percentile(device_ms or [0], 50):.0f} / "
          f"{percentile(device_ms or [0], 95):.0f} ms")


def live_rate(url: str, seconds: float) -> str:
    """The live camera on the device: benchmarks/live.py's video (a head moving across the coffee photo, 640x480)
    played by Chromium's fake camera; the page's own frame rate and time per frame after `seconds`."""
    import sys
    import tempfile

    from PIL import Image

    sys.path.insert(0, str(ROOT / "tests"))
    from benchmarks.live import video
    from helpers import write_y4m

    frames = [Image.open(__import__("io").BytesIO(data)).convert("RGB") for data in video()]
    with tempfile.TemporaryDirectory() as folder:
        clip = write_y4m(Path(folder) / "camera.y4m", frames)
        driver = browser(Path(folder) / "profile", "--use-fake-ui-for-media-stream",
                         "--use-fake-device-for-media-stream", f"--use-file-for-fake-video-capture={clip}",
                         "--autoplay-policy=no-user-gesture-required")
        try:
            driver.get(url + "/")
            if wait_ready(driver) != "ready":
                return "on-device mode did not start"
            driver.execute_script("document.getElementById('live-start').click()")
            time.sleep(seconds)
            text = driver.execute_script("return document.getElementById('live-stats').textContent")
            sent = driver.execute_script("return performance.getEntriesByType('resource')"
                                         ".filter(function (e) { return e.name.indexOf('/api/frame') >= 0; }).length")
            return f"{text} (requests to /api/frame: {sent})"
        finally:
            driver.quit()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "export.onnx")
    parser.add_argument("--csv", type=Path, default=ROOT.parent / "shared" / "data" / "masks" / "labels.csv")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--live-seconds", type=float, default=20)
    parser.add_argument("--browser", choices=("chromium", "firefox"), default="chromium",
                        help="firefox: Firefox ESR over WebDriver BiDi; no live-camera rate (no video-file camera)")
    args = parser.parse_args()

    import tempfile

    photos = sample(args.csv, args.count, args.seed)
    url, server, counted = serve(args.model)
    model = json.load(urllib.request.urlopen(f"{url}/api/model"))
    vocab, threshold = model["categories"], model["decision_rules"]["threshold"]
    with tempfile.TemporaryDirectory() as profile:
        driver = Firefox(Path(profile)) if args.browser == "firefox" else browser(Path(profile))
        try:
            driver.get(url + "/")
            state = wait_ready(driver)
            stats = driver.execute_script("return window.MaskOnDevice.stats")
            for _ in range(100):  # and the service worker has saved its copy of the page's files (it installs first)
                if driver.execute_script("return !!(navigator.serviceWorker && navigator.serviceWorker.controller)"):
                    break
                time.sleep(0.1)
            visit = counted.snapshot()
            if state != "ready":
                status = driver.execute_script("return document.getElementById('ondevice-status').textContent")
                raise SystemExit(f"on-device mode is {state}: {status}")
            rows = []
            live = (live_rate(url, args.live_seconds) if args.live_seconds and args.browser == "chromium"
                    else "not measured")
            for path in photos:
                data = path.read_bytes()
                encoded = base64.b64encode(data).decode("ascii")
                device = driver.execute_async_script(DEVICE_PROBABILITIES, encoded)
                device_faces = driver.execute_async_script(DEVICE_FACES, encoded)
                whole, whole_ms = post(f"{url}/api/predict", data)
                auto, auto_ms = post(f"{url}/api/predict?faces=auto", data)
                rows.append((path, device, whole, whole_ms, auto, auto_ms, device_faces))
        finally:
            driver.quit()
            server.shutdown()

    failed = [row for row in rows if "error" in row[1]]
    good = [row for row in rows if "error" not in row[1]]
    same_whole, differences, device_ms, api_ms, auto_ms = 0, [], [], [], []
    for _path, device, whole, whole_time, _auto, auto_time, _ in good:
        server_p = [whole["probabilities"][name] for name in vocab]
        device_labels = labels(device["probabilities"], vocab, threshold)
        same_whole += device_labels == whole["labels"]
        differences.append(max(abs(a - b) for a, b in zip(device["probabilities"], server_p, strict=True)))
        device_ms.append(device["ms"])
        api_ms.append(whole_time)
        auto_ms.append(auto_time)
    n = len(good)
    first_visit = sum(size for _, size in visit)
    name = f"Firefox {driver.version}" if args.browser == "firefox" else "Chromium"
    print(f"on-device benchmark, {time.strftime('%Y-%m-%d')}, {platform.node()}, {name} headless, "
          f"{n} validation photos ({len(failed)} not answered on the device), model {args.model.name}")
    print(f"runtime onnxruntime-web {model['on_device']['runtime']['version']} "
          f"({model['on_device']['runtime']['build']}), {model['on_device']['runtime']['bytes'] / 1e6:.1f} MB; "
          f"model {model['on_device']['model_bytes'] / 1e6:.1f} MB")
    print(f"parity, whole photo vs /api/predict: same labels {same_whole}/{n} = {same_whole / n:.1%}; "
          f"max |probability difference| per photo: p99 {percentile(differences, 99):.2e}, "
          f"max {max(differences):.2e}, median {statistics.median(differences):.2e}")
    faces_report(rows, vocab, threshold)
    print(f"latency per photo, p50 / p95: device (whole photo) {percentile(device_ms, 50):.0f} / "
          f"{percentile(device_ms, 95):.0f} ms; /api/predict whole {percentile(api_ms, 50):.0f} / "
          f"{percentile(api_ms, 95):.0f} ms; /api/predict?faces=auto {percentile(auto_ms, 50):.0f} / "
          f"{percentile(auto_ms, 95):.0f} ms (loopback)")
    print(f"on-device ready {stats['readyAt'] / 1000:.1f} s after navigation started (first visit, empty cache); "
          f"one forward pass {stats['forwardMs']:.0f} ms")
    largest = sorted(visit, key=lambda entry: -entry[1])[:3]
    named = ", ".join(f"{path.split('/')[-1]} {size / 1e6:.1f} MB" for path, size in largest)
    again = len(visit) - len({path for path, _ in visit})
    print(f"first visit: {first_visit / 1e6:.1f} MB sent by the server in {len(visit)} responses, {again} of them a "
          f"second copy (the service worker saving the page's files; largest: {named})")
    print(f"live camera on the device, 640x480 frames, faces searched at 320 px: {live}")
    for path, device, *_rest in failed[:5]:
        print(f"  not on the device: {path.name}: {device['error']}")


if __name__ == "__main__":
    main()
