"""The JSON file written next to a model (`export.json` beside `export.pkl`), typed, and the model files' digests.

Leaf module. Training writes the sidecar, the ONNX export adds its `onnx` section, serving and the model card read
it: all of them through `Sidecar`, so its keys are spelled in one place. `resolve` is the one precedence rule for a
served setting: an explicit setting, else what the sidecar recorded at training, else the default.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TypeVar

from maskclassifier.core.errors import ModelLoadError
from maskclassifier.core.tta import TTA_CHOICES

DEFAULT_THRESHOLD = 0.5  # without a sidecar: fastai's own default for accuracy_multi and MultiLabel losses
DEFAULT_TTA = "none"
# A category is "mostly drawn", and every answer that names it carries a caveat, when at least this share of its
# training examples were drawn (generated images, or renderings drawn over real faces) rather than photographed.
# At half or more, the drawings weigh at least as much as the photos in what the model learnt of the category,
# and its validation figures (drawn in the same proportion) say at least as much about the drawings as about
# photos. "Every example drawn" missed Shield, whose 8 real photos are under 1 % of its examples.
DRAWN_SHARE_FLAG = 0.5

T = TypeVar("T")


def resolve(explicit: T | None, recorded: T | None, default: T) -> T:
    """The one precedence rule: an explicit setting (environment, command line), else the sidecar's, else default."""
    if explicit is not None:
        return explicit
    return default if recorded is None else recorded


@dataclass
class Sidecar:
    """What is known about a model beyond its weights. Every field is optional: a learner exported by hand (the
    original notebook's way) has no sidecar, and serving then falls back to the defaults.

    `preprocessing` says what the learner does before its model (presize, resize_method, size, normalize, and for
    the ONNX graph its batch steps); `metrics` are the validation figures at `threshold`
    (maskclassifier.training.metrics); `training` the run's options, data and timing; `onnx` the ONNX twin's file,
    digest and parity check; `onnx_int8` its int8 quantization's file, digest, source and calibration.
    """

    vocab: list[str] | None = None
    threshold: float | None = None  # chosen on the validation set with this `tta`
    tta: str | None = None  # one of TTA_CHOICES
    architecture: str | None = None
    input_size: int | None = None  # pixels on the model input's long side
    model_file: str | None = None
    sha256: str | None = None  # of model_file
    preprocessing: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    training: dict = field(default_factory=dict)
    versions: dict = field(default_factory=dict)  # python, fastai, torch at training
    created: str | None = None  # ISO 8601, UTC
    onnx: dict | None = None
    onnx_int8: dict | None = None  # the int8 twin of the ONNX file (python -m maskclassifier.modelfiles.quantize_onnx)
    extra: dict = field(default_factory=dict)  # keys this version does not know, kept when the file is rewritten

    @classmethod
    def from_json(cls, data: dict, path: Path) -> Sidecar:
        """ModelLoadError, naming `path`, for a value of the wrong type."""
        known = {item.name for item in fields(cls)} - {"extra"}
        sidecar = cls(**{key: value for key, value in data.items() if key in known},
                      extra={key: value for key, value in data.items() if key not in known})
        problems = []
        if sidecar.vocab is not None and not (isinstance(sidecar.vocab, list)
                                              and all(isinstance(name, str) for name in sidecar.vocab)):
            problems.append("vocab must be a list of category names")
        if sidecar.threshold is not None and not (isinstance(sidecar.threshold, (int, float))
                                                  and 0 < sidecar.threshold < 1):
            problems.append(f"threshold must be a number between 0 and 1, not {sidecar.threshold!r}")
        if sidecar.tta is not None and sidecar.tta not in TTA_CHOICES:
            problems.append(f"has tta {sidecar.tta!r}; it must be one of {', '.join(TTA_CHOICES)}")
        for name in ("preprocessing", "metrics", "training", "versions"):
            if not isinstance(getattr(sidecar, name), dict):
                problems.append(f"{name} must be an object")
        if not problems and (problem := _examples_problem(sidecar.training)):
            problems.append(problem)
        if problems:
            raise ModelLoadError(f"{path} {problems[0]}")
        return sidecar

    @property
    def training_examples(self) -> dict[str, dict[str, int]] | None:
        """Training examples per category, {"Shield": {"real": 8, "drawn": 1893}, ...}, as training counted them
        (`training.dataset.examples`: see `maskclassifier.training.dataset.training_examples`); None when not
        recorded (models trained before they were counted)."""
        dataset = self.training.get("dataset")
        return dataset.get("examples") if isinstance(dataset, dict) else None

    def to_json(self) -> dict:
        """The JSON object, in the field order above, without the fields that are not set."""
        data = {key: value for key, value in asdict(self).items() if key != "extra" and value not in (None, {})}
        return {**data, **self.extra}

    def write(self, model_path: Path) -> Path:
        path = sidecar_path(model_path)
        path.write_text(json.dumps(self.to_json(), indent=2) + "\n")
        return path


def _examples_problem(training: dict) -> str | None:
    """Why `training.dataset.examples` is malformed, or None when it is absent or well formed."""
    dataset = training.get("dataset")
    examples = dataset.get("examples") if isinstance(dataset, dict) else None
    if examples is None:
        return None
    if not isinstance(examples, dict) or not all(
            isinstance(counts, dict) and set(counts) == {"real", "drawn"}
            and all(isinstance(value, int) and not isinstance(value, bool) and value >= 0 for value in counts.values())
            for counts in examples.values()):
        return ('has training.dataset.examples that is not {category: {"real": count, "drawn": count}} with whole '
                "counts of at least 0")
    return None


def drawn_share(counts: dict[str, int]) -> float:
    """The drawn share of one category's training examples ({"real": n, "drawn": n}), 0..1; 0 for no examples."""
    total = counts["real"] + counts["drawn"]
    return counts["drawn"] / total if total else 0.0


def mostly_drawn(examples: dict[str, dict[str, int]]) -> list[str]:
    """The categories of `examples` (Sidecar.training_examples) whose drawn share is DRAWN_SHARE_FLAG or more: the
    one place the rule is applied."""
    return [name for name, counts in examples.items() if drawn_share(counts) >= DRAWN_SHARE_FLAG]


def sidecar_path(model_path: Path) -> Path:
    return Path(model_path).with_suffix(".json")


def read_sidecar(model_path: Path) -> Sidecar | None:
    """The sidecar written next to the model, or None when there is none; ModelLoadError if it is broken."""
    path = sidecar_path(model_path)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{path} is not valid JSON ({exc}); fix or delete it") from None
    if not isinstance(data, dict):
        raise ModelLoadError(f"{path} must hold a JSON object; fix or delete it")
    return Sidecar.from_json(data, path)


def sha256_file(path: Path) -> str:
    """The file's SHA-256 as 64 hex digits, read in blocks."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()
