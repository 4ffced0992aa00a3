"""Reading an upload: the request body in memory within a deadline, the one file in it, and the faces mode.

Uploads are never written to disk: Werkzeug would spool files over 500 KB to a temporary file, so the request
class keeps them in memory, and the whole body is read before anything parses it (`buffer_body`).
"""

from __future__ import annotations

import io
import time

from flask import Flask, Request, current_app, request
from werkzeug.exceptions import RequestEntityTooLarge

from maskclassifier.classifier.faces import MODES
from maskclassifier.core.errors import ImageError

MULTIPART_OVERHEAD = 64 * 1024
try:  # gunicorn's body readers raise these for a malformed chunked body (a bad chunk size, a missing CRLF)
    from gunicorn.http.errors import ParseException

    _BODY_ERRORS: tuple[type[Exception], ...] = (ParseException,)
except ImportError:  # pragma: no cover - served without gunicorn
    _BODY_ERRORS = ()  # boundaries and headers around the file in a multipart body


class InMemoryRequest(Request):
    """Keeps uploaded files in memory: Werkzeug would spool files over 500 KB to a temporary file on disk."""

    def _get_file_stream(self, total_content_length, content_type, filename=None, content_length=None):
        return io.BytesIO()


def init_app(app: Flask) -> None:
    app.request_class = InMemoryRequest
    app.config["MAX_CONTENT_LENGTH"] = app.config["SETTINGS"].max_upload_bytes + MULTIPART_OVERHEAD
    app.before_request(buffer_body)


def buffer_body() -> None:
    """Read the whole request body into memory before anything parses it, within the upload deadline.

    Under gunicorn the connection's socket (`maskclassifier.web.worker.DeadlineSocket`) makes every read give
    up once the deadline passes, so a client that trickles or stalls holds one thread for at most UPLOAD_TIMEOUT
    seconds and then gets a 408, and the inference slot is only ever taken by a request whose photo has arrived.
    Raises ImageError (408 upload_timeout, 400 upload_incomplete) or RequestEntityTooLarge.
    """
    if request.method not in ("POST", "PUT", "PATCH"):
        return
    environ = request.environ
    length, limit = request.content_length, current_app.config["MAX_CONTENT_LENGTH"]
    if length is not None and length > limit:
        return  # Werkzeug answers 413 without reading it
    sock = environ.get("gunicorn.socket")
    set_deadline = getattr(sock, "set_read_deadline", None)
    if set_deadline is not None:
        set_deadline(time.monotonic() + current_app.config["SETTINGS"].upload_timeout_s)
    wanted = limit + 1 if length is None else length  # chunked: one byte over the limit tells it is too large
    chunks, received = [], 0
    try:
        while received < wanted:
            # All that is missing in one call: gunicorn then receives up to 1 MB at a time into one buffer and hands
            # it over without copying, where 64 KB reads cost a copy of each piece and a join (0.7 ms of CPU for an
            # 870 KB upload). A body that stops early comes back short, and the next read says why.
            chunk = environ["wsgi.input"].read(wanted - received)
            if not chunk:
                break
            chunks.append(chunk)
            received += len(chunk)
        timed_out = getattr(sock, "read_timed_out", False)
        complete = received >= wanted or (length is None and not timed_out)  # a chunked body ends itself
    except (OSError, *_BODY_ERRORS):  # gunicorn's NoMoreData, or a chunked body whose framing is broken
        timed_out, complete = getattr(sock, "read_timed_out", False), False
    if complete and set_deadline is not None:
        set_deadline(None)  # else it stays passed, so gunicorn drains nothing more and closes the connection
    if not complete:
        if timed_out:
            raise _upload_timeout()
        raise ImageError(400, "upload_incomplete",
                         "The upload stopped before the whole photo arrived, or its chunked encoding was broken. "
                         "Please try again.")
    if received > limit:
        raise RequestEntityTooLarge()
    body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    environ["wsgi.input"] = io.BytesIO(body)
    environ["CONTENT_LENGTH"] = str(len(body))
    environ.pop("HTTP_TRANSFER_ENCODING", None)
    environ["wsgi.input_terminated"] = False


def _upload_timeout() -> ImageError:
    seconds = current_app.config["SETTINGS"].upload_timeout_s
    return ImageError(408, "upload_timeout",
                      f"The photo did not arrive within {seconds:g} seconds: the connection is too slow or stalled. "
                      "Please try again on a better connection, or with a smaller photo.")


def uploaded_bytes() -> bytes:
    """The one file in the form field `file`; empty parts (an unused second file input) are ignored."""
    parts = request.files.getlist("file")
    contents = [part.read() for part in parts]
    non_empty = [data for data in contents if data]
    if len(non_empty) > 1:
        raise ImageError(400, "too_many_files", "Please upload one image at a time.")
    if non_empty:
        data = non_empty[0]
    elif any(part.filename for part in parts):
        raise ImageError(400, "empty_file", "The file is empty. Please choose a photo to upload.")
    else:
        raise _no_file_error()
    limit = current_app.config["SETTINGS"].max_upload_bytes
    if len(data) > limit:
        raise _too_large_error()
    return data


def _no_file_error() -> ImageError:
    if request.mimetype == "multipart/form-data" and request.content_length and not request.form and not request.files:
        # Werkzeug drops a whole multipart body it cannot parse (bad boundary, cut short, non-UTF-8 headers).
        return ImageError(400, "malformed_upload",
                          "The upload could not be read: the request is not a well-formed multipart form. Send the "
                          "photo as a file in the field 'file' (as a browser form or curl -F file=@photo.jpg does).")
    others = [name for name in request.files if name and name != "file"]
    hint = (" (the field 'file' held text, not a file)" if "file" in request.form
            else f" (the request had a file in the field {others[0]!r} instead)" if others else "")
    return ImageError(400, "no_file", f"No image was sent{hint}. Choose a photo and upload it in the field 'file'.")


def request_too_large() -> ImageError:
    """Werkzeug's 413: a body over the limit, or a smaller one with too many form parts or too long a text field."""
    length = request.content_length
    if length is not None and length <= current_app.config["MAX_CONTENT_LENGTH"]:
        return ImageError(413, "form_too_large",
                          "The form has too many fields or too long a field. Send one photo in the field 'file'.")
    return _too_large_error()


def _too_large_error() -> ImageError:
    limit_mb = current_app.config["SETTINGS"].max_upload_mb
    return ImageError(413, "file_too_large", f"The file is too large. The limit is {limit_mb:g} MB per photo.")


def requested_mode() -> str | None:
    """The `faces` query parameter, else the form field: auto, on or off; None when neither was sent."""
    raw = request.values.get("faces")  # the query string first, then the form
    if raw is None:
        return None
    mode = raw.strip().lower()
    if mode not in MODES:
        raise ImageError(400, "invalid_faces_mode",
                         f"faces must be auto, on or off (got {raw[:20]!r}): auto classifies each face when there "
                         "are two or more, on always does, off classifies the whole photo.")
    return mode
