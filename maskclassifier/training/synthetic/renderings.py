"""Synthetic `Gas` and `Shield` renderings drawn over a detected face: a training-time augmentation. Also drawn
surgical, cloth and KN95 masks (`Medical`, `Cloth`, `KN95`; see "ordinary masks" below), so that drawn-ness alone
is no cue for "not a mask".

Real photos of respirators and face shields are scarce in the sources reachable here, so these two categories are
learnt from drawings. One pasted template teaches the model that template; these functions draw, per call, one of
several kinds of respirator (half-face with one front filter, half-face with two side cartridges, full-face with a
chin filter) and face shields of varied edge, headband, reflections and tint, in colours of real products, with
soft shading and a little jitter of size, place and angle against the face box. The drawing takes the face's
brightness (a respirator in a dark photo is dark) and a little sensor grain, so it is not smoother than the photo.

Pillow and NumPy only (it runs per training item in the data loader). Each drawing is rendered in the face's own
frame at a bounded resolution (at most `MAX_UNIT_PX` pixels per face unit), then scaled to the photo and composited
with alpha, so a call costs about the same on any photo size.

Face frame: the origin is the box centre and the unit `s` is the mean of the box's width and height, so the box
spans about -0.5..0.5 both ways. MTCNN's box (maskclassifier.core.facebox.Face.box) reaches about from the eyebrows to
the chin and from ear to ear: in that frame the eyes sit near v = -0.12 (u = +-0.2), the nose tip near v = 0.12,
the mouth near v = 0.28 and the chin near v = 0.5 (read off faces of the project's dataset with their boxes).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter

MIN_FACE_PX = 24  # a box narrower or lower than this is left alone: too small to draw anything recognisable
MAX_UNIT_PX = 80.0  # render resolution cap, pixels per face unit; the overlay is then scaled up, soft anyway
# the light's direction, unit length: from the upper left and towards the viewer
LIGHT = tuple(float(x) / math.hypot(-0.45, -0.55, 0.70) for x in (-0.45, -0.55, 0.70))

RESPIRATOR_KINDS = ("half_one_filter", "half_two_cartridges", "full_face")
SHIELD_KINDS = ("straight", "curved")

# Colours of real products (RGB): rubber/silicone bodies, filter caps, headband foam, plastic tints.
BODY_COLOURS = ((28, 29, 31), (58, 60, 64), (92, 112, 132), (84, 90, 58), (120, 124, 128))
CAP_COLOURS = ((205, 62, 135), (222, 190, 48), (110, 116, 68), (36, 36, 38), (226, 224, 214))
FRONT_FILTER_COLOURS = ((40, 40, 42), (72, 80, 58), (96, 98, 104), (150, 140, 110))
HEADBAND_COLOURS = ((236, 236, 230), (58, 108, 200), (32, 32, 34))
TINTS = ((150, 190, 255), (160, 230, 190), (175, 180, 185))


@dataclass(frozen=True)
class Placement:
    """Jitter of a drawing against the face box: scale factor, shift (face units) and rotation (degrees); and
    the seed of the drawing's sensor grain."""

    scale: float
    shift: tuple[float, float]
    angle: float
    grain_seed: int = 0


@dataclass(frozen=True)
class RespiratorStyle:
    kind: str  # one of RESPIRATOR_KINDS
    body: tuple[int, int, int]
    cap: tuple[int, int, int]  # the filters' or cartridges' colour
    placement: Placement
    filter_size: float = 1.0  # the filters' size against the default (0.85-1.15): slim cartridges to big canisters
    filter_depth: float = 1.0  # how far the cylinders stand out (0.4-1.6): flat pancake filters to long cartridges
    side_filters: bool = False  # full-face only: two cartridges at the sides of the chin instead of one in front


@dataclass(frozen=True)
class ShieldStyle:
    kind: str  # one of SHIELD_KINDS: straight sides, or sides and bottom bulging
    headband: tuple[int, int, int]
    tint: tuple[int, int, int] | None
    tint_alpha: float  # 0.03-0.10 when tinted
    reflections: tuple[tuple[float, float, float, float], ...]  # (offset, slope, width, alpha) per streak
    blur: float  # Gaussian radius under the visor, in pixels per 100 px of face
    haze: float  # 0..1, how far what is under the visor moves towards flat grey (contrast loss)
    placement: Placement


def _placement(rng: np.random.Generator, scale: float = 0.08, shift: float = 0.035, angle: float = 6.0) -> Placement:
    return Placement(1.0 + rng.uniform(-scale, scale), (rng.uniform(-shift, shift), rng.uniform(-shift, shift)),
                     rng.uniform(-angle, angle), int(rng.integers(2**31)))


def _pick(rng: np.random.Generator, options):
    return options[int(rng.integers(len(options)))]


def pick_respirator(rng: np.random.Generator) -> RespiratorStyle:
    """The style `draw_respirator` draws for this state of `rng` (draws from `rng`)."""
    kind = _pick(rng, RESPIRATOR_KINDS)
    body = _pick(rng, BODY_COLOURS)
    cap = _pick(rng, CAP_COLOURS if kind == "half_two_cartridges" else FRONT_FILTER_COLOURS)
    placement = _placement(rng)
    size, depth = float(rng.uniform(0.85, 1.15)), float(rng.uniform(0.4, 1.6))
    side_filters = kind == "full_face" and bool(rng.random() < 0.4)
    if side_filters:
        cap = _pick(rng, CAP_COLOURS)
    return RespiratorStyle(kind, body, cap, placement, size, depth, side_filters)


def pick_shield(rng: np.random.Generator) -> ShieldStyle:
    """The style `draw_shield` draws for this state of `rng` (draws from `rng`)."""
    kind = _pick(rng, SHIELD_KINDS)
    headband = _pick(rng, HEADBAND_COLOURS)
    tinted = rng.random() < 0.5
    tint = _pick(rng, TINTS) if tinted else None
    tint_alpha = float(rng.uniform(0.03, 0.10)) if tinted else 0.0
    reflections = tuple((float(rng.uniform(-0.45, 0.45)), float(rng.uniform(0.6, 1.8)) * _pick(rng, (-1, 1)),
                         float(rng.uniform(0.04, 0.12)), float(rng.uniform(0.15, 0.35)))
                        for _ in range(int(rng.integers(1, 3))))
    return ShieldStyle(kind, headband, tint, tint_alpha, reflections, float(rng.uniform(0.3, 1.0)),
                       float(rng.uniform(0.04, 0.14)), _placement(rng, scale=0.06, shift=0.03, angle=4.0))


# --- the face frame and a premultiplied RGBA canvas over part of the photo ---------------------------------------

