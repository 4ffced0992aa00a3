"""The portable export: the learner written with this project's code that it holds pickled by value, checked to
name none of it by reference, so the model file loads with plain fastai `load_learner` outside the project.
"""

from __future__ import annotations

import pickletools
import sys
import zipfile
from pathlib import Path

import cloudpickle

from maskclassifier.training.dataset import ImageReader
from maskclassifier.training.errors import TrainingError


def project_references(model_path: Path) -> set[str]:
    """The `module name` pairs of this project's code that a fastai export imports by name when it is loaded.

    fastai exports with pickle protocol 2, where every class or function pickled by reference is one GLOBAL
    opcode ("module name"); an export that names none loads with plain `load_learner` outside this project.
    """
    with zipfile.ZipFile(model_path) as archive:
        pickled = archive.read(next(name for name in archive.namelist() if name.endswith("/data.pkl")))
    return {str(argument) for opcode, argument, _ in pickletools.genops(pickled)
            if opcode.name == "GLOBAL" and str(argument).split()[0].split(".")[0] == "maskclassifier"}


def export_portable(learn, model_path: Path) -> None:
    """`learn.export(model_path)`, with this project's code that the learner holds (the DataBlock's get_x,
    ImageReader) pickled by value, so the owner's notebook can `load_learner` it without this package.

    Pickled by reference, fastai 2.8.12 then fails outside the project with "UnboundLocalError: cannot access local
    variable 'res'". TrainingError if the export still names project code (a new project class in the learner
    whose module is not registered here).
    """
    module = sys.modules[ImageReader.__module__]
    cloudpickle.register_pickle_by_value(module)
    try:
        learn.export(model_path)
    finally:
        cloudpickle.unregister_pickle_by_value(module)
    left = project_references(model_path)
    if left:
        raise TrainingError(f"{model_path} still refers to this project's code by name ({', '.join(sorted(left))}); "
                            "it would not load outside the project")
