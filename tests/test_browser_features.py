"""The "Why?" heat-map and the live camera in a real browser (headless Chromium via chromedriver)."""

from __future__ import annotations

from datasets import face_like_image
from helpers import encode


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