@dataclass
class _Canvas:
    """The part of the photo a drawing covers, sampled at `ratio` canvas pixels per photo pixel. U, V: each canvas
    pixel's face-frame coordinates; colour is premultiplied by alpha (so painting is one multiply-add)."""

    region: tuple[int, int, int, int]  # x0, y0, x1, y1 in photo pixels, inside the photo
    U: np.ndarray
    V: np.ndarray
    aa: float  # one canvas pixel in face units: the width of an anti-aliased edge
    colour: np.ndarray  # (H, W, 3) float32, premultiplied
    alpha: np.ndarray  # (H, W) float32
    slices: tuple[slice, slice] = (slice(None), slice(None))  # where a part lies in the canvas it was cut from

    def paint(self, coverage: np.ndarray, rgb) -> None:
        """Paint `rgb` ((3,) or (H, W, 3), 0..255) over the canvas where `coverage` (0..1) says."""
        coverage = coverage.astype(np.float32, copy=False)
        self.colour *= (1.0 - coverage)[..., None]
        self.colour += coverage[..., None] * np.asarray(rgb, dtype=np.float32)
        self.alpha *= 1.0 - coverage
        self.alpha += coverage

    def cover(self, signed_distance: np.ndarray) -> np.ndarray:
        """Anti-aliased coverage of a shape from its signed distance (positive inside, face units): a ramp one
        canvas pixel wide across the edge. The distances here are approximate (an ellipse's, a half-width's), so
        the ramp is measured on the distance's own gradient; else flat edges of steep shapes come out jagged."""
        if min(signed_distance.shape) < 2:
            return np.clip(signed_distance / self.aa + 0.5, 0.0, 1.0)
        dy, dx = np.gradient(signed_distance)
        per_pixel = np.maximum(np.sqrt(dx * dx + dy * dy), self.aa * 0.25)
        return np.clip(signed_distance / per_pixel + 0.5, 0.0, 1.0)

    def part(self, umin: float, umax: float, vmin: float, vmax: float) -> _Canvas:
        """The canvas's pixels that the face-frame rectangle touches (plus a pixel), as views: painting on the
        part paints on the canvas, and a shape drawn on the part costs what its own size costs."""
        height, width = self.alpha.shape
        if height < 2 or width < 2:
            return self
        # U and V are affine in the pixel's column j and row i: invert that map at the rectangle's corners
        du_dj, du_di = float(self.U[0, 1] - self.U[0, 0]), float(self.U[1, 0] - self.U[0, 0])
        dv_dj, dv_di = float(self.V[0, 1] - self.V[0, 0]), float(self.V[1, 0] - self.V[0, 0])
        det = du_dj * dv_di - du_di * dv_dj
        u0, v0 = float(self.U[0, 0]), float(self.V[0, 0])
        js, is_ = [], []
        for u in (umin, umax):
            for v in (vmin, vmax):
                js.append(((u - u0) * dv_di - (v - v0) * du_di) / det)
                is_.append(((v - v0) * du_dj - (u - u0) * dv_dj) / det)
        j0, j1 = max(0, math.floor(min(js)) - 1), min(width, math.ceil(max(js)) + 2)
        i0, i1 = max(0, math.floor(min(is_)) - 1), min(height, math.ceil(max(is_)) + 2)
        j1, i1 = max(j1, j0), max(i1, i0)
        part = _Canvas(self.region, self.U[i0:i1, j0:j1], self.V[i0:i1, j0:j1], self.aa,
                       self.colour[i0:i1, j0:j1], self.alpha[i0:i1, j0:j1])
        part.slices = (slice(i0, i1), slice(j0, j1))
        return part


def _canvas(size: tuple[int, int], box: tuple[int, int, int, int], placement: Placement,
            extent: tuple[float, float, float, float]) -> tuple[_Canvas, float] | None:
    """A canvas over the photo region that `extent` (umin, umax, vmin, vmax in the face frame) covers once placed;
    None when that region is outside the photo. Also returns the unit `s` in photo pixels."""
    x0, y0, x1, y1 = box
    unit = (x1 - x0 + y1 - y0) / 2.0 * placement.scale
    cx = (x0 + x1) / 2.0 + placement.shift[0] * unit
    cy = (y0 + y1) / 2.0 + placement.shift[1] * unit
    cos, sin = math.cos(math.radians(placement.angle)), math.sin(math.radians(placement.angle))
    umin, umax, vmin, vmax = extent
    corners = [(u * unit, v * unit) for u in (umin, umax) for v in (vmin, vmax)]
    xs = [cx + cos * a - sin * b for a, b in corners]
    ys = [cy + sin * a + cos * b for a, b in corners]
    width, height = size
    rx0, ry0 = max(0, math.floor(min(xs))), max(0, math.floor(min(ys)))
    rx1, ry1 = min(width, math.ceil(max(xs))), min(height, math.ceil(max(ys)))
    if rx1 - rx0 < 2 or ry1 - ry0 < 2:
        return None
    ratio = min(1.0, MAX_UNIT_PX / unit)
    cw, ch = max(2, round((rx1 - rx0) * ratio)), max(2, round((ry1 - ry0) * ratio))
    xs_px = rx0 + (np.arange(cw, dtype=np.float32) + 0.5) * ((rx1 - rx0) / cw) - cx
    ys_px = ry0 + (np.arange(ch, dtype=np.float32) + 0.5) * ((ry1 - ry0) / ch) - cy
    dx, dy = xs_px[None, :], ys_px[:, None]
    U = ((cos * dx + sin * dy) / unit).astype(np.float32)  # the inverse rotation: photo -> face frame
    V = ((-sin * dx + cos * dy) / unit).astype(np.float32)
    aa = ((rx1 - rx0) / cw) / unit
    canvas = _Canvas((rx0, ry0, rx1, ry1), U, V, aa, np.zeros((ch, cw, 3), np.float32), np.zeros((ch, cw), np.float32))
    return canvas, unit


GRAIN = 2.5  # sensor-like noise on the drawing, in 8-bit levels (sd): a drawing smoother than the photo is a tell
LIGHT_RANGE = (0.6, 1.15)  # the drawing's brightness follows the face's: mean luminance / 140, within these


def _composite(photo: Image.Image, canvas: _Canvas, face_box: tuple[int, int, int, int],
               placement: Placement) -> Image.Image:
    """`photo` (RGB, changed in place and returned) with the canvas scaled to its region and laid over it, lit
    like the face in `face_box` and with a little grain."""
    x0, y0, x1, y1 = canvas.region
    width, height = photo.size
    face = (max(0, face_box[0]), max(0, face_box[1]), min(width, face_box[2]), min(height, face_box[3]))
    light = 1.0
    if face[2] > face[0] and face[3] > face[1]:
        luma = float(np.asarray(photo.crop(face).convert("L").resize((8, 8), Image.BOX), dtype=np.float32).mean())
        light = float(np.clip(luma / 140.0, *LIGHT_RANGE))
    alpha = np.clip(canvas.alpha, 0.0, 1.0)
    rgb = canvas.colour / np.maximum(alpha, 1e-4)[..., None] * light  # straight colour, not premultiplied
    rgb += np.random.default_rng(placement.grain_seed).normal(0.0, GRAIN, rgb.shape).astype(np.float32)
    rgb = np.clip(rgb, 0.0, 255.0)
    layer = np.dstack([rgb, alpha * 255.0]) + 0.5
    overlay = Image.fromarray(layer.astype(np.uint8), "RGBA")
    if overlay.size != (x1 - x0, y1 - y0):  # Pillow scales RGBA premultiplied, so edges do not fringe
        overlay = overlay.resize((x1 - x0, y1 - y0), Image.BILINEAR)
    photo.paste(Image.alpha_composite(photo.crop(canvas.region).convert("RGBA"), overlay).convert("RGB"),
                canvas.region[:2])
    return photo


# --- shapes and shading -------------------------------------------------------------------------------------------

def _ellipse(c: _Canvas, cx: float, cy: float, rx: float, ry: float):
    """Signed distance (approximate, face units) and the normalised offsets nx, ny of an ellipse."""
    nx, ny = (c.U - cx) / rx, (c.V - cy) / ry
    radius = np.sqrt(nx * nx + ny * ny)
    return (1.0 - radius) * min(rx, ry), nx, ny


def _segment(c: _Canvas, p: tuple[float, float], q: tuple[float, float], half_width: float) -> np.ndarray:
    """Signed distance of a band of `half_width` around the segment p-q."""
    px, py = c.U - p[0], c.V - p[1]
    dx, dy = q[0] - p[0], q[1] - p[1]
    t = np.clip((px * dx + py * dy) / (dx * dx + dy * dy), 0.0, 1.0)
    return half_width - np.hypot(px - t * dx, py - t * dy)


def _shade(rgb, nx: np.ndarray, ny: np.ndarray, ambient: float = 0.45, diffuse: float = 0.65,
           specular: float = 0.35, shininess: float = 14.0) -> np.ndarray:
    """Lambert plus a highlight on a dome whose normal's x, y are (nx, ny) (clipped to the unit disc)."""
    nx, ny = np.clip(nx, -1.0, 1.0), np.clip(ny, -1.0, 1.0)
    nz = np.sqrt(np.clip(1.0 - nx * nx - ny * ny, 0.0, 1.0))
    lambert = np.clip(nx * LIGHT[0] + ny * LIGHT[1] + nz * LIGHT[2], 0.0, 1.0)
    shaded = np.asarray(rgb, np.float32) * (ambient + diffuse * lambert)[..., None]
    return shaded + (specular * 255.0 * lambert ** shininess)[..., None]


