"""Hostile uploads against the form and the API, and the security headers on every kind of response.

Each case of harness/hostile.py is posted to both POST / and POST /api/predict: it must get the status the
corpus names (a 4xx with a clear message, or a 200 with a real answer when the file is a usable image), never a
5xx; the app must keep answering; and nothing may be written to disk while it is handled.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

import pytest
from flask.testing import FlaskClient
from markupsafe import escape
from werkzeug.test import TestResponse

from harness.files import encode
from harness.hostile import OK, Upload, hostile_uploads, photo
from harness.multipart import Part, multipart

pytestmark = pytest.mark.filterwarnings("ignore:Tag data larger than file:UserWarning")  # the broken EXIF cases

UPLOAD_LIMIT_BYTES = 2 * 1024 * 1024  # conftest's settings: max_upload_mb=2
CASES = hostile_uploads(UPLOAD_LIMIT_BYTES)
CATEGORIES = 7

# ---- nothing written to disk ------------------------------------------------------------------------------------

_WRITE_EVENTS = {"os.mkdir", "os.rename", "os.replace", "os.link", "os.symlink", "os.truncate", "os.remove",
                 "shutil.copyfile", "shutil.move", "tempfile.mkstemp", "tempfile.mkdtemp"}
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
_writes: list[tuple[str, tuple]] | None = None  # filled while a test watches; None otherwise


def _audit(event: str, args: tuple) -> None:
    """Record every attempt to create or change a file (Python's audit hooks see each open() and os call)."""
    if _writes is None:
        return
    if event == "open":
        path, mode, flags = args
        writing = any(c in mode for c in "wax+") if isinstance(mode, str) else bool((flags or 0) & _WRITE_FLAGS)
        if writing and not isinstance(path, int):
            _writes.append((event, args))
    elif event in _WRITE_EVENTS:
        _writes.append((event, args))


sys.addaudithook(_audit)  # audit hooks cannot be removed; outside a watch it returns at once


def _files_under(root: Path) -> list[Path]:
    return sorted(root.rglob("*"))


@pytest.fixture
def no_disk_writes(tmp_path, monkeypatch) -> Iterator[None]:
    """Fail if the app opens a file for writing, or anything appears in the temp dir or the working directory.

    The working directory is two levels deep inside tmp_path, so a path-traversal name such as ../../etc/passwd
    written relative to it would still land inside the watched tree.
    """
    global _writes
    temp_dir, work_dir = tmp_path / "tmp", tmp_path / "a" / "b" / "cwd"
    temp_dir.mkdir()
    work_dir.mkdir(parents=True)
    monkeypatch.setattr(tempfile, "tempdir", str(temp_dir))
    monkeypatch.chdir(work_dir)
    before = _files_under(tmp_path)
    _writes = []
    try:
        yield
        assert _writes == [], f"the app tried to write to disk: {_writes}"
    finally:
        _writes = None
    assert _files_under(tmp_path) == before


# ---- checks -----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hostile_client(app) -> FlaskClient:
    assert app.config["SETTINGS"].max_upload_bytes == UPLOAD_LIMIT_BYTES, "the corpus was built for another limit"
    return app.test_client()


def post(client: FlaskClient, path: str, case: Upload) -> TestResponse:
    url = f"{path}?{case.query}" if case.query else path
    return client.post(url, data=case.body, headers=case.headers)


def check_api(response: TestResponse, case: Upload) -> str:
    """The API's answer to `case`; returns its message."""
    assert response.status_code == case.status, response.get_data(as_text=True)[:500]
    assert response.mimetype == "application/json"
    body = response.get_json()
    if case.status == OK:
        assert {"labels", "probabilities", "threshold", "message"} <= set(body)
        assert len(body["probabilities"]) == CATEGORIES
        assert all(0.0 <= p <= 1.0 for p in body["probabilities"].values())
        assert set(body["labels"]) <= set(body["probabilities"])
    else:
        assert body["error"] == case.code and set(body) == {"error", "message"}
        assert body["message"].endswith(".") and "Traceback" not in body["message"] and "/work" not in body["message"]
    return body["message"]


def check_form(response: TestResponse, case: Upload, api_message: str) -> None:
    """The page's answer to `case`: the same message as the API, and the form to try again."""
    assert response.status_code == case.status
    assert response.mimetype == "text/html"
    page = response.get_data(as_text=True)
    assert 'id="upload-form"' in page and "Traceback" not in page
    assert "<script>alert" not in page, "upload content reflected into the page unescaped"
    if case.status == OK:
        assert 'id="result-heading"' in page and "We could not classify" not in page
    else:
        assert "We could not classify that file" in page and str(escape(api_message)) in page


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_hostile_upload_gets_a_clear_answer_on_api_and_form(hostile_client, case, no_disk_writes):
    api_message = check_api(post(hostile_client, "/api/predict", case), case)
    check_form(post(hostile_client, "/", case), case, api_message)
    assert hostile_client.get("/healthz").status_code == 200


@pytest.fixture(scope="module")
def reduced_decode_client(make_app) -> FlaskClient:
    return make_app(jpeg_decode="reduced").test_client()


def test_the_reduced_jpeg_decode_answers_every_hostile_upload_alike(reduced_decode_client, no_disk_writes):
    """JPEG_DECODE=reduced has libjpeg decode big JPEGs at reduced scale: bombs, truncated, CMYK, sideways and
    huge JPEGs must still get the same status and error code."""
    assert reduced_decode_client.get("/api/model").get_json()["jpeg_decode"] == "reduced"
    for case in CASES:
        check_api(post(reduced_decode_client, "/api/predict", case), case)


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_every_other_upload_address_refuses_the_same_files_the_same_way(hostile_client, case, no_disk_writes):
    """/api/annotate, /api/explain, /api/frame and the page's fragment (POST /result) share /api/predict's upload
    rules: the same status and error code for every hostile case, never a 5xx. A live-camera frame may also be
    refused for its size (frame_too_large), which is its own rule; the two addresses without a `faces` mode
    (annotate: always every face; frame) ignore a bad one."""
    for path in ("/api/annotate", "/api/explain", "/api/frame", "/result"):
        response = post(hostile_client, path, case)
        body = response.get_json() if response.mimetype == "application/json" else None
        if path == "/api/frame" and body and body.get("error") == "frame_too_large":
            assert response.status_code == 400
            continue
        expected = case.status
        if case.code == "invalid_faces_mode" and path in ("/api/annotate", "/api/frame"):
            expected = OK
        assert response.status_code == expected, (path, response.status_code, body)
        if expected != case.status:
            continue
        if path == "/result":
            page = response.get_data(as_text=True)
            assert response.mimetype == "text/html" and "Traceback" not in page and "<script>alert" not in page
        elif case.status != OK:
            assert body["error"] == case.code and body["message"].endswith("."), path
    assert hostile_client.get("/healthz").status_code == 200


def test_corpus_covers_the_issue():
    assert len(CASES) >= 40
    statuses = {case.status for case in CASES}
    assert {200, 400, 413, 415} <= statuses and all(status < 500 for status in statuses)


def photo_upload(seed: int = 1) -> Upload:
    body, content_type = multipart([Part("file", encode(photo(seed=seed)))])
    return Upload(f"photo-{seed}", body, content_type, OK)


def test_answers_are_unchanged_after_the_whole_corpus(hostile_client, no_disk_writes):
    valid = photo_upload(seed=9)
    before = post(hostile_client, "/api/predict", valid).get_json()
    for case in CASES:
        assert post(hostile_client, "/api/predict", case).status_code == case.status, case.name
    assert post(hostile_client, "/api/predict", valid).get_json() == before


# ---- security headers and safe methods --------------------------------------------------------------------------


def csp_directives(header: str) -> dict[str, list[str]]:
    directives = (directive.split() for directive in header.split(";") if directive.strip())
    return {name.lower(): values for name, *values in directives}


def assert_security_headers(response: TestResponse) -> None:
    csp = csp_directives(response.headers.get("Content-Security-Policy", ""))
    scripts = csp.get("script-src", csp.get("default-src"))
    assert scripts is not None, "no script-src or default-src"
    assert "'unsafe-inline'" not in scripts and "'unsafe-eval'" not in scripts and "*" not in scripts
    assert csp.get("object-src") == ["'none'"]
    assert csp.get("frame-ancestors") in (["'none'"], ["'self'"])
    assert response.headers.get("X-Frame-Options") in ("DENY", "SAMEORIGIN")
    assert response.headers.get("X-Content-Type-Options") == "nosniff"


class _InlineCode(HTMLParser):
    """Collects what a strict Content-Security-Policy would block: inline scripts, handlers, inline styles."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []
        self._in_inline_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        names = dict(attrs)
        if tag == "script" and not names.get("src"):
            self._in_inline_script = True
            self.found.append("<script> without src")
        if tag == "style":
            self.found.append("<style> element")
        self.found += [f"{tag} {name}=" for name in names if name.startswith("on") or name == "style"]
        self.found += [f"{tag} {name}=javascript:" for name, value in attrs
                       if (value or "").strip().lower().startswith("javascript:")]

    def handle_endtag(self, tag: str) -> None:
        self._in_inline_script = False


def inline_code(page: str) -> list[str]:
    parser = _InlineCode()
    parser.feed(page)
    return parser.found


def every_kind_of_response(client: FlaskClient) -> dict[str, TestResponse]:
    photo = photo_upload()
    text_upload = next(case for case in CASES if case.name == "text-named-jpg")
    too_large = next(case for case in CASES if case.name == "body-over-limit")
    return {
        "page": client.get("/"),
        "form result": post(client, "/", photo),
        "form error": post(client, "/", text_upload),
        "form 413": post(client, "/", too_large),
        "api result": post(client, "/api/predict", photo),
        "api error": post(client, "/api/predict", text_upload),
        "api 413": post(client, "/api/predict", too_large),
        "api model": client.get("/api/model"),
        "healthz": client.get("/healthz"),
        "static script": client.get("/static/app.js"),
        "static style": client.get("/static/style.css"),
        "page 404": client.get("/no-such-page"),
        "api 404": client.get("/api/no-such-endpoint"),
        "api 405": client.get("/api/predict"),
        "page 405": client.put("/"),
    }


def test_security_headers_on_every_kind_of_response(hostile_client):
    responses = every_kind_of_response(hostile_client)
    for kind, response in responses.items():
        assert response.status_code < 500, kind
        assert_security_headers(response)
    for kind in ("page", "form result", "form error", "page 404"):
        assert inline_code(responses[kind].get_data(as_text=True)) == [], kind


def test_no_get_changes_state(app, hostile_client):
    """Only read-only endpoints answer GET; every endpoint that takes an upload is POST-only."""
    get_routes = {rule.rule for rule in app.url_map.iter_rules() if "GET" in rule.methods}
    # /device/...: the ONNX files on-device mode downloads (maskclassifier/web/ondevice.py), read-only
    # /sw.js: the page's service worker, a script rendered from the app's files' versions
    assert get_routes == {"/", "/api/model", "/healthz", "/static/<path:filename>", "/device/<name>-<version>.onnx",
                          "/device/runtime-<version>.wasm", "/sw.js"}
    post_only = {rule.rule for rule in app.url_map.iter_rules() if "POST" in rule.methods} - get_routes
    assert "/api/predict" in post_only
    message = "This address does not accept that kind of request."
    for path in post_only:
        response = hostile_client.get(path)
        assert response.status_code == 405 and "POST" in response.headers["Allow"]
        if path.startswith("/api/"):  # the API answers in JSON, the page's addresses (/, /result) with the page
            assert response.get_json() == {"error": "method_not_allowed", "message": message}
        else:
            assert response.mimetype == "text/html" and message in response.get_data(as_text=True), path
