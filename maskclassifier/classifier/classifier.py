"""Loading a classifier and turning its probabilities into a thresholded answer.

This module imports neither torch nor fastai: the backend is chosen from the model file's suffix
(`.pkl` -> fastai, `.onnx` -> ONNX Runtime) and imported only then, so the slim install stays slim.
"""

from __future__ import annotations

import math
import platform
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np
from PIL import Image

from maskclassifier.core.capacity import Deadline
from maskclassifier.core.categories import category
from maskclassifier.core.config import full_install
from maskclassifier.core.errors import ModelLoadError
from maskclassifier.core.images import load_image
from maskclassifier.core.sidecar import (
    DEFAULT_THRESHOLD,
    DEFAULT_TTA,
    DRAWN_SHARE_FLAG,
    Sidecar,
    mostly_drawn,
    read_sidecar,
    resolve,
    sha256_file,
    sidecar_path,
)
from maskclassifier.core.threshold import above_threshold

if TYPE_CHECKING:
    from maskclassifier.classifier.heatmap import Explanation

# Images classified in one forward pass. A photo's 50 faces in one batch raised the worker's peak memory by
# 780 MB (MobileNetV2's activations at 256 px are about 15 MB an image); batches of 8 are as fast on the CPU.
MAX_BATCH = 8

# The item transform keeps the centre square, as the learner's validation does: in a 4:1 panorama with the person
# at one end, the person is cut off. A photo whose long side is more than VIEWS_ASPECT times its short side is also
# classified as overlapping square views (at most MAX_VIEWS, one batch), and a view that finds a face category
# answers for it (`answer_from_views`). benchmarks/aspect.py chose the rule: on validation subjects pasted at the
# ends of 4:1 canvases exact-match rose from 0.13-0.15 to 0.79-0.83 (no-face canvases 0.75 -> 0.70; BENCHMARKS.md).
# 1.9 leaves every phone photo (4:3, 16:9) as the learner sees it.
VIEWS_ASPECT = 1.9
MAX_VIEWS = MAX_BATCH
# A view answers only when its top face category is at least this sure: on 200 validation subjects on 4:1
# canvases (seed 1) 0.6 kept 87 % of face subjects right (0.4: 87 %) and 72 % of no-face ones (0.4: 63 %;
# the centre alone: 30 % and 78 %). Background views of a panorama are otherwise taken for faces.
VIEW_MIN_PROBABILITY = 0.6
# With jpeg_decode "reduced", a JPEG decoded for the whole-photo answer alone keeps at least this many times the
# item size on both sides: libjpeg's 1/4 and 1/8 scalings are close to box filters, and leaving the item Resize
# (a triangle filter) a reduction of 2x or more keeps its smoothing. On 982 validation images enlarged to
# 2048x1536-like JPEGs (benchmarks/draft.py) the answers matched the whole decode's for 99.1 % of them with this
# headroom (1/2 scale; 99th percentile probability difference 0.059), against 99.0 % (0.128) with none (1/4
# scale); exact-match 0.937 (0.938) against 0.936 decoded whole.
DECODE_HEADROOM = 2


class Backend(Protocol):
    """What the app needs of a loaded model."""

    vocab: list[str]
    architecture: str
    input_size: int
    item_size: tuple[int, int] | None  # (width, height) of the item Resize; None when the backend cannot say

    def probabilities(self, images: Sequence[Image.Image], flip: bool = False) -> np.ndarray:
        """(len(images), len(vocab)) sigmoid probabilities for RGB images; with `flip`, for each image the mean
        of its own and its mirror image's (mirrored after the item resize, as training's validation mirrors it)."""

    def heat_map(self, image: Image.Image, category: str | None, deadline: Deadline) -> Explanation:
        """The "Why?" heat-map of `category` (None: the most probable) for an RGB image, by the method this
        backend can run (`maskclassifier.classifier.heatmap`: Grad-CAM with gradients, occlusion without);
        ExplainUnavailable when it can make none, ExplainTooSlow when it would outlast `deadline`."""


@dataclass(frozen=True)
class Prediction:
    probabilities: dict[str, float]  # every category, in vocab order
    labels: list[str]  # the categories above the threshold, most probable first
    threshold: float

    @property
    def is_confident(self) -> bool:
        return bool(self.labels)