def _darker(rgb, factor: float) -> tuple[float, float, float]:
    return tuple(channel * factor for channel in rgb)


def _straps(c: _Canvas, colour, pairs) -> None:
    """Straps from the mask towards the ears, shaded across their width."""
    for p, q in pairs:
        part = c.part(min(p[0], q[0]) - 0.03, max(p[0], q[0]) + 0.03, min(p[1], q[1]) - 0.03, max(p[1], q[1]) + 0.03)
        sd = _segment(part, p, q, 0.024)
        part.paint(part.cover(sd), _shade(colour, np.zeros_like(sd), 1.0 - sd / 0.024, ambient=0.6, specular=0.1))


def _filter(c: _Canvas, cx: float, cy: float, rx: float, ry: float, colour, depth: tuple[float, float]) -> None:
    """A round filter or cartridge seen from the front: its side (a darker offset disc), a darker rim and a
    shaded cap with faint concentric grooves."""
    c = c.part(cx - rx - abs(depth[0]), cx + rx + abs(depth[0]), cy - ry - abs(depth[1]), cy + ry + abs(depth[1]))
    side_sd, nx, ny = _ellipse(c, cx + depth[0], cy + depth[1], rx, ry)
    c.paint(c.cover(side_sd), _shade(_darker(colour, 0.55), nx * 0.9, ny * 0.9, ambient=0.5))
    sd, nx, ny = _ellipse(c, cx, cy, rx, ry)
    rim = _shade(_darker(colour, 0.7), nx, ny, ambient=0.55, specular=0.25)
    c.paint(c.cover(sd), rim)
    inner = 0.8
    isd, inx, iny = _ellipse(c, cx, cy, rx * inner, ry * inner)
    radius = np.sqrt(inx * inx + iny * iny)
    grooves = 1.0 - 0.08 * (np.cos(radius * 22.0) > 0.6)
    cap = _shade(colour, inx * 0.35, iny * 0.35, ambient=0.55, diffuse=0.5, specular=0.3) * grooves[..., None]
    c.paint(c.cover(isd), cap)


def _half_mask(c: _Canvas, body, top: float, bottom: float, half_width: float) -> None:
    """The rubber half-face body from the nose bridge to under the chin: narrow at the top, widest below the
    middle, rounded at the chin; a lighter face seal along its edge."""
    c = c.part(-half_width, half_width, top, bottom)
    height = bottom - top
    t = (c.V - top) / height
    tc = np.clip(t, 0.0, 1.0)
    hw = half_width * np.clip(np.sin(np.pi * tc ** 1.15), 0.0, 1.0) ** 0.55
    sd = np.minimum(np.minimum(hw - np.abs(c.U), t * height * 0.5), (1.0 - t) * height * 0.5)
    nx = c.U / np.maximum(hw, 1e-3) * 0.92
    ny = (tc - 0.55) * 1.1
    c.paint(c.cover(sd), _shade(_darker(body, 1.1), nx * 1.05, ny, ambient=0.5))  # the seal, seen at the edge
    c.paint(c.cover(sd - 0.025), _shade(body, nx, ny))


def _valve(c: _Canvas, cx: float, cy: float, width: float, height: float, colour) -> None:
    """An exhalation valve cover: a small rounded block with horizontal slits."""
    c = c.part(cx - width, cx + width, cy - height, cy + height)
    sd, nx, ny = _ellipse(c, cx, cy, width, height)
    block = _shade(colour, nx * 0.8, ny * 0.8, ambient=0.5)
    slits = 1.0 - 0.35 * ((np.sin((c.V - cy) / height * 9.0) > 0.7) & (np.abs(nx) < 0.7))
    c.paint(c.cover(sd), block * slits[..., None])


def _reflection(c: _Canvas, offset: float, slope: float, width: float, alpha: float, inside: np.ndarray) -> None:
    """A soft diagonal white streak: a band across the visor, brightest at its middle."""
    distance = (c.U - offset - (c.V - 0.1) / slope) / math.hypot(1.0, 1.0 / slope)
    profile = np.clip(1.0 - np.abs(distance) / width, 0.0, 1.0) ** 1.5
    c.paint(profile * alpha * inside, (255.0, 255.0, 255.0))


# --- respirators --------------------------------------------------------------------------------------------------

def render_respirator(image: Image.Image, face_box: tuple[int, int, int, int], style: RespiratorStyle) -> Image.Image:
    """`draw_respirator` with the style chosen: a new RGB image with that respirator over the face in `face_box`."""
    photo = image.convert("RGB")  # always a new image (even from RGB), drawn on in place: the input is untouched
    if min(face_box[2] - face_box[0], face_box[3] - face_box[1]) < MIN_FACE_PX:
        return photo
    # what the drawing reaches in the face frame (straps, filters), so the canvas is no larger than it
    extent = (-0.7, 0.7, -0.58, 0.78) if style.kind == "full_face" else (-0.6, 0.6, -0.12, 0.7)
    made = _canvas(photo.size, face_box, style.placement, extent)
    if made is None:
        return photo
    c, _ = made
    body, cap, size, depth = style.body, style.cap, style.filter_size, style.filter_depth
    strap = _darker(body, 0.85) if body[0] > 60 else (30, 30, 32)
    if style.kind == "full_face":
        _straps(c, strap, [((-0.46, -0.32), (-0.62, -0.5)), ((0.46, -0.32), (0.62, -0.5)),
                           ((-0.5, 0.2), (-0.66, 0.28)), ((0.5, 0.2), (0.66, 0.28))])
        # An egg-shaped rubber body, wider at the jaw than at the forehead. A clear visor over the eyes and nose
        # ends at the upper lip; below it the rubber covers mouth and chin and carries a speech valve and a filter.
        widen = 1.0 + 0.12 * np.clip(c.V / 0.5, -1.0, 1.0)
        _, nx, ny = _ellipse(c, 0.0, 0.04, 0.5, 0.6)
        rim_sd = (1.0 - np.hypot(c.U / (0.5 * widen), (c.V - 0.04) / 0.6)) * 0.5
        lip = 0.17 + 0.06 * (1.0 - np.clip(c.U / 0.4, -1.0, 1.0) ** 2)  # the visor's lower edge, curving down
        visor_sd = np.minimum((1.0 - np.hypot(c.U / (0.41 * widen), c.V / 0.49)) * 0.41, lip - c.V)
        c.paint(c.cover(rim_sd) * (1.0 - c.cover(visor_sd + 0.01)), _shade(body, nx * 0.85, ny * 0.85, ambient=0.5))
        inside = c.cover(visor_sd)
        c.paint(inside * 0.08, (190.0, 205.0, 215.0))  # the visor's faint grey-blue
        # the inner nose cup seen through the visor's lower part
        cup = c.part(-0.2, 0.2, 0.0, 0.3)
        cup_sd, cnx, cny = _ellipse(cup, 0.0, 0.2, 0.19, 0.18)
        cup.paint(cup.cover(cup_sd) * cup.cover(visor_sd[cup.slices]) * 0.55,
                  _shade(_darker(body, 0.9) if body[0] > 50 else (70, 72, 76), cnx, cny))
        c.paint(c.cover(visor_sd) * (1.0 - c.cover(visor_sd - 0.018)) * 0.7, (235.0, 240.0, 245.0))  # visor edge
        c.paint(c.cover(visor_sd + 0.03) * (1.0 - c.cover(visor_sd)), _shade(_darker(body, 0.6), nx, ny))  # its frame
        _reflection(c, -0.15, 1.3, 0.06, 0.3, inside)
        _valve(c, 0.0, 0.36, 0.1, 0.065, _darker(body, 0.75))
        if style.side_filters:  # e.g. 3M's 6000 series full-face masks: a cartridge each side of the chin
            for side in (-1, 1):
                _filter(c, side * 0.32, 0.44, 0.1 * size, 0.15 * size, cap, (side * 0.05 * depth, 0.01))
        else:
            _filter(c, 0.0, 0.54, 0.19 * size, 0.16 * size, cap, (0.0, 0.035 * depth))
    else:
        two = style.kind == "half_two_cartridges"
        _straps(c, strap, [((-0.3, 0.14), (-0.56, 0.03)), ((0.3, 0.14), (0.56, 0.03)),
                           ((-0.28, 0.5), (-0.53, 0.57)), ((0.28, 0.5), (0.53, 0.57))])
        _half_mask(c, body, top=-0.04, bottom=0.6, half_width=0.33 if two else 0.36)
        if two:
            _valve(c, 0.0, 0.36, 0.075, 0.09, _darker(body, 0.8))
            for side in (-1, 1):
                _filter(c, side * 0.33, 0.33, 0.12 * size, 0.17 * size, cap, (side * 0.05 * depth, 0.01))
        else:
            _filter(c, 0.0, 0.3, 0.2 * size, 0.2 * size, cap, (0.015 * depth, 0.03 * depth))
            _valve(c, 0.0, 0.54, 0.07, 0.045, _darker(body, 0.8))
    return _composite(photo, c, face_box, style.placement)


