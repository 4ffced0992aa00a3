"""The JSON file written next to a model (`export.json` beside `export.pkl`), and the model files' digests.

Leaf module. Training writes the sidecar, the ONNX export adds its `onnx` section, serving reads it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from maskclassifier.errors import ModelLoadError

DEFAULT_THRESHOLD = 0.5  # without a sidecar: fastai's own default for accuracy_multi and MultiLabel losses


def sidecar_path(model_path: Path) -> Path:
    return Path(model_path).with_suffix(".json")


def read_sidecar(model_path: Path) -> dict:
    """The JSON written next to the model at training time, or {} when there is none; ModelLoadError if broken."""
    path = sidecar_path(model_path)
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{path} is not valid JSON ({exc}); fix or delete it") from None
    if not isinstance(data, dict):
        raise ModelLoadError(f"{path} must hold a JSON object; fix or delete it")
    return data


def sha256_file(path: Path) -> str:
    """The file's SHA-256 as 64 hex digits, read in blocks."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()
