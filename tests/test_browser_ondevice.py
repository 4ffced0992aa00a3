"""On-device mode (issue 30) in headless Chromium: the shipped ONNX model and MTCNN run in the page with ONNX
Runtime Web; photos it answers never reach the server, its answers are the server's, and the server answers the
rest (no WebAssembly, the switch off, ?device=off)."""

from __future__ import annotations

import base64
import threading

import pytest

from datasets import camera_frames, face_like_image
from helpers import CHROMEDRIVER, CHROMIUM, NO_CHROMIUM, ROOT, RecordUploads, axe_violations, encode

pytestmark = pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER), reason=NO_CHROMIUM)

MODEL = ROOT / "models" / "export.onnx"
EXAMPLES = ROOT / "maskclassifier" / "web" / "static" / "examples"


@pytest.fixture(scope="module")
def onnx_app():
    from maskclassifier.core.config import Settings
    from maskclassifier.web import create_app

    if not MODEL.is_file():
        pytest.skip("needs models/export.onnx")
    app = create_app(Settings(model_path=MODEL, torch_threads=1))
    app.config["TESTING"] = True
    return app


class ClassifiersDown:
    """WSGI middleware: while `down`, every address that classifies on the server (the API, POST / and POST
    /result) answers 503, as if the server's classifiers were gone; the page, its files and the wording of
    on-device answers (POST /result/computed, numbers only) still work."""

    def __init__(self, app):
        self.app = app
        self.down = False
        self.refused: list[str] = []

    def __call__(self, environ, start_response):
        path, method = environ.get("PATH_INFO", ""), environ["REQUEST_METHOD"]
        if self.down and (path.startswith("/api/") or (method == "POST" and path in ("/", "/result"))):
            self.refused.append(f"{method} {path}")
            start_response("503 Service Unavailable", [("Content-Type", "text/plain")])
            return [b"down"]
        return self.app(environ, start_response)


@pytest.fixture
def recorded(onnx_app):
    return RecordUploads(onnx_app)


@pytest.fixture
def switchable(recorded):
    return ClassifiersDown(recorded)


@pytest.fixture
def page_url(switchable, serve):
    return serve(switchable)


def by_css(driver, selector):
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, selector)


def wait(driver, condition, seconds: float = 60):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, seconds, poll_frequency=0.1).until(condition)


def device_state(driver) -> str:
    return driver.execute_script("return window.MaskOnDevice ? window.MaskOnDevice.state() : 'idle'")


def wait_until_settled(driver) -> str:
    """The on-device state once it has stopped loading: ready, slow, unavailable or failed."""
    wait(driver, lambda d: device_state(d) not in ("idle", "loading"), 120)
    return device_state(driver)


def status(driver) -> str:
    return by_css(driver, "#ondevice-status")[0].text


def whole_photo_mode(driver) -> None:
    by_css(driver, 'input[name="faces"][value="off"]')[0].click()


def classify_file(driver, path) -> None:
    driver.execute_script("var r = document.getElementById('result'); if (r) { r.id = 'old-result'; }")
    by_css(driver, "#file-input")[0].send_keys(str(path))
    by_css(driver, "#submit-button")[0].click()
    wait(driver, lambda d: by_css(d, "#result .where") or by_css(d, "#result .error"))


def classify_example(driver, name: str) -> None:
    driver.execute_script("var r = document.getElementById('result'); if (r) { r.id = 'old-result'; }")
    by_css(driver, f'button.example[value="{name}"]')[0].click()
    wait(driver, lambda d: by_css(d, "#result .where") or by_css(d, "#result .error"))


def answer(driver) -> dict:
    """What the result says: the headline, where, and every bar's percentage."""
    assert by_css(driver, "#result .where"), by_css(driver, "#result")[0].text
    return {"title": by_css(driver, "#result-heading")[0].text,
            "where": by_css(driver, "#result .where")[0].get_attribute("data-where"),
            "bars": [row.text for row in by_css(driver, "#result table.bars tr")]}


