"""Which parts of a window photo a model reads as a face shield (issue 28).

    .venv/bin/python -m benchmarks.shield_cues [--model models/export.pkl] [--save DIR]

Model 12 calls the tests' photo of the astronaut behind a sash window (tests/helpers.py `through_window`) "Face
shield" 0.99 though nothing is over her face. This draws that photo for each shipped example with each of its
parts left out, and with each part alone (WINDOW_PARTS: the sky's reflection, one glare streak, the frame at the
photo's edges, a glazing bar each side of the face, the meeting rail below the chin), and prints the whole
photo's Shield probability for each: the parts whose removal lowers it are what the model takes for a shield.
--save DIR writes the heat-map of Shield (`/api/explain`'s: Grad-CAM for a .pkl, occlusion for an .onnx) of each
full window photo there, to compare with the drawn shields of the dataset. Bounded: 4 examples x 12 photos, one
pass each, plus 4 heat-maps with --save: seconds on 2 cores (about 0.6 s a heat-map for an .onnx).
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT / "tests") not in sys.path:
    sys.path.insert(0, str(ROOT / "tests"))

from helpers import EXAMPLE_LABELS, WINDOW_PARTS, example, through_window  # noqa: E402
from maskclassifier.classifier.classifier import load_classifier  # noqa: E402
from maskclassifier.classifier.explain import explain, overlay  # noqa: E402
from maskclassifier.core.cli import silence_fastai_jit_warning  # noqa: E402


def variants() -> dict[str, tuple[str, ...]]:
    """Column name -> the window parts drawn: all, all but one, each alone, none."""
    found = {"window": WINDOW_PARTS}
    found.update({f"no {part}": tuple(p for p in WINDOW_PARTS if p != part) for part in WINDOW_PARTS})
    found.update({f"{part} only": (part,) for part in WINDOW_PARTS})
    found["no window"] = ()
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "export.pkl")
    parser.add_argument("--save", type=Path, help="write the Shield heat-map of each full window photo here")
    args = parser.parse_args(argv)
    silence_fastai_jit_warning()
    classifier = load_classifier(args.model, torch_threads=1)
    shield = classifier.vocab.index("Shield")
    columns = variants()
    print(f"# {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {args.model}: Shield probability of the whole photo "
          f"(threshold {classifier.threshold:.2f})")
    print("| part(s) drawn | " + " | ".join(EXAMPLE_LABELS) + " |")
    print("|---" * (len(EXAMPLE_LABELS) + 1) + "|")
    photos = {name: example(name) for name in EXAMPLE_LABELS}
    for column, parts in columns.items():
        drawn = [through_window(photo, parts=parts) for photo in photos.values()]
        values = classifier.probabilities(drawn)[:, shield]
        print(f"| {column} | " + " | ".join(f"{value:.2f}" for value in values) + " |")
    if args.save:
        args.save.mkdir(parents=True, exist_ok=True)
        for name, photo in photos.items():
            window = through_window(photo)
            overlay(window, explain(classifier, window, "Shield"), 512).save(args.save / f"window-{name}-shield.png")
        print(f"heat-maps of Shield written to {args.save}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
