"""What people and API clients read: a prediction as a sentence, as JSON, and as the page's view models.

Postprocessing only: no request parsing, no model calls.
"""

from __future__ import annotations

import base64
import io
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from PIL import Image, ImageCms

from maskclassifier.classifier.classifier import Prediction, caveat_note
from maskclassifier.classifier.explain import Explanation
from maskclassifier.classifier.faces import FaceAnalysis
from maskclassifier.core.categories import category
from maskclassifier.core.facebox import Face, crop_box
from maskclassifier.core.images import shrunk

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
        for face, prediction in zip(analysis.faces, analysis.predictions, strict=True)
    ]}
    if analysis.found is not None:
        body["faces_found"] = analysis.found
    if analysis.note:
        body["note"] = analysis.note
    return body


_SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))


def without_metadata(image: Image.Image) -> Image.Image:
    """`image` with nothing of the upload's file but its pixels, for every image the app sends back.

    Pillow keeps a decoded file's `info` (JPEG comment, EXIF with GPS, XMP, ICC profile, IPTC) through crops,
    resizes and converts, and its encoders write some of it back (the JPEG comment, the ICC profile in a PNG): the
    annotated photo repeated the upload's comment. An ICC profile is applied instead (the pixels converted to sRGB,
    which browsers assume without one), so the colours stay right without sending it; a profile that cannot be read
    or applied is dropped and the pixels are sent as they are. Never the caller's image: a copy when it had any.
    """
    if not image.info:
        return image
    profile = image.info.get("icc_profile")
    clean = None
    if profile and image.mode == "RGB":
        try:
            clean = ImageCms.profileToProfile(image, ImageCms.ImageCmsProfile(io.BytesIO(profile)), _SRGB,
                                              outputMode="RGB")
        except (ImageCms.PyCMSError, OSError, ValueError, TypeError):  # a broken or non-RGB profile
            clean = None
    clean = clean or image.copy()
    clean.info = {}
    return clean


def jpeg(image: Image.Image) -> bytes:
    """JPEG without chroma subsampling, which would smear the thin coloured boxes and captions, and without any of
    the upload's metadata (`without_metadata`)."""
    buffer = io.BytesIO()
    without_metadata(image).save(buffer, format="JPEG", quality=85, subsampling=0)
    return buffer.getvalue()


def data_uri(image: Image.Image) -> str:
    """An image inline in the page: nothing is stored on the server."""
    return "data:image/jpeg;base64," + base64.b64encode(jpeg(image)).decode("ascii")


def preview_data_uri(image: Image.Image) -> str:
    """The (EXIF-upright) photo, at most PREVIEW_SIZE on its long side, as an inline JPEG for the result page."""
    return data_uri(shrunk(image, PREVIEW_SIZE, Image.Resampling.BICUBIC, reducing_gap=2.0)[0])


def percent(probability: float) -> str:
    """A probability as the page writes it, everywhere alike (chips, bars, faces): whole percents, except that
    it never rounds up to 100 % nor down to 0 %, which would claim a certainty the model does not have."""
    value = probability * 100
    if 99 < value < 100:
        return ">99%"
    if 0 < value < 1:
        return "<1%"
    return f"{value:.0f}%"


def tone_of(prediction: Prediction) -> str:
    """The colour language of an answer: "warn" (a bare face), "ok" (a mask) or "neutral" (not sure, not a face)."""
    return category(prediction.labels[0]).tone if prediction.labels else "neutral"


def drawn_note(predictions: Sequence[Prediction], caveats: Mapping[str, str]) -> str | None:
    """The caveats (`Classifier.caveats`: the categories learnt mostly from drawn examples, Gas and Shield for the
    shipped model, each with its training counts) of the categories any of these answers names; None when none
    does."""
    return caveat_note(predictions, dict(caveats))


def drawn_json(predictions: Sequence[Prediction], caveats: Mapping[str, str]) -> dict:
    """`{"synthetic_note": ...}` when any of these answers names a category learnt mostly from drawn examples, so
    that no client shows such an answer without its caveat; else {}."""
    note = drawn_note(predictions, caveats)
    return {"synthetic_note": note} if note else {}


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


