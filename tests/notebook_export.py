"""Train and export a tiny learner exactly the way the original notebook does, for the app's tests.

Run as a script (its own __main__, with plain get_x/get_y functions, as in a notebook):

    python tests/notebook_export.py IMAGES_DIR CSV OUT.pkl [--size 64]

The DataFrame has `fname` and space-separated `labels`; the learner is a from-scratch ResNet-18 so no
weights are needed, trained for one epoch on a few dozen generated images.
"""

import argparse
from pathlib import Path

import pandas as pd
from fastai.vision.all import (
    DataBlock,
    ImageBlock,
    MultiCategoryBlock,
    RandomSplitter,
    Resize,
    accuracy_multi,
    aug_transforms,
    vision_learner,
)
from torchvision.models import resnet18

parser = argparse.ArgumentParser()
parser.add_argument("images", type=Path)
parser.add_argument("csv", type=Path)
parser.add_argument("out", type=Path)
parser.add_argument("--size", type=int, default=64)
args = parser.parse_args()

path = args.images
df = pd.read_csv(args.csv)


def get_x(r):
    return path / r["fname"]


def get_y(r):
    return r["labels"].split(" ")


dblock = DataBlock(
    blocks=(ImageBlock, MultiCategoryBlock),
    splitter=RandomSplitter(seed=42),
    get_x=get_x,
    get_y=get_y,
    item_tfms=Resize(int(args.size * 1.5)),
    batch_tfms=aug_transforms(size=args.size, min_scale=0.75),
)
dls = dblock.dataloaders(df, bs=16, num_workers=0)
learn = vision_learner(dls, resnet18, pretrained=False, metrics=accuracy_multi)
learn.fine_tune(1, freeze_epochs=0)
learn.path = args.out.parent
learn.export(args.out.name)