def decide(probabilities: Sequence[float], vocab: Sequence[str], threshold: float) -> Prediction:
    """Every category whose probability is above the threshold (core.threshold's rule), highest first."""
    scores = {name: float(p) for name, p in zip(vocab, probabilities, strict=True)}
    passing = above_threshold(list(scores.values()), threshold)
    labels = sorted((name for name, passed in zip(scores, passing, strict=True) if passed),
                    key=lambda name: -scores[name])
    return Prediction(scores, labels, threshold)


def square_views(width: int, height: int, limit: int = MAX_VIEWS) -> list[tuple[int, int, int, int]]:
    """Boxes (x0, y0, x1, y1) of squares with the short side's length, along the long side from one end to the
    other, half a side apart (further apart when that would make more than `limit`), so that any subject as tall
    as the photo lies whole in one of them."""
    side, length = min(width, height), max(width, height)
    count = min(limit, max(2, math.ceil((length - side) / (side / 2)) + 1))
    offsets = [round(index * (length - side) / (count - 1)) for index in range(count)]
    if width >= height:
        return [(offset, 0, offset + side, side) for offset in offsets]
    return [(0, offset, side, offset + side) for offset in offsets]


def answering_view(views: np.ndarray, vocab: Sequence[str], threshold: float) -> int | None:
    """Which of a wide photo's square views answers for it: of the views whose thresholded answer names a face
    category first (not `-`, not "not confident") with at least VIEW_MIN_PROBABILITY, the one that is least
    likely `-`; None when no view does (the centre square answers). `views` has shape (number of views,
    len(vocab)).

    Averaging the views drowns a person at one end in background, and taking the least-`-` view whatever it says
    turned no-face panoramas into faces (benchmarks/aspect.py measures all of these)."""
    faces = [index for index, row in enumerate(views)
             if (labels := decide(row, vocab, threshold).labels) and labels[0] != "-"
             and row[vocab.index(labels[0])] >= VIEW_MIN_PROBABILITY]
    if not faces:
        return None
    if "-" not in vocab:
        return max(faces, key=lambda index: views[index].max())
    background = vocab.index("-")
    return min(faces, key=lambda index: views[index][background])


def answer_from_views(centre: np.ndarray, views: np.ndarray, vocab: Sequence[str], threshold: float) -> np.ndarray:
    """The probabilities a wide photo is answered with: those of its `answering_view`, else the centre square's.
    `centre` has shape (len(vocab),), `views` (number of views, len(vocab))."""
    index = answering_view(views, vocab, threshold)
    return centre if index is None else views[index]


def combine(predictions: Sequence[Prediction]) -> Prediction:
    """One answer from several views of the same photo: the mean of their probabilities, thresholded as usual."""
    vocab = list(predictions[0].probabilities)
    mean = np.mean([[prediction.probabilities[name] for name in vocab] for prediction in predictions], axis=0)
    return decide(mean, vocab, predictions[0].threshold)


