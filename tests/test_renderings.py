"""The synthetic respirators, face shields and surgical, cloth and KN95 masks
(maskclassifier.training.synthetic.renderings) on faces the test draws."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from datasets import face_like_image
from maskclassifier.training.synthetic.renderings import (
    CLOTH_KINDS,
    CLOTH_PATTERNS,
    CLOTH_STRAPS,
    KN95_KINDS,
    MIN_FACE_PX,
    RESPIRATOR_KINDS,
    SHIELD_KINDS,
    SURGICAL_KINDS,
    VALVE_KINDS,
    draw_cloth_mask,
    draw_kn95_mask,
    draw_respirator,
    draw_shield,
    draw_surgical_mask,
    pick_cloth,
    pick_kn95,
    pick_respirator,
    pick_shield,
    pick_surgical,
    render_cloth_mask,
    render_kn95_mask,
    render_respirator,
    render_shield,
    render_surgical_mask,
    shield_edge_in_photo,
)

SIZE = 192
BOX = (60, 50, 132, 146)  # x0, y0, x1, y1: the drawn face's box, about eyebrows to chin as MTCNN gives it
UNIT = ((BOX[2] - BOX[0]) + (BOX[3] - BOX[1])) / 2  # the face frame's unit in pixels
CENTRE = ((BOX[0] + BOX[2]) / 2, (BOX[1] + BOX[3]) / 2)
DRAWINGS = {"respirator": draw_respirator, "shield": draw_shield, "surgical": draw_surgical_mask,
            "cloth": draw_cloth_mask, "kn95": draw_kn95_mask}
MASKS = [(pick_surgical, render_surgical_mask), (pick_cloth, render_cloth_mask), (pick_kn95, render_kn95_mask)]


def drawn_face(seed: int = 0) -> Image.Image:
    """A bare face with eyes, nose and mouth in the places the renderings assume, on a noisy background."""
    rng = np.random.default_rng(seed)
    background = rng.integers(60, 200, (SIZE, SIZE, 3), dtype=np.uint8)
    image = Image.fromarray(background)
    face = face_like_image(["No_mask!"], seed, size=(96, 120)).crop((19, 12, 77, 108)).resize((80, 112))
    image.paste(face, (56, 42))
    draw = ImageDraw.Draw(image)
    for x in (CENTRE[0] - 0.2 * UNIT, CENTRE[0] + 0.2 * UNIT):  # eyes at v = -0.12
        y = CENTRE[1] - 0.12 * UNIT
        draw.ellipse([x - 6, y - 3, x + 6, y + 3], fill=(40, 30, 30))
    nose = [CENTRE[0], CENTRE[1] - 0.05 * UNIT, CENTRE[0] - 4, CENTRE[1] + 0.12 * UNIT]
    draw.line(nose, fill=(150, 100, 80), width=2)
    draw.ellipse([CENTRE[0] - 12, CENTRE[1] + 0.25 * UNIT, CENTRE[0] + 12, CENTRE[1] + 0.32 * UNIT], fill=(170, 60, 60))
    return image


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.float32)


def window(array: np.ndarray, u: float, v: float, half: float) -> np.ndarray:
    """The pixels within `half` face units of (u, v) in the face frame of BOX."""
    x, y, r = CENTRE[0] + u * UNIT, CENTRE[1] + v * UNIT, half * UNIT
    return array[round(y - r):round(y + r), round(x - r):round(x + r)]


@pytest.mark.parametrize("name", sorted(DRAWINGS))
def test_a_seed_gives_the_same_drawing_and_seeds_differ(name):
    image = drawn_face()
    draw = DRAWINGS[name]
    first = draw(image, BOX, np.random.default_rng(7))
    again = draw(image, BOX, np.random.default_rng(7))
    assert first.tobytes() == again.tobytes()
    others = {draw(image, BOX, np.random.default_rng(seed)).tobytes() for seed in range(8)}
    assert len(others) == 8


@pytest.mark.parametrize("pick,render,draw,kinds", [
    (pick_respirator, render_respirator, draw_respirator, RESPIRATOR_KINDS),
    (pick_shield, render_shield, draw_shield, SHIELD_KINDS),
    (pick_surgical, render_surgical_mask, draw_surgical_mask, SURGICAL_KINDS),
    (pick_cloth, render_cloth_mask, draw_cloth_mask, CLOTH_KINDS),
    (pick_kn95, render_kn95_mask, draw_kn95_mask, KN95_KINDS),
])
def test_every_kind_is_drawn_for_some_seed(pick, render, draw, kinds):
    image = drawn_face()
    seen = {}
    for seed in range(60):
        seen.setdefault(pick(np.random.default_rng(seed)).kind, seed)
    assert set(seen) == set(kinds)
    for kind, seed in seen.items():  # draw_* is render_* with the style the same seed picks
        style = pick(np.random.default_rng(seed))
        assert style.kind == kind
        drawn = draw(image, BOX, np.random.default_rng(seed))
        assert drawn.tobytes() == render(image, BOX, style).tobytes()


@pytest.mark.parametrize("name", sorted(DRAWINGS))
@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "P", "CMYK"])
def test_any_mode_gives_a_new_rgb_image_of_the_same_size_and_the_input_is_untouched(name, mode):
    image = drawn_face().convert(mode)
    before = image.tobytes()
    result = DRAWINGS[name](image, BOX, np.random.default_rng(3))
    assert result is not image
    assert result.mode == "RGB" and result.size == image.size
    assert image.tobytes() == before and image.mode == mode
    assert np.abs(pixels(result) - pixels(image.convert("RGB"))).mean() > 1.0


def test_a_respirator_covers_nose_and_mouth_and_leaves_the_eyes_and_far_pixels_alone():
    image = drawn_face()
    original = pixels(image)
    for seed in range(30):
        style = pick_respirator(np.random.default_rng(seed))
        result = pixels(render_respirator(image, BOX, style))
        change = np.abs(result - original)
        assert window(change, 0.0, 0.27, 0.06).mean() > 25, (seed, style.kind)  # the mouth
        assert window(change, 0.0, 0.14, 0.04).mean() > 25, (seed, style.kind)  # the nose tip
        if style.kind != "full_face":
            for u in (-0.2, 0.2):
                assert window(change, u, -0.12, 0.05).mean() < 3, (seed, style.kind)  # the eyes stay visible
        # nothing drawn further than 1.35 face units from the box centre (the full-face straps reach about 1.1)
        ys, xs = np.mgrid[0:SIZE, 0:SIZE]
        far = np.hypot(xs - CENTRE[0], ys - CENTRE[1]) > 1.35 * UNIT
        assert change[far].max() == 0, (seed, style.kind)


def test_a_shield_is_mostly_transparent():
    image = drawn_face()
    x0, y0, x1, y1 = BOX
    original = pixels(image)[y0:y1, x0:x1].mean(axis=2)
    for seed in range(30):
        result = pixels(draw_shield(image, BOX, np.random.default_rng(seed)))[y0:y1, x0:x1].mean(axis=2)
        change = np.abs(result - original).mean()
        assert 0.5 < change < 25, seed
        # the face still shows through: the drawn face is flat skin, so one broad reflection alone brings the
        # correlation down to about 0.7; the eyes keep about half their contrast against the cheek or more (0.53
        # at the least over these seeds, under a broad reflection)
        assert np.corrcoef(result.ravel(), original.ravel())[0, 1] > 0.6, seed
        shielded = pixels(draw_shield(image, BOX, np.random.default_rng(seed)))
        for u in (-0.2, 0.2):
            contrast = window(shielded, u, 0.05, 0.04).mean() - window(shielded, u, -0.12, 0.03).mean()
            assert contrast > 0.45 * (window(pixels(image), u, 0.05, 0.04).mean()
                                     - window(pixels(image), u, -0.12, 0.03).mean()), seed


@pytest.mark.parametrize("name", sorted(DRAWINGS))
@pytest.mark.parametrize("box", [(-40, -30, 50, 70), (130, 120, 230, 240), (-20, 60, 60, 250)])
def test_boxes_partly_outside_the_image_are_clipped(name, box):
    image = drawn_face()
    result = DRAWINGS[name](image, box, np.random.default_rng(1))
    assert result.size == image.size and result.mode == "RGB"
    # a clear change on the part inside: a mask over a box at the bottom-right corner shows only its upper rows
    assert (np.abs(pixels(result) - pixels(image)).max(axis=2) > 10).sum() > 150


@pytest.mark.parametrize("name", sorted(DRAWINGS))
@pytest.mark.parametrize("box", [(80, 80, 80 + MIN_FACE_PX - 1, 120), (80, 80, 120, 80 + MIN_FACE_PX - 1),
                                 (400, 400, 500, 500)])
def test_tiny_boxes_and_boxes_outside_the_image_give_an_unchanged_copy(name, box):
    image = drawn_face()
    result = DRAWINGS[name](image, box, np.random.default_rng(1))
    assert result is not image and result.tobytes() == image.tobytes()


def test_a_shield_on_a_face_filling_the_photo_shows_no_edge():
    assert shield_edge_in_photo((SIZE, SIZE), BOX)
    assert shield_edge_in_photo((SIZE, SIZE), (10, 10, 90, 110))  # near a corner: the right edge and the chin show
    assert not shield_edge_in_photo((100, 100), (-5, -5, 105, 110))  # a tight crop: every edge is outside


def test_a_respirator_is_lit_like_the_face():
    bright = drawn_face()
    dark = Image.eval(bright, lambda level: int(level * 0.35))
    for seed in range(6):
        style = pick_respirator(np.random.default_rng(seed))
        on_bright = window(pixels(render_respirator(bright, BOX, style)), 0.0, 0.27, 0.06).mean()
        on_dark = window(pixels(render_respirator(dark, BOX, style)), 0.0, 0.27, 0.06).mean()
        assert on_dark < 0.85 * on_bright, (seed, style.kind)


def test_full_face_masks_come_with_a_chin_filter_or_two_side_cartridges():
    styles = [pick_respirator(np.random.default_rng(seed)) for seed in range(80)]
    full_face = {style.side_filters for style in styles if style.kind == "full_face"}
    assert full_face == {True, False}
    assert not any(style.side_filters for style in styles if style.kind != "full_face")
    sizes = [style.filter_size for style in styles]
    assert min(sizes) < 0.9 and max(sizes) > 1.1


@pytest.mark.parametrize("pick,render", MASKS)
def test_a_mask_covers_nose_mouth_and_chin_and_leaves_the_eyes_and_far_pixels_alone(pick, render):
    image = drawn_face()
    original = pixels(image)
    ys, xs = np.mgrid[0:SIZE, 0:SIZE]
    far = np.hypot(xs - CENTRE[0], ys - CENTRE[1]) > 1.0 * UNIT  # loops and ties reach about 0.8
    for seed in range(30):
        style = pick(np.random.default_rng(seed))
        change = np.abs(pixels(render(image, BOX, style)) - original)
        assert window(change, 0.0, 0.27, 0.06).mean() > 25, (seed, style)  # the mouth
        assert window(change, 0.0, 0.44, 0.04).mean() > 10, (seed, style)  # the chin
        for u in (-0.25, 0.25):  # the cheeks: the mask is about as wide as the face
            assert window(change, u, 0.3, 0.04).mean() > 10, (seed, style)
        if style.kind != "low":  # a surgical mask worn low leaves the nose tip out
            assert window(change, 0.0, 0.14, 0.04).mean() > 10, (seed, style)
        for u in (-0.2, 0.2):
            assert window(change, u, -0.12, 0.05).mean() < 3, (seed, style)  # the eyes stay visible
        assert change[far].max() == 0, (seed, style)


def test_a_surgical_mask_worn_low_leaves_the_nose_tip_out():
    image = drawn_face()
    low = next(style for style in map(pick_surgical, map(np.random.default_rng, range(60))) if style.kind == "low")
    change = np.abs(pixels(render_surgical_mask(image, BOX, low)) - pixels(image))
    assert window(change, 0.0, 0.0, 0.03).mean() < 3


def test_mask_styles_vary():
    cloths = [pick_cloth(np.random.default_rng(seed)) for seed in range(200)]
    assert {style.pattern for style in cloths} == set(CLOTH_PATTERNS)
    assert {style.straps for style in cloths} == set(CLOTH_STRAPS)
    kn95s = [pick_kn95(np.random.default_rng(seed)) for seed in range(200)]
    assert {style.valve for style in kn95s} == set(VALVE_KINDS)
    assert {style.head_straps for style in kn95s} == {True, False}
    surgicals = [pick_surgical(np.random.default_rng(seed)) for seed in range(200)]
    blue = sum(style.colour[2] > style.colour[0] + 40 for style in surgicals)
    assert blue > len(surgicals) / 2  # light blue is the commonest colour
    assert len({style.colour for style in surgicals}) >= 5


@pytest.mark.parametrize("pick,render", MASKS)
def test_a_mask_is_lit_like_the_face_and_is_not_a_flat_fill(pick, render):
    bright = drawn_face()
    dark = Image.eval(bright, lambda level: int(level * 0.35))
    for seed in range(6):
        style = pick(np.random.default_rng(seed))
        drawn = pixels(render(bright, BOX, style))
        on_bright = window(drawn, 0.0, 0.27, 0.06).mean()
        on_dark = window(pixels(render(dark, BOX, style)), 0.0, 0.27, 0.06).mean()
        assert on_dark < 0.85 * on_bright, (seed, style)
        # shaded: the luminance over the mask's middle varies well beyond the grain (sd 2.5 levels per channel,
        # about 1.5 in the mean of three); a black surgical mask, the flattest, gives about 5
        assert window(drawn, 0.0, 0.25, 0.2).mean(axis=2).std() > 4, (seed, style)
