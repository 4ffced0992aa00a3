"""Issue 17's faults, made from the shipped examples: what the shipped model answers on the API's default
(`POST /api/predict`, the whole photo) and on the page's default (automatic mode, `faces=auto`).

The photos are tests/helpers.py `fault_cases()` (benchmarks/faults.py prints the same table for any model, and
saves the photos to look at):

- occluders over the bare face (maskclassifier/web/static/examples/no-mask.jpg), drawn here and not by any training
  code: a skin-coloured hand (palm ellipse and four finger bars; light, medium and dark skin; fingers across the mouth
  or up over it), a phone held at the mouth, a handheld microphone, hair blown across the mouth, a scarf pulled down
  under the chin. Right: no mask category (nor `-`) above the threshold, so No_mask! or "not confident";
- the reverse check: the KN95, surgical and cloth examples with a hand at the side of the mask. Right: the mask;
- the four examples at 0.5, 0.35 and 0.2 of the light with sensor noise (tests/helpers.py `underexposed`), and
  backlit (face at 0.3 of the light before a white background, with flare). Each was looked at: the mask or bare
  face stays plain to a person, so the right answer is the example's label, and "not confident" is wrong;
- 1856 x 464 (4:1) and 464 x 1856 (1:4) photos with the person at one end (the issue's size; the API's answer at
  both ends of 4:1 and 1:4 photos is also in tests/test_wide_photos.py).

No three-quarter view: the examples are one frontal photo, and a 3/4 view needs what a frontal photo does not
hold (the far cheek hidden behind the nose, the near side of the face and the ear turned towards the camera). A
2D rotation only tilts the head, and a horizontal perspective squeeze foreshortens a flat picture of a face, not
a head; either would test something other than what the issue reports, so it is left out until a real 3/4 photo
with a known licence can ship.

Issue 28's photos (tests/helpers.py `shield_fault_cases()`, drawn with other code than training's hard negatives):
a phone held up whose screen shows each example, each example in a picture frame, behind a window, in thick
glasses and in a cap with a visor. None shows a face shield. Right: Shield is not in the answer.

Both shipped files answer each photo, models/export.pkl (the full install's default) and models/export.onnx (the
slim install's), each served by the app as configured by default (its sidecar's threshold, one thread).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from helpers import (
    FAULT_JPEG_QUALITY,
    PORTRAIT_FACE,
    WINDOW_PARTS,
    encode,
    example,
    fault_cases,
    shield_fault_cases,
    through_window,
    upload,
)
from maskclassifier.classifier.faces import load_detector
from maskclassifier.core.config import Settings
from maskclassifier.web import create_app

ROOT = Path(__file__).resolve().parent.parent

# What the shipped model (models/export.pkl and export.onnx answer alike; model 12 of models/MODEL_CARD.md) gets
# wrong, (photo, mode) -> its answer: labels (the three most probable). Strict: when a new model gets one of them
# right, the test fails until the line is removed here. "api" is POST /api/predict, "page" the page's automatic mode.
# Model 12 gets all 35 right on both; model 7 got 17 wrong on the API's default and 12 on the page's, model 9 7 and
# 2, model 11 3 and 0 (BENCHMARKS.md, models/MODEL_CARD.md).
SHIPPED_MODEL_GETS_WRONG: dict[tuple[str, str], str] = {}

# Issue 28's photos that the shipped model calls Shield, (photo, mode) -> its answer; strict as above. Model 12
# takes a window's glass (its reflection and glare) round a face for a shield; frames, phones, glasses and caps it
# gets right.
SHIPPED_MODEL_SEES_A_SHIELD: dict[tuple[str, str], str] = {
    ("window-no-mask", "api"): "Shield (Shield 1.00 No_mask! 0.00 Cloth 0.00)",
    ("window-no-mask", "page"): "Shield (Shield 0.98 No_mask! 0.00 Cloth 0.00)",
    ("window-cloth", "api"): "Cloth, Shield (Cloth 1.00 Shield 0.83 KN95 0.00)",
    ("window-medical", "api"): "Shield, Medical (Shield 0.88 Medical 0.87 Cloth 0.09)",
    ("window-medical", "page"): "Shield, Medical (Shield 0.82 Medical 0.66 Cloth 0.13)",
}

MODES = {"api": "/api/predict", "page": "/api/predict?faces=auto"}
CASES = {case.name: case for case in fault_cases()}
SHIELD_CASES = {case.name: case for case in shield_fault_cases()}


def answer(name: str, mode: str, wrong: dict[tuple[str, str], str] = SHIPPED_MODEL_GETS_WRONG):
    marks = ()
    if (name, mode) in wrong:
        marks = pytest.mark.xfail(strict=True, reason=f"shipped model: {wrong[name, mode]}")
    return pytest.param(name, mode, marks=marks, id=f"{name}-{mode}")


@pytest.fixture(scope="module", params=["export.pkl", "export.onnx"])
def shipped(request):
    """A test client of the app serving a shipped model file as configured by default, loaded once per module."""
    app = create_app(Settings(model_path=ROOT / "models" / request.param, threshold=None, torch_threads=1))
    app.config["TESTING"] = True
    return app.test_client()


@pytest.fixture(scope="module")
def photos() -> dict[str, bytes]:
    """Each fault photo as the JPEG that is uploaded, made once."""
    return {name: encode(case.make(), quality=FAULT_JPEG_QUALITY) for name, case in {**CASES, **SHIELD_CASES}.items()}


def test_the_faults_are_drawn_where_the_app_finds_the_face():
    """PORTRAIT_FACE, where the occluders are drawn, is the app's own face box on the bare-face example."""
    found = load_detector(1).detect(example("no-mask")).faces
    assert len(found) == 1 and all(abs(a - b) <= 3 for a, b in zip(found[0].box, PORTRAIT_FACE, strict=True)), found


