"""Record a trained model's real and drawn training examples per category in its sidecar, after the fact.

    .venv/bin/python scripts/sidecar_counts.py [models/export.json] [--csv PATH] [--dry-run]

Training records them itself (`training.dataset.examples`, maskclassifier/training/train.py); models trained
before that, such as the shipped one, get them from this script, counted the same way
(`maskclassifier.training.dataset.training_examples`) from what the sidecar says the run used:

- the labelled CSV (`training.options.csv`, relative to the repository root; `--csv` to point elsewhere), which
  must still have the sha256 the sidecar recorded, read with the run's merges and its corrections file
  (`training.dataset.corrections`, same sha256 check), counting each training-split row once per label, as drawn
  when its `synthetic` column is true;
- plus the images drawn anew at each read (`training.augmentation.renderings`, what `--render KIND=N` made: for
  the shipped model recipes/model12.args's gas=400, shield=450, medical=250, cloth=250, kn95=250), counted as N
  drawn examples of the drawn category, for one epoch.

It writes `training.dataset.examples` and rewrites `training.dataset.synthetic_categories` with the app's rule
(`maskclassifier.core.sidecar.mostly_drawn`), keeping every other key. The model files are untouched, so the
digests the sidecar records (`sha256`, `onnx.sha256`, `onnx.exported_from`) stay valid.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from maskclassifier.core.cli import silence_fastai_jit_warning  # noqa: E402

silence_fastai_jit_warning()  # in case a training module imports fastai, which warns at import time

from maskclassifier.core.sidecar import Sidecar, drawn_share, mostly_drawn, read_sidecar, sha256_file  # noqa: E402
from maskclassifier.training.dataset import DatasetError, parse_merges, read_labelled_rows, training_examples  # noqa: E402
from maskclassifier.training.training_set import rendered_categories  # noqa: E402


class CountError(RuntimeError):
    """The sidecar does not say enough, or its data has changed since training; the message says which."""


def counted(sidecar: Sidecar, csv_override: Path | None = None) -> dict[str, dict[str, int]]:
    """Real and drawn training examples per category of `sidecar.vocab`, from the data its run recorded.
    CountError when the CSV or corrections file is missing or not the one trained on."""
    training = sidecar.training
    options, dataset = training.get("options") or {}, training.get("dataset") or {}
    if not options.get("csv") or not sidecar.vocab:
        raise CountError("the sidecar records no training CSV (training.options.csv) or no vocab")
    csv_path = csv_override or ROOT / options["csv"]
    if not csv_path.is_file():
        raise CountError(f"{csv_path} not found: pass --csv with the CSV the model was trained on")
    if sha256_file(csv_path) != dataset.get("csv_sha256"):
        raise CountError(f"{csv_path} is not the CSV the model was trained on (its sha256 differs from "
                         "training.dataset.csv_sha256)")
    corrections = None
    if dataset.get("corrections"):
        corrections = ROOT / dataset["corrections"]["file"]
        if not corrections.is_file() or sha256_file(corrections) != dataset["corrections"]["sha256"]:
            raise CountError(f"{corrections} is missing or not the corrections file the model was trained with")
    images_root = Path(options["images_root"]) if options.get("images_root") else None
    rows = read_labelled_rows(csv_path, images_root, parse_merges(options.get("merge") or []),
                              options.get("valid_pct", 0.2), options.get("seed", 42), corrections, sidecar.vocab)
    if len(rows.skipped) != dataset.get("skipped", 0):
        raise CountError(f"{len(rows.skipped)} images are unreadable now, {dataset.get('skipped', 0)} were at training")
    renderings = (training.get("augmentation") or {}).get("renderings") or {}
    return training_examples(rows.rows, sidecar.vocab, rendered_categories(renderings))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/sidecar_counts.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sidecar", type=Path, nargs="?", default=ROOT / "models" / "export.json")
    parser.add_argument("--csv", type=Path, help="the training CSV, if not where the sidecar says")
    parser.add_argument("--dry-run", action="store_true", help="print the counts, write nothing")
    args = parser.parse_args(argv)
    model = args.sidecar.with_suffix(".pkl")
    sidecar = read_sidecar(model)
    if sidecar is None:
        print(f"error: {args.sidecar} not found", file=sys.stderr)
        return 2
    try:
        examples = counted(sidecar, args.csv)
    except (CountError, DatasetError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    flagged = mostly_drawn(examples)
    for name, counts in examples.items():
        print(f"{name:10} real {counts['real']:5}  drawn {counts['drawn']:5}  drawn share {drawn_share(counts):.3f}"
              + ("  flagged" if name in flagged else ""))
    if args.dry_run:
        return 0
    sidecar.training["dataset"]["examples"] = examples
    sidecar.training["dataset"]["synthetic_categories"] = flagged
    print(f"wrote {sidecar.write(model)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