def draw_respirator(image: Image.Image, face_box: tuple[int, int, int, int], rng: np.random.Generator) -> Image.Image:
    """A new RGB image: `image` with a gas mask / respirator drawn over the face in `face_box` (x0, y0, x1, y1 in
    pixels, as the project's MTCNN detector returns it: roughly eyebrows to chin, ear to ear). Label of the
    result: Gas.

    The kind (RESPIRATOR_KINDS: half-face with one front filter, half-face with two side cartridges, full-face with
    a visor and a chin filter or two side cartridges), its colours, its filters' size and depth and a jitter of
    size (+-8 %), place (+-3.5 % of the face) and angle (+-6 degrees) are drawn from `rng` only
    (`pick_respirator`), so a seed gives the same drawing; it is lit like the face and has a little grain. Every kind
    covers nose and mouth; the half-face kinds leave the eyes visible. Any image mode is read as RGB; the box may reach
    outside the image (the drawing is clipped). A box under MIN_FACE_PX (24 px) wide or high gets no drawing:
    the result is an unchanged RGB copy, as it is when the drawing falls wholly outside the image. Modes that
    Pillow cannot convert to RGB (its internal "La", "RGBa") raise Pillow's ValueError.
    """
    return render_respirator(image, face_box, pick_respirator(rng))


# --- face shields -------------------------------------------------------------------------------------------------

SHIELD_EXTENT = (-0.72, 0.72, -0.72, 0.95)  # the visor (sides bulging to 0.69), the headband


def _visor_distance(c: _Canvas, style: ShieldStyle) -> np.ndarray:
    """Signed distance of the visor: from the headband (v = -0.6) to below the chin, wider than the face."""
    top, bottom, half = -0.6, 0.88, 0.64
    if style.kind == "curved":  # sides bulging a little, the bottom an arc
        across = np.clip((c.V - top) / (bottom - top), 0.0, 1.0)
        half = half + 0.05 * np.sin(np.pi * across)
        lower = bottom + 0.04 - 0.16 * (c.U / 0.7) ** 2
    else:  # straight sides, rounded lower corners
        lower = bottom - 0.1 * np.clip((np.abs(c.U) - 0.45) / 0.2, 0.0, 1.0) ** 2
    return np.minimum(np.minimum(half - np.abs(c.U), c.V - top), lower - c.V)


def render_shield(image: Image.Image, face_box: tuple[int, int, int, int], style: ShieldStyle) -> Image.Image:
    """`draw_shield` with the style chosen: a new RGB image with that face shield over the face in `face_box`."""
    photo = image.convert("RGB")
    if min(face_box[2] - face_box[0], face_box[3] - face_box[1]) < MIN_FACE_PX:
        return photo
    made = _canvas(photo.size, face_box, style.placement, SHIELD_EXTENT)
    if made is None:
        return photo
    c, unit = made
    visor_sd = _visor_distance(c, style)
    inside = c.cover(visor_sd)

    # What is under the visor: a little blurred and flatter, laid in through the visor's coverage.
    x0, y0, x1, y1 = c.region
    crop = photo.crop(c.region)
    blurred = crop.filter(ImageFilter.BoxBlur(max(0.4, style.blur * unit / 100.0)))  # one pass: cheap, soft enough
    grey = tuple(int(v) for v in np.asarray(blurred.reduce(8) if min(blurred.size) >= 16 else blurred)
                 .reshape(-1, 3).mean(axis=0))
    under = Image.blend(blurred, Image.new("RGB", blurred.size, grey), style.haze)
    weight = Image.fromarray((inside * 255.0 + 0.5).astype(np.uint8), "L").resize(crop.size, Image.BILINEAR)
    photo.paste(Image.composite(under, crop, weight), (x0, y0))

    if style.tint is not None:
        c.paint(inside * style.tint_alpha, style.tint)
    for offset, slope, width, alpha in style.reflections:
        _reflection(c, offset, slope, width, alpha, inside)
    edge = c.cover(visor_sd) * (1.0 - c.cover(visor_sd - 0.014))  # the cut edge of the plastic catches the light
    c.paint(edge * 0.75, (245.0, 248.0, 250.0))
    c.paint(c.cover(visor_sd - 0.014) * (1.0 - c.cover(visor_sd - 0.024)) * 0.18, (60.0, 64.0, 70.0))
    band = c.part(-0.62, 0.62, -0.7, -0.58)
    band_sd = np.minimum(0.62 - np.abs(band.U), 0.06 - np.abs(band.V + 0.64))
    band.paint(band.cover(band_sd), _shade(style.headband, np.zeros_like(band_sd), (band.V + 0.64) / 0.07 * 0.8,
                                           ambient=0.55, specular=0.15))
    return _composite(photo, c, face_box, style.placement)


def shield_edge_in_photo(size: tuple[int, int], face_box: tuple[int, int, int, int]) -> bool:
    """Whether a shield drawn for `face_box` on a photo of `size` (width, height) shows at least one of its
    edges or the headband (before jitter). On a tight crop whose face fills the photo it shows none: only a haze
    and reflections are left, which a bare face in bright light also has, so a training pipeline may prefer to
    draw shields only where this is true (bare faces called Shield were a reported fault, issue 17)."""
    width, height = size
    x0, y0, x1, y1 = face_box
    unit = (x1 - x0 + y1 - y0) / 2.0
    cx, cy = (x0 + x1) / 2.0, (y0 + y1) / 2.0
    return (cy - 0.64 * unit >= 0 or cx - 0.64 * unit >= 0 or cx + 0.64 * unit <= width
            or cy + 0.85 * unit <= height)


def draw_shield(image: Image.Image, face_box: tuple[int, int, int, int], rng: np.random.Generator) -> Image.Image:
    """A new RGB image: a clear face shield drawn over the face in `face_box` (whatever is on the face stays
    visible under it). Label: the image's labels plus Shield.

    The shield reaches from a headband over the forehead to below the chin and is wider than the face. Drawn from
    `rng` only (`pick_shield`): the edge (straight or bulging, SHIELD_KINDS), the headband's colour (white, blue,
    black foam), one or two diagonal reflections, an optional faint tint (blue, green or grey at 3-10 % alpha),
    how much blur and contrast loss the plastic gives, and a small jitter of size, place and angle. Box handling
    as in `draw_respirator` (clipped at the image's edges; unchanged copy under MIN_FACE_PX). On a face that
    fills the photo no edge of the shield is in it (see `shield_edge_in_photo`).
    """
    return render_shield(image, face_box, pick_shield(rng))


# --- ordinary masks: surgical, cloth, KN95 ------------------------------------------------------------------------
# The model also learns from drawn hands, phones, respirators and shields; were ordinary masks never drawn, "a drawn
# flat object over the mouth" would mean "not a mask". So the ordinary kinds are drawn too, with their labels, and
# told apart by shape: nose to under the chin, pleats, seams, folds, ear loops, a nose wire.

