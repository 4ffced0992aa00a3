"""The caveat for categories learnt mostly from drawn examples (issue 28): the rule, the counts training records,
and the note with its numbers in every answer that names such a category, and in none that does not."""

from __future__ import annotations

import io
import json
from dataclasses import replace

import pytest
from PIL import Image

from datasets import face_like_image
from fakes import Countdown, KnownFaces
from helpers import encode, upload
from maskclassifier.classifier.classifier import caveat
from maskclassifier.core.errors import ModelLoadError
from maskclassifier.core.sidecar import DRAWN_SHARE_FLAG, Sidecar, drawn_share, mostly_drawn
from maskclassifier.training.dataset import training_examples
from maskclassifier.training.reports import _synthetic_note
from maskclassifier.training.training_set import rendered_categories

# Counts like the shipped model's: Gas drawn throughout, Shield almost all drawn (a few real photos), the masks
# mostly real with some drawn, the rest real.
EXAMPLES = {"-": {"real": 667, "drawn": 0}, "Cloth": {"real": 1038, "drawn": 302}, "Gas": {"real": 0, "drawn": 783},
            "KN95": {"real": 1120, "drawn": 250}, "Medical": {"real": 1018, "drawn": 291},
            "No_mask!": {"real": 1125, "drawn": 0}, "Shield": {"real": 8, "drawn": 1665}}
SHIELD_NOTE = ("Face shield: learned from 1,665 drawn pictures and 8 real photos, so its answers on real photos are "
               "less sure.")
GAS_NOTE = ("Gas mask / respirator with filters: learned from 783 drawn pictures and no real photos, so its answers "
            "on real photos are less sure.")


def test_a_category_is_flagged_when_at_least_half_its_examples_are_drawn():
    assert DRAWN_SHARE_FLAG == 0.5
    mixed = {"half": {"real": 10, "drawn": 10}, "just_under": {"real": 11, "drawn": 10},
             "almost_all": {"real": 8, "drawn": 665}, "all": {"real": 0, "drawn": 3},
             "none": {"real": 5, "drawn": 0}, "empty": {"real": 0, "drawn": 0}}
    assert mostly_drawn(mixed) == ["half", "almost_all", "all"]
    assert drawn_share(mixed["almost_all"]) == pytest.approx(665 / 673)
    assert mostly_drawn(EXAMPLES) == ["Gas", "Shield"]  # "every example drawn" would have missed Shield


@pytest.mark.parametrize("examples", [
    {"Shield": {"real": 8}}, {"Shield": {"real": -1, "drawn": 3}}, {"Shield": {"real": 1.5, "drawn": 3}},
    {"Shield": {"real": True, "drawn": 3}}, ["Shield"]])
def test_a_malformed_count_in_the_sidecar_is_refused_with_its_key(examples, tmp_path):
    with pytest.raises(ModelLoadError, match="training.dataset.examples"):
        Sidecar.from_json({"training": {"dataset": {"examples": examples}}}, tmp_path / "export.json")


def test_training_counts_real_and_drawn_examples_per_category():
    rows = [
        {"labels": "Shield", "is_valid": False, "synthetic": "True"},
        {"labels": "Medical Shield", "is_valid": False, "synthetic": True},
        {"labels": "KN95 Shield", "is_valid": False, "synthetic": "False"},  # a real face shield
        {"labels": "Shield", "is_valid": True, "synthetic": "True"},  # validation: not a training example
        {"labels": "Medical", "is_valid": "False", "synthetic": "False"},
        {"labels": "No_mask!", "is_valid": False},  # no synthetic column value: a photo
    ]
    drawn = rendered_categories({"gas": 400, "shield": 450, "medical": 250})
    assert drawn == {"Gas": 400, "Shield": 450, "Medical": 250}  # by what each kind draws
    assert training_examples(rows, ["Gas", "KN95", "Medical", "No_mask!", "Shield"], drawn) == {
        "Gas": {"real": 0, "drawn": 400}, "KN95": {"real": 1, "drawn": 0}, "Medical": {"real": 1, "drawn": 251},
        "No_mask!": {"real": 1, "drawn": 0}, "Shield": {"real": 1, "drawn": 452}}


def test_the_model_card_names_the_mostly_drawn_categories_with_their_counts():
    note = _synthetic_note({"synthetic_categories": ["Gas", "Shield"], "examples": EXAMPLES})
    assert "`Gas`, `Shield`" in note and "`Shield`: 1665 drawn and 8 real" in note and "50%" in note
    assert _synthetic_note({}).startswith("No category was learnt mostly from drawn")


def test_the_note_is_plain_and_counts_in_numbers():
    assert caveat("Shield", EXAMPLES["Shield"]) == SHIELD_NOTE
    assert caveat("Gas", EXAMPLES["Gas"]) == GAS_NOTE
    assert "1 real photo," in caveat("Shield", {"real": 1, "drawn": 1})
    assert caveat("Shield") == ("Face shield: learned from drawn pictures only, so its answers on real photos are "
                                "less sure.")
    assert caveat("Shield", EXAMPLES["Shield"]).isascii()  # it travels in an HTTP header too


# -- the answers ---------------------------------------------------------------------------------------------------

PHOTO = face_like_image(["Medical"], seed=3, size=(240, 200))
BOXES = [(20, 40, 100, 140), (140, 40, 220, 140)]  # two "faces" the detector double finds


