"""A real browser (headless Debian Chromium via chromedriver) on the page, at phone (390x844, touch) and desktop
(1280x900) sizes, with and without JavaScript; axe-core (vendored under tests/vendor) checks each state."""

from __future__ import annotations

import base64
import io

import pytest
from PIL import Image

from datasets import face_like_image
from helpers import ROOT, axe_violations, encode, require_chromium

pytestmark = pytest.mark.slow  # headless Chromium


@pytest.fixture(autouse=True)
def chromium_present():
    require_chromium()  # skipped without it, failed where REQUIRE_BROWSER=1 (CI)


def by_css(driver, selector):
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, selector)


def wait(driver, condition, seconds: float = 60):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, seconds, poll_frequency=0.1).until(condition)


def wait_for_result(driver) -> None:
    wait(driver, lambda d: by_css(d, "#result #result-heading"))


def mark_page(driver) -> None:
    """A flag on the window that a full reload would lose."""
    driver.execute_script("window.notReloaded = true;")


def still_same_page(driver) -> bool:
    return driver.execute_script("return window.notReloaded === true;")


def rect(driver, element) -> dict:
    return driver.execute_script("var r = arguments[0].getBoundingClientRect();"
                                 "return {top: r.top, bottom: r.bottom, left: r.left, right: r.right,"
                                 " height: r.height, width: r.width, viewport: innerHeight};", element)


def fully_visible(driver, element) -> bool:
    box = rect(driver, element)
    return box["height"] > 0 and box["top"] >= 0 and box["bottom"] <= box["viewport"]


def css(driver, element, name: str) -> str:
    return driver.execute_script("return getComputedStyle(arguments[0]).getPropertyValue(arguments[1]);", element, name)