SURGICAL_KINDS = ("over_nose", "low")
SURGICAL_COLOURS = ((150, 196, 228), (128, 180, 218), (238, 240, 242), (176, 216, 194), (240, 184, 198), (40, 40, 44))
SURGICAL_WEIGHTS = (0.35, 0.25, 0.17, 0.08, 0.08, 0.07)  # light blue most, as in the shops
LOOP_COLOURS = ((244, 244, 242), (128, 176, 220))
CLOTH_KINDS = ("contoured", "flat")
CLOTH_PATTERNS = ("solid", "stripes", "checks", "dots", "floral", "camouflage", "logo")
CLOTH_COLOURS = ((30, 32, 38), (32, 52, 96), (150, 30, 40), (84, 90, 96), (200, 200, 196), (60, 110, 70),
                 (210, 150, 170), (90, 60, 110), (220, 190, 120), (70, 140, 180), (180, 90, 50))
CAMOUFLAGE = ((86, 94, 60), (122, 112, 78), (56, 58, 40), (150, 142, 110))
CLOTH_STRAPS = ("fabric", "elastic", "ties")
KN95_KINDS = ("fold_flat", "duckbill", "cup")
KN95_COLOURS = ((238, 238, 234), (236, 236, 232), (168, 170, 174), (42, 42, 46), (236, 176, 196), (128, 170, 214))
VALVE_KINDS = ("", "round", "square")
VALVE_COLOURS = ((236, 236, 232), (120, 122, 128), (40, 40, 44), (230, 140, 50), (70, 110, 190))
HEAD_STRAP_COLOURS = ((236, 236, 230), (230, 200, 70), (70, 110, 190))


@dataclass(frozen=True)
class SurgicalStyle:
    kind: str  # one of SURGICAL_KINDS: over the nose, or worn a little low with the nose tip showing
    colour: tuple[int, int, int]
    loops: tuple[int, int, int]
    pleat_depth: float  # 0.6-1.3: how strongly the pleats shade
    half_width: float  # 0.39-0.44 face units
    placement: Placement


@dataclass(frozen=True)
class ClothStyle:
    kind: str  # one of CLOTH_KINDS: contoured (a centre seam) or flat (horizontal folds)
    pattern: str  # one of CLOTH_PATTERNS
    colours: tuple[tuple[int, int, int], ...]  # ground, print, accent
    straps: str  # one of CLOTH_STRAPS
    pattern_seed: int  # the pattern's own parameters (period, angle, where the blobs are)
    placement: Placement


@dataclass(frozen=True)
class Kn95Style:
    kind: str  # one of KN95_KINDS
    colour: tuple[int, int, int]
    valve: str  # one of VALVE_KINDS ("" = none)
    valve_colour: tuple[int, int, int]
    head_straps: bool  # head straps instead of ear loops
    strap_colour: tuple[int, int, int]
    printed: bool  # the printed marking on one panel
    placement: Placement


def pick_surgical(rng: np.random.Generator) -> SurgicalStyle:
    """The style `draw_surgical_mask` draws for this state of `rng` (draws from `rng`)."""
    colour = SURGICAL_COLOURS[int(rng.choice(len(SURGICAL_COLOURS), p=SURGICAL_WEIGHTS))]
    loops = _pick(rng, LOOP_COLOURS)
    kind = SURGICAL_KINDS[int(rng.random() < 0.2)]
    return SurgicalStyle(kind, colour, loops, float(rng.uniform(0.6, 1.3)),
                         float(rng.uniform(0.39, 0.44)), _placement(rng))


def pick_cloth(rng: np.random.Generator) -> ClothStyle:
    """The style `draw_cloth_mask` draws for this state of `rng` (draws from `rng`)."""
    kind = _pick(rng, CLOTH_KINDS)
    pattern = _pick(rng, CLOTH_PATTERNS)
    order = rng.permutation(len(CLOTH_COLOURS))[:3]
    colours = CAMOUFLAGE if pattern == "camouflage" else tuple(CLOTH_COLOURS[int(i)] for i in order)
    straps = CLOTH_STRAPS[int(rng.choice(3, p=(0.45, 0.4, 0.15)))]
    return ClothStyle(kind, pattern, colours, straps, int(rng.integers(2**31)), _placement(rng))


def pick_kn95(rng: np.random.Generator) -> Kn95Style:
    """The style `draw_kn95_mask` draws for this state of `rng` (draws from `rng`)."""
    kind = KN95_KINDS[int(rng.choice(3, p=(0.5, 0.2, 0.3)))]
    colour = _pick(rng, KN95_COLOURS)
    valve = VALVE_KINDS[int(rng.choice(3, p=(0.6, 0.25, 0.15)))]
    head = bool(rng.random() < (0.8 if kind == "cup" else 0.25))
    return Kn95Style(kind, colour, valve, _pick(rng, VALVE_COLOURS), head, _pick(rng, HEAD_STRAP_COLOURS),
                     bool(rng.random() < 0.5), _placement(rng))


def _band(distance: np.ndarray, width: float) -> np.ndarray:
    """1 on a line where `distance` is 0, falling to 0 at `width` (a soft line of that half-width)."""
    return np.clip(1.0 - np.abs(distance) / width, 0.0, 1.0)


def _texture(shape: tuple[int, ...], seed: int, amount: float) -> np.ndarray:
    """Fine multiplicative noise around 1 (sd `amount`): the fibres of a nonwoven or woven fabric."""
    return 1.0 + np.random.default_rng(seed).normal(0.0, amount, shape).astype(np.float32)


def _loops(c: _Canvas, colour, pairs, half_width: float = 0.012) -> None:
    """Ear loops or ties: thin shaded bands from the mask's sides towards the ears."""
    for p, q in pairs:
        part = c.part(min(p[0], q[0]) - 0.03, max(p[0], q[0]) + 0.03, min(p[1], q[1]) - 0.03, max(p[1], q[1]) + 0.03)
        sd = _segment(part, p, q, half_width)
        part.paint(part.cover(sd), _shade(colour, np.zeros_like(sd), 1.0 - sd / half_width, ambient=0.6,
                                          specular=0.05))


def _begin(image: Image.Image, face_box, placement: Placement, extent) -> tuple[Image.Image, _Canvas | None]:
    """A new RGB copy of `image` and the canvas over `extent` (face frame); no canvas for a box under MIN_FACE_PX
    or a drawing wholly outside the photo (the copy is then the answer)."""
    photo = image.convert("RGB")  # always a new image, drawn on in place: the input is untouched
    if min(face_box[2] - face_box[0], face_box[3] - face_box[1]) < MIN_FACE_PX:
        return photo, None
    made = _canvas(photo.size, face_box, placement, extent)
    return photo, (None if made is None else made[0])


MASK_EXTENT = (-0.6, 0.6, -0.1, 0.68)  # the mask body (about +-0.46) and its loops or ties towards the ears


def render_surgical_mask(image: Image.Image, face_box: tuple[int, int, int, int], style: SurgicalStyle) -> Image.Image:
    """`draw_surgical_mask` with the style chosen."""
    photo, full = _begin(image, face_box, style.placement, MASK_EXTENT)
    if full is None:
        return photo
    hw0, top_c, bottom_c = style.half_width, (0.08 if style.kind == "low" else -0.03), 0.6
    ear_top = 0.06 if style.kind == "low" else 0.0
    _loops(full, style.loops, [((-hw0 + 0.01, top_c + 0.06), (-0.55, ear_top)),
                               ((hw0 - 0.01, top_c + 0.06), (0.55, ear_top)),
                               ((-hw0 + 0.01, bottom_c - 0.08), (-0.54, 0.24)),
                               ((hw0 - 0.01, bottom_c - 0.08), (0.54, 0.24))])
    c = full.part(-hw0 - 0.02, hw0 + 0.02, top_c - 0.02, bottom_c + 0.02)
    across = np.clip(c.U / hw0, -1.0, 1.0)
    top = top_c + 0.07 * across ** 2  # the nose wire bent over the nose bridge, lower over the cheeks
    bottom = bottom_c - 0.06 * across ** 2  # under the chin
    mid, half = (top_c + bottom_c) / 2, (bottom_c - top_c) / 2
    hw = hw0 * (1.0 - 0.05 * ((c.V - mid) / half) ** 2)  # the sides curve a little round the cheeks
    side_sd, tb_sd = hw - np.abs(c.U), np.minimum(c.V - top, bottom - c.V)
    sd = np.minimum(side_sd, tb_sd)
    y = np.clip((c.V - top) / (bottom - top), 0.0, 1.0)
    nx, ny = c.U / hw * 0.75, (y - 0.45) * 0.9
    shadow = np.ones_like(y)
    for centre in (0.3, 0.5, 0.7):  # each pleat: the fabric tilts up towards the fold, a shadow line under it
        d = (y - centre) / 0.12
        ramp = np.where((d > -1.0) & (d < 0.0), d + 1.0, 0.0)
        ny = ny - 0.55 * style.pleat_depth * ramp
        shadow -= 0.3 * style.pleat_depth * _band(d - 0.08, 0.12)
    binding = np.maximum(side_sd < 0.035, tb_sd < 0.02).astype(np.float32)
    shadow *= 1.0 - 0.06 * binding - 0.12 * _band(side_sd - 0.035, 0.006) - 0.1 * _band(tb_sd - 0.02, 0.005)
    wire = np.clip(1.0 - np.abs(c.U) / 0.15, 0.0, 1.0) ** 0.3  # the nose wire's ridge: light above, dark below
    shadow += wire * (0.12 * _band(c.V - top - 0.012, 0.006) - 0.14 * _band(c.V - top - 0.026, 0.006))
    shade = _shade(style.colour, nx, ny, ambient=0.5, diffuse=0.55, specular=0.04)
    shade *= (shadow * _texture(shadow.shape, style.placement.grain_seed + 1, 0.025))[..., None]
    c.paint(c.cover(sd), shade)
    return _composite(photo, full, face_box, style.placement)


