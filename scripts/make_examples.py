"""Writes the page's clickable examples into maskclassifier/web/static/examples/, with a licence file beside each image.

Every image comes from scikit-image 0.26.0's bundled sample data (a dev requirement), whose photos are public
domain or CC0: the astronaut Eileen Collins (NASA, public domain) and a coffee cup (CC0, Rachel Michetti). The
masks are drawn over the astronaut's face by this script: they are illustrations made by the project, released
under CC0, not photos of real masks. The face's landmarks below were measured once with the MTCNN detector
(eyes at y 102, nose tip at (225, 129), mouth corners at (202, 139) and (245, 142) in the 512 x 512 photo).

Run from the repository root: .venv/bin/python scripts/make_examples.py
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter
from skimage import data

OUT = Path(__file__).resolve().parent.parent / "maskclassifier" / "web" / "static" / "examples"
PORTRAIT = (96, 0, 352, 320)  # a 256 x 320 crop of the 512 x 512 astronaut photo around her head and shoulders
GROUP_TILE = (140, 20, 310, 230)  # a tighter crop of the head for the group picture

ASTRONAUT = ("Eileen Collins, NASA astronaut: NASA Great Images database (https://flic.kr/p/r9qvLn), via "
             "scikit-image 0.26.0 (skimage/data/astronaut.png)", "Public domain (a NASA photo; no known copyright "
             "restrictions)")
COFFEE = ("Coffee cup, photo by Rachel Michetti, courtesy of Pikolo Espresso Bar, via scikit-image 0.26.0 "
          "(skimage/data/coffee.png)", "CC0 1.0 (no copyright restrictions)")
ILLUSTRATION = ("An illustration made by this project: a {mask} drawn by scripts/make_examples.py over the "
                "public-domain NASA photo of astronaut Eileen Collins (https://flic.kr/p/r9qvLn, via scikit-image "
                "0.26.0). It is not a photo of a real mask.", "CC0 1.0: the drawing is released by the project; "
                "the underlying photo is public domain")


def ear_loops(draw: ImageDraw.ImageDraw, colour: str) -> None:
    draw.line([(186, 118), (176, 104)], fill=colour, width=3)
    draw.line([(264, 120), (272, 106)], fill=colour, width=3)


def medical(image: Image.Image) -> Image.Image:
    """A pleated light-blue surgical mask from the nose bridge to under the chin, wrapping round the cheeks."""
    image = image.copy()
    draw = ImageDraw.Draw(image)
    ear_loops(draw, "#eef2f4")
    outline = [(179, 120), (204, 115), (226, 114), (248, 116), (272, 122), (270, 162), (248, 184), (226, 190),
               (204, 184), (181, 162)]
    draw.polygon(outline, fill="#8ec5e8", outline="#5b9fcf", width=2)
    for y in (134, 149, 164):  # pleats, each a darker fold under a lighter ridge
        draw.line([(186, y), (266, y + 1)], fill="#4f93c4", width=2)
        draw.line([(188, y - 3), (264, y - 2)], fill="#a9d2ee", width=1)
    draw.line([(206, 116), (246, 117)], fill="#e6eef3", width=2)  # the nose wire
    # soften the drawn edges a little, as a camera would
    box = (170, 100, 280, 200)
    image.paste(image.crop(box).filter(ImageFilter.GaussianBlur(0.8)), box[:2])
    return image


def kn95(image: Image.Image) -> Image.Image:
    """A white folded KN95 respirator: two panels meeting in a vertical fold, pointed at the chin."""
    image = image.copy()
    draw = ImageDraw.Draw(image)
    ear_loops(draw, "#f4f4f4")
    outline = [(188, 124), (205, 113), (225, 110), (246, 114), (263, 126), (258, 158), (226, 186), (194, 158)]
    draw.polygon(outline, fill="#f7f7f5", outline="#b9bcbf", width=2)
    draw.line([(225, 110), (226, 186)], fill="#c9ccce", width=2)  # the fold
    draw.line([(194, 132), (257, 133)], fill="#dcdedf", width=1)
    draw.ellipse([235, 140, 247, 152], outline="#b9bcbf", width=2)  # the valve-less print mark
    return image


def cloth(image: Image.Image) -> Image.Image:
    """A home-made cloth mask: dark blue fabric with a light check pattern and a seam down the middle."""
    image = image.copy()
    mask = Image.new("L", image.size, 0)
    shape = ImageDraw.Draw(mask)
    shape.polygon([(184, 122), (205, 115), (225, 113), (246, 116), (266, 124), (262, 158), (244, 178), (225, 184),
                   (206, 178), (188, 158)], fill=255)
    fabric = Image.new("RGB", image.size, "#2f4b7c")
    weave = ImageDraw.Draw(fabric)
    for x in range(180, 272, 8):
        weave.line([(x, 100), (x, 190)], fill="#5d79a8", width=2)
    for y in range(110, 190, 8):
        weave.line([(176, y), (272, y)], fill="#5d79a8", width=2)
    image.paste(fabric, (0, 0), mask)
    draw = ImageDraw.Draw(image)
    ear_loops(draw, "#22314f")
    draw.line([(225, 113), (225, 184)], fill="#1d2f52", width=3)  # the seam
    return image


def group(faces: list[Image.Image]) -> Image.Image:
    """Four heads in a 2 x 2 grid on grey: no mask, cloth, medical, KN95 (reading order)."""
    tiles = [face.crop(GROUP_TILE) for face in faces]
    width, height = tiles[0].size
    gap = 24
    picture = Image.new("RGB", (2 * width + 3 * gap, 2 * height + 3 * gap), (128, 128, 128))
    for index, tile in enumerate(tiles):
        picture.paste(tile, (gap + (index % 2) * (width + gap), gap + (index // 2) * (height + gap)))
    return picture


def write(name: str, image: Image.Image, source: str, licence: str) -> None:
    image.save(OUT / f"{name}.jpg", quality=88)
    (OUT / f"{name}.txt").write_text(f"File: {name}.jpg\nSource: {source}\nLicence: {licence}\n")


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    astronaut = Image.fromarray(data.astronaut())
    masked = {"cloth": cloth(astronaut), "medical": medical(astronaut), "kn95": kn95(astronaut)}
    write("no-mask", astronaut.crop(PORTRAIT), *ASTRONAUT)
    for name, mask in [("cloth", "cloth mask"), ("medical", "surgical mask"), ("kn95", "KN95 respirator")]:
        source, licence = ILLUSTRATION
        write(name, masked[name].crop(PORTRAIT), source.format(mask=mask), licence)
    source, licence = ILLUSTRATION
    write("group", group([astronaut, masked["cloth"], masked["medical"], masked["kn95"]]),
          source.format(mask="group of four copies of the face, three with drawn masks (cloth, surgical, KN95),"),
          licence)
    write("not-a-face", Image.fromarray(data.coffee()).resize((400, 267)), *COFFEE)


if __name__ == "__main__":
    main()
