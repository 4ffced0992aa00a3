"""The cleaner under concurrent decisions and undos, and hostile image paths: the corrections file always agrees with
what the server acknowledged, and no path gets a 500."""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import threading
from pathlib import Path

import pytest

from helpers import cleaner

ITERATIONS = 6
THREADS = 6
REQUESTS_PER_THREAD = 25
LABELS = [["Cloth"], ["Medical"], ["KN95", "Shield"], ["No_mask!"]]


def state(items: list[dict]) -> dict[str, tuple]:
    return {item["fname"]: (item["decision"], tuple(item["labels"])) for item in items}


@pytest.mark.parametrize("iteration", range(ITERATIONS))
def test_concurrent_decisions_and_undos_lose_nothing_across_a_restart(dataset, tmp_path, iteration):
    app, review = cleaner(dataset, tmp_path)
    fnames = [row["fname"] for row in review.rows]
    answers: list[int] = []
    start = threading.Barrier(THREADS)

    def work(seed: int) -> None:
        rng = random.Random(iteration * 100 + seed)
        client = app.test_client()
        start.wait()
        for _ in range(REQUESTS_PER_THREAD):
            if rng.random() < 0.35:
                response = client.post("/t0ken/api/undo")
            else:
                action = rng.choice(["relabel", "relabel", "delete", "keep"])
                body = {"fname": rng.choice(fnames), "action": action}
                if action == "relabel":
                    body["labels"] = rng.choice(LABELS)
                response = client.post("/t0ken/api/decide", json=body)
            answers.append(response.status_code)

    threads = [threading.Thread(target=work, args=(seed,)) for seed in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert set(answers) == {200}, answers
    # Every request has been answered: what the server now lists is what it acknowledged last, for each image.
    acknowledged = state(app.test_client().get("/t0ken/api/items?order=csv").get_json()["items"])
    restarted, _ = cleaner(dataset, tmp_path)  # a new app over the same corrections file
    restored = state(restarted.test_client().get("/t0ken/api/items?order=csv").get_json()["items"])
    lost = {fname: (acknowledged[fname], restored[fname]) for fname in fnames if acknowledged[fname] != restored[fname]}
    assert not lost, f"acknowledged vs restored after a restart: {lost}"


HOSTILE_IMAGE_PATHS = [
    "/t0ken/image/a%00b.jpg", "/t0ken/image/images/0-0.jpg%00", "/t0ken/image/images%00/0-0.jpg",
    "/t0ken/image/..", "/t0ken/image/../labels.csv", "/t0ken/image/%2e%2e/%2e%2e/etc/passwd",
    "/t0ken/image//etc/passwd", "/t0ken/image/%2Fetc%2Fpasswd", "/t0ken/image/" + "a" * 5000 + ".jpg",
    "/t0ken/image/" + "/".join(["a" * 255] * 20), "/t0ken/image/%ff%fe.jpg", "/t0ken/image/%c0%af..%c0%af.jpg",
    "/t0ken/image/%ed%a0%80.jpg", "/t0ken/image/images/0-0.jpg/", "/t0ken//image/images/0-0.jpg",
]


@pytest.mark.parametrize("path", HOSTILE_IMAGE_PATHS)
def test_hostile_image_paths_get_a_clear_404(dataset, tmp_path, path):
    app, _ = cleaner(dataset, tmp_path)
    response = app.test_client().get(path, headers={"Host": "evil.example"})
    assert response.status_code == 404, (response.status_code, response.get_data(as_text=True)[:200])
    assert response.mimetype == "text/plain" and "404 Not Found" in response.get_data(as_text=True)
    assert "Location" not in response.headers


def test_hostile_names_the_csv_lists_get_a_clear_404_not_a_500(dataset, tmp_path):
    """Names in the CSV reach the file system: too long a name, a folder, a file that cannot be read."""
    long_name = "images/" + "b" * 300 + ".jpg"
    unreadable = dataset.parent / "images" / "locked.jpg"
    unreadable.write_bytes(b"\xff\xd8")
    unreadable.chmod(0)
    with open(dataset, "a") as handle:
        handle.write(f"{long_name},Cloth,False,web\nimages,Cloth,False,web\nimages/locked.jpg,Cloth,False,web\n")
    app, _ = cleaner(dataset, tmp_path)
    client = app.test_client()
    try:
        for fname in (long_name, "images", "images/locked.jpg"):
            response = client.get(f"/t0ken/image/{fname}")
            if fname == "images/locked.jpg" and response.status_code == 200:
                continue  # run as root: the file is readable after all
            assert response.status_code == 404, (fname, response.status_code)
            assert "404 Not Found" in response.get_data(as_text=True)
    finally:
        unreadable.chmod(0o644)


def test_the_cleaners_trailing_slash_redirect_is_a_path_on_this_server(dataset, tmp_path):
    app, _ = cleaner(dataset, tmp_path)
    response = app.test_client().get("/t0ken", headers={"Host": "evil.example", "X-Forwarded-Proto": "javascript"},
                                     environ_overrides={"wsgi.url_scheme": "javascript"})
    assert response.status_code == 308 and response.headers["Location"] == "/t0ken/"


@pytest.mark.parametrize("reason", ["a\x00b", "\udc80"])
def test_a_reason_the_file_cannot_hold_is_refused_and_the_file_stays_readable(dataset, tmp_path, reason):
    app, review = cleaner(dataset, tmp_path)
    client = app.test_client()
    assert client.post("/t0ken/api/decide", json={"fname": "images/0-0.jpg", "action": "keep"}).status_code == 200
    refused = client.post("/t0ken/api/decide", json={"fname": "images/1-0.jpg", "action": "delete", "reason": reason})
    assert refused.status_code == 422 and "reason" in refused.get_json()["message"]
    assert client.post("/t0ken/api/undo").get_json()["item"]["fname"] == "images/0-0.jpg"
    restarted, _ = cleaner(dataset, tmp_path)
    assert restarted.test_client().get("/t0ken/api/items").get_json()["counts"]["decided"] == 0


@pytest.mark.skipif(not shutil.which("node"), reason="needs node to run the page's script")
def test_the_page_sends_one_decision_at_a_time_and_keeps_every_key_in_order():
    """Keys pressed faster than a slow server answers (tests/clean_page_queue.js, a fake DOM and server): k d u 1 k
    is keep a, delete b, undo (b), the 1 refused locally (b would have no label), keep b, each sent after the
    previous answer. Sent at once, the undo overtook the decisions and they all went to the first card."""
    script = Path(__file__).resolve().parent / "clean_page_queue.js"
    page = Path(__file__).resolve().parent.parent / "maskclassifier" / "clean" / "static" / "clean.js"
    result = json.loads(subprocess.run(["node", str(script), str(page)], capture_output=True, text=True, check=True,
                                       timeout=60).stdout)
    assert result["maxInFlight"] == 1
    assert result["seen"] == [{"url": "api/decide", "fname": "a.jpg", "action": "keep"},
                              {"url": "api/decide", "fname": "b.jpg", "action": "delete"},
                              {"url": "api/undo"},
                              {"url": "api/decide", "fname": "b.jpg", "action": "keep"}]
    assert result["decided"] == ["keep", "keep", "", ""]
