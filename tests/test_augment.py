"""Training-time augmentation (issue 17): occluders over bare faces, poor light, drawn respirators and shields,
read by AugmentingReader for training rows only; the exported learner carries none of it."""

from __future__ import annotations

import json
import os
import random
import zipfile

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from datasets import astronaut_head, write_labelled_set
from helpers import TINY_OPTIONS, run_module
from maskclassifier.classifier.faces import load_detector
from maskclassifier.classifier.learner_file import read_learner
from maskclassifier.training.architecture import build_learner
from maskclassifier.training.dataset import ImageReader, LabelledData
from maskclassifier.training.export import project_references
from maskclassifier.training.fitting import build_dataloaders, with_plain_reader
from maskclassifier.training.synthetic import augment
from maskclassifier.training.synthetic.augment import Augmentation, AugmentingReader
from maskclassifier.training.training_set import add_renderings, load_labelled_csv, mark_faces

CHANGES = {**augment.OCCLUDERS, **augment.LIGHTING}


@pytest.fixture(scope="module")
def face():
    """The astronaut's head on a wider grey photo, and the box the app's detector finds for it."""
    photo = Image.new("RGB", (300, 300), (128, 128, 128))
    photo.paste(astronaut_head(), (60, 40))
    (found,) = load_detector().detect(photo).faces
    return photo, found.box


def mean_change(before: Image.Image, after: Image.Image, box) -> float:
    region = (slice(box[1], box[3]), slice(box[0], box[2]))
    return float(np.abs(np.asarray(after, float)[region] - np.asarray(before, float)[region]).mean())


def lower_face(photo: Image.Image, box) -> tuple[int, int, int, int]:
    """From the nose down to a third of a face below the chin: where every occluder is drawn."""
    x0, y0, x1, y1 = box
    return x0, y0 + (y1 - y0) // 2, x1, min(photo.height, y1 + (y1 - y0) // 3)


@pytest.mark.parametrize("name", sorted(CHANGES))
def test_each_change_is_a_new_rgb_image_of_the_same_size_and_repeatable(face, name):
    photo, box = face
    before = photo.copy()
    first = CHANGES[name](photo, box, np.random.default_rng(7))
    assert first.mode == "RGB" and first.size == photo.size
    assert np.array_equal(np.asarray(photo), np.asarray(before))  # the input is left alone
    assert np.array_equal(np.asarray(first), np.asarray(CHANGES[name](photo, box, np.random.default_rng(7))))
    assert not np.array_equal(np.asarray(first), np.asarray(CHANGES[name](photo, box, np.random.default_rng(8))))