def result_view(prediction: Prediction, caveats: Mapping[str, str] | None = None) -> dict:
    kind = "not_confident" if not prediction.labels else "noise" if prediction.labels[0] == "-" else "ok"
    return {
        "kind": kind,
        "tone": tone_of(prediction),
        "message": prediction_message(prediction),
        "drawn": drawn_note([prediction], caveats or {}),
        "threshold": prediction.threshold,
        "matches": [
            {"name": label, "title": friendly_name(label), "description": category(label).description,
             "probability": prediction.probabilities[label], "tone": category(label).tone}
            for label in prediction.labels
        ],
        "bars": [
            {"name": name, "title": friendly_name(name), "probability": p, "passed": name in prediction.labels,
             "tone": category(name).tone}
            for name, p in sorted(prediction.probabilities.items(), key=lambda item: -item[1])
        ],
    }


# The headline's fixed words (also sent to the browser, GET /api/model, for answers it words itself offline)
NOT_SURE_PHRASE = "not sure"
NOT_SURE_TITLE = "Not sure: the model is not confident about this photo"
NO_FACE_TITLE = "No face or mask in this photo"


def face_phrase(prediction: Prediction) -> str:
    """How one face is counted in the headline: by its most probable category, "not sure" when none passed."""
    if not prediction.labels or prediction.labels[0] == "-":
        return NOT_SURE_PHRASE
    return category(prediction.labels[0]).phrase


def faces_summary(predictions: list[Prediction], found: int | None = None) -> str:
    """"4 faces: 3 with no mask, 1 not sure": the most common kind first, "not sure" last. When fewer faces were
    classified than `found`, it says so in numbers: "50 of 81 faces classified: 26 with no mask, ..." (the
    classified ones are a uniform sample, `faces.classify_faces`, so the shares stand for the crowd)."""
    counts = Counter(face_phrase(prediction) for prediction in predictions)
    order = sorted(counts, key=lambda phrase: (phrase == NOT_SURE_PHRASE, -counts[phrase]))
    total = len(predictions)
    if found is not None and found > total:
        counted = f"{total} of {found} faces classified"
    else:
        counted = f"{total} face{'s' if total != 1 else ''}"
    return f"{counted}: " + ", ".join(f"{counts[phrase]} {phrase}" for phrase in order)


def photo_title(prediction: Prediction) -> str:
    """The headline for one answer about a whole photo (or one face): the categories in plain words."""
    if not prediction.labels:
        return NOT_SURE_TITLE
    if prediction.labels[0] == "-":
        return NO_FACE_TITLE
    return " and ".join(friendly_name(label) for label in prediction.labels)


def headline_view(analysis: FaceAnalysis, caveats: Mapping[str, str] | None = None) -> dict:
    """What the result leads with, in plain words: per face when faces were classified, else the photo's answer.

    `because` says why the answer could surprise: the whole photo of a group may read differently from its
    faces (each face is small in it), and a mask answer for a photo in which no face was found may be wrong.
    `drawn` is the caveat (`caveats`: Classifier.caveats) of the categories learnt mostly from drawn examples
    that any answer shown names.
    """
    predictions = [analysis.photo]
    if analysis.mode == "faces":
        tones = {tone_of(prediction) for prediction in analysis.predictions}
        tone = "warn" if "warn" in tones else "ok" if tones == {"ok"} else "neutral"
        title = faces_summary(analysis.predictions, analysis.found)
        because = None
        if _face_labels(analysis) != set(analysis.photo.labels):
            because = ("Judged as one picture, the photo reads differently (each face is small in it): trust the "
                       "answers per face.")
        predictions = list(analysis.predictions)
    else:
        tone, title, because = tone_of(analysis.photo), photo_title(analysis.photo), None
        if not analysis.photo.labels:
            # Face mode with no face found folds that into the same sentence: the page shows one reason, and
            # "no face" is the likelier cause of an unsure answer (the API's note says the same).
            found_none = "No face was found and n" if analysis.found == 0 else "N"
            because = (f"{found_none}o kind reached {analysis.photo.threshold:.0%}, so the model does not guess. "
                       "Try a clearer, front-facing photo of a face.")
        if analysis.found == 0 and analysis.photo.labels and analysis.photo.labels[0] != "-":
            because = ("No face was found in this photo, so the whole picture was judged; if there is no face in "
                       "it, this answer is likely wrong.")
    return {"tone": tone, "title": title, "because": because, "drawn": drawn_note(predictions, caveats or {})}


