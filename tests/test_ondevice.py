"""On-device mode's server side (issue 30): the files the browser downloads, the rules it reads, and the wording of
its answers (POST /result/computed), with the shipped ONNX model and detector."""

from __future__ import annotations

import html

import pytest

from helpers import ROOT
from maskclassifier.core.facebox import MAX_FACES

MODEL = ROOT / "models" / "export.onnx"


@pytest.fixture(scope="module")
def client():
    from maskclassifier.core.config import Settings
    from maskclassifier.web import create_app

    if not MODEL.is_file():
        pytest.skip("needs models/export.onnx")
    app = create_app(Settings(model_path=MODEL, torch_threads=1))
    app.config["TESTING"] = True
    return app.test_client()


def test_the_model_runtime_and_detector_are_versioned_and_cached_for_a_year(client):
    from maskclassifier.core.sidecar import sha256_file

    body = client.get("/api/model").get_json()
    device = body["on_device"]
    assert device["model_url"] == f"/device/model-{sha256_file(MODEL)[:16]}.onnx"
    urls = [device["model_url"], *device["detector"].values(), device["runtime"]["wasm_url"],
            device["runtime"]["script_url"]]
    for url in urls:
        response = client.get(url)
        assert response.status_code == 200, url
        assert response.headers["Cache-Control"] == "public, max-age=31536000, immutable", url
    assert client.get(device["model_url"]).data == MODEL.read_bytes()
    import gzip

    packed = client.get(device["model_url"], headers={"Accept-Encoding": "gzip, deflate"})
    assert packed.headers["Content-Encoding"] == "gzip" and gzip.decompress(packed.data) == MODEL.read_bytes()
    wasm = client.get(device["runtime"]["wasm_url"], headers={"Accept-Encoding": "gzip"})
    assert wasm.mimetype == "application/wasm" and len(wasm.data) < device["runtime"]["bytes"] / 3
    assert "Accept-Encoding" in wasm.headers["Vary"]
    assert client.get("/device/model-0123456789abcdef.onnx").status_code == 404, "an old version is not served"
    assert client.get("/device/secret-0123456789abcdef.onnx").status_code == 404
    assert device["model_bytes"] == MODEL.stat().st_size
    rules = body["decision_rules"]
    assert rules["threshold"] == body["threshold"] and rules["item_resize"] == {
        "width": 288, "height": 288, "crop": "center", "resample": "bilinear"}
    assert rules["faces"]["face_margin"] == 0.6 and rules["faces"]["max_faces"] == MAX_FACES


def test_the_csp_allows_webassembly_and_nothing_else_new(client):
    policy = client.get("/").headers["Content-Security-Policy"]
    directives = {name: values for name, *values in (part.split() for part in policy.split(";") if part.strip())}
    assert directives["script-src"] == ["'self'", "'wasm-unsafe-eval'"]
    assert directives["worker-src"] == ["'self'"]


def test_numbers_from_the_device_are_worded_by_the_servers_template(client):
    body = client.get("/api/model").get_json()
    vocab = body["categories"]
    probabilities = [0.9 if name == "Medical" else 0.01 for name in vocab]
    page = client.post("/result/computed", json={"probabilities": probabilities}).get_data(as_text=True)
    assert "Worked out on this device" in page and "Surgical / medical mask" in page
    assert body["on_device"]["preview_placeholder"] in page, "the page puts its own copy of the photo there"
    faces = client.post("/result/computed", json={
        "mode": "auto", "probabilities": probabilities, "size": [640, 480], "found": 2,
        "faces": [{"box": [10, 10, 100, 120], "score": 0.99, "probabilities": probabilities},
                  {"box": [300, 10, 400, 120], "score": 0.98,
                   "probabilities": [0.9 if name == "No_mask!" else 0.01 for name in vocab]}]}).get_data(as_text=True)
    assert "2 faces: 1 with a surgical mask, 1 with no mask" in faces and faces.count('class="face-thumb"') == 2
    server_page = client.post("/", data={"example": "medical", "faces": "off"}).get_data(as_text=True)
    assert "Worked out on the server." in server_page


@pytest.mark.parametrize("body", [None, {"probabilities": [0.5]}, {"probabilities": [2] * 7},
                                  {"probabilities": ["a"] * 7}, {"mode": "sideways", "probabilities": [0.1] * 7},
                                  {"mode": "on", "probabilities": [0.1] * 7, "size": [99999, 1], "found": 0,
                                   "faces": []},
                                  {"mode": "on", "probabilities": [0.1] * 7, "size": [100, 100], "found": 1,
                                   "faces": [{"box": [0, 0, 500, 50], "score": 0.9, "probabilities": [0.1] * 7}]}])