@dataclass
class Classifier:
    """A loaded backend plus what the app reports about it."""

    backend: Backend
    path: Path
    threshold: float
    sha256: str
    sidecar: Sidecar = field(default_factory=Sidecar)
    tta: str = DEFAULT_TTA  # one of TTA_CHOICES; the threshold was chosen on predictions made this way
    jpeg_decode: str = "exact"  # config.JPEG_DECODES: how `decode` decodes a big JPEG for the whole-photo answer

    @property
    def vocab(self) -> list[str]:
        return self.backend.vocab

    @property
    def item_size(self) -> tuple[int, int] | None:
        """(width, height) in pixels that the item Resize shrinks a photo's centre crop to; None when the backend
        cannot say."""
        return self.backend.item_size

    def decode(self, data: bytes, whole_photo: bool = True) -> Image.Image:
        """`images.load_image` of upload bytes, as fastai decodes them. With jpeg_decode "reduced" and for the
        whole-photo answer alone (`whole_photo`), a JPEG is decoded at the smallest of 1/1, 1/2, 1/4 and 1/8 scale
        that keeps DECODE_HEADROOM times the item size: a 2048x1536 photo at 1024x768 (13.5 instead of 23.4 ms of
        decode and item Resize; BENCHMARKS.md). Per-face modes need the photo's detail, so they pass False.
        Raises ImageError."""
        size = self.item_size
        if self.jpeg_decode != "reduced" or not whole_photo or size is None:
            return load_image(data)
        return load_image(data, at_least=(size[0] * DECODE_HEADROOM, size[1] * DECODE_HEADROOM))

    @property
    def training_examples(self) -> dict[str, dict[str, int]] | None:
        """Real and drawn training examples per category of the vocab, as training recorded them in the sidecar
        ({"Shield": {"real": 8, "drawn": 1893}, ...}); None for a model trained before they were counted."""
        recorded = self.sidecar.training_examples
        if recorded is None:
            return None
        return {name: recorded[name] for name in self.vocab if name in recorded}

    @property
    def synthetic_categories(self) -> list[str]:
        """Categories the model learnt mostly from drawn examples (sidecar.mostly_drawn on the recorded counts; for
        a sidecar without counts, the categories training marked as drawn throughout), in vocab order: their
        answers on real photos are less sure than the figures say."""
        examples = self.training_examples
        if examples is not None:
            flagged = mostly_drawn(examples)
        else:
            flagged = (self.sidecar.training.get("dataset") or {}).get("synthetic_categories") or []
        return [name for name in self.vocab if name in flagged]

    @property
    def caveats(self) -> dict[str, str]:
        """For each of `synthetic_categories`, the sentence every answer naming it carries (`caveat`)."""
        examples = self.training_examples or {}
        return {name: caveat(name, examples.get(name)) for name in self.synthetic_categories}

    def predict(self, image: Image.Image) -> Prediction:
        return self.predict_many([image])[0]

    def predict_many(self, images: Sequence[Image.Image]) -> list[Prediction]:
        if not images:
            return []
        return [decide(row, self.vocab, self.threshold) for row in self.probabilities(images)]

    def probabilities(self, images: Sequence[Image.Image]) -> np.ndarray:
        """(len(images), len(vocab)) probabilities, computed MAX_BATCH images at a time; for a photo wider or
        taller than VIEWS_ASPECT, those of the view `answer_from_views` picks."""
        rows = self._batched(images)
        for index, image in enumerate(images):
            if max(image.size) > VIEWS_ASPECT * min(image.size):
                views = self._batched([image.crop(box) for box in square_views(*image.size)])
                rows[index] = answer_from_views(rows[index], views, self.vocab, self.threshold)
        return rows

    def _batched(self, images: Sequence[Image.Image]) -> np.ndarray:
        flip = self.tta == "flip"
        return np.concatenate([self.backend.probabilities(images[start:start + MAX_BATCH], flip=flip)
                               for start in range(0, len(images), MAX_BATCH)])

    def describe(self) -> dict:
        """The facts GET /api/model returns."""
        info = {
            "categories": self.vocab,
            "threshold": self.threshold,
            "tta": self.tta,
            "architecture": self.backend.architecture,
            "input_size": self.backend.input_size,
            "backend": self.path.suffix.lstrip("."),
            "model_file": self.path.name,
            "sha256": self.sha256,
            "jpeg_decode": self.jpeg_decode,
        }
        recheck = getattr(self.backend, "recheck", None)
        if recheck is not None:  # int8, with answers near the threshold given by the float model
            info["int8_recheck_margin"] = recheck.margin
        if self.synthetic_categories:
            info["synthetic_categories"] = self.synthetic_categories
            info["synthetic_note"] = " ".join(self.caveats.values())
        if self.training_examples is not None:
            info["training_examples"] = self.training_examples
            info["synthetic_rule"] = (f"a category is listed when at least {DRAWN_SHARE_FLAG:.0%} of its training "
                                      "examples were drawn")
        recorded = self.sidecar.to_json()
        return {**info, **{key: recorded[key] for key in ("metrics", "created", "versions") if key in recorded}}


def caveat(name: str, counts: dict[str, int] | None = None) -> str:
    """The plain-words caveat for answers naming `name`, a category learnt mostly from drawn examples, with its
    training counts ({"real": n, "drawn": n}) when known: "Face shield: learned from 1,893 drawn pictures and 8
    real photos, so its answers on real photos are less sure." ASCII only (it also travels in an HTTP header)."""
    title = category(name).title
    if counts is None:
        return f"{title}: learned from drawn pictures only, so its answers on real photos are less sure."
    real = counts["real"]
    photos = "no real photos" if real == 0 else "1 real photo" if real == 1 else f"{real:,} real photos"
    drawn = counts["drawn"]
    return (f"{title}: learned from {drawn:,} drawn picture{'s' if drawn != 1 else ''} and {photos}, so its "
            "answers on real photos are less sure.")


