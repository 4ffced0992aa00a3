"""What is trained on: the labelled set checked for a usable split, its training images' faces marked, and the rows
added round them (face close-ups, images to draw respirators, shields, masks or phones on, the faces a phone may show).

Pandas, Pillow and the face detector; no torch or fastai. `synthetic/` draws what these rows ask for when they are read.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from maskclassifier.classifier.faces import load_detector
from maskclassifier.core.facebox import crop_box
from maskclassifier.training.dataset import LabelledData, check_split, read_labelled_csv
from maskclassifier.training.errors import TrainingError
from maskclassifier.training.facecache import FaceCache
from maskclassifier.training.synthetic.augment import face_in_view
from maskclassifier.training.synthetic.renderings import shield_edge_in_photo


def load_labelled_csv(csv_path: Path, images_root: Path | None = None, merges: dict[str, str] | None = None,
                      valid_pct: float = 0.2, seed: int = 42, corrections: Path | None = None) -> LabelledData:
    """The labelled set, corrections applied, checked for a usable train/validation split."""
    data = read_labelled_csv(csv_path, images_root, merges, valid_pct, seed, corrections)
    check_split(data)
    return data


def mark_faces(data: LabelledData, cache: Path | None = None) -> LabelledData:
    """The data with a `face` column: for each training image with exactly one face found, that face's box
    ("x0 y0 x1 y1" in pixels of the image as fastai opens it, without EXIF rotation), else "". Validation rows
    get "" (nothing is drawn on them). The face close-ups, occluders and renderings are placed with it. With
    `cache` (a folder), boxes found by the same detector in an earlier run are taken from there (FaceCache).
    TrainingError when the face detector's files are missing."""
    if "face" in data.frame.columns:
        return data
    detector = load_detector()
    if detector is None:
        raise TrainingError("finding the faces of the training images needs the face detector: models/mtcnn/*.onnx "
                            "are missing (python -m maskclassifier.modelfiles.export_mtcnn writes them)")
    known = FaceCache(cache) if cache is not None else None
    frame = data.frame.assign(face="")
    training = frame.index[~frame["is_valid"]]
    for done, index in enumerate(training, start=1):
        path = data.images_root / frame.at[index, "fname"]
        box = known.get(path) if known is not None else None
        if box is None:
            with Image.open(path) as image:  # as fastai opens it: no EXIF rotation
                faces = detector.detect(image.convert("RGB")).faces
            box = " ".join(str(value) for value in faces[0].box) if len(faces) == 1 else ""
            if known is not None:
                known.put(path, box)
        frame.at[index, "face"] = box
        if done % 200 == 0 or done == len(training):
            print(f"\rfinding faces: {done}/{len(training)} training images", end="", flush=True)
    print(flush=True)
    if known is not None:
        print(f"faces of {known.hits} image(s) taken from {known.path}", flush=True)
        try:
            known.save()
        except OSError as exc:  # a read-only home or a full disk costs the next run 3 minutes, not this run
            print(f"the face boxes were not kept: {exc}", flush=True)
    return LabelledData(frame, data.images_root, data.skipped, data.corrections)


def add_face_crops(data: LabelledData, margin: float) -> tuple[LabelledData, int]:
    """Each training image with exactly one face found once more, as a close-up of that face with `margin`: the
    view the web page's automatic mode classifies next to the whole photo. Returns the data with the close-ups
    added (as rows with a `crop` box, after their image's row) and how many were added. Validation is left alone.
    """
    data = mark_faces(data)
    frame = data.frame.assign(crop="")
    rows = []
    for _, row in frame.iterrows():
        rows.append(row)
        if row["face"]:
            with Image.open(data.images_root / row["fname"]) as image:
                size = image.size
            rows.append(row.copy())
            box = tuple(int(value) for value in row["face"].split())
            rows[-1]["crop"] = " ".join(str(value) for value in crop_box(box, size, margin))
    crops = pd.DataFrame(rows)
    added = len(crops) - len(frame)
    combined = pd.concat([crops[~crops["is_valid"]], crops[crops["is_valid"]]], ignore_index=True)
    return LabelledData(combined, data.images_root, data.skipped, data.corrections), added


# The labels a rendered image gets, from the labels of the image it is drawn on: a respirator replaces whatever
# covered the mouth (drawn on bare faces only), a face shield goes over a bare face or any one mask, and a drawn
# surgical, cloth or KN95 mask goes over a bare face.
RENDERING_SOURCES = {"gas": {"No_mask!": "Gas"},
                     "shield": {"No_mask!": "Shield", "Medical": "Medical Shield", "Cloth": "Cloth Shield",
                                "KN95": "KN95 Shield"},
                     "medical": {"No_mask!": "Medical"}, "cloth": {"No_mask!": "Cloth"}, "kn95": {"No_mask!": "KN95"},
                     # issue 28. A realistic shield (renderings.draw_real_shield), mostly over a mask: see
                     # REAL_SHIELD_ON_MASKS. A photo of a phone showing the row's face (frames.render_screen_photo):
                     # the screen's face is the photo's main subject, so its labels stay (never Shield, nor `-`).
                     "realshield": {"No_mask!": "Shield", "Medical": "Medical Shield", "Cloth": "Cloth Shield",
                                    "KN95": "KN95 Shield"},
                     "screen": {"No_mask!": "No_mask!", "Medical": "Medical", "Cloth": "Cloth", "KN95": "KN95"}}
# Real shields are mostly worn over a mask (issue 28: model 12 lost the shield over surgical and KN95 masks). Of the
# `--render realshield` rows, this share goes on masked faces: real masked photos, and bare faces that get a drawn
# surgical, cloth or KN95 mask first (render "medical+realshield", labels "Medical Shield"); the rest on bare faces.
REAL_SHIELD_ON_MASKS = 0.85


