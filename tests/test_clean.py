"""The owner's cleaner (python -m maskclassifier.clean): ranking, the token, read-only photos, resumable decisions,
the bind address, and the keyboard flow in a real browser."""

from __future__ import annotations

import csv
import hashlib
import re
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from werkzeug.serving import make_server

from datasets import write_labelled_set
from helpers import ROOT, cleaner
from maskclassifier.clean import ranking
from maskclassifier.clean.review import ReviewError, open_review

VOCAB = ["-", "Cloth", "Gas", "KN95", "Medical", "No_mask!", "Shield"]


def fingerprint(folder: Path) -> dict[str, str]:
    """sha256 of every file under `folder` (images and CSV), to show the cleaner changed none of them."""
    return {str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(folder.rglob("*")) if path.is_file()}


def test_loss_pairs_and_orders():
    probs = np.array([[0.9, 0.1], [0.2, 0.7]])
    targets = np.array([[1, 0], [1, 0]], dtype=np.float32)
    expected = -np.mean([[np.log(0.9), np.log(0.9)], [np.log(0.2), np.log(0.3)]], axis=1)
    assert ranking.bce_losses(probs, targets) == pytest.approx(expected)
    assert ranking.disagreement_pairs(["Cloth"], ["Medical"]) == [("Cloth", "Medical")]
    assert ranking.disagreement_pairs(["Cloth", "Shield"], ["Cloth"]) == [("Shield", ranking.NONE)]
    assert ranking.disagreement_pairs(["Cloth"], ["Cloth"]) == []
    items = [{"fname": name, "csv_index": i, "loss": loss, "pairs": pairs}
             for i, (name, loss, pairs) in enumerate([("a", 0.1, []), ("b", 2.0, [["Cloth", "Medical"]]),
                                                      ("c", 0.5, [["KN95", "Cloth"]]),
                                                      ("d", 1.0, [["Cloth", "Medical"]]),
                                                      ("e", 3.0, [])])]
    assert [item["fname"] for item in ranking.order(items, "loss")] == ["e", "b", "d", "c", "a"]
    assert [item["fname"] for item in ranking.order(items, "pairs")] == ["b", "d", "c", "e", "a"]
    assert [item["fname"] for item in ranking.order(items, "csv")] == ["a", "b", "c", "d", "e"]


def test_a_request_without_the_right_token_gets_403(dataset, tmp_path):
    app, _ = cleaner(dataset, tmp_path, token="right-token")
    client = app.test_client()
    assert client.get("/right-token/").status_code == 200
    assert client.get("/right-token/api/items").status_code == 200
    for path in ("/", "/api/items", "/wrong-token/", "/right-tokeN/api/items", "/right-token-x/",
                 "/image/images/0-0.jpg", "/x/../right-token/"):
        response = client.get(path)
        assert response.status_code == 403, path
    assert client.get("/wrong/api/items").get_json()["error"] == "forbidden"
    page = client.get("/wrong/")
    assert page.mimetype == "text/plain" and "token" in page.get_data(as_text=True)
    assert client.post("/wrong/api/decide", json={"fname": "images/0-0.jpg", "action": "delete"}).status_code == 403
    assert (tmp_path / "fixes.csv").read_text() == "fname,old_labels,labels,action,reason,time\n"


def test_photos_are_served_read_only_and_path_traversal_is_refused(dataset, tmp_path):
    (tmp_path / "secret.jpg").write_bytes((dataset.parent / "images" / "0-0.jpg").read_bytes())
    with open(dataset, "a") as handle:
        handle.write("../secret.jpg,Cloth,False,web\n")  # listed in the CSV, but outside the images root
    before = fingerprint(dataset.parent)
    app, _ = cleaner(dataset, tmp_path)
    client = app.test_client()
    photo = client.get("/t0ken/image/images/0-0.jpg")
    assert photo.status_code == 200 and photo.data == (dataset.parent / "images" / "0-0.jpg").read_bytes()
    for path in ("/t0ken/image/../secret.jpg", "/t0ken/image/%2e%2e/secret.jpg", "/t0ken/image/images/../labels.csv",
                 "/t0ken/image/labels.csv", f"/t0ken/image/{tmp_path / 'secret.jpg'}", "/t0ken/image//etc/passwd"):
        assert client.get(path, follow_redirects=True).status_code in (403, 404), path  # `//` redirects first
    assert client.post("/t0ken/image/images/0-0.jpg").status_code == 405
    assert fingerprint(dataset.parent) == before


