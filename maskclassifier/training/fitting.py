"""Fitting: the DataBlock and its DataLoaders, the batch size, lr_find's bounded sweep, bfloat16 on the CPU, and the
scratch folder for fastai's working files; and the DataLoaders the export is made with (the plain reader).
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from fastai.callback.core import Callback
from fastai.callback.schedule import valley
from fastai.torch_core import to_float
from fastai.vision.all import ColReader, ColSplitter, DataBlock, ImageBlock, MultiCategoryBlock, Resize, aug_transforms

from maskclassifier.training.dataset import ImageReader, LabelledData
from maskclassifier.training.errors import TrainingError
from maskclassifier.training.synthetic.augment import Augmentation, AugmentingReader

# lr_find's cost: fastai runs 100 steps (num_it) whatever the data, which on a few dozen images meant 50 epochs of
# progress bars and ~19 minutes for a one-epoch run. It now runs at most LR_FIND_EPOCHS epochs' worth of batches
# and at most fastai's 100 steps. Under LR_FIND_MIN_STEPS its curve says nothing (fastai's suggestion ignores the
# first tenth and the last 5 steps of a sweep from 1e-7 to 10; with 12 steps a tiny set got 4.6e-07 and learned
# nothing), so such a run takes LR_FALLBACK, fastai's default learning rate, instead.
LR_FIND_EPOCHS = 5
LR_FIND_MAX_STEPS = 100
LR_FIND_MIN_STEPS = 20
LR_FALLBACK = 1e-3


def build_dataloaders(data: LabelledData, size: int, presize: int, batch_size: int, seed: int,
                      num_workers: int | None = None, augmentation: Augmentation | None = None,
                      donors: dict | None = None):
    """The notebook's DataBlock: presize with an item Resize, then augment and resize to `size` on the batch.
    With `augmentation` (or rows to render: a `render` column), training images are read with AugmentingReader."""
    augmenting = bool(augmentation) or "render" in data.frame.columns
    reader = AugmentingReader(data.images_root, augmentation or Augmentation(), donors or {}) if augmenting else \
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