def severe_logs(driver) -> list:
    return [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def resources(driver) -> list[str]:
    return driver.execute_script(
        "return performance.getEntriesByType('resource').map(function (e) { return e.name; });")


@pytest.fixture
def face_photo(tmp_path):
    path = tmp_path / "face.jpg"
    path.write_bytes(encode(face_like_image(["Medical"], seed=5, size=(300, 400)), quality=90))
    return path


def test_a_whole_photo_is_answered_on_the_device_as_the_server_answers_it(chromium, page_url, recorded, onnx_app,
                                                                         face_photo):
    browser = chromium("--hide-scrollbars")
    browser.get(page_url)
    assert wait_until_settled(browser) == "ready", status(browser)
    assert "do not leave this device" in status(browser)
    assert browser.execute_script("return window.MaskOnDevice.stats.runsIn") == "workers"
    assert browser.execute_script("return typeof window.ort") == "undefined", "the runtime is in the workers only"
    whole_photo_mode(browser)
    classify_file(browser, face_photo)
    on_device = answer(browser)
    assert on_device["where"] == "device"
    assert "on this device" in by_css(browser, "#result .where")[0].text
    assert recorded.files == [], "the photo was not uploaded"
    assert by_css(browser, "#result .photo img")[0].get_attribute("src").startswith("data:image/jpeg")
    assert axe_violations(browser) == []

    # the server's answer for the same photo, in the same words (POST /result, as the page sends it)
    with onnx_app.test_client() as client:
        server = client.post("/api/predict", data={"file": (face_photo.open("rb"), "face.jpg")}).get_json()
    device = browser.execute_async_script(
        "var done = arguments[arguments.length - 1];"
        "fetch(arguments[0]).then(function (r) { return r.blob(); })"
        ".then(function (b) { return window.MaskOnDevice.probabilities(b); })"
        ".then(function (a) { done(a.probabilities); });", "/static/examples/medical.jpg")
    with onnx_app.test_client() as client:
        example = client.post("/api/predict",
                              data={"file": ((EXAMPLES / "medical.jpg").open("rb"), "m.jpg")}).get_json()
    vocab = list(example["probabilities"])
    assert max(abs(a - example["probabilities"][name]) for a, name in zip(device, vocab, strict=True)) < 1e-4
    assert server["labels"], "the test photo gets an answer"
    assert not severe_logs(browser), "no CSP or script errors"


def test_with_the_servers_classifiers_blocked_a_photo_a_group_photo_and_an_example_are_still_answered(
        chromium, page_url, recorded, switchable, face_photo):
    browser = chromium()
    browser.get(page_url)
    assert wait_until_settled(browser) == "ready"
    switchable.down = True
    whole_photo_mode(browser)
    classify_file(browser, face_photo)
    assert answer(browser)["where"] == "device"
    by_css(browser, 'input[name="faces"][value="auto"]')[0].click()
    classify_example(browser, "group")
    assert answer(browser)["where"] == "device" and answer(browser)["title"].startswith("4 faces")
    whole_photo_mode(browser)
    classify_example(browser, "no-mask")
    assert answer(browser)["where"] == "device" and answer(browser)["title"] == "No mask on the face"
    assert recorded.files == [] and switchable.refused == []


def test_without_webassembly_the_server_answers_with_the_same_words(chromium, page_url, recorded, face_photo):
    device_browser = chromium()
    device_browser.get(page_url)
    assert wait_until_settled(device_browser) == "ready"
    whole_photo_mode(device_browser)
    classify_file(device_browser, face_photo)
    on_device = answer(device_browser)

    browser = chromium()
    # a browser without WebAssembly, as the page sees it (Chromium's --js-flags=--noexpose_wasm no longer hides it)
    browser.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": "delete window.WebAssembly;"})
    browser.get(page_url)
    assert browser.execute_script("return typeof WebAssembly") == "undefined"
    assert wait_until_settled(browser) == "unavailable"
    assert "no WebAssembly" in status(browser)
    assert not [name for name in resources(browser) if "/device/model-" in name or "onnxruntime" in name]
    whole_photo_mode(browser)
    classify_file(browser, face_photo)
    on_server = answer(browser)
    assert recorded.files == [face_photo.read_bytes()]
    assert on_server["where"] == "server"
    assert {**on_server, "where": None} == {**on_device, "where": None}
    assert axe_violations(browser) == []


class RunnerMissing:
    """WSGI middleware: the on-device worker's script (static/ondevice-runner.js) is a 404, as if it could not be
    fetched; everything else is the app's."""

    def __init__(self, app):
        self.app = app

    def __call__(self, environ, start_response):
        if environ.get("PATH_INFO", "").endswith("/ondevice-runner.js"):
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"gone"]
        return self.app(environ, start_response)