def test_decisions_survive_a_restart_and_filters_apply(dataset, tmp_path):
    app, review = cleaner(dataset, tmp_path)
    client = app.test_client()
    assert client.post("/t0ken/api/decide", json={"fname": "images/1-0.jpg", "action": "relabel",
                                                   "labels": ["Medical", "Shield"]}).status_code == 200
    assert client.post("/t0ken/api/decide", json={"fname": "images/2-1.jpg", "action": "delete"}).status_code == 200
    assert client.post("/t0ken/api/decide", json={"fname": "images/3-0.jpg", "action": "keep"}).status_code == 200
    refused = client.post("/t0ken/api/decide", json={"fname": "images/3-0.jpg", "action": "relabel",
                                                      "labels": ["Mask"]})
    assert refused.status_code == 422 and "Mask" in refused.get_json()["message"]
    assert client.post("/t0ken/api/decide", json={"fname": "nope.jpg", "action": "keep"}).status_code == 422
    assert client.post("/t0ken/api/decide", data="not json").status_code == 400

    app, review = cleaner(dataset, tmp_path)  # a restart with the same corrections file
    client = app.test_client()
    listed = {item["fname"]: item for item in client.get("/t0ken/api/items").get_json()["items"]}
    assert listed["images/1-0.jpg"]["labels"] == ["Medical", "Shield"]
    assert listed["images/1-0.jpg"]["csv_labels"] == ["Cloth"] and listed["images/1-0.jpg"]["decision"] == "relabel"
    assert listed["images/2-1.jpg"]["decision"] == "delete" and listed["images/3-0.jpg"]["decision"] == "keep"
    assert review.counts() == {"images": 16, "decided": 3, "relabel": 1, "delete": 1, "keep": 1}
    assert client.post("/t0ken/api/undo").get_json()["item"] is None, "an earlier session's decisions stay"

    by_medical = client.get("/t0ken/api/items?labelled=Medical").get_json()["items"]
    assert {item["fname"] for item in by_medical} == {"images/1-0.jpg", "images/4-0.jpg", "images/4-1.jpg",
                                                      "images/7-0.jpg", "images/7-1.jpg"}
    web = client.get("/t0ken/api/items?column=source&value=web&undecided=1").get_json()["items"]
    assert web and all(item["columns"]["source"] == "web" and not item["decision"] for item in web)
    assert client.get("/t0ken/api/items?column=nope&value=x").status_code == 400
    with pytest.raises(ReviewError, match=r"fixes.csv line 3: images/2-1.jpg is not in the labelled CSV"):
        other = write_labelled_set(tmp_path / "other", per_category=1)
        open_review(other, other.parent, tmp_path / "fixes.csv")


@pytest.mark.slow  # scores every image through the model: ~10 s
def test_with_a_model_images_are_ranked_by_loss_and_scores_are_cached(dataset, tmp_path, tiny_model, capsys):
    app, review = cleaner(dataset, tmp_path, tiny_model)
    assert "scoring images with export.pkl: 16/16" in capsys.readouterr().err
    items = app.test_client().get("/t0ken/api/items").get_json()["items"]
    losses = [item["loss"] for item in items]
    assert losses == sorted(losses, reverse=True) and len(items) == 16
    assert all(len(item["probabilities"]) == 7 for item in items)
    pairs = app.test_client().get("/t0ken/api/items?order=pairs").get_json()
    assert len(pairs["items"]) == 16
    cached = list(tmp_path.glob("fixes.scores-*.json"))
    assert len(cached) == 1
    app, again = cleaner(dataset, tmp_path, tiny_model)
    assert "scores of 16 images read from" in capsys.readouterr().err
    assert [s.probabilities for s in again.scored] == [s.probabilities for s in review.scored]


