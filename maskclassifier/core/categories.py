"""Everything said about a category, in one place: its title and description on the page, its tone (the colour of
its answers on the page, the photo's boxes and the colour key), the short name written by a face's box, and how
a face with it is counted in a sentence.

Leaf module. The vocab itself comes from the model (`Classifier.vocab`); a model with categories not listed here
still works, with the category's own name as its title and the neutral colour.
"""

from __future__ import annotations

from dataclasses import dataclass

# One colour language on the page, the photo's boxes and the annotated JPEG: a mask is "ok" (green), a bare face a
# "warn"ing (orange), and "neutral" grey for everything that is not an answer about a mask (not a face, not sure).
# White text on each colour keeps a contrast ratio above 4.5:1 (WCAG AA).
TONE_COLOURS = {"ok": "#1a7f37", "warn": "#bc4c00", "neutral": "#6e7781"}


@dataclass(frozen=True)
class Category:
    name: str  # as in the model's vocab
    title: str  # what the page calls it
    description: str
    tone: str  # "ok", "warn" or "neutral": the colour of its answers everywhere (TONE_COLOURS)
    short: str  # written by a face's box, where room is scarce
    phrase: str  # how a face with it is counted in a sentence: "3 with no mask"

    @property
    def colour(self) -> str:
        return TONE_COLOURS[self.tone]


CATEGORIES = {category.name: category for category in [
    Category("-", "Not a face or mask photo", "Objects or scenes without a face.", "neutral", "not a face",
             "not a face"),
    Category("Cloth", "Cloth mask", "A fabric face covering, often patterned or home-made.", "ok", "Cloth",
             "with a cloth mask"),
    Category("Gas", "Gas mask / respirator with filters", "A half- or full-face respirator with filter cartridges.",
             "ok", "Gas", "with a gas mask"),
    Category("KN95", "KN95 / N95 respirator", "A moulded or folded high-filtration respirator (also FFP2).", "ok",
             "KN95", "with a KN95 mask"),
    Category("Medical", "Surgical / medical mask", "A pleated disposable mask, usually blue or white.", "ok",
             "Medical", "with a surgical mask"),
    Category("No_mask!", "No mask on the face", "A bare face: nothing covers the nose and mouth.", "warn", "no mask",
             "with no mask"),
    Category("Shield", "Face shield", "A clear plastic visor in front of the face.", "ok", "Shield",
             "with a face shield"),
]}
UNSURE_COLOUR = TONE_COLOURS["neutral"]  # a face for which no category passed the threshold


def category(name: str) -> Category:
    """The facts for `name`; for a category not listed, its own name and the neutral tone."""
    if name in CATEGORIES:
        return CATEGORIES[name]
    return Category(name, name, "", "neutral", name, f"with {name}")
