"""The web page: the upload form, and the result (or the error) rendered in the same page."""

from __future__ import annotations

from flask import Blueprint, Flask, Response, current_app, make_response, render_template

from maskclassifier.categories import CATEGORIES
from maskclassifier.faces import TooManyFaces
from maskclassifier.images import ACCEPT_ATTRIBUTE, load_image
from maskclassifier.web.errors import ErrorReply, reply_for, with_headers
from maskclassifier.web.inference import analyse_faces, face_detector, slot_for
from maskclassifier.web.presenters import faces_view, preview_data_uri, result_view
from maskclassifier.web.uploads import requested_mode, uploaded_bytes

bp = Blueprint("pages", __name__)

# The page's script shrinks larger photos to this long side before sending them (a 12-megapixel phone photo goes
# from several MB to a few hundred KB). It keeps more than the server uses: faces are found at 1280 px, the
# annotated photo is 1600 px, and a face a tenth of the photo wide is still about 200 px, near the model's input.
UPLOAD_MAX_SIDE = 2048
MODE_CHOICES = [  # the form's mode control: value, label, hint
    ("auto", "Automatic", "each face on its own when there are two or more; one face is also seen close up"),
    ("off", "Whole photo", "one answer for the whole picture"),
    ("on", "Every face", "find each face and classify it on its own"),
]
ERROR_TITLES = {  # the heading over the message, where "We could not classify that file" would mislead
    408: "The upload was too slow",
    503: "The server is busy, try again in a few seconds",
}


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)


def render_page(status: int = 200, mode: str = "auto", **context) -> tuple[str, int]:
    return render_template("index.html", accept=ACCEPT_ATTRIBUTE, categories=CATEGORIES, mode=mode,
                           mode_choices=MODE_CHOICES, faces_available=face_detector() is not None,
                           upload_max_side=UPLOAD_MAX_SIDE, **context), status


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


@bp.get("/")
def index():
    return render_page()


@bp.post("/")
def classify_form():
    mode = requested_mode() or "auto"
    data = uploaded_bytes()
    settings = current_app.config["SETTINGS"]
    with slot_for(data):  # decoding holds the photo's pixels: a bounded number at a time
        image = load_image(data)
        try:
            analysis = analyse_faces(image, mode)
        except TooManyFaces as error:
            return error_page(reply_for(error), mode, result=result_view(error.photo),
                              preview=preview_data_uri(image))
        return render_page(mode=mode, result=result_view(analysis.photo), preview=preview_data_uri(image),
                           faces=faces_view(image, analysis, settings.face_margin, face_detector() is not None))
