"""The cleaner's HTTP side (Flask): the page, its JSON, the photos read-only, every request behind the token.

No torch here: the model's probabilities come in the Review (clean/review.py), computed before the app starts.
Every URL starts with /TOKEN/; any other request gets 403, as JSON under /TOKEN/api/ or for a client that asks for
JSON, else as a plain page. Photos are served only for fnames the CSV lists, and only from inside the images root.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from urllib.parse import urlsplit

from flask import Blueprint, Flask, abort, current_app, jsonify, render_template, request, send_file
from werkzeug.exceptions import HTTPException

from maskclassifier.clean.ranking import ORDERS
from maskclassifier.clean.review import Review, ReviewError

HERE = Path(__file__).resolve().parent
CONTENT_SECURITY_POLICY = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
                           "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
MAX_BODY = 64 * 1024  # a decision is a few hundred bytes of JSON

views = Blueprint("clean", __name__)


def create_app(review: Review, token: str | None = None) -> Flask:
    """The cleaner for `review`, reachable under /TOKEN/ (a new secrets.token_urlsafe when not given)."""
    app = Flask(__name__, template_folder=str(HERE / "templates"), static_folder=None)
    app.config.update(REVIEW=review, TOKEN=token or secrets.token_urlsafe(24), MAX_CONTENT_LENGTH=MAX_BODY)
    app.url_map.merge_slashes = False  # /TOKEN//x is a 404, not a redirect built from the request's Host
    app.register_blueprint(views, url_prefix=f"/{app.config['TOKEN']}")
    app.before_request(_require_token)
    app.after_request(_headers)
    app.register_error_handler(HTTPException, _error)
    return app


def _review() -> Review:
    return current_app.config["REVIEW"]


def _wants_json() -> bool:
    return "/api/" in request.path or request.accept_mimetypes.best == "application/json"


def _require_token():
    """403 unless the path starts with the right token (compared in constant time), before any routing result."""
    first, _, _ = request.path.lstrip("/").partition("/")
    if not secrets.compare_digest(first.encode(), current_app.config["TOKEN"].encode()):
        return _forbidden()
    return None


def _forbidden():
    message = "Forbidden: open the URL with the token that python -m maskclassifier.clean printed."
    if _wants_json():
        return jsonify(error="forbidden", message=message), 403
    return message + "\n", 403, {"Content-Type": "text/plain; charset=utf-8"}


def _error(error: HTTPException):
    if _wants_json():
        return jsonify(error=error.name.lower().replace(" ", "_"), message=error.description), error.code
    text = f"{error.code} {error.name}: {error.description}\n"
    return text, error.code, {"Content-Type": "text/plain; charset=utf-8"}


def _headers(response):
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"  # the token is in the URL
    response.headers["Cache-Control"] = "no-store"
    if "Location" in response.headers:  # Werkzeug's /TOKEN -> /TOKEN/: a path on this server, not the Host's
        parts = urlsplit(response.headers["Location"])
        path = parts.path if parts.path.startswith("/") and not parts.path.startswith("//") else "/"
        response.headers["Location"] = path + (f"?{parts.query}" if parts.query else "")
    return response


@views.get("/")
def page():
    review = _review()
    return render_template("clean.html", vocab=review.vocab, columns=review.columns, has_model=review.has_model,
                           orders=ORDERS, corrections=str(review.recorder.path))


@views.get("/static/<name>")
def static_file(name: str):
    if name not in ("clean.js", "clean.css", "favicon.svg"):
        abort(404)
    return send_file(HERE / "static" / name)


@views.get("/api/items")
def items():
    review = _review()
    how = request.args.get("order") or ("loss" if review.has_model else "csv")
    if how not in ORDERS:
        abort(400, f"order must be one of {', '.join(ORDERS)}")
    filters = {name: request.args.get(name, "") for name in ("labelled", "predicted", "column", "value", "pair")}
    if filters["column"] and filters["column"] not in review.columns:
        abort(400, f"no column {filters['column']!r} (columns: {', '.join(review.columns)})")
    with review.lock:  # the list and its counts from one state, not from either side of a decision
        found = review.items(how, undecided=request.args.get("undecided") == "1", **filters)
        counts = review.counts()
    values = {name: sorted({row.get(name, "") for row in review.rows}) for name in review.columns}
    pairs = sorted({f"{old}>{new}" for item in review.items("csv") for old, new in item["pairs"]})
    return jsonify(items=found, order=how, vocab=review.vocab, has_model=review.has_model,
                   threshold=review.threshold, values=values, pairs=pairs, counts=counts)


@views.post("/api/decide")
def decide():
    body = request.get_json(silent=True)
    if not isinstance(body, dict) or not isinstance(body.get("fname"), str) or not isinstance(body.get("action"), str):
        abort(400, 'expected JSON {"fname": ..., "action": "relabel"|"delete"|"keep", "labels": [...]}')
    labels = body.get("labels")
    if labels is not None and not (isinstance(labels, list) and all(isinstance(label, str) for label in labels)):
        abort(400, "labels must be a list of category names")
    review = _review()
    with review.lock:  # the counts acknowledged with the decision are the state it made
        try:
            item = review.decide(body["fname"], body["action"], labels, str(body.get("reason") or ""))
        except ReviewError as exc:
            abort(422, str(exc))
        return jsonify(item=item, counts=review.counts())


@views.post("/api/undo")
def undo():
    review = _review()
    with review.lock:
        return jsonify(item=review.undo(), counts=review.counts())


@views.get("/image/<path:fname>")
def image(fname: str):
    """The photo, read-only: only an fname the CSV lists, and only a file inside the images root (no `..`, no
    absolute path, no symlink out of it)."""
    review = _review()
    # Only names the CSV lists reach the file system: a NUL byte (ValueError in os.stat), a name too long for it
    # or a file that cannot be read (OSError) were 500s.
    if not review.knows(fname):
        abort(404, "no such image in the CSV")
    root = review.images_root.resolve()
    try:
        path = (root / fname).resolve()
        if not path.is_relative_to(root) or not path.is_file():
            abort(404, "no such image in the CSV")
        return send_file(path, max_age=0)
    except (OSError, ValueError):
        abort(404, "the image listed in the CSV cannot be read")