def _cloth_pattern(c: _Canvas, style: ClothStyle) -> np.ndarray:
    """The fabric's print, (H, W, 3) 0..255, in face-frame coordinates (the print moves with the mask)."""
    rng = np.random.default_rng(style.pattern_seed)
    ground, second, accent = (np.asarray(colour, np.float32) for colour in style.colours[:3])
    U, V = c.U, c.V
    weight = np.zeros_like(U)  # how much of `second` shows
    if style.pattern == "stripes":
        angle, period = rng.uniform(-0.6, 0.6) + _pick(rng, (0.0, math.pi / 2)), rng.uniform(0.05, 0.13)
        t = (U * math.cos(angle) + V * math.sin(angle)) / period
        weight = (np.mod(t, 1.0) < rng.uniform(0.3, 0.55)).astype(np.float32)
    elif style.pattern == "checks":
        period = rng.uniform(0.05, 0.11)
        weight = 0.5 * (np.mod(U / period, 1.0) < 0.5) + 0.5 * (np.mod(V / period, 1.0) < 0.5)
    elif style.pattern == "dots":
        period, radius = rng.uniform(0.06, 0.11), rng.uniform(0.15, 0.3)
        row = np.floor(V / period)
        fu = np.mod(U / period + 0.5 * np.mod(row, 2.0), 1.0) - 0.5
        fv = np.mod(V / period, 1.0) - 0.5
        weight = np.clip((radius - np.hypot(fu, fv)) * period / c.aa + 0.5, 0.0, 1.0)
    elif style.pattern in ("floral", "logo"):
        accent_weight = np.zeros_like(U)
        blobs = int(rng.integers(10, 18)) if style.pattern == "floral" else 1
        for _ in range(blobs):
            if style.pattern == "floral":
                bx, by, r = rng.uniform(-0.45, 0.45), rng.uniform(-0.05, 0.65), rng.uniform(0.04, 0.08)
            else:  # one printed emblem on a cheek panel
                bx = _pick(rng, (-1, 1)) * rng.uniform(0.15, 0.24)
                by, r = rng.uniform(0.2, 0.32), rng.uniform(0.06, 0.09)
            du, dv = U - bx, V - by
            radius = np.hypot(du, dv)
            if style.pattern == "floral":  # petals round a centre
                edge = r * (0.72 + 0.28 * np.cos(5.0 * np.arctan2(dv, du) + rng.uniform(0, 6.3)))
                weight = np.maximum(weight, np.clip((edge - radius) / c.aa + 0.5, 0.0, 1.0))
                accent_weight = np.maximum(accent_weight, np.clip((0.3 * r - radius) / c.aa + 0.5, 0.0, 1.0))
            else:  # a ring with a bar of "lettering" beside it
                weight = np.maximum(weight, _band(radius - r * 0.8, r * 0.2))
                bar = np.minimum(r * 1.6 - np.abs(du), r * 0.18 - np.abs(dv - r * 1.5))
                weight = np.maximum(weight, np.clip(bar / c.aa + 0.5, 0.0, 1.0))
        rgb = ground + weight[..., None] * (second - ground)
        return rgb + accent_weight[..., None] * (accent - rgb)
    elif style.pattern == "camouflage":  # blobs of four colours from thresholded sums of waves
        palette = np.asarray(CAMOUFLAGE, np.float32)
        rgb = np.broadcast_to(palette[0], U.shape + (3,)).copy()
        for layer in (1, 2, 3):
            field = np.zeros_like(U)
            for _ in range(3):
                angle, freq = rng.uniform(0, 6.3), rng.uniform(9.0, 18.0)
                field += np.sin(freq * (U * math.cos(angle) + V * math.sin(angle)) + rng.uniform(0, 6.3))
            rgb[field > 1.0] = palette[layer]
        return rgb
    return ground + weight[..., None] * (second - ground)


def render_cloth_mask(image: Image.Image, face_box: tuple[int, int, int, int], style: ClothStyle) -> Image.Image:
    """`draw_cloth_mask` with the style chosen."""
    photo, full = _begin(image, face_box, style.placement, MASK_EXTENT)
    if full is None:
        return photo
    rng = np.random.default_rng(style.pattern_seed + 1)
    hw0 = 0.42 if style.kind == "flat" else 0.41
    strap_colour = style.colours[0] if style.straps != "elastic" else _pick(rng, ((30, 30, 32), (240, 240, 236)))
    if style.straps == "ties":  # a tie at each corner, running back past the ears
        _loops(full, strap_colour, [((-hw0 + 0.01, 0.08), (-0.6, 0.03)), ((hw0 - 0.01, 0.08), (0.6, 0.03)),
                                    ((-hw0 + 0.01, 0.46), (-0.6, 0.5)), ((hw0 - 0.01, 0.46), (0.6, 0.5))], 0.012)
    else:
        width = 0.018 if style.straps == "fabric" else 0.011
        _loops(full, strap_colour, [((-hw0 + 0.01, 0.1), (-0.55, 0.0)), ((hw0 - 0.01, 0.1), (0.55, 0.0)),
                                    ((-hw0 + 0.01, 0.46), (-0.54, 0.25)), ((hw0 - 0.01, 0.46), (0.54, 0.25))], width)
    c = full.part(-hw0 - 0.02, hw0 + 0.02, -0.06, 0.64)
    across = np.clip(np.abs(c.U) / hw0, 0.0, 1.0)
    if style.kind == "contoured":  # two panels sewn down the middle: peaked over the nose and at the chin
        top, bottom = -0.03 + 0.13 * across ** 1.2, 0.61 - 0.17 * across ** 1.5
        nx = 0.42 * np.tanh(c.U / 0.03) + 0.45 * c.U / hw0
    else:
        top, bottom = 0.0 + 0.05 * across ** 2, 0.58 - 0.06 * across ** 2
        nx = 0.75 * c.U / hw0
    side_sd, tb_sd = hw0 - np.abs(c.U), np.minimum(c.V - top, bottom - c.V)
    corner = 0.04  # rounded corners
    sd = np.minimum(np.minimum(side_sd, tb_sd),
                    corner - np.hypot(np.maximum(corner - side_sd, 0.0), np.maximum(corner - tb_sd, 0.0)))
    y = np.clip((c.V - top) / np.maximum(bottom - top, 1e-3), 0.0, 1.0)
    ny = (y - 0.45) * 0.8
    light = np.ones_like(y)
    for _ in range(2):  # soft folds across the fabric
        angle, freq = rng.uniform(-0.5, 0.5), rng.uniform(9.0, 16.0)
        light += 0.07 * np.sin(freq * (c.V * math.cos(angle) + c.U * math.sin(angle)) + rng.uniform(0, 6.3))
    if style.kind == "flat":  # pressed horizontal pleats, shallower than a surgical mask's
        for centre in (0.35, 0.62):
            light -= 0.16 * _band((y - centre) / 0.1, 0.5)
    else:
        light -= 0.3 * _band(c.U, 0.008)  # the centre seam
    light -= 0.12 * _band(np.minimum(side_sd, tb_sd) - 0.022, 0.005)  # the hem's stitching
    weave = 1.0 + 0.05 * np.sin(c.U * 520.0) * np.sin(c.V * 520.0)
    light *= weave * _texture(light.shape, style.pattern_seed + 2, 0.04)
    shade = _shade((255.0, 255.0, 255.0), nx, ny, ambient=0.5, diffuse=0.55, specular=0.02) / 255.0
    c.paint(c.cover(sd), _cloth_pattern(c, style) * shade * light[..., None])
    return _composite(photo, full, face_box, style.placement)


