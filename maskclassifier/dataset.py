"""Learners exported before the training layer became a subpackage pickle `maskclassifier.dataset.ImageReader` by
reference (the shipped models/export.pkl among them): this name keeps them loadable. New code imports
maskclassifier.training.dataset."""

from maskclassifier.training.dataset import ImageReader  # noqa: F401