@pytest.mark.parametrize("why", ["no Web Workers", "the worker's script fails"])
def test_without_workers_the_networks_run_on_the_page_with_the_same_answers(chromium, serve, recorded, why):
    """Where Web Workers cannot start, the sessions run on the page's own thread: a photo, per face and whole, gets
    the very answer the workers give, and the live camera takes one frame at a time."""
    group = (EXAMPLES / "group.jpg").read_bytes()
    script = ("var done = arguments[arguments.length - 1];"
              "var blob = new Blob([Uint8Array.from(atob(arguments[0]), c => c.charCodeAt(0))], {type: 'image/jpeg'});"
              "window.MaskOnDevice.faces(blob).then(function (a) { delete a.ms; done(a); },"
              " function (e) { done({error: String(e)}); });")
    encoded = base64.b64encode(group).decode("ascii")
    answers = {}
    without = recorded if why == "no Web Workers" else RunnerMissing(recorded)
    for name, app in (("workers", recorded), ("page", without)):
        browser = chromium()
        if name == "page" and why == "no Web Workers":
            browser.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": "delete window.Worker;"})
        browser.get(serve(app))
        assert wait_until_settled(browser) == "ready", status(browser)
        assert browser.execute_script("return window.MaskOnDevice.stats.runsIn") == name
        assert browser.execute_script("return window.MaskOnDevice.framesAtOnce()") == (2 if name == "workers" else 1)
        answers[name] = browser.execute_async_script(script, encoded)
        assert "error" not in answers[name], answers[name]
        assert not [entry for entry in severe_logs(browser) if "ondevice-runner" not in entry["message"]]
    assert len(answers["page"]["faces"]) == 4
    assert answers["page"] == answers["workers"]
    assert recorded.files == []


def test_the_switch_and_device_off_send_photos_to_the_server(chromium, page_url, recorded, face_photo):
    browser = chromium()
    browser.get(page_url + "/?device=off")
    wait(browser, lambda d: "?device=off" in status(d), 20)
    toggle = by_css(browser, "#ondevice-toggle")[0]
    assert not toggle.is_selected() and not toggle.is_enabled()
    whole_photo_mode(browser)
    classify_file(browser, face_photo)
    assert answer(browser)["where"] == "server" and len(recorded.files) == 1
    assert not [name for name in resources(browser) if "/device/model-" in name], "the model is not even downloaded"

    browser.get(page_url)
    assert wait_until_settled(browser) == "ready"
    by_css(browser, "#ondevice-toggle")[0].click()  # off
    assert "is off" in status(browser)
    whole_photo_mode(browser)
    classify_file(browser, face_photo)
    assert answer(browser)["where"] == "server" and len(recorded.files) == 2

    browser.refresh()
    wait(browser, lambda d: "is off" in status(d), 20)
    assert not by_css(browser, "#ondevice-toggle")[0].is_selected(), "the choice is remembered"
    by_css(browser, "#ondevice-toggle")[0].click()  # on again
    assert wait_until_settled(browser) == "ready"
    whole_photo_mode(browser)
    classify_file(browser, face_photo)
    assert answer(browser)["where"] == "device" and len(recorded.files) == 2
    assert not severe_logs(browser)