def _valve_on(c: _Canvas, kind: str, cx: float, cy: float, colour) -> None:
    """An exhalation valve: round (a domed cap with a ring of slots) or square (a block with horizontal slits)."""
    c = c.part(cx - 0.1, cx + 0.1, cy - 0.1, cy + 0.1)
    if kind == "round":
        sd, nx, ny = _ellipse(c, cx, cy, 0.075, 0.075)
        radius = np.hypot(nx, ny)
        body = _shade(colour, nx * 0.7, ny * 0.7, ambient=0.5, specular=0.3)
        body *= (1.0 - 0.35 * _band(radius - 0.7, 0.08) - 0.25 * ((np.sin(np.arctan2(ny, nx) * 8.0) > 0.5)
                                                                & (radius > 0.35) & (radius < 0.62)))[..., None]
    else:
        du, dv = (c.U - cx) / 0.07, (c.V - cy) / 0.06
        sd = np.minimum(0.07 - np.abs(c.U - cx), 0.06 - np.abs(c.V - cy))
        body = _shade(colour, du * 0.5, dv * 0.5, ambient=0.5, specular=0.25)
        body *= (1.0 - 0.4 * ((np.sin(dv * 10.0) > 0.6) & (np.abs(du) < 0.75)))[..., None]
    c.paint(c.cover(sd + 0.01), _shade(_darker(colour, 0.5), np.zeros_like(sd), np.zeros_like(sd)))  # its rim
    c.paint(c.cover(sd), body)


def render_kn95_mask(image: Image.Image, face_box: tuple[int, int, int, int], style: Kn95Style) -> Image.Image:
    """`draw_kn95_mask` with the style chosen."""
    photo, full = _begin(image, face_box, style.placement, MASK_EXTENT)
    if full is None:
        return photo
    kind = style.kind
    hw0 = {"fold_flat": 0.42, "duckbill": 0.45, "cup": 0.37}[kind]
    # where straps or loops are fixed: near the sides, closer to the seam on a duckbill (its sides are pointed)
    anchor, upper, lower = (hw0 - 0.05, 0.22, 0.38) if kind == "duckbill" else (hw0 - 0.03, 0.12, 0.4)
    if style.head_straps:  # two elastic straps round the head, out at the sides
        _loops(full, style.strap_colour, [((-anchor, upper), (-0.58, -0.02)), ((anchor, upper), (0.58, -0.02)),
                                          ((-anchor, lower), (-0.58, 0.5)), ((anchor, lower), (0.58, 0.5))], 0.012)
    else:
        loop = style.colour if style.colour[0] > 150 else (236, 236, 232)
        _loops(full, loop, [((-anchor, upper), (-0.55, 0.0)), ((anchor, upper), (0.55, 0.0)),
                            ((-anchor, lower), (-0.54, 0.25)), ((anchor, lower), (0.54, 0.25))], 0.011)
    c = full.part(-hw0 - 0.02, hw0 + 0.02, -0.06, 0.66)
    light = np.ones_like(c.U)
    if kind == "cup":  # moulded dome with a rolled rim
        sd, nx, ny = _ellipse(c, 0.0, 0.29, hw0, 0.32)
        nx, ny = nx * 0.85, ny * 0.85
        light -= 0.16 * _band(sd - 0.03, 0.008)  # the rim's inner edge
        light += 0.08 * (sd < 0.03)
        top = 0.29 - 0.32 * np.sqrt(np.clip(1.0 - (c.U / hw0) ** 2, 0.0, 1.0))
    else:
        across = np.clip(np.abs(c.U) / hw0, 0.0, 1.0)
        if kind == "fold_flat":  # two panels meeting at a vertical fold, pointed at nose and chin
            top, bottom = -0.04 + 0.15 * across ** 1.1, 0.64 - 0.34 * across ** 1.8
            nx = 0.5 * np.tanh(c.U / 0.015) + 0.3 * c.U / hw0
            ny = (c.V - 0.3) * 1.2
            light -= 0.28 * _band(c.U, 0.006)
        else:  # duckbill: a horizontal seam standing out in front of the mouth
            top, bottom = 0.01 + 0.05 * across ** 2, 0.6 - 0.24 * across ** 2
            seam = 0.3 + 0.02 * across ** 2
            nx = 0.55 * c.U / hw0
            ny = np.where(c.V < seam, -0.45, 0.5) + 0.2 * (c.V - seam)
            light += 0.12 * _band(c.V - seam, 0.008) - 0.18 * _band(c.V - seam - 0.012, 0.008)
        side_sd, tb_sd = hw0 - np.abs(c.U), np.minimum(c.V - top, bottom - c.V)
        if kind == "duckbill":  # the sides come to a point at the seam: a lozenge seen from the front
            side_sd = hw0 * (1.0 - 0.28 * np.abs(c.V - 0.3) / 0.3) - np.abs(c.U)
        sd = np.minimum(side_sd, tb_sd)
        light -= 0.14 * _band(sd - 0.028, 0.005)  # the heat-sealed border
    # nose wire under the top edge, centred: a short ridge
    wire = np.clip(1.0 - np.abs(c.U) / 0.16, 0.0, 1.0) ** 0.3
    light += wire * (0.12 * _band(c.V - top - 0.02, 0.007) - 0.12 * _band(c.V - top - 0.036, 0.007))
    if style.printed and kind != "cup":  # a line of small print on the wearer's right panel
        text = np.minimum(0.09 - np.abs(c.U + 0.2), 0.012 - np.abs(c.V - 0.36))
        light -= 0.35 * np.clip(text / c.aa + 0.5, 0.0, 1.0) * (np.sin(c.U * 260.0) > -0.2)
    light *= _texture(light.shape, style.placement.grain_seed + 1, 0.03)
    shade = _shade(style.colour, nx, ny, ambient=0.5, diffuse=0.55, specular=0.05)
    c.paint(c.cover(sd), shade * light[..., None])
    if style.valve:
        _valve_on(c, style.valve, 0.0 if kind == "cup" else 0.17, 0.33, style.valve_colour)
    return _composite(photo, full, face_box, style.placement)


def draw_surgical_mask(image: Image.Image, face_box: tuple[int, int, int, int],
                       rng: np.random.Generator) -> Image.Image:
    """A new RGB image: a pleated surgical mask drawn over the face in `face_box`. Label: Medical.

    From the nose bridge to under the chin (or, one time in five, worn low with the nose tip showing), three
    pleats with a highlight above and a shadow under each fold, bound edges, a nose wire's ridge and white or blue
    ear loops; the sides curve a little. Colour (`pick_surgical`): light blue most often, white, pale green, pink,
    black. Randomness from `rng` only; lighting, grain, jitter and box handling as in `draw_respirator`.
    """
    return render_surgical_mask(image, face_box, pick_surgical(rng))


def draw_cloth_mask(image: Image.Image, face_box: tuple[int, int, int, int], rng: np.random.Generator) -> Image.Image:
    """A new RGB image: a fabric mask drawn over the face in `face_box`, nose to chin. Label: Cloth.

    Contoured (two panels, a centre seam) or flat (two pressed pleats), CLOTH_KINDS; the print (CLOTH_PATTERNS:
    solid, stripes, checks, dots, floral, camouflage, a printed emblem) in colours from CLOTH_COLOURS; a weave and
    fibre noise, soft folds, a stitched hem; loops of the same fabric, thin elastic or ties (`pick_cloth`).
    Randomness from `rng` only; lighting, grain, jitter and box handling as in `draw_respirator`.
    """
    return render_cloth_mask(image, face_box, pick_cloth(rng))


