"""A real browser (headless Debian Chromium via chromedriver) uploads a photo through the form."""

from __future__ import annotations

import io
import threading

import pytest
from PIL import Image
from werkzeug.serving import make_server
from werkzeug.wrappers import Request

from helpers import CHROMEDRIVER, CHROMIUM, NO_CHROMIUM, encode
from datasets import face_like_image

pytestmark = pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER), reason=NO_CHROMIUM)


class RecordUploads:
    """WSGI middleware that keeps a copy of each file the browser sends in the field `file`."""

    def __init__(self, app):
        self.app = app
        self.files: list[bytes] = []

    def __call__(self, environ, start_response):
        if environ["REQUEST_METHOD"] == "POST":
            body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
            copy = dict(environ, **{"wsgi.input": io.BytesIO(body)})
            self.files += [part.read() for part in Request(copy).files.getlist("file") if part.filename]
            environ["wsgi.input"] = io.BytesIO(body)
        return self.app(environ, start_response)


@pytest.fixture
def uploads(make_app) -> RecordUploads:
    return RecordUploads(make_app(threshold=0.01))


@pytest.fixture
def live_url(uploads):
    server = make_server("127.0.0.1", 0, uploads)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


def _wait_for_result(browser) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(browser, 60).until(expected_conditions.presence_of_element_located((By.ID, "result-heading")))


def test_upload_through_the_form_shows_the_categories(browser, live_url, uploads, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    photo = tmp_path / "face.jpg"
    photo.write_bytes(encode(face_like_image(["Medical"], seed=5, size=(160, 200))))
    browser.get(live_url)
    submit = browser.find_element(By.ID, "submit-button")
    assert not submit.is_enabled(), "submit stays disabled until a photo is chosen"
    browser.find_element(By.ID, "file-input").send_keys(str(photo))
    preview = browser.find_element(By.ID, "preview")
    WebDriverWait(browser, 10).until(lambda driver: preview.is_displayed())
    assert submit.is_enabled()
    assert browser.find_element(By.ID, "file-name").text == "face.jpg"
    submit.click()
    _wait_for_result(browser)
    assert uploads.files == [photo.read_bytes()], "a photo within the size limit is sent as it is"
    rows = browser.find_elements(By.CSS_SELECTOR, "table.bars tr")
    assert len(rows) == 7
    chips = browser.find_elements(By.CSS_SELECTOR, ".chips .chip")
    assert chips and all(chip.is_displayed() for chip in chips)
    assert browser.find_element(By.CSS_SELECTOR, ".photo img").get_attribute("src").startswith("data:image/jpeg")
    assert not [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"], "no CSP or script errors"


def test_a_large_phone_photo_is_sent_shrunk_and_upright(browser, live_url, uploads, tmp_path):
    """A 3000x2000 photo stored sideways (EXIF orientation 6) arrives as a 1365x2048 upright JPEG without EXIF."""
    from selenium.webdriver.common.by import By

    from maskclassifier.web.pages import UPLOAD_MAX_SIDE

    upright = face_like_image(["Cloth"], seed=3, size=(2000, 3000))
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display", as phones store portrait photos
    photo = tmp_path / "IMG_0001.JPG"
    photo.write_bytes(encode(upright.rotate(90, expand=True), exif=exif.tobytes(), quality=95))
    browser.get(live_url)
    browser.find_element(By.ID, "file-input").send_keys(str(photo))
    browser.find_element(By.ID, "submit-button").click()
    _wait_for_result(browser)

    [sent] = uploads.files
    assert len(sent) < photo.stat().st_size
    received = Image.open(io.BytesIO(sent))
    assert received.format == "JPEG"
    assert received.size == (1365, UPLOAD_MAX_SIDE)
    assert 0x0112 not in received.getexif(), "drawn upright, so no orientation is left to apply"
    # the mask is drawn on the lower half of the face: the right way up, it is below the bare forehead
    assert received.getpixel((682, 1331)) == pytest.approx(upright.getpixel((1000, 1950)), abs=12)
    assert received.getpixel((682, 614)) == pytest.approx(upright.getpixel((1000, 900)), abs=12)
    assert not [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
