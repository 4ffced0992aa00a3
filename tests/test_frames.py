"""Issue 28's training-side drawings: hard negatives for Shield round bare and masked faces (frames, windows,
glasses, visors, a phone beside the face), the photo of a phone showing a face, and realistic shields mostly over
masks; the labels each keeps or gets."""

from __future__ import annotations

import random

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from datasets import astronaut_head
from maskclassifier.classifier.faces import load_detector
from maskclassifier.training.dataset import LabelledData
from maskclassifier.training.synthetic import frames
from maskclassifier.training.synthetic.augment import Augmentation, AugmentingReader
from maskclassifier.training.synthetic.renderings import draw_real_shield
from maskclassifier.training.training_set import REAL_SHIELD_ON_MASKS, add_renderings, frame_donors, mark_faces


@pytest.fixture(scope="module")
def face():
    photo = Image.new("RGB", (300, 300), (128, 128, 128))
    photo.paste(astronaut_head(), (60, 40))
    (found,) = load_detector().detect(photo).faces
    return photo, found.box


DRAWINGS = {**frames.FRAMES, "screen_photo": frames.render_screen_photo, "real_shield": draw_real_shield}


@pytest.mark.parametrize("name", sorted(DRAWINGS))
def test_each_drawing_is_a_new_rgb_image_of_the_same_size_repeatable_and_changed(face, name):
    photo, box = face
    first = DRAWINGS[name](photo, box, np.random.default_rng(3))
    again = DRAWINGS[name](photo, box, np.random.default_rng(3))
    assert first.mode == "RGB" and first.size == photo.size and first is not photo
    assert first.tobytes() == again.tobytes()
    assert np.abs(np.asarray(first, float) - np.asarray(photo, float)).mean() > 0.5
    assert photo.getpixel((5, 5)) == (128, 128, 128)  # the input is left alone


@pytest.mark.parametrize("name", ["picture_frame", "window", "visor", "screen_beside"])
def test_frames_leave_the_mouth_and_nose_alone(face, name):
    """Drawn round the face, not over it: the lower face (nose to mouth) changes far less than with a mask."""
    photo, box = face
    x0, y0, x1, y1 = box
    region = (slice(y0 + (y1 - y0) // 2, y1 - (y1 - y0) // 10), slice(x0 + (x1 - x0) // 4, x1 - (x1 - x0) // 4))
    changes = []
    for seed in range(6):
        drawn = frames.FRAMES[name](photo, box, np.random.default_rng(seed))
        changes.append(np.abs(np.asarray(drawn, float)[region] - np.asarray(photo, float)[region]).mean())
    assert np.median(changes) < 25, changes


def test_reader_draws_frames_on_bare_and_masked_faces_only_keeping_labels(tmp_path, face):
    photo, box = face
    photo.save(tmp_path / "face.png")
    text = " ".join(map(str, box))
    rows = [{"fname": "face.png", "labels": labels, "is_valid": False, "face": text, "crop": "", "render": ""}
            for labels in ("No_mask!", "Medical", "KN95 Shield", "Gas")]
    donors = frame_donors(LabelledData(pd.DataFrame(rows), tmp_path))
    assert set(donors) == {"No_mask!", "Medical", "KN95 Shield", "Gas"}
    reader = AugmentingReader(tmp_path, Augmentation(frames=1.0), donors)
    random.seed(0)
    for row in rows[:2]:
        assert all(not np.array_equal(np.asarray(reader(row)), np.asarray(photo)) for _ in range(5))
    for row in rows[2:]:  # a shield or respirator row: nothing drawn round it
        assert np.array_equal(np.asarray(reader(row)), np.asarray(photo))


def test_real_shields_go_mostly_over_masks_and_screens_keep_labels(tmp_path, face):
    photo, _ = face
    photo.save(tmp_path / "face.png")
    labels = ["No_mask!"] * 10 + ["Medical"] * 5 + ["KN95"] * 5 + ["Shield"]
    frame = pd.DataFrame({"fname": ["face.png"] * len(labels), "labels": labels, "is_valid": False})
    data, made = add_renderings(mark_faces(LabelledData(frame, tmp_path)), {"realshield": 10, "screen": 4}, seed=0)
    assert made == {"realshield": 10, "screen": 4}
    rendered = data.frame[data.frame["render"] != ""]
    shields = rendered[rendered["render"].str.contains("realshield")]
    assert shields["labels"].str.endswith("Shield").all()
    masked = shields["labels"] != "Shield"
    assert masked.mean() >= REAL_SHIELD_ON_MASKS - 0.1
    drawn = shields[shields["render"] != "realshield"]  # a drawn mask first, then the shield
    assert all(render.split("+")[0] in ("medical", "cloth", "kn95") for render in drawn["render"])
    screens = rendered[rendered["render"] == "screen"]
    assert set(screens["labels"]) <= {"No_mask!", "Medical", "KN95"}  # never Shield: the phone is no shield
    reader = AugmentingReader(tmp_path)
    for row in rendered.to_dict("records"):
        assert reader(row).size == photo.size


def test_train_fraction_keeps_every_shield_and_all_validation():
    from maskclassifier.training.dataset import subsample_training

    labels = ["Shield"] * 5 + ["Medical Shield"] * 3 + ["No_mask!"] * 200 + ["Cloth"] * 10
    frame = pd.DataFrame({"fname": [f"{i}.jpg" for i in range(len(labels))], "labels": labels,
                          "is_valid": [False] * 208 + [True] * 10})
    data = subsample_training(LabelledData(frame, None), 0.25, {"Shield"}, seed=0)
    kept = data.frame
    assert kept["labels"].str.contains("Shield").sum() == 8 and kept["is_valid"].sum() == 10
    assert 25 <= (kept["labels"] == "No_mask!").sum() <= 75
    assert subsample_training(LabelledData(frame, None), 1.0, {"Shield"}, seed=0).frame.equals(frame)
