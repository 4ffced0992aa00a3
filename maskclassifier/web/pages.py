"""The web page: the upload form, the examples, and the result (or the error) rendered in the same page.

Two addresses answer a photo: POST / renders the whole page with the result first (the form's action lands on
`#result`, so a browser without JavaScript shows the answer at the top of the screen), and POST /result renders the
result alone, an HTML fragment the page's script puts in place without reloading. Both render the same template,
`_result.html`, so the two can never differ.
"""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, Flask, Response, current_app, make_response, render_template, request

from maskclassifier.classifier.faces import TooManyFaces
from maskclassifier.core.categories import CATEGORIES, TONE_COLOURS
from maskclassifier.core.errors import ImageError
from maskclassifier.core.images import ACCEPT_ATTRIBUTE
from maskclassifier.web.errors import ErrorReply, reply_for, with_headers
from maskclassifier.web.inference import analyse_faces, classifier, face_detector, slot_for
from maskclassifier.web.presenters import faces_view, headline_view, percent, preview_data_uri, result_view
from maskclassifier.web.uploads import requested_mode, uploaded_bytes

bp = Blueprint("pages", __name__)

# The page's script shrinks larger photos to this long side before sending them (a 12-megapixel phone photo goes
# from several MB to a few hundred KB). It keeps more than the server uses: faces are found at 1280 px, the
# annotated photo is 1600 px, and a face a tenth of the photo wide is still about 200 px, near the model's input.
UPLOAD_MAX_SIDE = 2048
MODE_CHOICES = [  # the form's mode control: value, label, hint
    ("auto", "Automatic", "an answer for each face when there are two or more"),
    ("off", "Whole photo", "one answer for the whole picture"),
    ("on", "Every face", "an answer for each face, even when there is only one"),
]
# The clickable examples, in maskclassifier/web/static/examples/ (scripts/make_examples.py writes them, with a licence
# file beside each): name, caption, what it shows (the image's alt text).
EXAMPLES = [
    ("no-mask", "No mask", "Astronaut Eileen Collins, no mask (NASA photo)"),
    ("cloth", "Cloth mask", "The same photo with a drawn cloth mask (illustration)"),
    ("kn95", "KN95", "The same photo with a drawn KN95 mask (illustration)"),
    ("medical", "Surgical mask", "The same photo with a drawn surgical mask (illustration)"),
    ("group", "Group of 4", "Four copies of the face, three with drawn masks (illustration)"),
    ("not-a-face", "Not a face", "A cup of coffee on a saucer"),
]
EXAMPLE_NAMES = {name for name, _, _ in EXAMPLES}
ERROR_TITLES = {  # the heading over the message, where "We could not classify that file" would mislead
    408: "The upload was too slow",
    503: "The server is busy, try again in a few seconds",
}


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
    app.add_template_filter(percent)


# The result fragments: the server's answer (POST /result) and an answer computed on the device (ondevice.py).
FRAGMENT_ENDPOINTS = ("pages.classify_fragment", "ondevice.computed")


def _fragment_wanted() -> bool:
    return request.endpoint in FRAGMENT_ENDPOINTS


def render_page(status: int = 200, mode: str = "auto", fragment: bool = False, **context) -> tuple[str, int]:
    """The page (or, for the fragment endpoints, the result alone). `where` says where the answer was computed:
    "server" unless ondevice.py says "device"."""
    template = "_result.html" if fragment or _fragment_wanted() else "index.html"
    context.setdefault("where", "server")
    return render_template(template, accept=ACCEPT_ATTRIBUTE, categories=CATEGORIES, mode=mode,
                           mode_choices=MODE_CHOICES, faces_available=face_detector() is not None,
                           upload_max_side=UPLOAD_MAX_SIDE, examples=EXAMPLES, tones=TONE_COLOURS,
                           caveats=classifier().caveats, **context), status


def error_page(reply: ErrorReply, mode: str = "auto", **context) -> Response:
    page = render_page(reply.status, mode, error=reply.message, error_title=ERROR_TITLES.get(reply.status), **context)
    return with_headers(make_response(page), reply)


@bp.errorhandler(Exception)
def page_error(error: Exception) -> Response:
    return error_page(reply_for(error), _chosen_mode())


def _chosen_mode() -> str:
    """The mode the form asked for, so that the page keeps it after an error; "auto" when it cannot be read."""
    try:
        return requested_mode() or "auto"
    except Exception:  # noqa: BLE001 - the error being shown may be the form itself (too large, malformed)
        return "auto"


def example_bytes(name: str) -> bytes:
    """The file of the example `name` (the form's example buttons, which work without JavaScript too)."""
    if name not in EXAMPLE_NAMES:
        raise ImageError(400, "unknown_example", "There is no such example. Choose one of the pictures shown.")
    return (Path(current_app.static_folder) / "examples" / f"{name}.jpg").read_bytes()


@bp.get("/")
def index():
    return render_page()


@bp.post("/")
def classify_form():
    return _classify()


@bp.post("/result")
def classify_fragment():
    return _classify()


def _classify():
    mode = requested_mode() or "auto"
    example = request.form.get("example")
    data = example_bytes(example) if example else uploaded_bytes()
    settings = current_app.config["SETTINGS"]
    caveats = classifier().caveats  # answers naming these categories carry the caveat that they were mostly drawn
    with slot_for(data):  # decoding holds the photo's pixels: a bounded number at a time
        image = classifier().decode(data, whole_photo=mode == "off")
        try:
            analysis = analyse_faces(image, mode)
        except TooManyFaces as error:
            return error_page(reply_for(error), mode, result=result_view(error.photo, caveats),
                              preview=preview_data_uri(image))
        return render_page(mode=mode, result=result_view(analysis.photo, caveats), preview=preview_data_uri(image),
                           headline=headline_view(analysis, caveats), example=example,
                           faces=faces_view(image, analysis, settings.face_margin, face_detector() is not None))