def rendered_categories(counts: dict[str, int]) -> dict[str, int]:
    """{"gas": 400, "shield": 450} (renderings per kind) -> {"Gas": 400, "Shield": 450}: each kind counted under the
    category of the object it draws, the label every one of its renderings gets (RENDERING_SOURCES)."""
    drawn: dict[str, int] = {}
    for kind, count in counts.items():
        common = set.intersection(*(set(labels.split()) for labels in RENDERING_SOURCES[kind].values()))
        if len(common) != 1:  # "screen": a phone drawn round the row's own face, which keeps its labels
            continue
        (name,) = common
        drawn[name] = drawn.get(name, 0) + count
    return drawn


def _view_geometry(row, images_root: Path) -> tuple[tuple[int, int], tuple[int, int, int, int]]:
    """The size of what a row shows (its image, or its `crop` of it) and its face's box in those pixels."""
    if row.get("crop", ""):
        left, top, right, bottom = (int(value) for value in row["crop"].split())
        return (right - left, bottom - top), face_in_view(row)
    with Image.open(images_root / row["fname"]) as image:
        return image.size, face_in_view(row)


def add_renderings(data: LabelledData, counts: dict[str, int], seed: int) -> tuple[LabelledData, dict[str, int]]:
    """`counts[kind]` more training rows per kind (RENDERING_SOURCES' keys: "gas", "shield", "medical", "cloth",
    "kn95"), each a training image with one known face (close-ups included) picked at random (`seed`) from
    RENDERING_SOURCES' labels, relabelled, with `render` set so that AugmentingReader draws the respirator,
    shield or mask on it. Shields only where their edge or headband is in view (`renderings.shield_edge_in_photo`).
    Returns the data and how many rows each kind got (fewer than asked when too few images have a face)."""
    data = mark_faces(data)
    frame = data.frame.assign(render="") if "render" not in data.frame.columns else data.frame
    rng = np.random.default_rng(seed)
    added, made = [], {}
    for kind, count in counts.items():
        relabel = RENDERING_SOURCES[kind]
        pool = frame[(~frame["is_valid"]) & (frame["face"] != "") & frame["labels"].isin(relabel)]
        if kind in ("shield", "realshield"):  # a shield whose edge and band fall outside a tight crop is only a haze
            pool = pool[[shield_edge_in_photo(*_view_geometry(row, data.images_root)) for _, row in pool.iterrows()]]
        if kind == "realshield":
            picked = _real_shield_rows(pool, count, rng)
        else:
            picked = pool.iloc[rng.permutation(len(pool))[:count]].copy()
            picked["labels"] = picked["labels"].map(relabel)
            picked["render"] = kind
        added.append(picked)
        made[kind] = len(picked)
    combined = pd.concat([frame[~frame["is_valid"]], *added, frame[frame["is_valid"]]], ignore_index=True)
    return LabelledData(combined, data.images_root, data.skipped, data.corrections), made


def _real_shield_rows(pool: pd.DataFrame, count: int, rng: np.random.Generator) -> pd.DataFrame:
    """`count` rows of `pool` (one-face training images) for `--render realshield`: REAL_SHIELD_ON_MASKS of them
    masked (half real masked photos, half bare faces with a drawn mask under the shield), the rest bare."""
    masked_pool = pool[pool["labels"].isin(["Medical", "Cloth", "KN95"])]
    bare_pool = pool[pool["labels"] == "No_mask!"]
    on_masks = round(count * REAL_SHIELD_ON_MASKS)
    real_masks = min(len(masked_pool), on_masks // 2)
    drawn_masks = min(len(bare_pool), on_masks - real_masks)
    bare = min(len(bare_pool), count - real_masks - drawn_masks)

    def some(frame: pd.DataFrame, n: int) -> pd.DataFrame:
        return frame.iloc[rng.choice(len(frame), n, replace=len(frame) < n)].copy() if n else frame.iloc[:0].copy()

    masked = some(masked_pool, real_masks)
    masked["labels"] = masked["labels"] + " Shield"
    masked["render"] = "realshield"
    drawn = some(bare_pool, drawn_masks)
    kinds = rng.choice(["medical", "cloth", "kn95"], len(drawn), p=[0.5, 0.2, 0.3])  # surgical and KN95 most
    drawn["labels"] = [{"medical": "Medical", "cloth": "Cloth", "kn95": "KN95"}[k] + " Shield" for k in kinds]
    drawn["render"] = [f"{k}+realshield" for k in kinds]
    plain = some(bare_pool, bare)
    plain["labels"] = "Shield"
    plain["render"] = "realshield"
    return pd.concat([masked, drawn, plain])


def frame_donors(data: LabelledData) -> dict[str, tuple[tuple[str, str, str], ...]]:
    """labels -> ((fname, face box, crop), ...) of the training rows with one known face whose labels a frame
    drawing keeps: the faces a phone beside a face may show (AugmentingReader.donors), by the labels they share."""
    frame = data.frame
    if "face" not in frame.columns:
        return {}
    rows = frame[(~frame["is_valid"]) & (frame["face"] != "")]
    if "render" in rows.columns:
        rows = rows[rows["render"] == ""]
    crops = rows["crop"] if "crop" in rows.columns else pd.Series("", index=rows.index)
    donors: dict[str, list] = {}
    for fname, labels, face, crop in zip(rows["fname"], rows["labels"], rows["face"], crops, strict=True):
        donors.setdefault(labels, []).append((fname, face, crop))
    return {labels: tuple(pool) for labels, pool in donors.items()}