def test_a_group_photo_is_answered_per_face_on_the_device_as_on_the_server(chromium, page_url, recorded, onnx_app):
    """The default mode (automatic): the ported detector finds the server's faces, the table is the server's
    template with the device's own close-ups, and nothing is uploaded."""
    browser = chromium("--hide-scrollbars")
    browser.get(page_url)
    assert wait_until_settled(browser) == "ready"
    assert "and their faces" in status(browser)
    classify_example(browser, "group")
    device = answer(browser)
    assert device["where"] == "device" and device["title"].startswith("4 faces: ")
    rows = [row.text for row in by_css(browser, ".face-row")]
    boxes = [row.get_attribute("data-box") for row in by_css(browser, ".face-row")]
    thumbnails = by_css(browser, "img.face-thumb")
    assert len(thumbnails) == 4
    assert all(image.get_attribute("src").startswith("data:image/jpeg") for image in thumbnails)
    assert browser.execute_script("return Array.prototype.every.call(document.querySelectorAll('img.face-thumb'),"
                                  " function (i) { return i.complete && i.naturalWidth > 0; })")
    assert recorded.files == []
    assert axe_violations(browser) == []

    with onnx_app.test_client() as client:
        server = client.post("/api/predict?faces=auto",
                             data={"file": ((EXAMPLES / "group.jpg").open("rb"), "group.jpg")}).get_json()
    assert boxes == [",".join(str(v) for v in face["box"]) for face in server["faces"]]
    # the same photo as the server answers it on a page without on-device mode
    browser.get(page_url + "/?device=off")
    classify_example(browser, "group")
    on_server = answer(browser)
    assert on_server["where"] == "server" and {**on_server, "where": None} == {**device, "where": None}
    assert [row.text for row in by_css(browser, ".face-row")] == rows
    assert not severe_logs(browser)