def test_every_fault_kind_is_made():
    kinds = {"hand", "phone", "microphone", "hair", "scarf", "beside", "x0.5", "x0.35", "x0.2", "backlit", "4:1", "1:4"}
    assert all(any(kind in name for name in CASES) for kind in kinds)
    assert len(CASES) == 35 and {name for name, _ in SHIPPED_MODEL_GETS_WRONG} <= set(CASES)
    assert len(SHIELD_CASES) == 20 and {name for name, _ in SHIPPED_MODEL_SEES_A_SHIELD} <= set(SHIELD_CASES)
    assert not set(CASES) & set(SHIELD_CASES)


def test_each_part_of_the_window_can_be_left_out():
    """benchmarks/shield_cues.py draws the window photo without each of its parts: with none it is the example
    itself, and leaving any one part out changes the photo."""
    photo = example("no-mask")
    assert np.array_equal(np.asarray(through_window(photo, parts=())), np.asarray(photo))
    full = np.asarray(through_window(photo))
    for part in WINDOW_PARTS:
        without = tuple(other for other in WINDOW_PARTS if other != part)
        assert not np.array_equal(np.asarray(through_window(photo, parts=without)), full), part
    with pytest.raises(ValueError, match="window parts are"):
        through_window(photo, parts=("glazing bar",))  # misspelt: refused, not drawn as a window without bars


@pytest.mark.parametrize("name,mode", [answer(name, mode) for name in CASES for mode in MODES])
def test_the_shipped_model_on_a_fault(shipped, photos, name, mode):
    response = shipped.post(MODES[mode], data=upload(photos[name]))
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    top = sorted(body["probabilities"].items(), key=lambda item: -item[1])[:3]
    assert CASES[name].is_right(body["labels"]), (body["labels"], top, body.get("mode"))


def _top(body: dict) -> list:
    return sorted(body["probabilities"].items(), key=lambda item: -item[1])[:3]


@pytest.mark.parametrize("name,mode", [answer(name, mode, SHIPPED_MODEL_SEES_A_SHIELD)
                                       for name in SHIELD_CASES for mode in MODES])
def test_the_shipped_model_sees_no_shield_in_frames_and_screens(shipped, photos, name, mode):
    response = shipped.post(MODES[mode], data=upload(photos[name]))
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert SHIELD_CASES[name].is_right(body["labels"]), (body["labels"], _top(body), body.get("mode"))
