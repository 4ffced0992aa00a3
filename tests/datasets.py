"""Small generated labelled image sets for tests: no external data needed."""

from __future__ import annotations

import csv
import random
from pathlib import Path

from PIL import Image, ImageDraw
from skimage import data

CATEGORIES = ["-", "Cloth", "Gas", "KN95", "Medical", "No_mask!", "Shield"]
COLOURS = {
    "-": (30, 140, 60),
    "Cloth": (180, 60, 160),
    "Gas": (70, 80, 100),
    "KN95": (235, 235, 235),
    "Medical": (90, 170, 220),
    "No_mask!": (220, 170, 140),
    "Shield": (200, 220, 250),
}


HEAD = (140, 20, 310, 230)  # a crop of scikit-image's astronaut photo around her head, with room for a mask
HEAD_CENTRE = (84, 97)  # the face's centre inside that crop


def astronaut_head() -> Image.Image:
    """A real bare face (scikit-image's public-domain astronaut photo), 170x210, the detector finds it."""
    return Image.fromarray(data.astronaut()).crop(HEAD)


def camera_frames(count: int = 10) -> list[Image.Image]:
    """The astronaut's head (a real face MTCNN finds) drifting across a grey 640x480 picture: a live camera's
    frames."""
    head = astronaut_head()
    frames = []
    for index in range(count):
        frame = Image.new("RGB", (640, 480), (110, 110, 110))
        frame.paste(head, (150 + 10 * index, 120))
        frames.append(frame)
    return frames


def face_like_image(labels: list[str], seed: int, size: tuple[int, int] = (96, 96)) -> Image.Image:
    """A drawn 'face' whose lower half takes the colour of its first label, with some randomness."""
    rng = random.Random(seed)
    width, height = size
    image = Image.new("RGB", size, tuple(rng.randrange(40, 200) for _ in range(3)))
    draw = ImageDraw.Draw(image)
    draw.ellipse([width * 0.2, height * 0.1, width * 0.8, height * 0.9], fill=COLOURS["No_mask!"])
    colour = tuple(min(255, max(0, c + rng.randrange(-20, 20))) for c in COLOURS[labels[0]])
    draw.rectangle([width * 0.25, height * 0.5, width * 0.75, height * 0.8], fill=colour)
    if "Shield" in labels:
        draw.rectangle([width * 0.15, height * 0.05, width * 0.85, height * 0.2], fill=COLOURS["Shield"])
    return image


def write_labelled_set(root: Path, per_category: int = 6, with_is_valid: bool = True) -> Path:
    """Images under root/images and root/labels.csv (fname, labels[, is_valid]); returns the CSV path."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    label_sets = [[c] for c in CATEGORIES] + [["Medical", "Shield"]]
    for set_index, labels in enumerate(label_sets):
        for i in range(per_category):
            fname = f"images/{set_index}-{i}.jpg"
            face_like_image(labels, seed=set_index * 100 + i).save(root / fname, quality=90)
            row = {"fname": fname, "labels": " ".join(labels)}
            if with_is_valid:
                row["is_valid"] = i % 3 == 0
            rows.append(row)
    return write_rows(rows, root / "labels.csv")


# Images whose labels are decided by where a coloured patch is: the explanation heat-map test (tests/test_explain.py)
# knows which pixels made each label. Grey noise everywhere else, so colour is found only in the patches.
PATCH_SIZE, PATCH_CELLS = 96, 3  # a 3x3 grid of 32-px cells; a patch fills one cell but a 4-px margin
PATCH_COLOURS = {"red": (220, 30, 30), "blue": (30, 60, 220)}


def patch_cell_box(cell: int) -> tuple[int, int, int, int]:
    """The cell `cell` (0..8, row by row) of the grid, as a box x0, y0, x1, y1 in pixels."""
    side = PATCH_SIZE // PATCH_CELLS
    row, col = divmod(cell, PATCH_CELLS)
    return col * side, row * side, (col + 1) * side, (row + 1) * side


def patch_image(patches: dict[str, int], seed: int) -> Image.Image:
    """Grey noise with a patch of each label's colour in its cell, e.g. {"red": 0, "blue": 4}."""
    import numpy as np

    rng = np.random.default_rng(seed)
    image = Image.fromarray(rng.integers(60, 200, (PATCH_SIZE, PATCH_SIZE), dtype=np.uint8)).convert("RGB")
    draw = ImageDraw.Draw(image)
    for label, cell in patches.items():
        x0, y0, x1, y1 = patch_cell_box(cell)
        draw.rectangle([x0 + 4, y0 + 4, x1 - 5, y1 - 5], fill=PATCH_COLOURS[label])
    return image


def write_patch_set(root: Path, count: int = 160) -> Path:
    """`count` patch images (none, red, blue, both, in turn, at random cells) under root and root/labels.csv."""
    import numpy as np

    rng = np.random.default_rng(0)
    rows = []
    for index in range(count):
        labels = [[], ["red"], ["blue"], ["red", "blue"]][index % 4]
        cells = rng.choice(PATCH_CELLS * PATCH_CELLS, size=2, replace=False)
        fname = f"{index}.png"
        patch_image(dict(zip(labels, (int(cell) for cell in cells), strict=False)), seed=index).save(root / fname)
        rows.append({"fname": fname, "labels": " ".join(labels), "is_valid": index % 8 == 0})
    return write_rows(rows, root / "labels.csv")


def write_rows(rows: list[dict], csv_path: Path) -> Path:
    """The rows as a CSV with the first row's keys as its header; returns `csv_path`."""
    with open(csv_path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return csv_path
