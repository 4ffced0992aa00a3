"""Everything said about a category, in one place: its title and description on the page, its colour on the
photo, in the face table and the colour key, and the short name written by a face's box.

Leaf module. The vocab itself comes from the model (`Classifier.vocab`); a model with categories not listed here
still works, with the category's own name as its title and a colour of OTHER_COLOURS.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Category:
    name: str  # as in the model's vocab
    title: str  # what the page calls it
    description: str
    colour: str  # boxes, the face table and chips; white text on it must stay readable
    short: str  # written by a face's box, where room is scarce


CATEGORIES = {category.name: category for category in [
    Category("-", "Not a face or mask photo", "Objects or scenes without a face.", "#24292f", "not a face"),
    Category("Cloth", "Cloth mask", "A fabric face covering, often patterned or home-made.", "#8250df", "Cloth"),
    Category("Gas", "Gas mask / respirator with filters", "A half- or full-face respirator with filter cartridges.",
             "#7d4e00", "Gas"),
    Category("KN95", "KN95 / N95 respirator", "A moulded or folded high-filtration respirator (also FFP2).",
             "#0550ae", "KN95"),
    Category("Medical", "Surgical / medical mask", "A pleated disposable mask, usually blue or white.", "#1b7c83",
             "Medical"),
    Category("No_mask!", "No mask on the face", "A bare face: nothing covers the nose and mouth.", "#cf222e",
             "no mask"),
    Category("Shield", "Face shield", "A clear plastic visor in front of the face.", "#bc4c00", "Shield"),
]}
UNSURE_COLOUR = "#6e7781"  # a face for which no category passed the threshold
OTHER_COLOURS = ["#116329", "#a40e26", "#4c2889", "#953800", "#0a3069"]  # for models with other categories


def category(name: str, vocab: list[str] | None = None) -> Category:
    """The facts for `name`; for a category not listed, its own name and a colour chosen by its place in `vocab`."""
    if name in CATEGORIES:
        return CATEGORIES[name]
    index = vocab.index(name) if vocab and name in vocab else 0
    return Category(name, name, "", OTHER_COLOURS[index % len(OTHER_COLOURS)], name)
