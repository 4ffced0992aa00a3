"""What people and API clients read: a prediction as a sentence, as JSON, and as the page's view models.

Postprocessing only: no request parsing, no model calls.
"""

from __future__ import annotations

import base64
import io

from PIL import Image

from maskclassifier.categories import category
from maskclassifier.drawing import annotate, colour_for
from maskclassifier.explain import Explanation
from maskclassifier.facebox import Face, crop_box
from maskclassifier.images import shrunk
from maskclassifier.faces import FaceAnalysis
from maskclassifier.model import Prediction

PREVIEW_SIZE = 800
FACE_THUMBNAIL_SIZE = 96


def friendly_name(name: str) -> str:
    return category(name).title


def prediction_message(prediction: Prediction) -> str:
    """The one sentence a person reads first."""
    if not prediction.labels:
        return (f"The model is not confident enough about any category (none reached {prediction.threshold:.0%}). "
                "Try a clearer, front-facing photo of a face.")
    if prediction.labels[0] == "-":
        return "This does not look like a face or mask photo."
    return "Recognised: " + ", ".join(friendly_name(label) for label in prediction.labels) + "."


def prediction_json(prediction: Prediction) -> dict:
    return {
        "labels": prediction.labels,
        "probabilities": prediction.probabilities,
        "threshold": prediction.threshold,
        "message": prediction_message(prediction),
    }


def faces_json(analysis: FaceAnalysis) -> dict:
    body: dict = {"mode": analysis.mode, "faces": [
        {"box": list(face.box), "score": face.score, "labels": prediction.labels,
         "probabilities": prediction.probabilities}
        for face, prediction in zip(analysis.faces, analysis.predictions)
    ]}
    if analysis.found is not None:
        body["faces_found"] = analysis.found
    if analysis.note:
        body["note"] = analysis.note
    return body


def jpeg(image: Image.Image) -> bytes:
    """JPEG without chroma subsampling, which would smear the thin coloured boxes and captions."""
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=85, subsampling=0)
    return buffer.getvalue()


def data_uri(image: Image.Image) -> str:
    """An image inline in the page: nothing is stored on the server."""
    return "data:image/jpeg;base64," + base64.b64encode(jpeg(image)).decode("ascii")


def preview_data_uri(image: Image.Image) -> str:
    """The (EXIF-upright) photo, at most PREVIEW_SIZE on its long side, as an inline JPEG for the result page."""
    return data_uri(shrunk(image, PREVIEW_SIZE, Image.Resampling.BICUBIC, reducing_gap=2.0)[0])


def png_data_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def explanation_json(explanation: Explanation, overlay_png: bytes) -> dict:
    """The heat-map for the API: the category, its probability, the grid (rounded to 3 decimals) over `box`, and
    the overlay as a PNG data URL."""
    return {
        "category": explanation.category,
        "title": explanation.title,
        "probability": explanation.probability,
        "method": explanation.method,
        "grid": [[round(float(value), 3) for value in row] for row in explanation.grid],
        "box": list(explanation.box),
        "legend": explanation.legend,
        "overlay": png_data_uri(overlay_png),
    }


def result_view(prediction: Prediction) -> dict:
    kind = "not_confident" if not prediction.labels else "noise" if prediction.labels[0] == "-" else "ok"
    return {
        "kind": kind,
        "message": prediction_message(prediction),
        "threshold": prediction.threshold,
        "matches": [
            {"name": label, "title": friendly_name(label), "description": category(label).description,
             "probability": prediction.probabilities[label]}
            for label in prediction.labels
        ],
        "bars": [
            {"name": name, "title": friendly_name(name), "probability": p, "passed": name in prediction.labels}
            for name, p in sorted(prediction.probabilities.items(), key=lambda item: -item[1])
        ],
    }


def face_row(number: int, image: Image.Image, face: Face, prediction: Prediction, margin: float) -> dict:
    """One row of the page's face table; the thumbnail is the crop the classifier saw."""
    thumbnail = image.crop(crop_box(face.box, image.size, margin))
    thumbnail.thumbnail((FACE_THUMBNAIL_SIZE, FACE_THUMBNAIL_SIZE))
    top = max(prediction.probabilities, key=prediction.probabilities.get)
    return {
        "number": number,
        "colour": colour_for(prediction),
        "thumbnail": data_uri(thumbnail),
        "matches": [{"title": friendly_name(label), "probability": prediction.probabilities[label]}
                    for label in prediction.labels],
        "top": {"title": friendly_name(top), "probability": prediction.probabilities[top]},
        "score": face.score,
        "box": face.box,
    }


def faces_view(image: Image.Image, analysis: FaceAnalysis, margin: float, detector_available: bool) -> dict:
    view = {"mode": analysis.mode,
            # Without a detector the page offers no mode control, so its fallback note would only confuse.
            "note": analysis.note if detector_available else None}
    if analysis.mode == "faces":
        view["annotated"] = data_uri(annotate(image, analysis.faces, analysis.predictions))
        view["rows"] = [face_row(number, image, face, prediction, margin) for number, (face, prediction)
                        in enumerate(zip(analysis.faces, analysis.predictions), start=1)]
    return view