def caveat_note(predictions: Sequence[Prediction], caveats: dict[str, str]) -> str | None:
    """The caveats (Classifier.caveats) of the categories any of `predictions` names, in one string; None when
    none does."""
    named = [text for name, text in caveats.items() if any(name in prediction.labels for prediction in predictions)]
    return " ".join(named) if named else None


def _check_python_version(model_path: Path, sidecar: Sidecar) -> None:
    """A fastai export holds pickled code objects, which load only under the Python minor version that wrote them."""
    exported = str(sidecar.versions.get("python", ""))
    running = platform.python_version()
    if exported and exported.split(".")[:2] != running.split(".")[:2]:
        raise ModelLoadError(
            f"{model_path} was exported under Python {exported} but this is Python {running}; "
            f"run the app under Python {'.'.join(exported.split('.')[:2])} (see .python-version) "
            "or retrain the model here"
        )


def _load_backend(path: Path, sidecar: Sidecar | None, torch_threads: int | None,
                  onnx_precision: str | None, threshold: float) -> Backend:
    if path.suffix == ".onnx":
        from maskclassifier.classifier.onnx_backend import load_onnx_backend

        recorded = sidecar.onnx_int8 if sidecar else None
        serve_int8 = "int8" if isinstance(recorded, dict) and recorded.get("serve") is True else None
        return load_onnx_backend(path, sidecar, torch_threads, resolve(onnx_precision, serve_int8, "float"),
                                 recheck_threshold=threshold)
    if onnx_precision == "int8":
        raise ModelLoadError(f"int8 inference needs the ONNX twin: serve {path.with_suffix('.onnx')}, not {path}")
    _check_python_version(path, sidecar or Sidecar())
    if not full_install():
        raise ModelLoadError(f"{path} is a fastai export, which needs the full install (requirements.txt); this is "
                             f"the slim install: serve its ONNX twin with MODEL_PATH={path.with_suffix('.onnx')}")
    from maskclassifier.classifier.fastai_backend import load_fastai_backend

    return load_fastai_backend(path, torch_threads)


def load_classifier(model_path: Path, threshold: float | None = None, torch_threads: int | None = None,
                    tta: str | None = None, onnx_precision: str | None = None,
                    jpeg_decode: str = "exact") -> Classifier:
    """Load the model at `model_path` once; the threshold is `threshold`, else the sidecar's, else 0.5, and the
    test-time augmentation `tta`, else the sidecar's, else none. For an .onnx model, `onnx_precision` "int8"
    serves the int8 twin its sidecar records (else "int8" when the sidecar says serve, else "float").
    `jpeg_decode`: see `Classifier.decode`."""
    path = Path(model_path)
    if not path.is_file():
        raise ModelLoadError(
            f"model file not found: {path}; set MODEL_PATH to a learner exported with learn.export() "
            "(or an .onnx export), or train one with python -m maskclassifier.train"
        )
    if path.suffix not in (".pkl", ".onnx"):
        raise ModelLoadError(f"{path}: MODEL_PATH must end in .pkl (fastai export) or .onnx (ONNX export)")
    found = read_sidecar(path)
    sidecar = found or Sidecar()
    threshold = float(resolve(threshold, sidecar.threshold, DEFAULT_THRESHOLD))
    backend = _load_backend(path, found, torch_threads, onnx_precision, threshold)
    if sidecar.vocab and list(sidecar.vocab) != list(backend.vocab):
        raise ModelLoadError(
            f"{sidecar_path(path)} lists categories {sidecar.vocab} but the model has {backend.vocab}; "
            "the sidecar belongs to another model: retrain, or delete the sidecar"
        )
    return Classifier(backend=backend, path=path, threshold=threshold, sha256=sha256_file(path), sidecar=sidecar,
                      tta=resolve(tta, sidecar.tta, DEFAULT_TTA), jpeg_decode=jpeg_decode)