@pytest.mark.slow  # starts the cleaner's server
def test_the_command_listens_on_loopback_only_behind_a_token(dataset, tmp_path):
    before = fingerprint(dataset.parent)
    process = subprocess.Popen([sys.executable, "-m", "maskclassifier.clean", "--csv", str(dataset), "--port", "0",
                                "--corrections", str(tmp_path / "fixes.csv")], cwd=ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        lines = [process.stdout.readline() for _ in range(2)]
        url = re.search(r"open (http://127\.0\.0\.1:(\d+)/([A-Za-z0-9_-]{32})/)", lines[1])
        assert url, lines
        port = int(url.group(2))
        listening = [line.split() for line in Path("/proc/net/tcp").read_text().splitlines()[1:]]
        local = [fields[1] for fields in listening if fields[3] == "0A" and int(fields[1].split(":")[1], 16) == port]
        assert local == [f"0100007F:{port:04X}"], "listening on 127.0.0.1 only"
        with urllib.request.urlopen(url.group(1) + "api/items", timeout=10) as response:
            assert len(__import__("json").loads(response.read())["items"]) == 16
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/items", timeout=10)
        assert refused.value.code == 403
    finally:
        process.terminate()
        process.wait(timeout=30)
    assert fingerprint(dataset.parent) == before


def test_the_keyboard_flow_in_a_real_browser(browser, dataset, tmp_path, tiny_model):
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    before = fingerprint(dataset.parent)
    app, review = cleaner(dataset, tmp_path, tiny_model, token="browser-token")
    order = [item["fname"] for item in review.items("loss")]
    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    fixes = tmp_path / "fixes.csv"

    def rows() -> list[list[str]]:
        return [row[:4] for row in csv.reader(fixes.read_text().splitlines())][1:]

    def press(*keys: str, rows_then: int | None = None) -> None:
        ActionChains(browser).send_keys(*keys).perform()
        if rows_then is not None:
            WebDriverWait(browser, 10).until(lambda _: len(rows()) == rows_then)

    def settle(condition) -> None:
        """Wait for `condition`: a card is redrawn when its decision's answer arrives, after the file is written."""
        WebDriverWait(browser, 10, ignored_exceptions=(StaleElementReferenceException,)).until(condition)

    def current() -> str:
        return browser.find_element(By.CSS_SELECTOR, ".card.current").get_attribute("data-fname")

    try:
        browser.get(f"http://127.0.0.1:{server.server_port}/browser-token/")
        WebDriverWait(browser, 30).until(lambda driver: len(driver.find_elements(By.CSS_SELECTOR, ".card")) == 16)
        assert current() == order[0], "highest loss first"
        assert browser.switch_to.active_element.get_attribute("data-fname") == order[0], "the current card has focus"
        assert len(browser.find_elements(By.CSS_SELECTOR, ".card.current table.bars tr")) == 7

        press("?")
        assert browser.find_element(By.ID, "help").is_displayed()
        press(Keys.ESCAPE)
        WebDriverWait(browser, 5).until(lambda driver: not driver.find_element(By.ID, "help").is_displayed())

        first_labels = review.item(order[0])["csv_labels"]
        toggled = "Shield" if "Shield" not in first_labels else "Gas"
        press(str(VOCAB.index(toggled) + 1), rows_then=1)  # toggle a category: saved as a relabel at once
        assert rows()[0][:4] == [order[0], " ".join(first_labels), " ".join([*first_labels, toggled]), "relabel"]
        button = f".card.current .toggles button:nth-child({VOCAB.index(toggled) + 1})"
        settle(lambda driver: driver.find_element(By.CSS_SELECTOR, button).get_attribute("aria-pressed") == "true")
        press("k")  # already decided: keep that decision, go on
        settle(lambda _: current() == order[1])
        press("k", rows_then=2)
        assert rows()[1][0] == order[1] and rows()[1][3] == "keep"
        settle(lambda _: current() == order[2])
        press("d", rows_then=3)
        assert rows()[2][0] == order[2] and rows()[2][3] == "delete"
        press("u", rows_then=2)  # undo the delete: its row is gone from the file
        settle(lambda _: current() == order[2])
        press(Keys.ARROW_RIGHT, "j")
        settle(lambda _: current() == order[4])
        press(Keys.ARROW_LEFT)
        settle(lambda _: current() == order[3])
        settle(lambda driver: "2 of 16 decided" in driver.find_element(By.ID, "status").text)
        errors = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
        assert not errors, "no CSP, script or network errors"

        browser.refresh()  # the page after a reload (or a restart) shows the decisions made
        WebDriverWait(browser, 30).until(lambda driver: len(driver.find_elements(By.CSS_SELECTOR, ".card")) == 16)
        first = f'.card[data-fname="{order[0]}"] .decision'
        settle(lambda driver: driver.find_element(By.CSS_SELECTOR, first).text.startswith("relabelled"))
    finally:
        server.shutdown()
    assert fingerprint(dataset.parent) == before, "images and CSV unchanged"