def test_the_live_camera_runs_on_the_device_and_sends_no_frame(chromium, page_url, recorded, switchable, tmp_path):
    """Chromium's fake camera (the astronaut's head over grey): faces are boxed and captioned from frames answered
    in the page; not one request reaches /api/frame."""
    from helpers import write_y4m

    video = write_y4m(tmp_path / "camera.y4m", camera_frames(4))
    browser = chromium("--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                       f"--use-file-for-fake-video-capture={video}", "--autoplay-policy=no-user-gesture-required")
    browser.get(page_url)
    assert wait_until_settled(browser) == "ready"
    switchable.down = True  # /api/frame would answer 503 (and be counted) if a frame were sent
    # how many frames the page has in hand at once: one searched for faces while the last one's are classified
    browser.execute_script("var device = window.MaskOnDevice, frame = device.frame, now = 0; window.mostFrames = 0;"
                           "device.frame = function (canvas, searched) { now += 1;"
                           " window.mostFrames = Math.max(window.mostFrames, now);"
                           " return frame(canvas, searched).finally(function () { now -= 1; }); };")
    by_css(browser, "#live-start")[0].click()
    captions = "return Array.from(document.querySelectorAll('#live-faces li'), item => item.textContent)"
    [caption] = wait(browser, lambda driver: driver.execute_script(captions), 60)
    assert caption.startswith("1 ")
    stats = by_css(browser, "#live-stats")[0]
    wait(browser, lambda driver: "frames per second" in stats.text, 30)
    assert "on this device" in stats.text
    wait(browser, lambda driver: driver.execute_script("return window.mostFrames") == 2, 30)
    by_css(browser, "#live-stop")[0].click()
    assert switchable.refused == [] and recorded.files == [], "no frame was sent"
    assert not severe_logs(browser)


def test_a_flat_photo_gets_the_servers_second_look_on_the_device(chromium, page_url, onnx_app, tmp_path):
    """faces.find_faces looks again at a dark or flat photo with its contrast stretched; the device does too."""
    import base64

    import numpy as np
    from PIL import Image

    # foggy: the photo squeezed into 25 levels, in which MTCNN finds no face until the contrast is stretched
    pixels = np.asarray(Image.open(EXAMPLES / "no-mask.jpg").convert("RGB"), dtype=np.float64)
    dark = encode(Image.fromarray((120 + pixels / 255 * 25).astype(np.uint8)), quality=90)
    from maskclassifier.classifier.faces import find_faces, low_contrast
    from maskclassifier.web.inference import face_detector

    with onnx_app.app_context():
        flat = Image.open(__import__("io").BytesIO(dark))
        assert not face_detector().detect(flat).faces and low_contrast(flat), "only the second look finds the face"
        assert find_faces(face_detector(), flat).faces
    with onnx_app.test_client() as client:
        server = client.post("/api/predict?faces=auto",
                             data={"file": (__import__("io").BytesIO(dark), "d.jpg")}).get_json()
    browser = chromium()
    browser.get(page_url)
    assert wait_until_settled(browser) == "ready"
    device = browser.execute_async_script(
        "var done = arguments[arguments.length - 1];"
        "var bytes = Uint8Array.from(atob(arguments[0]), function (c) { return c.charCodeAt(0); });"
        "window.MaskOnDevice.faces(new Blob([bytes], {type: 'image/jpeg'}))"
        ".then(done, function (e) { done({error: String(e)}); });", base64.b64encode(dark).decode("ascii"))
    assert "error" not in device, device
    assert [face["box"] for face in device["faces"]] == [face["box"] for face in server["faces"]]
    assert device["found"] == server["faces_found"]


DEVICE_PROBABILITIES = """
var done = arguments[arguments.length - 1];
var bytes = Uint8Array.from(atob(arguments[0]), function (c) { return c.charCodeAt(0); });
window.MaskOnDevice.probabilities(new Blob([bytes]))
  .then(function (a) { done(a.probabilities); }, function (e) { done({error: String(e)}); });
"""


def test_upright_decoding_and_formats_match_the_servers(chromium, page_url, onnx_app):
    """EXIF orientation applied as the server applies it, grey JPEGs, PNGs and a wide photo's views give the
    server's probabilities on the device; a CMYK JPEG (which Pillow converts with another formula) is refused,
    so the page sends it to the server."""
    import base64
    import io

    from PIL import Image

    from helpers import sideways_jpeg

    face = Image.open(EXAMPLES / "medical.jpg").convert("RGB")
    wide = Image.new("RGB", (face.width * 4, face.height), (90, 120, 150))
    wide.paste(face, (wide.width - face.width, 0))
    cases = {"sideways": sideways_jpeg(face), "grey": encode(face.convert("L"), quality=90),
             "png": encode(face, "PNG"), "wide": encode(wide, quality=92)}
    browser = chromium()
    browser.get(page_url)
    assert wait_until_settled(browser) == "ready"
    with onnx_app.test_client() as client:
        for name, data in cases.items():
            server = client.post("/api/predict", data={"file": (io.BytesIO(data), "p")}).get_json()["probabilities"]
            device = browser.execute_async_script(DEVICE_PROBABILITIES, base64.b64encode(data).decode("ascii"))
            assert "error" not in device, (name, device)
            assert max(abs(a - b) for a, b in zip(device, server.values(), strict=True)) < 1e-4, name
    cmyk = encode(face.convert("CMYK"), quality=90)
    refused = browser.execute_async_script(DEVICE_PROBABILITIES, base64.b64encode(cmyk).decode("ascii"))
    assert "does not decode as the server does" in refused["error"]


class SlowModel:
    """WSGI middleware: the classifier's ONNX file arrives only after `delay_s` seconds."""

    def __init__(self, app, delay_s: float):
        self.app, self.delay_s = app, delay_s

    def __call__(self, environ, start_response):
        import time

        if environ.get("PATH_INFO", "").startswith("/device/model-"):
            time.sleep(self.delay_s)
        return self.app(environ, start_response)


def test_the_first_photo_goes_to_the_server_while_the_model_downloads(chromium, serve, recorded, face_photo):
    browser = chromium()
    browser.get(serve(SlowModel(recorded, 8)))
    wait(browser, lambda d: device_state(d) == "loading", 20)
    whole_photo_mode(browser)
    classify_file(browser, face_photo)
    assert answer(browser)["where"] == "server" and len(recorded.files) == 1
    assert wait_until_settled(browser) == "ready"
    classify_file(browser, face_photo)
    assert answer(browser)["where"] == "device" and len(recorded.files) == 1


def test_a_device_slower_than_the_server_stays_on_the_server(chromium, page_url, recorded, face_photo):
    browser = chromium()
    # At 40x slower, a page script (even reading the state) can outlast WebDriver's 30 s script timeout on a busy
    # 2-core machine: the wait is for the page's verdict, not for any one script.
    browser.set_script_timeout(180)
    # DevTools slows the page's own thread, not its workers: the networks run on the page here (no Web Workers),
    # so that the first forward pass, which decides, is the slowed one.
    browser.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": "delete window.Worker;"})
    browser.execute_cdp_cmd("Emulation.setCPUThrottlingRate", {"rate": 40})
    browser.get(page_url)
    assert wait_until_settled(browser) == "slow", status(browser)
    assert "more slowly than the server" in status(browser)
    browser.execute_cdp_cmd("Emulation.setCPUThrottlingRate", {"rate": 1})
    whole_photo_mode(browser)
    classify_file(browser, face_photo)
    assert answer(browser)["where"] == "server" and len(recorded.files) == 1


def test_on_a_phone_the_switch_and_its_line_are_accessible(open_browser, page_url):
    browser = open_browser(phone=True)
    browser.get(page_url)
    assert wait_until_settled(browser) == "ready"
    toggle = by_css(browser, "#ondevice-toggle")[0]
    assert toggle.is_displayed() and toggle.is_selected()
    assert by_css(browser, "#ondevice-status")[0].get_attribute("role") == "status"
    assert axe_violations(browser) == []
    classify_example(browser, "kn95")
    assert answer(browser)["where"] == "device"
    assert axe_violations(browser) == []


def test_after_one_visit_on_device_mode_answers_with_the_server_gone(chromium, onnx_app, face_photo):
    """The service worker saves the page, the runtime and the model on the first visit: with the server stopped,
    the page reloads from the saved copy, says the server cannot be reached, and still answers a photo, a group
    photo and an example on the device, with the server's headline words."""
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, onnx_app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_port}/"
    browser = chromium()
    try:
        browser.get(url)
        assert wait_until_settled(browser) == "ready", status(browser)
        wait(browser, lambda d: d.execute_script("return !!navigator.serviceWorker.controller"))
        model_url = browser.execute_script("return document.getElementById('ondevice').getAttribute('data-config')")
        assert model_url == "/api/model"
        whole_photo_mode(browser)
        classify_file(browser, face_photo)
        online = answer(browser)
        assert online["where"] == "device"
    finally:
        server.shutdown()
        server.server_close()
    thread.join(10)

    browser.get(url)  # the server is gone: the saved page, runtime and model
    assert wait_until_settled(browser) == "ready", status(browser)
    assert "cannot be reached" in status(browser)
    # the workers' script and the runtime they load came from the saved copy too (else the page's thread runs them)
    assert browser.execute_script("return window.MaskOnDevice.stats.runsIn") == "workers"
    whole_photo_mode(browser)
    classify_file(browser, face_photo)
    offline = answer(browser)
    assert offline["where"] == "device" and offline["title"] == online["title"]
    assert "cannot be reached" in by_css(browser, "#result .offline")[0].text
    by_css(browser, 'input[name="faces"][value="auto"]')[0].click()
    classify_example(browser, "group")
    assert answer(browser)["where"] == "device" and answer(browser)["title"].startswith("4 faces")
    assert len(by_css(browser, "#result ul.offline-faces li")) == 4
    whole_photo_mode(browser)
    classify_example(browser, "no-mask")
    assert answer(browser)["title"] == "No mask on the face"
    assert not [entry for entry in severe_logs(browser) if "Content Security Policy" in entry["message"]]