def severe_logs(driver) -> list:
    return [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def click_example(driver, name: str) -> None:
    by_css(driver, f'button.example[value="{name}"]')[0].click()


def test_upload_through_the_form_shows_the_result_without_a_reload(open_browser, live_url, uploads, tmp_path):
    browser = open_browser()
    photo = tmp_path / "face.jpg"
    photo.write_bytes(encode(face_like_image(["Medical"], seed=5, size=(160, 200))))
    browser.get(live_url)
    mark_page(browser)
    submit = by_css(browser, "#submit-button")[0]
    assert not submit.is_enabled(), "submit stays disabled until a photo is chosen"
    by_css(browser, "#file-input")[0].send_keys(str(photo))
    preview = by_css(browser, "#preview")[0]
    wait(browser, lambda driver: preview.is_displayed(), 10)
    assert submit.is_enabled()
    assert by_css(browser, "#file-name")[0].text == "face.jpg"
    submit.click()
    wait_for_result(browser)
    assert still_same_page(browser), "the result was put in place, not loaded as a new page"
    assert uploads.files == [photo.read_bytes()], "a photo within the size limit is sent as it is"
    assert len(by_css(browser, "table.bars tr")) == 7
    chips = by_css(browser, ".chips .chip")
    assert chips and all(chip.is_displayed() for chip in chips)
    assert by_css(browser, ".photo img")[0].get_attribute("src").startswith("data:image/jpeg")
    heading = by_css(browser, "#result-heading")[0]
    assert browser.switch_to.active_element == heading and fully_visible(browser, heading)
    assert axe_violations(browser) == []
    assert not severe_logs(browser), "no CSP or script errors"


def test_a_large_phone_photo_is_sent_shrunk_and_upright(open_browser, live_url, uploads, tmp_path):
    """A 3000x2000 photo stored sideways (EXIF orientation 6) arrives as a 1365x2048 upright JPEG without EXIF."""
    from maskclassifier.web.pages import UPLOAD_MAX_SIDE

    browser = open_browser()
    upright = face_like_image(["Cloth"], seed=3, size=(2000, 3000))
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display", as phones store portrait photos
    photo = tmp_path / "IMG_0001.JPG"
    photo.write_bytes(encode(upright.rotate(90, expand=True), exif=exif.tobytes(), quality=95))
    browser.get(live_url)
    by_css(browser, "#file-input")[0].send_keys(str(photo))
    by_css(browser, "#submit-button")[0].click()
    wait_for_result(browser)

    [sent] = uploads.files
    assert len(sent) < photo.stat().st_size
    received = Image.open(io.BytesIO(sent))
    assert received.format == "JPEG"
    assert received.size == (1365, UPLOAD_MAX_SIDE)
    assert 0x0112 not in received.getexif(), "drawn upright, so no orientation is left to apply"
    # the mask is drawn on the lower half of the face: the right way up, it is below the bare forehead
    assert received.getpixel((682, 1331)) == pytest.approx(upright.getpixel((1000, 1950)), abs=12)
    assert received.getpixel((682, 614)) == pytest.approx(upright.getpixel((1000, 900)), abs=12)
    assert not severe_logs(browser)


def test_on_a_phone_a_group_example_leads_with_the_faces_and_boxes_match_rows(open_browser, live_url, uploads):
    browser = open_browser(phone=True)
    browser.get(live_url)
    assert browser.execute_script("return innerWidth") == 390
    assert not by_css(browser, ".drop-hint")[0].is_displayed(), "no drag-and-drop talk on a phone"
    assert by_css(browser, "#camera-label")[0].is_displayed(), "a phone keeps its own camera input"
    assert not by_css(browser, "#webcam-button")[0].is_displayed()
    assert len(by_css(browser, "button.example")) >= 6
    assert axe_violations(browser) == []
    mark_page(browser)
    click_example(browser, "group")
    wait_for_result(browser)
    assert still_same_page(browser)
    example = ROOT / "maskclassifier/web/static/examples/group.jpg"
    assert uploads.files == [example.read_bytes()], "one click sends the example"

    heading = by_css(browser, "#result-heading")[0]
    assert heading.text.startswith("4 faces: ")
    assert fully_visible(browser, heading), "the answer is on screen without scrolling"
    assert fully_visible(browser, by_css(browser, "#result .try-another")[0])
    assert browser.switch_to.active_element == heading
    wait(browser, lambda driver: by_css(driver, "#announcer")[0].get_attribute("textContent") == heading.text, 5)
    assert by_css(browser, "#announcer")[0].get_attribute("aria-live") == "polite"

    assert len(by_css(browser, "#result img[src^='data:image/jpeg']:not(.face-thumb)")) == 1, "one photo, not two"
    assert [item.text for item in by_css(browser, ".key li")] == ["Mask", "No mask", "Not sure"]
    numbers = by_css(browser, ".face-box .badge-number")
    badges = [rect(browser, badge) for badge in by_css(browser, ".face-box .badge")]
    assert len(numbers) == 4 and [number.text for number in numbers] == ["1", "2", "3", "4"]
    for number in numbers:
        size = float(browser.execute_script(
            "var t = arguments[0]; return t.getBoundingClientRect().height /"
            " (t.getBBox().height / parseFloat(t.getAttribute('font-size')));", number))
        assert size >= 12, f"caption font {size:.1f} CSS px"
    for index, first in enumerate(badges):
        for second in badges[index + 1:]:
            assert (first["right"] <= second["left"] or second["right"] <= first["left"]
                    or first["bottom"] <= second["top"] or second["bottom"] <= first["top"]), "captions overlap"

    # one colour language: each box is drawn in its row's colour, and that is the key's colour for its answer
    tone_colour = {tone: browser.execute_script(
        "return getComputedStyle(document.querySelector('.key .swatch.tone-' + arguments[0])).backgroundColor;", tone)
        for tone in ("ok", "warn", "neutral")}
    for row in by_css(browser, ".face-row"):
        number, tone = row.get_attribute("data-face"), row.get_attribute("class").split("tone-")[1].split()[0]
        box = by_css(browser, f"#face-box-{number} .box")[0]
        assert css(browser, box, "stroke") == tone_colour[tone]
        assert css(browser, by_css(browser, f"#face-row-{number} th")[0], "border-left-color") == tone_colour[tone]

    by_css(browser, "#face-row-2 td")[1].click()  # tap a row
    assert "highlight" in by_css(browser, "#face-box-2")[0].get_attribute("class")
    assert not [box for box in by_css(browser, ".face-box.highlight") if box.get_attribute("data-face") != "2"]
    browser.execute_script("document.getElementById('face-box-3')"
                           ".dispatchEvent(new MouseEvent('click', {bubbles: true}))")
    assert "highlight" in by_css(browser, "#face-row-3")[0].get_attribute("class")
    assert "highlight" not in by_css(browser, "#face-row-2")[0].get_attribute("class")
    assert axe_violations(browser) == []
    assert not severe_logs(browser)


def test_progress_counts_the_seconds_and_the_same_photo_goes_again_in_another_mode(open_browser, live_url, uploads):
    browser = open_browser()
    browser.get(live_url)
    uploads.delay_s = 2.3
    click_example(browser, "group")
    progress = by_css(browser, "#progress")[0]
    wait(browser, lambda driver: progress.is_displayed(), 5)
    assert fully_visible(browser, progress)
    assert by_css(browser, "#submit-button")[0].text == "Classifying…"
    wait(browser, lambda driver: by_css(driver, "#elapsed")[0].text == "2 s", 10)
    wait_for_result(browser)
    assert not progress.is_displayed()
    assert by_css(browser, ".face-row")
    uploads.delay_s = 0
    by_css(browser, "#result button[data-again='off']")[0].click()
    wait(browser, lambda driver: not by_css(driver, ".face-row") and by_css(driver, "#result .bars"))
    assert len(uploads.files) == 2 and uploads.files[0] == uploads.files[1], "the same photo, not chosen again"
    assert uploads.forms[-1]["faces"] == "off"
    assert by_css(browser, "input[name='faces'][value='off']")[0].is_selected()
    assert not severe_logs(browser)


def test_a_server_error_ends_on_the_apps_page_with_a_way_back(open_browser, live_url, uploads):
    browser = open_browser(phone=True)
    browser.get(live_url)
    uploads.fail_with = 502  # a proxy's error page, not the app's
    click_example(browser, "kn95")
    wait_for_result(browser)
    heading = by_css(browser, "#result-heading")[0]
    assert heading.text == "The server did not answer properly" and fully_visible(browser, heading)
    assert browser.switch_to.active_element == heading
    assert by_css(browser, "#result [data-retry]")[0].is_displayed()
    assert axe_violations(browser) == []
    uploads.fail_with = None
    by_css(browser, "#result [data-retry]")[0].click()
    wait(browser, lambda driver: by_css(driver, "#result .headline"))
    assert len(uploads.files) == 2


def test_an_error_from_the_app_is_shown_in_place(open_browser, live_url, tmp_path):
    browser = open_browser()
    browser.get(live_url)
    notes = tmp_path / "notes.jpg"
    notes.write_bytes(b"this is not a photo")
    by_css(browser, "#file-input")[0].send_keys(str(notes))
    by_css(browser, "#submit-button")[0].click()
    wait_for_result(browser)
    assert by_css(browser, "#result .card.error[role='alert']")
    assert "not an image we can read" in by_css(browser, "#result")[0].text
    by_css(browser, "#result .try-another")[0].click()
    assert browser.switch_to.active_element.get_attribute("id") == "file-input"


def test_paste_an_image_from_the_clipboard(open_browser, live_url, uploads):
    browser = open_browser()
    browser.get(live_url)
    jpeg = encode(face_like_image(["KN95"], seed=2, size=(120, 150)))
    browser.execute_script(
        "var bytes = Uint8Array.from(atob(arguments[0]), function (c) { return c.charCodeAt(0); });"
        "var data = new DataTransfer(); data.items.add(new File([bytes], 'image.jpg', {type: 'image/jpeg'}));"
        "document.dispatchEvent(new ClipboardEvent('paste', {clipboardData: data, bubbles: true}));",
        base64.b64encode(jpeg).decode())
    assert by_css(browser, "#file-name")[0].text == "Pasted image"
    by_css(browser, "#submit-button")[0].click()
    wait_for_result(browser)
    assert uploads.files == [jpeg]


def test_a_desktop_webcam_snapshot_is_classified(open_browser, live_url, uploads):
    browser = open_browser(camera="fake")
    browser.get(live_url)
    assert not by_css(browser, "#camera-label")[0].is_displayed(), "no second file picker on a desktop"
    by_css(browser, "#webcam-button")[0].click()
    size = "var v = document.getElementById('webcam-video'); return [v.videoWidth, v.videoHeight];"
    wait(browser, lambda driver: driver.execute_script(size)[0] > 0, 15)
    width, height = browser.execute_script(size)
    by_css(browser, "#webcam-snap")[0].click()
    wait(browser, lambda driver: by_css(driver, "#file-name")[0].text == "Snapshot from the camera", 10)
    assert not by_css(browser, "#webcam")[0].is_displayed(), "the camera is closed after the snapshot"
    by_css(browser, "#submit-button")[0].click()
    wait_for_result(browser)
    [sent] = uploads.files
    assert Image.open(io.BytesIO(sent)).size == (width, height)


def test_a_denied_webcam_falls_back_to_the_picker(open_browser, live_url):
    browser = open_browser()
    browser.get(live_url)
    browser.execute_script("navigator.mediaDevices.getUserMedia = function () {"
                           " return Promise.reject(new DOMException('denied', 'NotAllowedError')); };")
    by_css(browser, "#webcam-button")[0].click()
    wait(browser, lambda driver: "not allowed" in by_css(driver, "#file-name")[0].text, 5)
    assert "Choose a photo instead" in by_css(browser, "#file-name")[0].text
    assert browser.switch_to.active_element.get_attribute("id") == "file-input"


def test_keyboard_focus_is_visible_on_every_control(open_browser, live_url):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    browser = open_browser()
    browser.get(live_url)
    script = ("var e = document.activeElement;"
              "var shown = e.classList.contains('file-input') ? e.nextElementSibling : e;"
              "return [e.id || e.tagName + ':' + (e.value || e.textContent.trim()).slice(0, 20),"
              " getComputedStyle(shown).outlineStyle, shown.textContent.trim()];")
    seen = []
    for _ in range(10):  # the header's link, the picker, the webcam, the modes and the six examples
        ActionChains(browser).send_keys(Keys.TAB).perform()
        name, outline, label = browser.execute_script(script)
        seen.append(name)
        assert outline != "none", f"no visible focus on {name}"
        if name == "file-input":
            assert label == "Choose a photo", "the ring is on the button of the focused input"
    # (Classify is disabled until a photo is chosen, so the keyboard skips it)
    assert seen[1:4] == ["file-input", "webcam-button", "INPUT:auto"]
    assert [name.split(":")[0] for name in seen[4:]] == ["BUTTON"] * 6, seen

    click_example(browser, "group")  # the result's controls: its buttons, the boxes on the photo, the table's links
    wait_for_result(browser)
    kinds = []
    for _ in range(13):
        ActionChains(browser).send_keys(Keys.TAB).perform()
        element = browser.switch_to.active_element
        kind = element.get_attribute("class") or element.tag_name
        kinds.append(kind.split()[0] if kind else element.tag_name)
        if "face-box" in kind:  # an SVG link: the box itself turns the focus colour
            box = by_css(browser, f"#{element.get_attribute('id')} .box")[0]
            assert css(browser, box, "stroke") == "rgb(9, 105, 218)"  # --focus
        else:
            assert css(browser, element, "outline-style") != "none", f"no visible focus on {kind}"
    assert kinds[:3] == ["button", "button", "button"] and kinds[3:7] == ["face-box"] * 4
    assert kinds[7:11] == ["face-link"] * 4 and kinds[11:] == ["button", "summary"], kinds  # Why?, the whole photo


def test_without_javascript_on_a_phone_one_picker_and_the_result_first(open_browser, live_url, uploads, tmp_path):
    from selenium.webdriver.common.keys import Keys

    browser = open_browser(phone=True, javascript=False)
    browser.get(live_url)
    pickers = [element for element in by_css(browser, "input[type=file], label.button, #webcam-button")
               if element.is_displayed()]
    assert [element.get_attribute("id") for element in pickers] == ["file-input"], "one picker"
    by_css(browser, "#submit-button")[0].send_keys(Keys.ENTER)  # no photo: the browser refuses to send
    assert uploads.files == [] and browser.current_url.rstrip("/") == live_url
    photo = tmp_path / "face.jpg"
    photo.write_bytes(encode(face_like_image(["Medical"], seed=5, size=(160, 200))))
    by_css(browser, "#file-input")[0].send_keys(str(photo))
    by_css(browser, "#submit-button")[0].send_keys(Keys.ENTER)
    wait_for_result(browser)
    assert browser.current_url.endswith("/#result")
    assert fully_visible(browser, by_css(browser, "#result-heading")[0]), "the page lands on the answer"
    assert axe_violations(browser) == []
    by_css(browser, 'button.example[value="group"]')[0].send_keys(Keys.ENTER)  # an example, without the script
    wait(browser, lambda driver: by_css(driver, ".face-row"))
    assert by_css(browser, "#result-heading")[0].text.startswith("4 faces: ")
    assert fully_visible(browser, by_css(browser, "#result-heading")[0])
