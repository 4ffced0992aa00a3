"""The "Why?" heat-map and the live camera in a real browser (headless Chromium via chromedriver)."""

from __future__ import annotations

import pytest

from datasets import camera_frames, face_like_image
from helpers import encode
from maskclassifier.core.categories import CATEGORIES, UNSURE_COLOUR

pytestmark = pytest.mark.slow  # headless Chromium


def severe_errors(browser) -> list[dict]:
    return [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]


def test_why_shows_the_heat_map_with_a_legend_in_plain_words(chromium, serve, make_app, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    browser = chromium()
    url = serve(make_app(threshold=0.01))
    photo = tmp_path / "face.jpg"
    photo.write_bytes(encode(face_like_image(["Medical"], seed=5, size=(160, 200))))
    browser.get(url)
    browser.find_element(By.ID, "file-input").send_keys(str(photo))
    browser.find_element(By.ID, "submit-button").click()
    WebDriverWait(browser, 60).until(expected_conditions.presence_of_element_located((By.ID, "result-heading")))
    section = browser.find_element(By.ID, "explain")
    assert section.is_displayed(), "the script shows the Why? section"
    title = section.get_attribute("data-title")
    browser.find_element(By.ID, "why-button").click()
    figure = browser.find_element(By.ID, "why-figure")
    WebDriverWait(browser, 60).until(lambda driver: figure.is_displayed())
    image = browser.find_element(By.ID, "why-image")
    assert image.get_attribute("src").startswith("data:image/png;base64,")
    WebDriverWait(browser, 10).until(lambda driver: driver.execute_script(
        "return arguments[0].complete && arguments[0].naturalWidth", image))
    assert browser.execute_script("return arguments[0].naturalWidth", image) == 160
    legend = browser.find_element(By.ID, "why-legend").text
    assert legend.startswith(f"Brighter = mattered more for '{title}'.") and "%" in legend
    assert not severe_errors(browser), "no CSP or script errors"


def with_fake_camera(chromium, tmp_path, frames: int, *flags: str):
    """A Chromium whose camera plays `frames` frames of camera_frames (a Y4M file), allowed without a prompt."""
    from helpers import write_y4m

    video = write_y4m(tmp_path / "camera.y4m", camera_frames(frames))
    return chromium("--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                    f"--use-file-for-fake-video-capture={video}", *flags)


def test_live_camera_draws_each_face_and_stop_releases_the_camera(chromium, serve, make_app, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser = with_fake_camera(chromium, tmp_path, 10, "--autoplay-policy=no-user-gesture-required")
    browser.get(serve(make_app()))
    section = browser.find_element(By.ID, "live")
    assert section.is_displayed()
    browser.find_element(By.ID, "live-start").click()
    # the list is rebuilt for every answer (several a second): read it in one script call, not element by element
    captions = "return Array.from(document.querySelectorAll('#live-faces li'), item => item.textContent)"
    [caption] = WebDriverWait(browser, 60).until(lambda driver: driver.execute_script(captions))
    assert caption.startswith("1 ")
    stats = browser.find_element(By.ID, "live-stats")
    WebDriverWait(browser, 30).until(lambda driver: "frames per second" in stats.text)
    # The box and its caption band are drawn over the video in a category's colour (or grey when unsure): count
    # the canvas pixels of exactly those colours, which the camera's video itself does not have.
    colours = [category.colour for category in CATEGORIES.values()] + [UNSURE_COLOUR]
    drawn = browser.execute_script("""
        var canvas = document.getElementById('live-canvas');
        var pixels = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
        var wanted = arguments[0].map(function (hex) {
          return [1, 3, 5].map(function (i) { return parseInt(hex.substr(i, 2), 16); }).join(','); });
        var count = 0;
        for (var i = 0; i < pixels.length; i += 4) {
          if (wanted.indexOf(pixels[i] + ',' + pixels[i + 1] + ',' + pixels[i + 2]) >= 0) { count++; }
        }
        return [canvas.width, canvas.height, count];
    """, colours)
    assert drawn[:2] == [640, 480] and drawn[2] > 300, drawn
    browser.execute_script("window.cameraTrack = document.getElementById('live-video').srcObject.getVideoTracks()[0]")
    assert browser.execute_script("return window.cameraTrack.readyState") == "live"
    assert not browser.find_element(By.ID, "live-start").is_displayed(), "one button at a time: Stop"
    browser.find_element(By.ID, "live-stop").click()
    assert browser.execute_script("return window.cameraTrack.readyState") == "ended"
    assert browser.find_element(By.ID, "live-message").text == "The camera is off."
    assert not browser.find_element(By.ID, "live-view").is_displayed()
    assert not severe_errors(browser), "no CSP or script errors"


class BusyFrames:
    """WSGI middleware: every live camera frame is answered 503 busy with Retry-After: 2, and counted."""

    def __init__(self, app):
        self.app, self.frames = app, 0

    def __call__(self, environ, start_response):
        if environ["PATH_INFO"] == "/api/frame":
            self.frames += 1
            start_response("503 Service Unavailable", [("Content-Type", "application/json"), ("Retry-After", "2")])
            return [b'{"error": "busy", "message": "The server is busy."}']
        return self.app(environ, start_response)


def test_a_busy_server_skips_frames_instead_of_retrying_in_a_loop(chromium, serve, make_app, tmp_path):
    import time

    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser = with_fake_camera(chromium, tmp_path, 2)
    busy = BusyFrames(make_app())
    browser.get(serve(busy))
    browser.find_element(By.ID, "live-start").click()
    message = browser.find_element(By.ID, "live-message")
    WebDriverWait(browser, 30).until(lambda driver: "busy" in message.text)
    first = busy.frames
    time.sleep(5)
    assert 1 <= busy.frames - first <= 3, "a frame every Retry-After (2 s), not a retry loop"
    browser.find_element(By.ID, "live-stop").click()


@pytest.mark.parametrize("flags,expected", [
    (["--use-fake-ui-for-media-stream=deny", "--use-fake-device-for-media-stream"],
     "The camera is blocked. Allow this page to use the camera"),
    (["--use-fake-ui-for-media-stream"], "No camera was found."),  # no fake device: the machine has no camera
])
def test_a_denied_or_missing_camera_is_explained_in_plain_words(chromium, serve, make_app, flags, expected):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser = chromium(*flags)
    browser.get(serve(make_app()))
    browser.find_element(By.ID, "live-start").click()
    message = browser.find_element(By.ID, "live-message")
    WebDriverWait(browser, 30).until(lambda driver: message.text.startswith(expected.split(".")[0]))
    assert message.text.startswith(expected)
    assert not browser.find_element(By.ID, "live-view").is_displayed()
    assert browser.find_element(By.ID, "live-start").is_displayed(), "Start again, once the camera is allowed"


class CountFrames:
    """WSGI middleware counting the live camera's frames."""

    def __init__(self, app):
        self.app, self.frames = app, 0

    def __call__(self, environ, start_response):
        self.frames += environ["PATH_INFO"] == "/api/frame"
        return self.app(environ, start_response)


def test_the_live_camera_pauses_while_the_tab_is_hidden(chromium, serve, make_app, tmp_path):
    import time

    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser = with_fake_camera(chromium, tmp_path, 2)
    counted = CountFrames(make_app())
    browser.get(serve(counted))
    live_tab = browser.current_window_handle
    browser.find_element(By.ID, "live-start").click()
    WebDriverWait(browser, 60).until(lambda driver: counted.frames >= 2)
    browser.switch_to.new_window("tab")  # the live page's tab is now in the background
    time.sleep(2)  # the frame in flight, if any, is answered
    hidden_from = counted.frames
    time.sleep(3)
    assert counted.frames == hidden_from, "no frame is sent while the tab is hidden"
    browser.switch_to.window(live_tab)
    WebDriverWait(browser, 30).until(lambda driver: counted.frames > hidden_from)


def test_the_live_camera_explains_an_insecure_page(chromium, serve, make_app):
    """getUserMedia needs https or localhost: over plain http to another address the page says so."""
    import socket

    from selenium.webdriver.common.by import By

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect(("10.255.255.255", 1))  # no packet is sent: this picks the address of the default route
        address = probe.getsockname()[0]
    if address.startswith("127."):
        pytest.skip("this machine has no address but loopback")
    browser = chromium("--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream")
    browser.get(serve(make_app(), address))
    browser.find_element(By.ID, "live-start").click()
    message = browser.find_element(By.ID, "live-message").text
    assert message.startswith("The live camera needs a secure connection: open this page over https")