def draw_kn95_mask(image: Image.Image, face_box: tuple[int, int, int, int], rng: np.random.Generator) -> Image.Image:
    """A new RGB image: a KN95/FFP2-type mask drawn over the face in `face_box`. Label: KN95.

    KN95_KINDS: fold-flat (two panels shaded apart by a vertical centre fold, heat-sealed border, often a line of
    print), duckbill (a horizontal seam standing out) or moulded cup (3M 8210-like, a rolled rim); white, grey,
    black, pink or blue; a round or square exhalation valve two times in five; ear loops or head straps; a nose
    wire (`pick_kn95`). Randomness from `rng` only; lighting, grain, jitter and box handling as in `draw_respirator`.
    """
    return render_kn95_mask(image, face_box, pick_kn95(rng))


# --- realistic face shields (issue 28) ----------------------------------------------------------------------------
# Model 12 found the shield on 3 of 9 real photos and lost it when worn over a mask. Real shields are clear plastic
# (no tint, hardly any haze: the face behind is sharp), held by a thick foam or plastic forehead band with a
# bracket, and what shows them is glare: broad soft highlights where the curved plastic mirrors a window, narrow
# streaks, and bright cut edges, the lower one usually in view below the chin. Mostly worn over a mask, so
# `--render realshield` draws them over masked faces far more often than over bare ones (training_set.add_renderings).

REAL_BAND_COLOURS = ((236, 236, 230), (245, 245, 240), (58, 108, 200), (32, 32, 34), (200, 40, 40), (120, 124, 130))


@dataclass(frozen=True)
class RealShieldStyle:
    band: tuple[int, int, int]
    band_height: float  # the foam band's height, face units (0.08-0.16)
    bracket: bool  # a clear plastic bracket line under the band
    bottom: float  # the lower edge's lowest point, face units below the box centre (0.7-1.05)
    half_width: float  # 0.6-0.76
    sag: float  # how much the lower edge curves up at the sides (0-0.2)
    edge: float  # the bright cut edge's half-width (0.008-0.025)
    edge_alpha: float  # 0.55-0.95
    highlights: tuple[tuple[float, float, float], ...]  # broad vertical glare: (u, half-width, alpha)
    streaks: tuple[tuple[float, float, float, float], ...]  # narrow diagonal glare as ShieldStyle.reflections
    haze: float  # 0-0.06
    lift: float  # 0-0.08: the plastic adds a little light everywhere
    placement: Placement


def pick_real_shield(rng: np.random.Generator) -> RealShieldStyle:
    """The style `draw_real_shield` draws for this state of `rng`."""
    highlights = tuple((float(rng.uniform(0.3, 0.62)) * _pick(rng, (-1, 1)), float(rng.uniform(0.04, 0.14)),
                        float(rng.uniform(0.15, 0.45))) for _ in range(int(rng.integers(1, 3))))
    streaks = tuple((float(rng.uniform(-0.5, 0.5)), float(rng.uniform(0.8, 3.0)) * _pick(rng, (-1, 1)),
                     float(rng.uniform(0.015, 0.06)), float(rng.uniform(0.2, 0.55)))
                    for _ in range(int(rng.integers(1, 4))))
    return RealShieldStyle(_pick(rng, REAL_BAND_COLOURS), float(rng.uniform(0.08, 0.16)), bool(rng.random() < 0.6),
                           float(rng.uniform(0.7, 1.05)), float(rng.uniform(0.6, 0.76)), float(rng.uniform(0.0, 0.2)),
                           float(rng.uniform(0.008, 0.025)), float(rng.uniform(0.55, 0.95)), highlights, streaks,
                           float(rng.uniform(0.0, 0.06)), float(rng.uniform(0.0, 0.08)),
                           _placement(rng, scale=0.07, shift=0.04, angle=5.0))


def render_real_shield(image: Image.Image, face_box: tuple[int, int, int, int], style: RealShieldStyle) -> Image.Image:
    """`draw_real_shield` with the style chosen."""
    top = -0.6
    extent = (-style.half_width - 0.04, style.half_width + 0.04, top - style.band_height - 0.04, style.bottom + 0.05)
    photo, c = _begin(image, face_box, style.placement, extent)
    if c is None:
        return photo
    lower = style.bottom - style.sag * (c.U / style.half_width) ** 2
    visor_sd = np.minimum(np.minimum(style.half_width - np.abs(c.U), c.V - top), lower - c.V)
    inside = c.cover(visor_sd)
    if style.haze > 0 or style.lift > 0:  # clear plastic: the face stays sharp, a touch flatter and lighter
        x0, y0, _, _ = c.region
        crop = photo.crop(c.region)
        grey = tuple(int(v) for v in np.asarray(crop).reshape(-1, 3).mean(axis=0))
        under = Image.blend(crop, Image.new("RGB", crop.size, grey), style.haze)
        under = Image.blend(under, Image.new("RGB", crop.size, (255, 255, 255)), style.lift)
        weight = Image.fromarray((inside * 255.0 + 0.5).astype(np.uint8), "L").resize(crop.size, Image.BILINEAR)
        photo.paste(Image.composite(under, crop, weight), (x0, y0))
    for u, half, alpha in style.highlights:  # the curved plastic mirroring a window: broad, soft, vertical
        profile = np.clip(1.0 - np.abs(c.U - u) / half, 0.0, 1.0) ** 2
        fade = np.clip((c.V - top) / 0.4, 0.0, 1.0) * np.clip((lower - c.V) / 0.3, 0.3, 1.0)
        c.paint(profile * fade * alpha * inside, (255.0, 255.0, 255.0))
    for offset, slope, width, alpha in style.streaks:
        _reflection(c, offset, slope, width, alpha, inside)
    # the cut edges: a bright line with a dark one inside it, strongest along the lower edge
    rim = c.cover(visor_sd) * (1.0 - c.cover(visor_sd - 2 * style.edge))
    lower_weight = np.clip((c.V - 0.2) / 0.4, 0.35, 1.0)
    c.paint(rim * style.edge_alpha * lower_weight, (246.0, 249.0, 252.0))
    c.paint(c.cover(visor_sd - 2 * style.edge) * (1.0 - c.cover(visor_sd - 3 * style.edge)) * 0.25 * lower_weight,
            (50.0, 54.0, 60.0))
    band_top, band_bottom = top - style.band_height, top + 0.02
    band = c.part(-style.half_width, style.half_width, band_top - 0.01, band_bottom + 0.03)
    band_sd = np.minimum(style.half_width * 0.97 - np.abs(band.U),
                         np.minimum(band.V - band_top, band_bottom - band.V))
    across = (band.V - (band_top + band_bottom) / 2) / (band_bottom - band_top) * 1.6
    foam = _texture(band_sd.shape, style.placement.grain_seed, 0.04)[..., None]
    band.paint(band.cover(band_sd), _shade(style.band, band.U / style.half_width * 0.5, across, ambient=0.55,
                                           specular=0.12) * foam)
    if style.bracket:  # the clear bracket the visor clips into, under the foam
        bracket_sd = np.minimum(style.half_width * 0.95 - np.abs(band.U), 0.018 - np.abs(band.V - band_bottom - 0.012))
        band.paint(band.cover(bracket_sd) * 0.7, (200.0, 206.0, 214.0))
    return _composite(photo, c, face_box, style.placement)


def draw_real_shield(image: Image.Image, face_box: tuple[int, int, int, int],
                     rng: np.random.Generator) -> Image.Image:
    """A new RGB image: a clear face shield as real ones look (see above) over the face in `face_box`, whatever
    is on the face left visible under it. Label: the image's labels plus Shield. Randomness from `rng` only;
    lighting, grain and box handling as in `draw_respirator`."""
    return render_real_shield(image, face_box, pick_real_shield(rng))
