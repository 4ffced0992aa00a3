"""Takes the README's screenshots of the page (docs/*.png) in headless Chromium, serving the shipped model.

Run from the repository root: .venv/bin/python scripts/screenshots.py
Writes docs/phone-result.png (one example's answer on a 390x844 phone), docs/phone-group.png (the group example)
and docs/examples.png (the strip of examples on a desktop).
"""

from __future__ import annotations

import shutil
import sys
import threading
import time
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait
from werkzeug.serving import make_server

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from maskclassifier.core.config import Settings  # noqa: E402
from maskclassifier.web import create_app  # noqa: E402

DOCS = ROOT / "docs"


def browser(phone: bool) -> webdriver.Chrome:
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    width, height = (390, 844) if phone else (1100, 900)
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": phone})
    if phone:
        driver.execute_cdp_cmd("Emulation.setTouchEmulationEnabled", {"enabled": True, "maxTouchPoints": 5})
    return driver


def example_result(driver: webdriver.Chrome, url: str, name: str, out: Path) -> None:
    driver.get(url)
    driver.find_element(By.CSS_SELECTOR, f'button.example[value="{name}"]').click()
    WebDriverWait(driver, 120).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#result #result-heading"))
    time.sleep(0.5)
    driver.save_screenshot(str(out))


def main() -> None:
    DOCS.mkdir(exist_ok=True)
    app = create_app(Settings(model_path=ROOT / "models" / "export.pkl"))
    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}/"
    try:
        phone = browser(phone=True)
        example_result(phone, url, "no-mask", DOCS / "phone-result.png")
        example_result(phone, url, "group", DOCS / "phone-group.png")
        phone.quit()
        desktop = browser(phone=False)
        desktop.get(url)
        desktop.find_element(By.CSS_SELECTOR, ".examples").screenshot(str(DOCS / "examples.png"))
        desktop.quit()
    finally:
        server.shutdown()


if __name__ == "__main__":
    main()