def test_malformed_numbers_get_the_pages_error_fragment(client, body):
    response = client.post("/result/computed", json=body) if body is not None else client.post(
        "/result/computed", data="not json", content_type="application/json")
    assert response.status_code == 400
    assert 'class="card error"' in response.get_data(as_text=True)


def test_device_answers_naming_a_mostly_drawn_category_carry_the_servers_caveat(client):
    """The shipped model learnt Shield mostly from drawings: the device's page answer and its live frames (worded
    in the browser from /api/model's captions.caveats, as /api/frame words them) carry the same caveat."""
    body = client.get("/api/model").get_json()
    vocab, caveats = body["categories"], body["on_device"]["captions"]["caveats"]
    assert set(caveats) == set(body["synthetic_categories"]) and "Shield" in caveats
    shield = [0.9 if name in ("Shield", "Medical") else 0.01 for name in vocab]
    page = client.post("/result/computed", json={"probabilities": shield}).get_data(as_text=True)
    assert html.escape(caveats["Shield"], quote=False) in page
    plain = [0.9 if name == "Medical" else 0.01 for name in vocab]
    assert html.escape(caveats["Shield"], quote=False) not in client.post(
        "/result/computed", json={"probabilities": plain}).get_data(as_text=True)


def test_each_face_the_device_answered_keeps_its_own_answer_in_the_servers_analysis(client):
    """The server words the device's per-face numbers by running faces.analyse with stand-ins; it asks for the faces'
    crops in its seeded unbiased order, so the stand-in must answer each crop with that face's numbers (answered in
    reading order, one face's answer went to another and the headline's order changed)."""
    from PIL import Image

    from maskclassifier.classifier.faces import analyse
    from maskclassifier.core.facebox import Face, FaceScan
    from maskclassifier.web.ondevice import _Answered, _Found

    vocab = client.get("/api/model").get_json()["categories"]
    kinds = ["Medical", "No_mask!", "Cloth", "KN95", "Medical", "No_mask!", "Cloth", "KN95", "No_mask!"]
    faces = [Face((20 + 60 * index, 20, 70 + 60 * index, 80), 0.99) for index in range(len(kinds))]
    rows = [[0.9 if name == kind else 0.01 for name in vocab] for kind in kinds]
    with client.application.app_context():
        from maskclassifier.web.inference import classifier

        served = classifier()
        stand_in = Image.new("L", (640, 120))
        analysis = analyse(_Found(FaceScan(faces, len(faces))), _Answered(served, rows[0], rows, stand_in), stand_in,
                           "on", 0.6)
    assert [prediction.labels for prediction in analysis.predictions] == [[kind] for kind in kinds]
    assert analysis.faces == faces


def test_the_service_worker_saves_the_page_and_its_files_under_a_version_of_them_all(client):
    import dataclasses
    import json
    import re

    from flask import current_app

    response = client.get("/sw.js")
    assert response.status_code == 200 and response.mimetype == "text/javascript"
    assert response.headers["Cache-Control"] == "no-cache"
    script = response.get_data(as_text=True)
    shell = json.loads(re.search(r"var SHELL = (\[.*?\]);", script).group(1))
    page = client.get("/").get_data(as_text=True)
    assert shell[:2] == ["/", "/api/model"]
    for name in ("app.js", "ondevice.js", "ondevice-resize.js", "ondevice-faces.js", "ondevice-runner.js",
                 "ondevice-sessions.js", "style.css", "examples/group.jpg"):
        saved = [url for url in shell if url.startswith(f"/static/{name}?v=")]
        assert len(saved) == 1 and saved[0] in page, name
    assert all(client.get(url).status_code == 200 for url in shell)
    version = re.search(r'var CACHE = "maskclassifier-([0-9a-f]{12})"', script).group(1)
    assert client.get("/sw.js").get_data(as_text=True) == script, "the same files: the same worker"

    # a new model (its ONNX file's version) makes a new cache name, so the browser installs a new worker
    with client.application.app_context():
        found = current_app.extensions["device_model"]
        current_app.extensions["device_model"] = dataclasses.replace(found, version="0" * 16)
        try:
            changed = client.get("/sw.js").get_data(as_text=True)
        finally:
            current_app.extensions["device_model"] = found
    assert f"maskclassifier-{version}" not in changed and "maskclassifier-" in changed