def app_with(make_app, threshold: float, examples: dict | None):
    """An app serving the tiny model at `threshold` (0.01: every category passes, so every answer names Gas and
    Shield; 0.999: none does), with the counts `examples` in its sidecar and a detector double finding BOXES."""
    app = make_app(threshold=threshold)
    classifier = app.extensions["maskclassifier"]
    if examples is not None:
        classifier.sidecar = replace(classifier.sidecar, training={"dataset": {"examples": examples}})
    app.extensions["face_detector"] = KnownFaces(BOXES, [0.99, 0.98], PHOTO.size)
    return app


@pytest.fixture(scope="module")
def naming(make_app):
    return app_with(make_app, 0.01, EXAMPLES)


@pytest.fixture(scope="module")
def not_naming(make_app):
    return app_with(make_app, 0.999, EXAMPLES)


def test_the_api_describes_the_rule_and_the_counts(naming):
    model = naming.test_client().get("/api/model").get_json()
    assert model["synthetic_categories"] == ["Gas", "Shield"]
    assert model["synthetic_note"] == f"{GAS_NOTE} {SHIELD_NOTE}"
    assert model["training_examples"]["Shield"] == {"real": 8, "drawn": 1665}
    assert "at least 50%" in model["synthetic_rule"]


@pytest.mark.parametrize("query", ["", "?faces=off", "?faces=auto", "?faces=on"])
def test_predict_carries_the_note_with_its_counts(naming, not_naming, query):
    body = naming.test_client().post(f"/api/predict{query}", data=upload(encode(PHOTO))).get_json()
    assert "Shield" in body["labels"] and body["synthetic_note"] == f"{GAS_NOTE} {SHIELD_NOTE}"
    if query == "?faces=on":
        assert len(body["faces"]) == 2 and all("Shield" in face["labels"] for face in body["faces"])
    quiet = not_naming.test_client().post(f"/api/predict{query}", data=upload(encode(PHOTO))).get_json()
    assert "synthetic_note" not in quiet


def test_only_the_named_flagged_category_is_noted(make_app):
    """A category that is mostly real (Medical here) gets no note, even when named; one that is drawn gets its own."""
    app = app_with(make_app, 0.01, {**EXAMPLES, "Gas": {"real": 900, "drawn": 100}})
    body = app.test_client().post("/api/predict", data=upload(encode(PHOTO))).get_json()
    assert "Medical" in body["labels"] and body["synthetic_note"] == SHIELD_NOTE
    real_only = app_with(make_app, 0.01, {name: {"real": 10, "drawn": 0} for name in EXAMPLES})
    assert "synthetic_note" not in real_only.test_client().post("/api/predict", data=upload(encode(PHOTO))).get_json()


def test_live_frames_carry_the_note(naming, not_naming):
    body = naming.test_client().post("/api/frame", data=upload(encode(PHOTO))).get_json()
    assert len(body["faces"]) == 2 and body["synthetic_note"] == f"{GAS_NOTE} {SHIELD_NOTE}"
    assert "synthetic_note" not in not_naming.test_client().post("/api/frame", data=upload(encode(PHOTO))).get_json()


def test_the_annotated_photo_carries_the_note_under_it(naming, not_naming):
    noted = naming.test_client().post("/api/annotate", data=upload(encode(PHOTO)))
    assert noted.status_code == 200 and noted.headers["X-Synthetic-Note"] == f"{GAS_NOTE} {SHIELD_NOTE}"
    picture = Image.open(io.BytesIO(noted.data))
    assert picture.width == PHOTO.width and picture.height > PHOTO.height  # a band under the photo, nothing covered
    band = picture.crop((0, PHOTO.height + 2, picture.width, picture.height)).convert("L")
    assert band.getextrema()[0] < 100, "the band has dark writing on it"
    plain = not_naming.test_client().post("/api/annotate", data=upload(encode(PHOTO)))
    assert "X-Synthetic-Note" not in plain.headers and Image.open(io.BytesIO(plain.data)).size == PHOTO.size


def test_the_page_shows_the_note_with_its_counts(naming, not_naming):
    for mode in ("off", "on"):
        page = naming.test_client().post("/", data={**upload(encode(PHOTO)), "faces": mode}).get_data(as_text=True)
        assert f'<p class="drawn">{GAS_NOTE} {SHIELD_NOTE}</p>' in page, mode
        quiet = not_naming.test_client().post("/", data={**upload(encode(PHOTO)), "faces": mode})
        assert '<p class="drawn">' not in quiet.get_data(as_text=True), mode


def test_the_whole_photo_answer_of_a_422_carries_the_note(naming):
    app = naming
    detector = app.extensions["face_detector"]

    class SlowDetector:
        def detect(self, image, deadline=None):
            Countdown(0).check("face proposals")  # the budget is spent before any face is found

    app.extensions["face_detector"] = SlowDetector()
    try:
        body = app.test_client().post("/api/predict?faces=on", data=upload(encode(PHOTO))).get_json()
    finally:
        app.extensions["face_detector"] = detector
    assert body["error"] == "too_many_faces"
    assert body["photo"]["synthetic_note"] == f"{GAS_NOTE} {SHIELD_NOTE}"


def test_the_shipped_sidecar_records_counts_that_flag_gas_and_shield():
    """models/export.json as scripts/sidecar_counts.py wrote it: valid, and the rule flags Gas and Shield."""
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "models" / "export.json"
    sidecar = Sidecar.from_json(json.loads(path.read_text()), path)
    examples = sidecar.training_examples
    assert mostly_drawn(examples) == ["Gas", "Shield"] == sidecar.training["dataset"]["synthetic_categories"]
    assert examples["Shield"]["real"] > 0, "the real face shields the corrections found"
