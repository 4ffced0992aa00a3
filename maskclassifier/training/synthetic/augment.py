"""Training-time changes to an image that its labels survive: things over a bare face's mouth that are not masks,
and poor light. What users' photos show and the dataset's do not (issue 17).

Pillow and NumPy only. Every function takes the image, the face's box (x0, y0, x1, y1 in pixels of that image, as
the MTCNN detector returns it: about eyebrows to chin) and a NumPy Generator, and returns a new RGB image; the input
is never changed. `AugmentingReader` (fastai's get_x for training) applies them to training rows only, at random on
each read, so each epoch sees other occluders and other light.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from maskclassifier.training.dataset import ImageReader
from maskclassifier.training.synthetic import frames, renderings

if TYPE_CHECKING:
    from pathlib import Path

Box = tuple[int, int, int, int]

# Skin tones from light to deep (the Monk skin tone scale's swatches, rounded): a hand over a face is as often
# another tone as the face's own in group photos and stock images, and the face's own tone is added per image.
SKIN_TONES = ((246, 237, 228), (243, 231, 219), (247, 234, 208), (234, 218, 186), (215, 189, 150),
              (160, 126, 86), (130, 92, 67), (96, 65, 52), (58, 49, 42), (41, 36, 32))
HAIR_COLOURS = ((20, 16, 14), (58, 40, 28), (96, 64, 38), (160, 120, 70), (200, 170, 120), (120, 40, 25))
# A phone's back or case, a microphone's body: the dark, grey and white of most products plus a few colours.
OBJECT_COLOURS = ((18, 18, 20), (40, 40, 44), (120, 120, 125), (215, 215, 220), (30, 60, 120), (150, 30, 40))
SCARF_COLOURS = ((150, 30, 40), (30, 60, 110), (60, 90, 50), (200, 180, 140), (90, 90, 95), (230, 120, 40))
MIN_FACE = 24  # pixels: a smaller face is left alone (too few pixels to draw anything recognisable on)


def face_geometry(box: Box) -> tuple[float, float, float, float]:
    """(mouth x, mouth y, face width, face height) in pixels: MTCNN's box ends near the chin, the mouth at about
    three quarters of its height (the mean of its five landmarks on frontal faces)."""
    x0, y0, x1, y1 = box
    width, height = x1 - x0, y1 - y0
    return x0 + width / 2, y0 + 0.76 * height, width, height


def _median_colour(patches: list[np.ndarray]) -> tuple[int, int, int] | None:
    """The median RGB colour of the pixels of `patches` (slices of an image's array), or None when all are empty
    (the region falls outside the image)."""
    pixels = [patch.reshape(-1, 3) for patch in patches if patch.size]
    return tuple(int(v) for v in np.median(np.concatenate(pixels), axis=0)) if pixels else None


def face_tone(image: Image.Image, box: Box) -> tuple[int, int, int]:
    """The median colour of the cheeks (two patches beside the nose): the person's own skin tone."""
    x0, y0, x1, y1 = box
    width, height = x1 - x0, y1 - y0
    pixels = np.asarray(image)
    rows = slice(int(y0 + 0.45 * height), int(y0 + 0.6 * height))
    tone = _median_colour([pixels[rows, int(x0 + fx * width):int(x0 + (fx + 0.15) * width)] for fx in (0.15, 0.7)])
    return SKIN_TONES[4] if tone is None else tone  # None: the cheeks fall outside the image (a face cut off)


def _tone(image: Image.Image, box: Box, rng: np.random.Generator) -> tuple[int, int, int]:
    base = face_tone(image, box) if rng.random() < 0.5 else SKIN_TONES[rng.integers(len(SKIN_TONES))]
    return _jitter(base, rng, 12)


def _jitter(colour: tuple[int, int, int], rng: np.random.Generator, amount: int) -> tuple[int, int, int]:
    return tuple(int(np.clip(value + rng.integers(-amount, amount + 1), 0, 255)) for value in colour)


def _shade(colour: tuple[int, int, int], factor: float) -> tuple[int, int, int]:
    return tuple(int(np.clip(value * factor, 0, 255)) for value in colour)


def _composite(image: Image.Image, layer: Image.Image, mask: Image.Image, soften: float) -> Image.Image:
    """`layer` over `image` where `mask` is set, its edge blurred by `soften` pixels (a drawn edge is sharper than
    any photographed one, and a sharp edge is a shortcut the learner would take)."""
    if soften > 0:
        mask = mask.filter(ImageFilter.GaussianBlur(soften))
    return Image.composite(layer, image, mask)


def _lit(layer: Image.Image, rng: np.random.Generator) -> Image.Image:
    """The layer with light from one side (a left-to-right brightness ramp) and a little grain, so a flat fill
    gets some volume and texture."""
    width, height = layer.size
    ramp = np.linspace(rng.uniform(0.7, 0.95), rng.uniform(1.0, 1.2), width, dtype=np.float32)
    if rng.random() < 0.5:
        ramp = ramp[::-1]
    lit = np.asarray(layer, dtype=np.float32) * ramp[None, :, None]
    lit += rng.normal(0, rng.uniform(1, 5), (height, width, 1)).astype(np.float32)
    return Image.fromarray(np.clip(lit, 0, 255).astype(np.uint8))


def draw_hand(image: Image.Image, box: Box, rng: np.random.Generator) -> Image.Image:
    """A hand over the mouth: a palm at the mouth and four fingers across the lower face (fingers sideways, up
    over a cheek, or a loose fist under the chin)."""
    mx, my, width, height = face_geometry(box)
    tone = _tone(image, box, rng)
    layer = Image.new("RGB", image.size, tone)
    mask = Image.new("L", image.size, 0)
    draw = ImageDraw.Draw(mask)
    lines = ImageDraw.Draw(layer)
    palm_w, palm_h = width * rng.uniform(0.42, 0.6), height * rng.uniform(0.32, 0.45)
    cx, cy = mx + rng.uniform(-0.12, 0.12) * width, my + rng.uniform(-0.05, 0.12) * height
    draw.ellipse((cx - palm_w / 2, cy - palm_h / 2, cx + palm_w / 2, cy + palm_h / 2), fill=255)
    pose = rng.integers(3)
    finger = width * rng.uniform(0.075, 0.1)
    crease = _shade(tone, 0.72)
    side = 1 if rng.random() < 0.5 else -1
    for index in range(4):
        if pose == 0:  # fingers sideways across the lower face, from the palm towards one ear
            y = cy - palm_h / 2 + (index + 0.5) * palm_h / 4 - finger / 2
            length = width * rng.uniform(0.35, 0.5)
            xs = sorted((cx, cx + side * (palm_w / 2 + length)))
            draw.rounded_rectangle((xs[0], y, xs[1], y + finger * 0.95), radius=finger / 2, fill=255)
            lines.line((xs[0], y + finger, xs[1], y + finger), fill=crease, width=max(1, int(finger / 8)))
        elif pose == 1:  # fingers up over a cheek and the nose
            x = cx - palm_w / 2 + (index + 0.5) * palm_w / 4 - finger / 2
            top = cy - palm_h / 2 - height * rng.uniform(0.2, 0.35)
            draw.rounded_rectangle((x, top, x + finger * 0.95, cy), radius=finger / 2, fill=255)
            lines.line((x + finger, top, x + finger, cy), fill=crease, width=max(1, int(finger / 8)))
        else:  # a loose fist: knuckles in a row under the lip
            x = cx - palm_w / 2 + index * palm_w / 4
            draw.ellipse((x, cy - palm_h / 2 - finger, x + palm_w / 4 + finger / 3, cy - palm_h / 2 + finger),
                         fill=255)
    return _composite(image, _lit(layer, rng), mask, soften=max(0.6, width / 120))


def draw_phone(image: Image.Image, box: Box, rng: np.random.Generator) -> Image.Image:
    """A phone held upright at the mouth (a call, a selfie video): its back with a highlight along one edge, or
    its screen (dark glass in a bezel with a reflection); held by two fingertips at one side or by fingers
    wrapped round its lower half."""
    mx, my, width, height = face_geometry(box)
    colour = _jitter(OBJECT_COLOURS[rng.integers(len(OBJECT_COLOURS))], rng, 10)
    phone_w, phone_h = width * rng.uniform(0.3, 0.5), height * rng.uniform(0.55, 0.9)
    cx, cy = mx + rng.uniform(-0.2, 0.2) * width, my + rng.uniform(0.0, 0.25) * height
    angle = rng.uniform(-25, 25)
    layer = Image.new("RGB", image.size, colour)
    paint = ImageDraw.Draw(layer)
    mask = Image.new("L", image.size, 0)
    rect = (cx - phone_w / 2, cy - phone_h / 2, cx + phone_w / 2, cy + phone_h / 2)
    ImageDraw.Draw(mask).rounded_rectangle(rect, radius=phone_w * 0.15, fill=255)
    if rng.random() < 0.5:  # the screen side
        glass = _jitter((30, 34, 44), rng, 10)
        inset = phone_w * rng.uniform(0.04, 0.09)
        screen = (rect[0] + inset, rect[1] + inset * 1.5, rect[2] - inset, rect[3] - inset * 1.5)
        paint.rounded_rectangle(screen, radius=phone_w * 0.1, fill=glass)
        top = rng.uniform(0.1, 0.5) * phone_h
        paint.polygon([(screen[0], screen[1] + top), (screen[0] + phone_w * 0.45, screen[1]),
                       (screen[0] + phone_w * 0.65, screen[1]), (screen[0], screen[1] + top + phone_h * 0.15)],
                      fill=_shade(glass, rng.uniform(1.4, 2.2)))
    else:
        paint.line((rect[0] + phone_w * 0.08, rect[1] + phone_h * 0.05, rect[0] + phone_w * 0.08,
                    rect[3] - phone_h * 0.05), fill=_shade(colour, 1.6) if sum(colour) < 300 else
                   _shade(colour, 0.8), width=max(1, int(phone_w / 14)))
    mask = mask.rotate(angle, center=(cx, cy))
    layer = layer.rotate(angle, center=(cx, cy), fillcolor=colour)
    out = _composite(image, layer, mask, soften=max(0.5, width / 200))
    tone = _tone(image, box, rng)
    grip = Image.new("L", image.size, 0)
    finger = width * rng.uniform(0.07, 0.1)
    if rng.random() < 0.5:  # two fingertips at one side
        for dy in (0.1, 0.3):
            y = rect[1] + dy * phone_h
            ImageDraw.Draw(grip).rounded_rectangle((rect[2] - finger * 0.6, y, rect[2] + finger * 1.4, y + finger),
                                                   radius=finger / 2, fill=255)
    else:  # fingers wrapped round the lower half
        for index in range(int(rng.integers(2, 5))):
            y = rect[1] + phone_h * 0.55 + index * finger * 1.1
            ImageDraw.Draw(grip).rounded_rectangle((rect[0] - finger * 0.3, y, rect[2] + finger * 0.3, y + finger),
                                                   radius=finger / 2, fill=255)
    return _composite(out, _lit(Image.new("RGB", image.size, tone), rng), grip.rotate(angle, center=(cx, cy)),
                      soften=0.8)


def draw_microphone(image: Image.Image, box: Box, rng: np.random.Generator) -> Image.Image:
    """A handheld microphone in front of the mouth: a mesh ball (a grid of darker dots or of wires, sometimes a
    rim and a highlight) and a handle down out of the picture, sometimes in a fist."""
    mx, my, width, height = face_geometry(box)
    radius = width * rng.uniform(0.13, 0.26)
    cx, cy = mx + rng.uniform(-0.15, 0.15) * width, my + rng.uniform(-0.08, 0.15) * height
    mesh = _jitter((150, 150, 155) if rng.random() < 0.6 else (45, 45, 48), rng, 15)
    body = _jitter(OBJECT_COLOURS[rng.integers(2)], rng, 8)
    layer = Image.new("RGB", image.size, body)
    mask = Image.new("L", image.size, 0)
    draw, paint = ImageDraw.Draw(mask), ImageDraw.Draw(layer)
    lean = rng.uniform(-0.4, 0.4) * radius
    handle = (cx - radius * 0.45, cy, cx + radius * 0.45, image.size[1] + radius)
    draw.polygon([(handle[0], cy), (handle[2], cy), (handle[2] + lean, handle[3]), (handle[0] + lean, handle[3])],
                 fill=255)
    ball = (cx - radius, cy - radius, cx + radius, cy + radius)
    draw.ellipse(ball, fill=255)
    dark = _shade(mesh, rng.uniform(0.5, 0.7))
    rim = max(1, int(radius * 0.06))
    paint.ellipse(ball, fill=mesh, outline=_shade(mesh, 0.5) if rng.random() < 0.5 else None, width=rim)
    if rng.random() < 0.5:  # dots
        step = max(2, int(radius / 5))
        for y in range(int(ball[1]), int(ball[3]), step):
            for x in range(int(ball[0]) + (y // step) % 2 * step // 2, int(ball[2]), step):
                paint.point((x, y), fill=dark)
    else:  # a wire grid, inset from the rim
        wires = int(rng.integers(6, 12))
        for k in range(1, wires):
            offset = -radius + 2 * radius * k / wires
            half = 0.92 * np.sqrt(max(radius ** 2 - offset ** 2, 0))
            paint.line((cx + offset, cy - half, cx + offset, cy + half), fill=dark, width=max(1, rim // 2))
            paint.line((cx - half, cy + offset, cx + half, cy + offset), fill=dark, width=max(1, rim // 2))
    if rng.random() < 0.5:  # a highlight up on the side the light comes from
        hx = cx + rng.choice((-1, 1)) * radius * 0.35
        paint.ellipse((hx - radius * 0.25, cy - radius * 0.6, hx + radius * 0.25, cy - radius * 0.2),
                      fill=_shade(mesh, 1.4))
    out = _composite(image, _lit(layer, rng), mask, soften=max(0.5, width / 200))
    if rng.random() < 0.5:  # the fist round the handle, below the ball
        fist_y = cy + radius * rng.uniform(1.3, 2.2)
        fist = Image.new("L", image.size, 0)
        ImageDraw.Draw(fist).ellipse((cx - radius * 0.85, fist_y - radius * 0.7, cx + radius * 0.85,
                                      fist_y + radius * 0.7), fill=255)
        out = _composite(out, _lit(Image.new("RGB", image.size, _tone(image, box, rng)), rng), fist, soften=0.8)
    return out


def hair_colour(image: Image.Image, box: Box) -> tuple[int, int, int] | None:
    """The median colour of a strip just above the face box (where the hair usually is), or None when the box
    starts at the top of the image."""
    x0, y0, x1, _ = box
    top = int(y0 - 0.12 * (box[3] - y0))
    if top < 0:
        return None
    return _median_colour([np.asarray(image)[top:int(y0), int(x0 + (x1 - x0) / 3):int(x1 - (x1 - x0) / 3)]])


def draw_hair(image: Image.Image, box: Box, rng: np.random.Generator) -> Image.Image:
    """Strands of hair over the mouth and chin, in the person's own hair colour (sampled above the face) or a
    common one, a few shades each, with gaps between them: either falling from below the eyes, or blown across
    the face from beyond one side, sagging over the mouth and chin."""
    mx, my, width, height = face_geometry(box)
    own = hair_colour(image, box)
    base = own if own is not None and rng.random() < 0.5 else HAIR_COLOURS[rng.integers(len(HAIR_COLOURS))]
    shades = [_shade(base, factor) for factor in rng.uniform(0.5, 1.1, 3)]
    side = 1 if rng.random() < 0.5 else -1
    blown = rng.random() < 0.5
    out = image
    # sparse: dense dark strands over the mouth read as a black mask
    for shade in shades:
        layer = Image.new("RGB", image.size, shade)
        mask = Image.new("L", image.size, 0)
        draw = ImageDraw.Draw(mask)
        for _ in range(int(rng.integers(3, 10))):
            t = np.linspace(0, 1, 16)
            if blown:  # from beyond one side of the face, sagging across it, down to the mouth or chin
                start_y = box[1] + height * rng.uniform(0.3, 0.7)
                drop = height * rng.uniform(0.05, 0.35)
                xs = mx - side * width * rng.uniform(0.6, 0.8) + side * width * rng.uniform(1.1, 1.5) * t
                ys = start_y + drop * t + height * rng.uniform(0.05, 0.2) * np.sin(np.pi * t)
            else:  # falling from below the eyes over the mouth, bending to one side
                top_x = mx - side * width * rng.uniform(0.1, 0.3) + rng.normal(0, width * 0.08)
                xs = top_x + side * rng.uniform(0.15, 0.45) * width * t ** 1.5
                ys = box[1] + height * (0.42 + t * rng.uniform(0.5, 0.75))
            xs = xs + rng.normal(0, width * 0.01, t.size)
            draw.line(list(zip(xs.tolist(), ys.tolist(), strict=True)), fill=int(rng.integers(150, 256)),
                      width=max(1, int(width * rng.uniform(0.006, 0.025))), joint="curve")
        out = _composite(out, _lit(layer, rng), mask, soften=0.4)
    return out


def draw_scarf_down(image: Image.Image, box: Box, rng: np.random.Generator) -> Image.Image:
    """A scarf or neck gaiter pulled down under the chin: fabric over the neck and the bottom of the chin,
    mouth and nose bare (still no mask on), with fold lines and sometimes stripes."""
    mx, my, width, height = face_geometry(box)
    colour = _jitter(SCARF_COLOURS[rng.integers(len(SCARF_COLOURS))], rng, 15)
    top = box[3] - height * rng.uniform(0.0, 0.08)
    left, right = mx - width * rng.uniform(0.55, 0.75), mx + width * rng.uniform(0.55, 0.75)
    bottom = top + height * rng.uniform(0.35, 0.6)
    layer = Image.new("RGB", image.size, colour)
    paint = ImageDraw.Draw(layer)
    if rng.random() < 0.4:
        stripe = _shade(colour, rng.uniform(0.5, 0.7))
        for y in np.arange(top, bottom, height * 0.08)[::2]:
            paint.rectangle((left, y, right, y + height * 0.04), fill=stripe)
    for _ in range(4):
        y = rng.uniform(top, bottom)
        paint.arc((left, y - height * 0.1, right, y + height * 0.1), 20, 160, fill=_shade(colour, 0.6),
                  width=max(1, int(width / 40)))
    mask = Image.new("L", image.size, 0)
    ImageDraw.Draw(mask).chord((left, top - height * 0.12, right, bottom + height * 0.25), 0, 180, fill=255)
    ImageDraw.Draw(mask).rectangle((left, top + height * 0.05, right, bottom), fill=255)
    return _composite(image, _lit(layer, rng), mask, soften=max(0.6, width / 150))


OCCLUDERS: dict[str, Callable[[Image.Image, Box, np.random.Generator], Image.Image]] = {
    "hand": draw_hand, "phone": draw_phone, "microphone": draw_microphone, "hair": draw_hair,
    "scarf_down": draw_scarf_down}
# hands, the classic mistake, most often; microphones and hair were the faults left after run 9 (MODEL_CARD.md)
OCCLUDER_WEIGHTS = {"hand": 0.3, "phone": 0.15, "microphone": 0.2, "hair": 0.2, "scarf_down": 0.15}


def occlude(image: Image.Image, box: Box, rng: np.random.Generator) -> Image.Image:
    """One occluder that is not a mask over the lower face, chosen by OCCLUDER_WEIGHTS (hands, the classic
    mistake of mask detectors, most often)."""
    return _weighted_choice(OCCLUDERS, OCCLUDER_WEIGHTS, rng)(image, box, rng)


def _weighted_choice(table: dict[str, Callable], weights: dict[str, float], rng: np.random.Generator) -> Callable:
    names = list(table)
    chances = np.array([weights[name] for name in names])
    return table[names[rng.choice(len(names), p=chances / chances.sum())]]


def _to_linear(pixels: np.ndarray) -> np.ndarray:
    return (pixels / 255.0) ** 2.2  # sRGB's curve, near enough for changing exposure


def _to_srgb(linear: np.ndarray) -> Image.Image:
    return Image.fromarray((np.clip(linear, 0, 1) ** (1 / 2.2) * 255 + 0.5).astype(np.uint8))


def low_light(image: Image.Image, box: Box | None, rng: np.random.Generator) -> Image.Image:
    """The photo taken with 15-60 % of the light: exposure scaled in linear light, then a phone sensor's noise
    (luminance and colour, 2-10 levels of 255) and sometimes a colour cast (tungsten, fluorescent, dusk)."""
    linear = _to_linear(np.asarray(image, dtype=np.float32)) * rng.uniform(0.15, 0.6)
    if rng.random() < 0.5:
        linear = linear * np.array(_cast(rng), dtype=np.float32)
    out = np.asarray(_to_srgb(linear), dtype=np.float32)
    sigma = rng.uniform(2, 10)
    noise = rng.normal(0, sigma, out.shape[:2])[..., None] + rng.normal(0, sigma / 2, out.shape)
    return Image.fromarray(np.clip(out + noise, 0, 255).astype(np.uint8))


def backlight(image: Image.Image, box: Box | None, rng: np.random.Generator) -> Image.Image:
    """A face against a bright window or sky: the face (an ellipse around its box, or the middle of the photo
    when none is known) 2-5x darker than the brightened background, with a soft edge."""
    width, height = image.size
    x0, y0, x1, y1 = box if box is not None else (width * 0.25, height * 0.15, width * 0.75, height * 0.95)
    grow_x, grow_y = (x1 - x0) * 0.5, (y1 - y0) * 0.6
    subject = Image.new("L", image.size, 0)
    ImageDraw.Draw(subject).ellipse((x0 - grow_x, y0 - grow_y, x1 + grow_x, y1 + grow_y * 3), fill=255)
    weight = np.asarray(subject.filter(ImageFilter.GaussianBlur(max(2.0, (x1 - x0) / 4))), dtype=np.float32) / 255
    linear = _to_linear(np.asarray(image, dtype=np.float32))
    gain = weight / rng.uniform(2, 5) + (1 - weight) * rng.uniform(1.5, 3)
    return _to_srgb(linear * gain[..., None] + (1 - weight[..., None]) * rng.uniform(0.0, 0.25))


def colour_cast(image: Image.Image, box: Box | None, rng: np.random.Generator) -> Image.Image:
    """White balance gone wrong: warm tungsten, green-blue fluorescent or blue dusk, in linear light."""
    return _to_srgb(_to_linear(np.asarray(image, dtype=np.float32)) * np.array(_cast(rng), dtype=np.float32))


def _cast(rng: np.random.Generator) -> tuple[float, float, float]:
    kind = rng.integers(3)
    strength = rng.uniform(0.1, 0.35)
    if kind == 0:
        return 1 + strength, 1.0, 1 - strength  # tungsten
    if kind == 1:
        return 1 - strength, 1 + strength / 2, 1 - strength / 3  # fluorescent
    return 1 - strength, 1 - strength / 3, 1 + strength  # dusk


LIGHTING: dict[str, Callable[[Image.Image, Box | None, np.random.Generator], Image.Image]] = {
    "low_light": low_light, "backlight": backlight, "colour_cast": colour_cast}
LIGHTING_WEIGHTS = {"low_light": 0.6, "backlight": 0.25, "colour_cast": 0.15}


def relight(image: Image.Image, box: Box | None, rng: np.random.Generator) -> Image.Image:
    """One lighting change, chosen by LIGHTING_WEIGHTS: low light (the fault users meet most) most often."""
    return _weighted_choice(LIGHTING, LIGHTING_WEIGHTS, rng)(image, box, rng)


# drawn ordinary masks balance the drawn occluders, respirators and shields: drawn-ness alone must not mean "no mask"
RENDERINGS = {"gas": renderings.draw_respirator, "shield": renderings.draw_shield,
              "medical": renderings.draw_surgical_mask, "cloth": renderings.draw_cloth_mask,
              "kn95": renderings.draw_kn95_mask,
              # issue 28: a clear shield as real ones look, and a photo of a phone showing the row's face
              "realshield": renderings.draw_real_shield, "screen": frames.render_screen_photo}
# renderings after which the face box no longer holds (the face is now small, on a screen): nothing more is drawn
# on the face, and the lighting change takes the whole photo
MOVES_THE_FACE = {"screen"}


def parse_box(text: str) -> Box | None:
    """'x0 y0 x1 y1' -> a box; '' (no single face known) -> None."""
    return tuple(int(value) for value in text.split()) if text else None


def face_in_view(row) -> Box | None:
    """The row's face box (`face`, in pixels of its image) in pixels of what the row shows: the image, or for a
    close-up (`crop` "x0 y0 x1 y1") that part of it; None when no single face is known."""
    box = parse_box(row.get("face", ""))
    crop = row.get("crop", "")
    if box is None or not crop:
        return box
    left, top = (int(value) for value in crop.split()[:2])
    return box[0] - left, box[1] - top, box[2] - left, box[3] - top


@dataclass(frozen=True)
class Augmentation:
    """What `train` changes in training images as it reads them (validation images are read as they are)."""

    occluders: float = 0.0  # chance that a No_mask! image with one known face gets an occluder over its mouth
    lighting: float = 0.0  # chance that any training image gets a lighting change
    # chance that an image of a bare or masked face (labels within frames.KEEPS_LABELS, one known face) gets a
    # frame, window, glasses, visor or a phone beside the face drawn round it, keeping its labels (issue 28)
    frames: float = 0.0

    def __bool__(self) -> bool:
        return self.occluders > 0 or self.lighting > 0 or self.frames > 0


@dataclass(frozen=True)
class AugmentingReader(ImageReader):
    """ImageReader for training: the row's image (or face close-up), with a drawn respirator or shield where the
    row's `render` column asks for one (rows that `add_renderings` made), then by chance an occluder (bare faces)
    and a lighting change. Rows need the `face` column ("x0 y0 x1 y1" of the image's one face, or "").

    Each read draws new random choices from Python's `random`, which fastai seeds per data-loading worker.
    Training only: `train` exports the learner with a plain ImageReader, so the model file needs none of this.
    """

    augmentation: Augmentation = Augmentation()
    # labels -> ((fname, face box, crop), ...): training photos with one face, for the phone beside a face to show
    # a face of the same labels (train.py fills it when --frames is on)
    donors: dict = field(default_factory=dict, hash=False, compare=False)

    def _donor(self, labels: str, rng: np.random.Generator) -> tuple[Image.Image, Box | None] | None:
        pool = self.donors.get(labels, ())
        if not pool:
            return None
        fname, face, crop = pool[int(rng.integers(len(pool)))]
        donor_row = {"fname": fname, "face": face, "crop": crop}
        image = ImageReader.__call__(self, donor_row)
        if not isinstance(image, Image.Image):
            with Image.open(image) as opened:
                image = opened.convert("RGB")
        return image, face_in_view(donor_row)

    def _frame(self, image: Image.Image, box: Box, labels: str, rng: np.random.Generator) -> Image.Image:
        kind = frames.frame_kind(rng)
        if kind == "screen_beside":
            return frames.draw_screen_beside(image, box, rng, self._donor(labels, rng))
        return frames.FRAMES[kind](image, box, rng)

    def __call__(self, row) -> Path | Image.Image:
        if row["is_valid"]:
            return super().__call__(row)
        rng = np.random.default_rng(random.getrandbits(64))
        image = super().__call__(row)  # the photo's path, or the close-up the row's `crop` asks for
        if not isinstance(image, Image.Image):
            with Image.open(image) as opened:
                image = opened.convert("RGB")
        box = face_in_view(row)
        small = box is None or min(box[2] - box[0], box[3] - box[1]) < MIN_FACE
        render = row.get("render", "")
        kinds = render.split("+") if render else []  # e.g. "medical+realshield": a drawn mask, then a shield over it
        if kinds and not small:
            for kind in kinds:
                image = RENDERINGS[kind](image, box, rng)
        framable = (not small and not (set(kinds) - {"medical", "cloth", "kn95"})
                    and set(row["labels"].split()) <= frames.KEEPS_LABELS)
        if framable and rng.random() < self.augmentation.frames:
            image = self._frame(image, box, row["labels"], rng)
        elif not kinds and row["labels"] == "No_mask!" and not small and rng.random() < self.augmentation.occluders:
            image = occlude(image, box, rng)
        if rng.random() < self.augmentation.lighting:
            image = relight(image, None if MOVES_THE_FACE & set(kinds) else box, rng)
        return image
