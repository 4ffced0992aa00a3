"""Reading a fastai export (`learn.export()`), with one clear line for every way it can fail.

Classifier layer (torch, fastai): the fastai backend serves what it reads; training starts from it (--init-from).
"""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path

import torch
from fastai.learner import Learner

from maskclassifier.core.errors import ModelLoadError


def read_learner(path: Path) -> Learner:
    """torch.load the export, turning each way it can fail into one line that says how to fix it.

    fastai's own load_learner swallows some ImportErrors and then fails on an unbound name, so the
    file is read here directly, with the same arguments.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch/fastai warn that pickle is unsafe: the path is ours, not a user's
            learner = torch.load(path, map_location="cpu", weights_only=False)
    except ImportError as exc:
        if any(old in str(exc) or old == exc.name for old in ("fastcore.transform", "fastcore.dispatch")):
            raise ModelLoadError(
                f"{path} was exported with fastai < 2.8 (it needs fastcore.transform/dispatch, gone in fastai 2.8); "
                "retrain it with this project's fastai 2.8.12 (python -m maskclassifier.train)"
            ) from None
        if (exc.name or "").split(".")[0] == "maskclassifier":  # project code it names by reference has moved
            raise ModelLoadError(
                f"{path} refers to this project's module {exc.name!r}, which no longer exists; rewrite it with: "
                f"python -m maskclassifier.training.repack {path}"
            ) from None
        raise ModelLoadError(f"{path} needs the Python module {exc.name!r}, which is not installed") from None
    except AttributeError as exc:
        raise ModelLoadError(
            f"{path} refers to code that does not exist here ({exc}); it was exported with another fastai version "
            "or with custom functions that are not importable"
        ) from None
    except (TypeError, ValueError, SystemError) as exc:
        if "code" in str(exc) or "argument" in str(exc):
            raise ModelLoadError(
                f"{path} was exported under another Python version ({exc}); "
                "fastai exports load only under the Python minor version that wrote them (see .python-version)"
            ) from None
        raise ModelLoadError(f"{path} is not a fastai learner export ({exc})") from None
    except (pickle.UnpicklingError, EOFError, RuntimeError, OSError) as exc:
        raise ModelLoadError(f"{path} is not a fastai learner export (it cannot be unpickled: {exc})") from None
    if not isinstance(learner, Learner):
        raise ModelLoadError(
            f"{path} holds a {type(learner).__name__}, not a fastai Learner; export one with learn.export()")
    return learner
