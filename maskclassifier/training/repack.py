"""Re-export a learner so it loads with plain `fastai.learner.load_learner` outside this project.

    python -m maskclassifier.training.repack models/export.pkl

Exports written before `export_portable` name this project's ImageReader by reference (the shipped model's did:
`maskclassifier.dataset.ImageReader`), and fastai 2.8.12 then fails in the owner's notebook with
"UnboundLocalError: cannot access local variable 'res'". This reads such an export here (lending the modules that
have moved since, such as `maskclassifier.dataset`, under their old names while it reads), writes it again with that
code pickled by value (same weights, vocab and transforms) and updates the sidecar's sha256. The ONNX twin is then
stale by its record (not by its weights): re-export it with `python -m maskclassifier.export_onnx MODEL.pkl`.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from maskclassifier.core.cli import silence_fastai_jit_warning

silence_fastai_jit_warning()  # before fastai is imported

import torch  # noqa: E402

from maskclassifier.classifier.learner_file import read_learner  # noqa: E402
from maskclassifier.core.errors import ModelLoadError  # noqa: E402
from maskclassifier.core.sidecar import read_sidecar, sha256_file  # noqa: E402
from maskclassifier.training.errors import TrainingError  # noqa: E402
from maskclassifier.training.export import export_portable, project_references  # noqa: E402

# Project modules that old exports name by reference, and where that code lives now: the training layer's reader
# was `maskclassifier.dataset` before it became a subpackage (the class is the same).
MOVED_MODULES = {"maskclassifier.dataset": "maskclassifier.training.dataset"}


@contextmanager
def moved_modules_lent() -> Iterator[None]:
    """While inside, the moved modules can be imported under their old names, so an old export unpickles."""
    lent = [old for old in MOVED_MODULES if old not in sys.modules]
    for old in lent:
        sys.modules[old] = importlib.import_module(MOVED_MODULES[old])
    try:
        yield
    finally:
        for old in lent:
            sys.modules.pop(old, None)


def repack(model_path: Path) -> bool:
    """Rewrite `model_path` in place (through a temporary file beside it); False when it was portable already.

    ModelLoadError when it cannot be read, TrainingError when the result would still name project code.
    """
    if not project_references(model_path):
        return False
    with moved_modules_lent():
        learn = read_learner(model_path)
    weights = {name: tensor.clone() for name, tensor in learn.model.state_dict().items()}
    learn.path = Path(".")  # fastai's default, as training exports
    partial = model_path.with_name(model_path.name + ".partial")
    try:
        export_portable(learn, partial.resolve())
        reread = read_learner(partial)
        if any(not torch.equal(weights[name], tensor) for name, tensor in reread.model.state_dict().items()):
            raise TrainingError(f"{partial}: the weights changed on the way; {model_path} is left as it was")
        partial.replace(model_path)
    finally:
        partial.unlink(missing_ok=True)
    sidecar = read_sidecar(model_path)
    if sidecar is not None:
        sidecar.sha256 = sha256_file(model_path)
        sidecar.write(model_path)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path, help="a fastai export (.pkl); rewritten in place")
    args = parser.parse_args(argv)
    try:
        changed = repack(args.model)
    except (ModelLoadError, TrainingError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if changed:
        print(f"rewrote {args.model} so it loads without this project; its sidecar's sha256 is updated. "
              f"Re-export the ONNX twin: python -m maskclassifier.export_onnx {args.model}")
    else:
        print(f"{args.model} already loads without this project; nothing to do")
    return 0


if __name__ == "__main__":
    sys.exit(main())