@pytest.mark.parametrize("name", sorted(augment.OCCLUDERS))
def test_occluders_cover_the_lower_face_and_leave_the_eyes(face, name):
    photo, box = face
    x0, y0, x1, y1 = box
    height = y1 - y0
    for seed in range(5):
        out = CHANGES[name](photo, box, np.random.default_rng(seed))
        lower = lower_face(photo, box)
        eyes = (x0 + (x1 - x0) // 4, y0 + height // 6, x1 - (x1 - x0) // 4, y0 + height // 3)
        top = (0, 0, photo.width, max(1, y0 - height // 2))
        assert mean_change(photo, out, lower) > 2, (name, seed)
        assert mean_change(photo, out, lower) > 3 * mean_change(photo, out, eyes), (name, seed)
        assert mean_change(photo, out, top) < 0.5, (name, seed)  # nothing drawn well above the head


def test_a_hand_over_a_face_whose_cheeks_are_outside_the_image_takes_a_listed_tone():
    photo = Image.new("RGB", (60, 60), (200, 150, 120))
    assert augment.face_tone(photo, (10, 70, 50, 120)) == augment.SKIN_TONES[4]
    assert augment.draw_hand(photo, (10, 30, 50, 90), np.random.default_rng(0)).size == photo.size


def test_low_light_darkens_and_adds_noise(face):
    photo, box = face
    out = augment.low_light(photo, box, np.random.default_rng(0))
    assert np.asarray(out, float).mean() < 0.85 * np.asarray(photo, float).mean()
    flat = np.asarray(out, float)[:30, :30]  # the plain grey background now has sensor noise
    assert flat.std() > 1


def test_backlight_darkens_the_face_more_than_the_background(face):
    photo, box = face
    out = augment.backlight(photo, box, np.random.default_rng(0))
    corner = (0, 0, 40, 40)
    assert mean_change(photo, out, corner) > 0
    assert np.asarray(out, float)[box[1]:box[3], box[0]:box[2]].mean() < np.asarray(photo, float)[
        box[1]:box[3], box[0]:box[2]].mean()
    assert np.asarray(out, float)[:40, :40].mean() > np.asarray(photo, float)[:40, :40].mean()


def reader_rows(tmp_path, face) -> list[dict]:
    photo, box = face
    photo.save(tmp_path / "face.png")
    face_text = " ".join(map(str, box))
    return [{"fname": "face.png", "labels": "No_mask!", "is_valid": False, "face": face_text, "crop": "", "render": ""},
            {"fname": "face.png", "labels": "Medical", "is_valid": False, "face": face_text, "crop": "", "render": ""},
            {"fname": "face.png", "labels": "No_mask!", "is_valid": True, "face": "", "crop": "", "render": ""},
            {"fname": "face.png", "labels": "No_mask!", "is_valid": False, "face": face_text,
             "crop": f"{box[0] - 10} {box[1] - 10} {box[2] + 10} {box[3] + 10}", "render": ""}]


def test_reader_occludes_bare_training_faces_only_and_never_validation(tmp_path, face):
    photo, box = face
    bare, medical, valid, close_up = reader_rows(tmp_path, face)
    reader = AugmentingReader(tmp_path, Augmentation(occluders=1.0))
    random.seed(0)  # the reader draws its choices from Python's random (fastai seeds it per data-loading worker)
    for _ in range(5):  # every read of a bare face gets an occluder
        assert mean_change(photo, reader(bare), lower_face(photo, box)) > 2
    assert np.array_equal(np.asarray(reader(medical)), np.asarray(photo))  # a mask's label would not survive
    assert reader(valid) == tmp_path / "face.png"  # validation: the plain ImageReader's answer
    plain = ImageReader(tmp_path)(close_up)  # the close-up's own coordinates: the box moved with the crop
    reads = [reader(close_up) for _ in range(8)]  # a scarf under the chin may fall outside the close-up
    assert all(read.size == plain.size for read in reads)
    assert sum(mean_change(plain, read, (10, 10, plain.width - 10, plain.height - 10)) > 2 for read in reads) >= 5


def test_reader_relights_any_training_row_by_chance(tmp_path, face):
    photo, _ = face
    rows = reader_rows(tmp_path, face)
    reader = AugmentingReader(tmp_path, Augmentation(lighting=0.5))
    random.seed(0)
    changed = [not np.array_equal(np.asarray(reader(rows[1])), np.asarray(photo)) for _ in range(40)]
    assert 5 < sum(changed) < 35  # about half, drawn anew on each read


def test_renderings_relabel_one_face_training_images_and_leave_validation(tmp_path, face):
    photo, _ = face
    photo.save(tmp_path / "face.png")
    Image.new("RGB", (200, 200), (90, 140, 60)).save(tmp_path / "grass.png")
    frame = pd.DataFrame({"fname": ["face.png", "face.png", "grass.png", "face.png", "face.png"],
                          "labels": ["No_mask!", "Medical", "No_mask!", "-", "No_mask!"],
                          "is_valid": [False, False, False, False, True]})
    data, made = add_renderings(mark_faces(LabelledData(frame, tmp_path)), {"gas": 5, "shield": 1}, seed=0)
    assert made == {"gas": 1, "shield": 1}  # one bare face with a face found; grass has none
    rows = data.frame.to_dict("records")
    rendered = [(row["labels"], row["render"]) for row in rows if row["render"]]
    assert rendered[0] == ("Gas", "gas") and rendered[1] in {("Shield", "shield"), ("Medical Shield", "shield")}
    assert [row["is_valid"] for row in rows] == [False] * 6 + [True]  # validation rows last and not rendered
    assert rows[-1]["face"] == "" and not rows[-1]["render"]


def test_face_boxes_are_kept_between_runs_until_an_image_changes(tmp_path, face, capsys):
    photo, box = face
    for name in ("a.png", "b.png"):
        photo.save(tmp_path / name)
    Image.new("RGB", (200, 200), (90, 140, 60)).save(tmp_path / "grass.png")
    frame = pd.DataFrame({"fname": ["a.png", "b.png", "grass.png", "a.png"], "labels": ["No_mask!"] * 4,
                          "is_valid": [False, False, False, True]})
    cache = tmp_path / "cache"
    first = mark_faces(LabelledData(frame, tmp_path), cache).frame
    assert first["face"].tolist()[2:] == ["", ""] and first["face"][0] == first["face"][1] != ""
    assert "faces of 0 image(s) taken from" in capsys.readouterr().out
    again = mark_faces(LabelledData(frame, tmp_path), cache).frame
    assert again["face"].tolist() == first["face"].tolist()
    assert "faces of 3 image(s) taken from" in capsys.readouterr().out  # the three training rows
    Image.new("RGB", photo.size, (128, 128, 128)).save(tmp_path / "b.png")  # replaced: no face in it now
    os.utime(tmp_path / "b.png", ns=(0, 10 ** 9))
    changed = mark_faces(LabelledData(frame, tmp_path), cache).frame
    assert "faces of 2 image(s) taken from" in capsys.readouterr().out
    assert changed["face"].tolist() == [first["face"][0], "", "", ""]


@pytest.mark.slow  # trains for real
def test_training_cli_augments_records_it_and_exports_without_it(tmp_path):
    csv_path = write_labelled_set(tmp_path / "data", per_category=3)
    for index in range(2):
        photo = Image.new("RGB", (260, 280), (128, 128, 128))
        photo.paste(astronaut_head(), (40 + 10 * index, 30))
        photo.save(tmp_path / "data" / "images" / f"astronaut{index}.jpg")
    with open(csv_path, "a") as handle:
        handle.write("images/astronaut0.jpg,No_mask!,False\nimages/astronaut1.jpg,No_mask!,False\n")
    out = tmp_path / "out"
    result = run_module("maskclassifier.train", "--csv", str(csv_path), "--out", str(out), "--occluders", "0.5",
                        "--lighting", "0.3", "--render", "gas=1", "--render", "shield=2", "--lr", "1e-3",
                        *TINY_OPTIONS)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "--render: 1 gas, 2 shield images" in result.stdout
    assert f"taken from {os.environ['XDG_CACHE_HOME']}/maskclassifier/faces-" in result.stdout
    sidecar = json.loads((out / "export.json").read_text())
    assert sidecar["training"]["augmentation"] == {"occluders": 0.5, "lighting": 0.3, "frames": 0.0,
                                                   "renderings": {"gas": 1, "shield": 2}}
    card = (out / "MODEL_CARD.md").read_text()
    assert "50% of the reads of a bare face" in card and "1 images with a respirator" in card
    assert project_references(out / "export.pkl") == set()  # loads outside the project
    with zipfile.ZipFile(out / "export.pkl") as archive:
        pickled = archive.read(next(name for name in archive.namelist() if name.endswith("/data.pkl")))
    assert b"ImageReader" in pickled and b"AugmentingReader" not in pickled and b"draw_hand" not in pickled
    assert read_learner(out / "export.pkl").dls.vocab == sidecar["vocab"]


def test_the_export_keeps_the_trained_batch_transforms_with_the_plain_reader(tmp_path):
    """vision_learner adds Normalize to the training DataLoaders; the export's DataLoaders, rebuilt with the plain
    reader, must keep it (the first version of this lost it, and the app then fed the model unnormalised pixels)."""
    from fastai.vision.all import Normalize, imagenet_stats

    data = load_labelled_csv(write_labelled_set(tmp_path, per_category=2))
    dls = build_dataloaders(data, 32, 40, 4, seed=0, num_workers=0, augmentation=Augmentation(lighting=0.5))
    learn = build_learner(dls, "resnet18", pretrained=False, head_features=8)
    learn.dls.add_tfms([Normalize.from_stats(*imagenet_stats)], "after_batch")
    with_plain_reader(learn, data, 32, 40, 4, seed=0, num_workers=0)
    assert "Normalize" in repr(learn.dls.after_batch) and "Normalize" in repr(learn.dls.valid.after_batch)
    readers = repr(learn.dls.train_ds.tls[0].tfms)
    assert "ImageReader" in readers and "AugmentingReader" not in readers


@pytest.mark.parametrize("option, message", [
    (["--occluders", "1.5"], "--occluders must be between 0 and 1"),
    (["--render", "hat=3"], "--render takes KIND=COUNT"),
    (["--render", "gas=0"], "--render takes KIND=COUNT"),
])
def test_train_refuses_bad_augmentation_options(option, message, capsys):
    from maskclassifier.training.train import parse_args

    with pytest.raises(SystemExit):
        parse_args(["--csv", "labels.csv", *option])
    assert message in capsys.readouterr().err



def test_drawn_ordinary_masks_go_on_bare_faces_with_their_labels_and_the_reader_draws_them(tmp_path, face):
    from maskclassifier.training.train import parse_renderings

    counts = parse_renderings(["medical=2", "cloth=1", "kn95=1"])
    assert counts == {"medical": 2, "cloth": 1, "kn95": 1}
    photo, box = face
    photo.save(tmp_path / "face.png")
    frame = pd.DataFrame({"fname": ["face.png", "face.png", "face.png"], "labels": ["No_mask!", "Medical", "No_mask!"],
                          "is_valid": [False, False, True]})
    data, made = add_renderings(mark_faces(LabelledData(frame, tmp_path)), counts, seed=0)
    assert made == {"medical": 1, "cloth": 1, "kn95": 1}  # one bare training face; the Medical photo is no source
    rendered = [row for row in data.frame.to_dict("records") if row["render"]]
    assert [(row["labels"], row["render"]) for row in rendered] == [("Medical", "medical"), ("Cloth", "cloth"),
                                                                    ("KN95", "kn95")]
    reader = AugmentingReader(tmp_path)
    for row in rendered:  # drawn over the lower face at each read
        assert mean_change(photo, reader(row), lower_face(photo, box)) > 10
