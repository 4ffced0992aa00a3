"""Every error as a stable reply (status, code, message), app-wide error handling, and the security headers.

The API's blueprint answers its own errors as JSON (`maskclassifier.web.api`); the pages render them in the page.
What reaches the app-wide handler is what no blueprint saw: routing errors (404, 405) and errors of requests to
static files. Those are answered as JSON for the API's addresses, else as a page.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from flask import Flask, Response, current_app, jsonify, make_response, request
from werkzeug.exceptions import HTTPException

from maskclassifier.classifier.classifier import Prediction
from maskclassifier.core.errors import MaskClassifierError
from maskclassifier.web.headers import SECURITY_HEADERS
from maskclassifier.web.inference import classifier
from maskclassifier.web.presenters import drawn_json, prediction_json
from maskclassifier.web.uploads import request_too_large

HTTP_MESSAGES = {
    400: "The request could not be understood. Please upload the photo again using the form.",
    404: "There is no page here. Go back to the start page to upload a photo.",
    405: "This address does not accept that kind of request.",
}
API_PATHS = ("/api/", "/healthz")  # answered in JSON even when no route matched


@dataclass(frozen=True)
class ErrorReply:
    status: int
    code: str  # stable, machine-readable
    message: str  # for a person: what happened and what to do
    extra: dict = field(default_factory=dict)  # more JSON fields, e.g. the whole photo's answer
    headers: list[tuple[str, str]] = field(default_factory=list)


def reply_for(error: Exception) -> ErrorReply:
    """The reply for any exception a request can raise: the package's own errors carry theirs (a 500 of theirs is
    the server's trouble, so it is logged like any unexpected error and becomes the generic 500)."""
    if isinstance(error, MaskClassifierError) and error.status != 500:
        extra = {name: _presented(value) for name, value in error.extra.items()}
        return ErrorReply(error.status, error.code, error.message, extra, list(error.headers))
    if isinstance(error, HTTPException):
        if error.code == 413:
            too_large = request_too_large()
            return ErrorReply(413, too_large.code, too_large.message)
        # Keep the headers Werkzeug's own error page would carry, such as the Allow list a 405 must have.
        headers = [(name, value) for name, value in error.get_headers() if name.lower() != "content-type"]
        return ErrorReply(error.code or 500, (error.name or "error").lower().replace(" ", "_"),
                          HTTP_MESSAGES.get(error.code, error.description or error.name), headers=headers)
    current_app.logger.exception("unexpected error while handling %s %s", request.method, request.path)
    return ErrorReply(500, "internal_error", "Something went wrong on our side. Please try again.")


def _presented(value: object) -> object:
    """A value an error carries as the JSON answer shows it: a Prediction (the whole photo's answer) as the API
    answers one, with its caveats."""
    if isinstance(value, Prediction):
        return {**prediction_json(value), **drawn_json([value], classifier().caveats)}
    return value


def with_headers(response: Response, reply: ErrorReply) -> Response:
    response.headers.extend(reply.headers)
    return response


def json_reply(reply: ErrorReply) -> Response:
    body = jsonify({"error": reply.code, "message": reply.message, **reply.extra})
    return with_headers(make_response(body, reply.status), reply)


def add_security_headers(response: Response) -> Response:
    if request.method not in ("GET", "HEAD"):
        # Every request that can carry a photo is a POST, and its answer (the page with the preview, the JSON, the
        # annotated JPEG, or an error about the photo) is about that photo: no browser or proxy keeps a copy.
        response.headers["Cache-Control"] = "no-store"
    relative_location(response)
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


def relative_location(response: Response) -> None:
    """Make a redirect's Location a path on this site. Werkzeug builds the URLs of its own redirects (a missing
    trailing slash) from the request's Host and scheme, which anyone can set, so the absolute form could send a
    browser or a cache to another site; a path cannot. A path that starts with // would name a host: refused."""
    location = response.headers.get("Location")
    if location is None:
        return
    parts = urlsplit(location)
    path = parts.path if parts.path.startswith("/") and not parts.path.startswith("//") else "/"
    response.headers["Location"] = path + (f"?{parts.query}" if parts.query else "")


def init_app(app: Flask, page_reply: Callable[[ErrorReply], Response]) -> None:
    """Security headers on every response; `page_reply` renders an error that no blueprint handled as a page."""

    def app_error(error: Exception) -> Response:
        reply = reply_for(error)
        return json_reply(reply) if request.path.startswith(API_PATHS) else page_reply(reply)

    # Werkzeug would answer //static/x (or /static//x) with a redirect to the merged path; a plain 404 instead.
    app.url_map.merge_slashes = False
    app.register_error_handler(Exception, app_error)
    app.after_request(add_security_headers)
