"""The photo with every face boxed, numbered and labelled (the page and /api/annotate show it)."""

from __future__ import annotations

from collections.abc import Sequence

from PIL import Image, ImageDraw, ImageFont

from maskclassifier.classifier.classifier import Prediction
from maskclassifier.core.categories import UNSURE_COLOUR, category
from maskclassifier.core.facebox import Face
from maskclassifier.core.images import shrunk

ANNOTATED_MAX_SIDE = 1600  # long side of the annotated photo (page and /api/annotate)
CAPTION_LABELS = 2  # labels written on the photo per face; the page's table lists them all


def colour_for(prediction: Prediction) -> str:
    """The colour of the most probable category that passed the threshold; grey when none did."""
    if not prediction.labels:
        return UNSURE_COLOUR
    return category(prediction.labels[0]).colour


def short_name(name: str) -> str:
    return category(name).short


def caption_lines(number: int, prediction: Prediction) -> list[str]:
    """What is written by a face box: its number, then its labels with their probabilities, one per line.

    At most CAPTION_LABELS labels, so captions stay short in a crowd; the page's table lists them all.
    """
    scores = prediction.probabilities
    if not prediction.labels:
        top = max(scores, key=scores.get)
        return [f"{number} unsure:", f"{short_name(top)} {scores[top]:.0%}"]
    lines = [f"{short_name(label)} {scores[label]:.0%}" for label in prediction.labels[:CAPTION_LABELS]]
    more = len(prediction.labels) - CAPTION_LABELS
    if more > 0:
        lines[-1] += f" +{more}"
    return [f"{number} {lines[0]}"] + lines[1:]


def annotate(image: Image.Image, faces: Sequence[Face], predictions: Sequence[Prediction]) -> Image.Image:
    """A copy of the photo (long side at most ANNOTATED_MAX_SIDE) with each face boxed, numbered and labelled."""
    canvas, scale = shrunk(image, ANNOTATED_MAX_SIDE, Image.Resampling.LANCZOS, reducing_gap=3.0)
    if canvas is image:
        canvas = image.copy()  # drawn on: never the caller's photo
    draw = ImageDraw.Draw(canvas)
    line_width = max(2, round(max(canvas.size) / 400))
    for number, (face, prediction) in enumerate(zip(faces, predictions, strict=True), start=1):
        box = tuple(round(value * scale) for value in face.box)
        colour = colour_for(prediction)
        draw.rectangle(box, outline=colour, width=line_width)
        _draw_caption(draw, box, caption_lines(number, prediction), colour, canvas.size)
    return canvas


def _fitting_font(draw: ImageDraw.ImageDraw, lines: list[str], width: int,
                  size: tuple[int, int]) -> ImageFont.FreeTypeFont:
    """The largest font (up to one that suits the photo's size) whose lines fit the box width, never below 10 px,
    so that the captions of neighbouring faces do not run into each other."""
    largest = max(14, round(max(size) / 50))
    font = ImageFont.load_default(size=largest)
    widest = max(draw.textlength(line, font=font) for line in lines)
    if widest <= width:
        return font
    return ImageFont.load_default(size=max(10, int(largest * width / widest)))


def _draw_caption(draw: ImageDraw.ImageDraw, box: tuple[int, ...], lines: list[str], colour: str,
                  size: tuple[int, int]) -> None:
    """The caption on a filled band above the box, else below it, else inside its top edge."""
    font = _fitting_font(draw, lines, box[2] - box[0], size)
    text = "\n".join(lines)
    left, top, right, bottom = draw.multiline_textbbox((0, 0), text, font=font, spacing=1)
    pad = max(2, round(font.size / 6))
    band_width, band_height = right - left + 2 * pad, bottom - top + 2 * pad
    x = min(max(0, box[0]), max(0, size[0] - band_width))
    if box[1] >= band_height:
        y = box[1] - band_height
    elif box[3] + band_height <= size[1]:
        y = box[3]
    else:
        y = box[1]
    draw.rectangle((x, y, x + band_width, y + band_height), fill=colour)
    draw.multiline_text((x + pad - left, y + pad - top), text, font=font, fill="white", spacing=1)


def with_footnote(picture: Image.Image, text: str) -> Image.Image:
    """`picture` with `text` written under it on a white band as wide as the picture, wrapped to fit: a caveat
    that must stay with the photo when it is shared, without hiding any of it."""
    font = ImageFont.load_default(size=max(12, round(picture.width / 60)))
    measure = ImageDraw.Draw(picture)
    pad = max(4, round(font.size / 2))
    lines: list[str] = []
    for word in text.split():
        candidate = f"{lines[-1]} {word}" if lines else word
        if lines and measure.textlength(candidate, font=font) <= picture.width - 2 * pad:
            lines[-1] = candidate
        else:
            lines.append(word)
    line_height = round(font.size * 1.25)
    band = Image.new("RGB", (picture.width, picture.height + len(lines) * line_height + 2 * pad), "white")
    band.paste(picture if picture.mode == "RGB" else picture.convert("RGB"), (0, 0))  # no copy of an RGB one
    draw = ImageDraw.Draw(band)
    for index, line in enumerate(lines):
        draw.text((pad, picture.height + pad + index * line_height), line, font=font, fill="#24292f")
    return band