def _face_labels(analysis: FaceAnalysis) -> set[str]:
    return {prediction.labels[0] if prediction.labels else "unsure" for prediction in analysis.predictions}


# Numbers on the photo are drawn in the photo's own coordinates (an SVG over the image), sized so that on the
# narrowest screen the page is laid out for, the photo BADGE_REFERENCE_WIDTH CSS px wide, they are at least
# BADGE_FONT_PX tall; wider screens only make them larger. Laid out once, on the server, so they never overlap.
BADGE_REFERENCE_WIDTH = 320
BADGE_FONT_PX = 13


@dataclass(frozen=True)
class Badge:
    x: float  # top-left corner, in pixels of the preview image
    y: float
    width: float
    height: float

    def overlaps(self, other: Badge, gap: float) -> bool:
        return not (self.x + self.width + gap <= other.x or other.x + other.width + gap <= self.x
                    or self.y + self.height + gap <= other.y or other.y + other.height + gap <= self.y)


def place_badges(boxes: list[tuple[float, float, float, float]], size: tuple[int, int]) -> tuple[list[Badge], float]:
    """A number badge for each box (in order), inside the image and overlapping no other badge, and the font size.

    Each badge goes to the first free place among: above the box's top-left corner, inside it, below it, left or
    right of it; else to the free place nearest that corner on a grid. Returns the badges and the font size, both
    in image pixels.
    """
    unit = size[0] / BADGE_REFERENCE_WIDTH  # image pixels per CSS px on the narrowest layout
    font = BADGE_FONT_PX * unit
    height, gap = font * 1.5, 2 * unit
    placed: list[Badge] = []
    for number, (left, top, right, bottom) in enumerate(boxes, start=1):
        width = height * (0.6 + 0.4 * len(str(number)))
        candidates = [(left, top - height), (left, top), (left, bottom), (left - width, top), (right, top),
                      (right - width, bottom - height)]
        step = height / 2
        candidates += sorted(((x * step, y * step) for x in range(int(size[0] / step) + 1)
                              for y in range(int(size[1] / step) + 1)),
                             key=lambda point: (point[0] - left) ** 2 + (point[1] - top) ** 2)
        for x, y in candidates:
            badge = Badge(min(max(0.0, x), size[0] - width), min(max(0.0, y), size[1] - height), width, height)
            if not any(badge.overlaps(other, gap) for other in placed):
                break
        placed.append(badge)  # the last candidate when the photo is full: a crowd of small faces near MAX_FACES
    return placed, font


def face_row(number: int, image: Image.Image, face: Face, prediction: Prediction, margin: float) -> dict:
    """One row of the page's face table; the thumbnail is the crop the classifier saw."""
    thumbnail = image.crop(crop_box(face.box, image.size, margin))
    thumbnail.thumbnail((FACE_THUMBNAIL_SIZE, FACE_THUMBNAIL_SIZE))
    top = max(prediction.probabilities, key=prediction.probabilities.get)
    return {
        "number": number,
        "tone": tone_of(prediction),
        "phrase": face_phrase(prediction),
        "thumbnail": data_uri(thumbnail),
        "matches": [{"title": friendly_name(label), "probability": prediction.probabilities[label]}
                    for label in prediction.labels],
        "top": {"title": friendly_name(top), "probability": prediction.probabilities[top]},
        "box": face.box,
    }


def faces_view(image: Image.Image, analysis: FaceAnalysis, margin: float, detector_available: bool) -> dict:
    """The faces part of the result: the photo's size and each face's box, badge and table row (mode "faces")."""
    view = {"mode": analysis.mode,
            # Without a detector the page offers no mode control, so its fallback note would only confuse.
            "note": analysis.note if detector_available else None}
    if analysis.mode == "faces":
        # The overlay's coordinates are the photo's own pixels: the SVG's viewBox scales them to the shown preview.
        badges, font = place_badges([face.box for face in analysis.faces], image.size)
        view["size"] = image.size
        view["font"] = font
        view["stroke"] = max(2.0, image.width / BADGE_REFERENCE_WIDTH * 2)  # 2 CSS px on the narrowest layout
        view["rows"] = [{**face_row(number, image, face, prediction, margin), "badge": badge}
                        for number, (face, prediction, badge)
                        in enumerate(zip(analysis.faces, analysis.predictions, badges, strict=True), start=1)]
    return view
