"""A real browser (headless Debian Chromium via chromedriver) uploads a photo through the form."""

from __future__ import annotations

import shutil
import threading

import pytest
from werkzeug.serving import make_server

from conftest import encode
from datasets import face_like_image

CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER),
                                reason="needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)")


@pytest.fixture
def live_url(make_app):
    server = make_server("127.0.0.1", 0, make_app(threshold=0.01))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


@pytest.fixture
def browser(tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def test_upload_through_the_form_shows_the_categories(browser, live_url, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
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
    WebDriverWait(browser, 60).until(expected_conditions.presence_of_element_located((By.ID, "result-heading")))
    rows = browser.find_elements(By.CSS_SELECTOR, "table.bars tr")
    assert len(rows) == 7
    chips = browser.find_elements(By.CSS_SELECTOR, ".chips .chip")
    assert chips and all(chip.is_displayed() for chip in chips)
    assert browser.find_element(By.CSS_SELECTOR, ".photo img").get_attribute("src").startswith("data:image/jpeg")
    assert not [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"], "no CSP or script errors"
