"""Hard negatives for `Shield` (issue 28): edges, frames and see-through surfaces around a face that are not a face
shield, drawn on training images while KEEPING their labels; and a phone or tablet held up whose screen shows a
face.

Model 12 called a phone held up with a masked face on its screen "Face shield, Surgical mask" (Shield 0.999): the
phone's frame round the face read as a shield's edge. The only shields it had seen were drawn ones (every `Shield`
image of the dataset is drawn, `synthetic-shield`), so "a bright outline round the face with glare inside" was all
that Shield meant. These drawings put such outlines round bare and masked faces without a shield:

- `draw_picture_frame`: the photo is of a framed picture (wood, black, gold or white frame, sometimes a passe-partout
  and glass glare), or of the person behind a frame-like edge (a doorway, a mirror's rim);
- `draw_window`: the person seen through a window: a frame and glazing bars round (never over) the face, the glass's
  reflection (a bright blurred haze, the mirrored room, streaks) over the whole pane;
- `draw_glasses`: thick-rimmed glasses (black, tortoiseshell, clear plastic), with lens glare;
- `draw_visor`: a cap's visor (brim) over the forehead, or a helmet's shell round the face (bicycle, hard hat);
- `draw_screen_beside`: a phone or tablet held up beside the face (not over its mouth: that is `augment.draw_phone`)
  whose screen shows a face: another training photo's face with the same labels (see below), or a plain screen.

And one composition that gets its own rows (`--render screen`): `render_screen_photo`, a photo of a phone or tablet
held up whose screen shows a training photo's face, filling much of the photo, the room behind it blurred.

The labels. Drawn by chance on a read (like the occluders), the frame drawings keep the row's labels: a framed
picture of a person in a cloth mask still shows a cloth mask; glasses, visors, windows are not masks and not
shields. A phone beside the face shows a face of the SAME labels as the photo's own face (a donor with the same
labels, or the photo's own face, mirrored), so no label is wrong whatever one thinks a small face on a screen
counts as. In the screen photo the screen's face is the photo's only face and its main subject: what a person
would answer is that face's mask (a person in a surgical mask on a video call is "Medical"), so the row keeps the
donor photo's labels; never `Shield` from the phone's frame, and not `-` ("not a face or mask photo"), since the
face and its mask are plain to see. Rows whose labels include `Shield` or `Gas` get none of this (their drawn
overlay must stay the image's main feature).

Pillow and NumPy only; each function takes the image, the face box (x0, y0, x1, y1, MTCNN's: eyebrows to chin) and
a NumPy Generator, and returns a new RGB image of the same size.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageOps

Box = tuple[int, int, int, int]

# Frame materials: dark wood, light wood, black, gold, white, aluminium.
FRAME_COLOURS = ((92, 58, 34), (176, 132, 86), (24, 24, 26), (186, 150, 70), (236, 234, 228), (168, 170, 174))
WALL_COLOURS = ((232, 226, 214), (200, 206, 210), (150, 160, 170), (230, 214, 190), (90, 96, 104))
RIM_COLOURS = ((16, 16, 18), (60, 36, 24), (110, 70, 40), (30, 40, 80), (120, 20, 30), (200, 205, 210))
CAP_COLOURS = ((24, 28, 60), (160, 30, 36), (20, 20, 22), (230, 230, 226), (60, 90, 50), (200, 170, 120),
               (240, 200, 40), (230, 110, 30))
DEVICE_COLOURS = ((18, 18, 20), (44, 44, 48), (200, 200, 204), (232, 232, 236), (170, 150, 130))
# the labels a frame drawing keeps (and the screen photo's donors): faces with or without an ordinary mask
KEEPS_LABELS = frozenset({"No_mask!", "Medical", "Cloth", "KN95"})


def _jitter(colour, rng: np.random.Generator, amount: int = 10) -> tuple[int, int, int]:
    return tuple(int(np.clip(value + rng.integers(-amount, amount + 1), 0, 255)) for value in colour)


def _shade(colour, factor: float) -> tuple[int, int, int]:
    return tuple(int(np.clip(value * factor, 0, 255)) for value in colour)


def _pick(rng: np.random.Generator, options):
    return options[int(rng.integers(len(options)))]


def _geometry(box: Box) -> tuple[float, float, float, float]:
    """(centre x, centre y, width, height) of the face box."""
    x0, y0, x1, y1 = box
    return (x0 + x1) / 2, (y0 + y1) / 2, max(1, x1 - x0), max(1, y1 - y0)


def _soft(mask: Image.Image, radius: float) -> Image.Image:
    return mask.filter(ImageFilter.GaussianBlur(radius)) if radius > 0 else mask


def _grain(image: Image.Image, rng: np.random.Generator, sigma: float) -> Image.Image:
    pixels = np.asarray(image, dtype=np.float32)
    pixels = pixels + rng.normal(0, sigma, pixels.shape[:2])[..., None]
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def _glare(image: Image.Image, region: tuple[float, float, float, float], rng: np.random.Generator,
           strength: tuple[float, float] = (0.08, 0.3)) -> Image.Image:
    """One to three soft diagonal white streaks over `region` (x0, y0, x1, y1): glass catching a light."""
    x0, y0, x1, y1 = region
    mask = Image.new("L", image.size, 0)
    draw = ImageDraw.Draw(mask)
    width = x1 - x0
    for _ in range(int(rng.integers(1, 4))):
        start = x0 + rng.uniform(-0.3, 0.9) * width
        slant = rng.uniform(0.3, 0.9) * width * rng.choice((-1, 1))
        thick = rng.uniform(0.04, 0.18) * width
        draw.polygon([(start, y0), (start + thick, y0), (start + thick + slant, y1), (start + slant, y1)],
                     fill=int(255 * rng.uniform(*strength)))
    clip = Image.new("L", image.size, 0)
    ImageDraw.Draw(clip).rectangle(region, fill=255)
    mask = Image.fromarray(np.minimum(np.asarray(_soft(mask, width * 0.03)), np.asarray(clip)))
    return Image.composite(Image.new("RGB", image.size, (255, 255, 255)), image, mask)


def draw_picture_frame(image: Image.Image, box: Box, rng: np.random.Generator) -> Image.Image:
    """The photo as a framed picture: a rectangular frame (bevelled, FRAME_COLOURS) round the face at 0.2-1.1 face
    widths from it, sometimes a white passe-partout inside it, the wall outside it (or the photo itself, darker,
    as a doorway or a mirror's rim would leave it) and, through the glass, glare. Labels unchanged."""
    cx, cy, width, height = _geometry(box)
    w, h = image.size
    left = cx - width * rng.uniform(0.7, 1.6)
    right = cx + width * rng.uniform(0.7, 1.6)
    top = cy - height * rng.uniform(0.8, 1.7)
    bottom = cy + height * rng.uniform(0.9, 2.2)
    bar = max(2.0, width * rng.uniform(0.08, 0.3))
    colour = _jitter(_pick(rng, FRAME_COLOURS), rng)
    out = image.copy()
    outer = (left - bar, top - bar, right + bar, bottom + bar)
    if rng.random() < 0.6:  # a wall round the frame: the picture is smaller than the photo
        wall = Image.new("RGB", image.size, _jitter(_pick(rng, WALL_COLOURS), rng, 14))
        outside = Image.new("L", image.size, 255)
        ImageDraw.Draw(outside).rectangle(outer, fill=0)
        out = Image.composite(_grain(wall, rng, 2.0), out, outside)
    else:  # the scene goes on past the frame, a little darker (a doorway, a mirror's rim)
        outside = Image.new("L", image.size, 255)
        ImageDraw.Draw(outside).rectangle(outer, fill=0)
        out = Image.composite(Image.eval(out, lambda v: int(v * 0.7)), out, outside)
    layer = Image.new("RGB", image.size, colour)
    paint = ImageDraw.Draw(layer)
    # bevel: the inner lip lighter on the side facing the light, darker on the other
    paint.rectangle((left - bar, top - bar, right + bar, top - bar * 0.5), fill=_shade(colour, 1.25))
    paint.rectangle((left - bar, bottom + bar * 0.5, right + bar, bottom + bar), fill=_shade(colour, 0.7))
    paint.rectangle((left - bar, top, left - bar * 0.6, bottom), fill=_shade(colour, 1.1))
    paint.rectangle((right + bar * 0.6, top, right + bar, bottom), fill=_shade(colour, 0.8))
    ring = Image.new("L", image.size, 0)
    ImageDraw.Draw(ring).rectangle(outer, fill=255)
    ImageDraw.Draw(ring).rectangle((left, top, right, bottom), fill=0)
    out = Image.composite(_grain(layer, rng, 2.5), out, _soft(ring, 0.6))
    if rng.random() < 0.35:  # a passe-partout: a white mat inside the frame
        mat = max(2.0, width * rng.uniform(0.1, 0.3))
        inner = Image.new("L", image.size, 0)
        ImageDraw.Draw(inner).rectangle((left, top, right, bottom), fill=255)
        ImageDraw.Draw(inner).rectangle((left + mat, top + mat, right - mat, bottom - mat), fill=0)
        out = Image.composite(Image.new("RGB", image.size, _jitter((238, 236, 228), rng, 8)), out, inner)
    if rng.random() < 0.6:  # glass over the picture
        out = _glare(out, (max(0, left), max(0, top), min(w, right), min(h, bottom)), rng)
    return out


def draw_window(image: Image.Image, box: Box, rng: np.random.Generator) -> Image.Image:
    """The person behind a window: the pane's reflection over everything (a bright haze, sometimes the mirrored
    scene, faint), glare streaks, and a window frame with glazing bars round the face (never across its middle)."""
    cx, cy, width, height = _geometry(box)
    w, h = image.size
    out = image.copy()
    if rng.random() < 0.5:  # the room behind the photographer, mirrored in the glass
        ghost = ImageOps.mirror(image).filter(ImageFilter.GaussianBlur(max(1.0, width * 0.05)))
        out = Image.blend(out, ghost, float(rng.uniform(0.1, 0.25)))
    haze = _jitter((210, 220, 230), rng, 20)
    out = Image.blend(out, Image.new("RGB", image.size, haze), float(rng.uniform(0.05, 0.25)))
    out = _glare(out, (0, 0, w, h), rng, strength=(0.1, 0.35))
    colour = _jitter(_pick(rng, ((240, 240, 236), (60, 40, 30), (40, 42, 46), (150, 152, 156), (120, 80, 50))), rng)
    bar = max(2.0, width * rng.uniform(0.06, 0.18))
    mask = Image.new("L", image.size, 0)
    draw = ImageDraw.Draw(mask)
    left, right = cx - width * rng.uniform(0.8, 1.6), cx + width * rng.uniform(0.8, 1.6)
    top, bottom = cy - height * rng.uniform(0.9, 1.6), cy + height * rng.uniform(1.0, 2.0)
    for x in (left, right):
        draw.rectangle((x - bar / 2, 0, x + bar / 2, h), fill=255)
    for y in (top, bottom):
        draw.rectangle((0, y - bar / 2, w, y + bar / 2), fill=255)
    if rng.random() < 0.5:  # a sash bar at the chin's height or above the head, clear of the eyes and mouth
        y = cy + height * rng.choice((0.75, -0.8)) * rng.uniform(1.0, 1.2)
        draw.rectangle((0, y - bar / 3, w, y + bar / 3), fill=255)
    layer = Image.new("RGB", image.size, colour)
    ImageDraw.Draw(layer).rectangle((0, 0, w, h), outline=_shade(colour, 0.7))
    return Image.composite(_grain(layer, rng, 2.0), out, _soft(mask, 0.7))


def draw_glasses(image: Image.Image, box: Box, rng: np.random.Generator) -> Image.Image:
    """Thick-rimmed glasses at the eyes (MTCNN's box: eyes at about 38 % of its height, 30 % of its width from
    each side): two rounded or round lenses with thick rims, a bridge, the temples towards the ears; the lenses a
    little tinted with glare. Labels unchanged."""
    cx, cy, width, height = _geometry(box)
    x0, y0 = box[0], box[1]
    eye_y = y0 + height * rng.uniform(0.33, 0.42)
    sep = width * rng.uniform(0.2, 0.25)
    lens_w, lens_h = width * rng.uniform(0.32, 0.42), height * rng.uniform(0.18, 0.27)
    rim = max(1.5, width * rng.uniform(0.025, 0.06))
    colour = _jitter(_pick(rng, RIM_COLOURS), rng)
    round_lens = rng.random() < 0.3
    out = image.copy()
    lenses = Image.new("L", image.size, 0)
    rims = Image.new("L", image.size, 0)
    for side in (-1, 1):
        lx = cx + side * sep
        rect = (lx - lens_w / 2, eye_y - lens_h / 2, lx + lens_w / 2, eye_y + lens_h / 2)
        if round_lens:
            ImageDraw.Draw(rims).ellipse(rect, outline=255, width=int(rim))
            ImageDraw.Draw(lenses).ellipse(rect, fill=255)
        else:
            ImageDraw.Draw(rims).rounded_rectangle(rect, radius=lens_h * 0.35, outline=255, width=int(rim))
            ImageDraw.Draw(lenses).rounded_rectangle(rect, radius=lens_h * 0.35, fill=255)
        outer = lx + side * lens_w / 2
        ImageDraw.Draw(rims).line((outer, eye_y - lens_h * 0.3, x0 + (width if side > 0 else 0) + side * width * 0.08,
                                   eye_y - lens_h * 0.2), fill=255, width=int(max(1, rim * 0.7)))
    ImageDraw.Draw(rims).arc((cx - sep + lens_w / 2 - rim, eye_y - lens_h * 0.5, cx + sep - lens_w / 2 + rim,
                              eye_y + lens_h * 0.1), 200, 340, fill=255, width=int(rim))  # the bridge
    tint = _jitter(_pick(rng, ((200, 210, 220), (120, 90, 60), (60, 60, 64))), rng)
    out = Image.composite(Image.blend(out, Image.new("RGB", image.size, tint), float(rng.uniform(0.03, 0.2))), out,
                          lenses)
    glare = _glare(out, (cx - sep - lens_w / 2, eye_y - lens_h / 2, cx + sep + lens_w / 2, eye_y + lens_h / 2), rng,
                   strength=(0.15, 0.45))
    out = Image.composite(glare, out, lenses)
    if colour == (200, 205, 210) or rng.random() < 0.15:  # clear plastic: a light rim with a dark line
        layer = Image.new("RGB", image.size, _jitter((215, 220, 226), rng))
    else:
        layer = Image.new("RGB", image.size, colour)
    return Image.composite(_grain(layer, rng, 2.0), out, _soft(rims, 0.5))


def draw_visor(image: Image.Image, box: Box, rng: np.random.Generator) -> Image.Image:
    """A cap with its visor over the forehead (the brim a flattened ellipse at the brows, its shadow on the upper
    face, the crown above), or a helmet: a shell round the head with a rim over the forehead and down the cheeks,
    a chin strap sometimes. Labels unchanged."""
    cx, cy, width, height = _geometry(box)
    x0, y0, x1, y1 = box
    colour = _jitter(_pick(rng, CAP_COLOURS), rng)
    out = image.copy()
    layer = Image.new("RGB", image.size, colour)
    paint = ImageDraw.Draw(layer)
    mask = Image.new("L", image.size, 0)
    draw = ImageDraw.Draw(mask)
    brow = y0 + height * rng.uniform(0.0, 0.12)
    if rng.random() < 0.55:  # a cap
        draw.chord((cx - width * 0.62, brow - height * 0.85, cx + width * 0.62, brow + height * 0.15), 180, 360,
                   fill=255)
        draw.rectangle((cx - width * 0.62, brow - height * 0.36, cx + width * 0.62, brow + height * 0.02), fill=255)
        brim_w = width * rng.uniform(0.55, 0.8)
        brim = (cx - brim_w + rng.uniform(-0.15, 0.15) * width, brow - height * 0.08,
                cx + brim_w + rng.uniform(-0.15, 0.15) * width, brow + height * rng.uniform(0.1, 0.22))
        draw.chord(brim, 0, 180, fill=255)
        paint.chord(brim, 0, 180, fill=_shade(colour, 0.8))
        paint.line((brim[0], (brim[1] + brim[3]) / 2, brim[2], (brim[1] + brim[3]) / 2), fill=_shade(colour, 1.2),
                   width=max(1, int(width * 0.02)))
        shadow = Image.new("L", image.size, 0)  # the brim's shadow over the eyes
        ImageDraw.Draw(shadow).rectangle((x0, brim[3], x1, brim[3] + height * rng.uniform(0.1, 0.3)),
                                         fill=int(255 * rng.uniform(0.2, 0.5)))
        out = Image.composite(Image.new("RGB", image.size, (0, 0, 0)), out, _soft(shadow, height * 0.06))
    else:  # a helmet
        shell = (cx - width * rng.uniform(0.7, 0.85), brow - height * rng.uniform(0.7, 0.9),
                 cx + width * rng.uniform(0.7, 0.85), y1 + height * 0.15)
        draw.ellipse(shell, fill=255)
        face = (x0 + width * 0.02, brow, x1 - width * 0.02, y1 + height * 0.4)
        ImageDraw.Draw(mask).rounded_rectangle(face, radius=width * 0.3, fill=0)
        for k in range(3):  # vents or ridges
            vx = cx + (k - 1) * width * 0.3
            paint.line((vx, shell[1] + height * 0.1, vx, brow - height * 0.05), fill=_shade(colour, 0.55),
                       width=max(1, int(width * 0.05)))
        paint.arc((face[0], face[1] - height * 0.05, face[2], face[3]), 180, 360, fill=_shade(colour, 1.3),
                  width=max(1, int(width * 0.03)))
        if rng.random() < 0.5:  # the chin strap
            strap = ImageDraw.Draw(mask)
            strap.line((x0 + width * 0.05, brow + height * 0.5, cx, y1 + height * 0.05, x1 - width * 0.05,
                        brow + height * 0.5), fill=255, width=max(1, int(width * 0.03)))
    lit = np.asarray(layer, dtype=np.float32) * np.linspace(1.15, 0.75, image.size[0], dtype=np.float32)[None, :, None]
    layer = Image.fromarray(np.clip(lit, 0, 255).astype(np.uint8))
    return Image.composite(_grain(layer, rng, 3.0), out, _soft(mask, max(0.5, width / 150)))


def _face_view(donor: Image.Image, box: Box | None, aspect: float, rng: np.random.Generator) -> Image.Image:
    """What a screen shows of `donor`: its face with some room round it (a video call's framing) at the screen's
    `aspect` (width / height), or the middle of the photo when no face box is known."""
    if box is None:
        width, height = donor.size
        box = (width // 4, height // 4, width * 3 // 4, height * 3 // 4)
    cx, cy, width, height = _geometry(box)
    half_h = height * rng.uniform(0.9, 1.6)
    half_w = half_h * aspect
    return donor.crop((round(cx - half_w), round(cy - half_h * 0.9), round(cx + half_w), round(cy + half_h * 1.1)))


def _device(screen: Image.Image, rng: np.random.Generator, tablet: bool) -> tuple[Image.Image, Image.Image]:
    """A phone or tablet (RGB and its alpha mask) showing `screen` (already of the screen's size): a bezel in
    DEVICE_COLOURS round it, rounded corners, glare on the glass, sometimes a notch or a status bar."""
    sw, sh = screen.size
    bezel = max(2, round(min(sw, sh) * (rng.uniform(0.03, 0.07) if not tablet else rng.uniform(0.05, 0.1))))
    width, height = sw + 2 * bezel, sh + 2 * bezel
    colour = _jitter(_pick(rng, DEVICE_COLOURS), rng, 8)
    body = Image.new("RGB", (width, height), colour)
    body.paste(screen, (bezel, bezel))
    draw = ImageDraw.Draw(body)
    if not tablet and rng.random() < 0.5:  # a notch
        draw.rounded_rectangle((width * 0.38, bezel, width * 0.62, bezel + sh * 0.03), radius=sh * 0.015,
                               fill=colour)
    if rng.random() < 0.5:  # a call app's controls: a row of round buttons at the bottom
        for k in range(3):
            bx = bezel + sw * (0.25 + 0.25 * k)
            r = sw * 0.06
            draw.ellipse((bx - r, bezel + sh * 0.9 - r, bx + r, bezel + sh * 0.9 + r),
                         fill=(220, 40, 40) if k == 1 else (90, 90, 96))
    body = _glare(body, (bezel, bezel, bezel + sw, bezel + sh), rng, strength=(0.05, 0.3))
    alpha = Image.new("L", (width, height), 0)
    ImageDraw.Draw(alpha).rounded_rectangle((0, 0, width - 1, height - 1), radius=min(width, height) * 0.1, fill=255)
    return body, alpha


def _fingers(image: Image.Image, place: tuple[float, float, float, float], rng: np.random.Generator) -> Image.Image:
    """Fingertips round a held device's edge (x0, y0, x1, y1): its lower corners, in a skin tone."""
    tone = _jitter(_pick(rng, ((236, 200, 170), (200, 150, 110), (150, 100, 70), (90, 60, 45))), rng)
    x0, y0, x1, y1 = place
    finger = max(2.0, (x1 - x0) * 0.09)
    mask = Image.new("L", image.size, 0)
    draw = ImageDraw.Draw(mask)
    for side in (x0, x1):
        for k in range(int(rng.integers(1, 4))):
            y = y1 - (k + 1) * finger * 1.2
            draw.rounded_rectangle((side - finger, y, side + finger * 0.6, y + finger), radius=finger / 2, fill=255)
    draw.rounded_rectangle((x0 + (x1 - x0) * 0.2, y1 - finger * 0.4, x1 - (x1 - x0) * 0.2, y1 + finger * 1.4),
                           radius=finger / 2, fill=255)  # the thumbs or the palm under it
    return Image.composite(_grain(Image.new("RGB", image.size, tone), rng, 3.0), image, _soft(mask, 0.8))


def draw_screen_beside(image: Image.Image, box: Box, rng: np.random.Generator,
                       donor: tuple[Image.Image, Box | None] | None = None) -> Image.Image:
    """A phone or tablet held up beside the face (left or right of it, at most touching its side), its screen
    showing `donor`'s face (an image and its face box: another training photo with the same labels, so the labels
    stay right) or, without one, this photo's own face mirrored, or one time in four a plain lit screen."""
    cx, cy, width, height = _geometry(box)
    tablet = rng.random() < 0.3
    sh = height * (rng.uniform(1.0, 1.8) if tablet else rng.uniform(0.8, 1.4))
    sw = sh * (rng.uniform(0.7, 0.8) if tablet else rng.uniform(0.48, 0.58))
    sw, sh = max(8, round(sw)), max(8, round(sh))
    if rng.random() < 0.25:
        screen = Image.new("RGB", (sw, sh), _jitter(_pick(rng, ((240, 240, 244), (30, 60, 120), (20, 20, 24))), rng))
    else:
        source, source_box = donor if donor is not None else (ImageOps.mirror(image), _mirrored(box, image.size[0]))
        screen = _face_view(source, source_box, sw / sh, rng).resize((sw, sh), Image.BILINEAR)
    body, alpha = _device(screen, rng, tablet)
    angle = rng.uniform(-15, 15)
    body = body.rotate(angle, expand=True, resample=Image.BILINEAR)
    alpha = alpha.rotate(angle, expand=True, resample=Image.BILINEAR)
    side = rng.choice((-1, 1))
    px = cx + side * (width * rng.uniform(0.55, 0.8) + body.width / 2)
    py = cy + height * rng.uniform(-0.3, 0.6)
    left, top = round(px - body.width / 2), round(py - body.height / 2)
    out = image.copy()
    out.paste(body, (left, top), alpha)
    return _fingers(out, (left, top, left + body.width, top + body.height), rng)


def _mirrored(box: Box, width: int) -> Box:
    return (width - box[2], box[1], width - box[0], box[3])


def render_screen_photo(image: Image.Image, box: Box | None, rng: np.random.Generator) -> Image.Image:
    """A photo of a phone or tablet held up whose screen shows `image`'s face (its box `box`): the device fills
    45-85 % of the photo's height, a hand holds it, and the room behind it is `image` itself enlarged, blurred and
    darker (a generic indoor background). The screen's face is the photo's only face and its main subject, so the
    row keeps `image`'s labels (see the module's docstring); the device's frame is no shield."""
    w, h = image.size
    background = image.resize((w * 2, h * 2), Image.BILINEAR).crop((w // 2, h // 2, w // 2 + w, h // 2 + h))
    background = background.filter(ImageFilter.GaussianBlur(max(2.0, w / 25)))
    background = Image.blend(background, Image.new("RGB", (w, h), _jitter((110, 100, 90), rng, 40)),
                             float(rng.uniform(0.2, 0.6)))
    tablet = rng.random() < 0.35
    sh = h * rng.uniform(0.45, 0.85)
    sw = sh * (rng.uniform(0.7, 0.8) if tablet else rng.uniform(0.48, 0.58))
    if rng.random() < 0.2:  # held sideways (landscape)
        sw, sh = sh * rng.uniform(0.9, 1.1), sw
    sw, sh = max(8, min(round(sw), w - 4)), max(8, round(sh))
    screen = _face_view(image, box, sw / sh, rng).resize((sw, sh), Image.BILINEAR)
    body, alpha = _device(screen, rng, tablet)
    angle = rng.uniform(-12, 12)
    body = body.rotate(angle, expand=True, resample=Image.BILINEAR)
    alpha = alpha.rotate(angle, expand=True, resample=Image.BILINEAR)
    left = round((w - body.width) / 2 + rng.uniform(-0.15, 0.15) * w)
    top = round((h - body.height) / 2 + rng.uniform(-0.1, 0.1) * h)
    background.paste(body, (left, top), alpha)
    return _fingers(background, (left, top, left + body.width, top + body.height), rng)


FRAMES: dict[str, Callable[[Image.Image, Box, np.random.Generator], Image.Image]] = {
    "picture_frame": draw_picture_frame, "window": draw_window, "glasses": draw_glasses, "visor": draw_visor,
    "screen_beside": draw_screen_beside}
FRAME_WEIGHTS = {"picture_frame": 0.22, "window": 0.18, "glasses": 0.2, "visor": 0.2, "screen_beside": 0.2}


def frame_kind(rng: np.random.Generator) -> str:
    names = list(FRAMES)
    chances = np.array([FRAME_WEIGHTS[name] for name in names])
    return names[int(rng.choice(len(names), p=chances / chances.sum()))]
