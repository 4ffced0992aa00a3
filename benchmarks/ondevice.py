"""On-device mode (issue 30) against the server, in this machine's headless Chromium.

    PYTHONPATH=. .venv/bin/python -m benchmarks.ondevice [--count 300] [--model models/export.onnx]
        [--csv ../shared/data/masks/labels.csv]

The app (the `.onnx` model, the face detector) is served on a loopback port by Werkzeug's threaded server; a
headless Chromium (a fresh profile: a first visit) opens the page and waits until on-device mode is ready. Then
`--count` validation photos (is_valid, a seeded sample) are classified three ways: in the browser
(`MaskOnDevice.probabilities`, the page's own code: decoding, item Resize, the ONNX graph, the decision rules),
by POST /api/predict (the whole photo: the reference) and by POST /api/predict?faces=auto (the page's default
mode, which on-device mode leaves to the server). It prints:

- parity: the share of photos whose labels on the device are the server's, and the 99th percentile and maximum
  of the largest probability difference per photo;
- latency: p50/p95 per photo on the device (decode, resize, forward pass, the rules; no network) and through
  the API (a loopback round trip, so the network a real visitor has is not counted);
- time from the start of navigation to on-device ready, and the first visit's bytes (every resource the page
  loaded by then: the page, its scripts and styles, the runtime, the model), from the Resource Timing entries.
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
    return sorted((name for name, p in zip(vocab, probabilities) if p > threshold),
                  key=lambda name: -probabilities[vocab.index(name)])


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def serve(model: Path) -> tuple[str, object]:
    from werkzeug.serving import make_server

    from maskclassifier.core.config import Settings
    from maskclassifier.web import create_app

    app = create_app(Settings(model_path=model, torch_threads=1))
    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_port}", server


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


def wait_ready(driver, seconds: float = 120) -> str:
    deadline = time.time() + seconds
    while time.time() < deadline:
        state = driver.execute_script("return window.MaskOnDevice ? window.MaskOnDevice.state() : 'idle'")
        if state not in ("idle", "loading"):
            return state
        time.sleep(0.1)
    return "timeout"


DEVICE_PROBABILITIES = """
var done = arguments[arguments.length - 1];
var bytes = Uint8Array.from(atob(arguments[0]), function (c) { return c.charCodeAt(0); });
window.MaskOnDevice.probabilities(new Blob([bytes], {type: 'image/jpeg'}))
  .then(function (answer) { done({probabilities: answer.probabilities, ms: answer.ms}); },
        function (error) { done({error: String(error)}); });
"""

FIRST_VISIT = """
var entries = performance.getEntriesByType('navigation').concat(performance.getEntriesByType('resource'));
return entries.map(function (e) { return {name: e.name, bytes: e.transferSize, body: e.encodedBodySize}; });
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "export.onnx")
    parser.add_argument("--csv", type=Path, default=ROOT.parent / "shared" / "data" / "masks" / "labels.csv")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import tempfile

    photos = sample(args.csv, args.count, args.seed)
    url, server = serve(args.model)
    model = json.load(urllib.request.urlopen(f"{url}/api/model"))
    vocab, threshold = model["categories"], model["decision_rules"]["threshold"]
    with tempfile.TemporaryDirectory() as profile:
        driver = browser(Path(profile))
        try:
            driver.get(url + "/")
            state = wait_ready(driver)
            stats = driver.execute_script("return window.MaskOnDevice.stats")
            visit = driver.execute_script(FIRST_VISIT)
            if state != "ready":
                raise SystemExit(f"on-device mode is {state}: "
                                 + driver.execute_script("return document.getElementById('ondevice-status').textContent"))
            rows = []
            for path in photos:
                data = path.read_bytes()
                device = driver.execute_async_script(DEVICE_PROBABILITIES, base64.b64encode(data).decode("ascii"))
                whole, whole_ms = post(f"{url}/api/predict", data)
                auto, auto_ms = post(f"{url}/api/predict?faces=auto", data)
                rows.append((path, device, whole, whole_ms, auto, auto_ms))
        finally:
            driver.quit()
            server.shutdown()

    failed = [row for row in rows if "error" in row[1]]
    good = [row for row in rows if "error" not in row[1]]
    same_whole, same_auto, differences, device_ms, api_ms, auto_ms = 0, 0, [], [], [], []
    for path, device, whole, whole_time, auto, auto_time in good:
        server_p = [whole["probabilities"][name] for name in vocab]
        device_labels = labels(device["probabilities"], vocab, threshold)
        same_whole += device_labels == whole["labels"]
        same_auto += device_labels == auto["labels"]
        differences.append(max(abs(a - b) for a, b in zip(device["probabilities"], server_p)))
        device_ms.append(device["ms"])
        api_ms.append(whole_time)
        auto_ms.append(auto_time)
    n = len(good)
    first_visit = sum(entry["bytes"] or 0 for entry in visit)
    print(f"on-device benchmark, {time.strftime('%Y-%m-%d')}, {platform.node()}, Chromium headless, "
          f"{n} validation photos ({len(failed)} not answered on the device), model {args.model.name}")
    print(f"runtime onnxruntime-web {model['on_device']['runtime']['version']} "
          f"({model['on_device']['runtime']['build']}), {model['on_device']['runtime']['bytes'] / 1e6:.1f} MB; "
          f"model {model['on_device']['model_bytes'] / 1e6:.1f} MB")
    print(f"parity, whole photo vs /api/predict: same labels {same_whole}/{n} = {same_whole / n:.1%}; "
          f"max |probability difference| per photo: p99 {percentile(differences, 99):.2e}, "
          f"max {max(differences):.2e}, median {statistics.median(differences):.2e}")
    print(f"page's default mode (faces=auto) answers on the server; device whole-photo labels equal its labels for "
          f"{same_auto}/{n} = {same_auto / n:.1%} (not a parity measure: different modes)")
    print(f"latency per photo, p50 / p95: device (whole photo) {percentile(device_ms, 50):.0f} / "
          f"{percentile(device_ms, 95):.0f} ms; /api/predict whole {percentile(api_ms, 50):.0f} / "
          f"{percentile(api_ms, 95):.0f} ms; /api/predict?faces=auto {percentile(auto_ms, 50):.0f} / "
          f"{percentile(auto_ms, 95):.0f} ms (loopback)")
    print(f"on-device ready {stats['readyAt'] / 1000:.1f} s after navigation started (first visit, empty cache); "
          f"one forward pass {stats['forwardMs']:.0f} ms")
    largest = sorted(visit, key=lambda entry: -(entry["bytes"] or 0))[:3]
    named = ", ".join(f"{entry['name'].split('/')[-1].split('?')[0]} {(entry['bytes'] or 0) / 1e6:.1f} MB"
                      for entry in largest)
    print(f"first visit: {first_visit / 1e6:.1f} MB transferred in {len(visit)} requests (largest: {named})")
    for path, device, *_ in failed[:5]:
        print(f"  not on the device: {path.name}: {device['error']}")


if __name__ == "__main__":
    main()
