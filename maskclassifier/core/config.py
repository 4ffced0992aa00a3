"""Settings read from environment variables and validated once, at start-up."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from maskclassifier.core.errors import ConfigError
from maskclassifier.core.tta import TTA_CHOICES

DEFAULT_MODEL_PATH = Path("models/export.pkl")
SLIM_MODEL_PATH = DEFAULT_MODEL_PATH.with_suffix(".onnx")  # what the slim install (no fastai) serves by default
DEFAULT_MAX_UPLOAD_MB = 10.0
ONNX_PRECISIONS = ("float", "int8")  # ONNX_PRECISION: the float ONNX twin, or its int8 quantization
MAX_FACE_MARGIN = 2.0  # FACE_MARGIN and evaluate --face-margin: at most twice the face box on every side
JPEG_DECODES = ("exact", "reduced")  # JPEG_DECODE: see Settings.jpeg_decode


@dataclass(frozen=True)
class Settings:
    model_path: Path = DEFAULT_MODEL_PATH
    threshold: float | None = None  # None: the model sidecar's threshold, else 0.5
    tta: str | None = None  # "flip" or "none"; None: the model sidecar's, else none
    max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB
    port: int = 5000
    # Threads for each inference (torch, ONNX Runtime, the face detector). One: on 2 shared cores under a crowd
    # (benchmarks/crowd.py, BENCHMARKS.md) more threads than the share of a core made each answer slower, not faster.
    torch_threads: int = 1
    # Requests of one worker that decode and classify at the same time (a photo over 12 megapixels takes them all).
    # Two, each with one torch thread, answered the crowd benchmark fastest on 2 cores (BENCHMARKS.md).
    inference_slots: int = 2
    queue_timeout_s: float = 10.0  # longest wait for an inference slot before answering 503 busy
    upload_timeout_s: float = 60.0  # the whole body must arrive within this, else 408 (about 1.8 MB at 30 KB/s)
    face_time_budget_s: float = 8.0  # finding and classifying faces; past it the answer is 422 too_many_faces
    # On the dataset's validation photos with one face (model 929e6a57), 60 % margins were right more often (0.906
    # exact-match) than with 30 % (0.883) or 100 % (0.904): the mask's edges and straps stay in view.
    face_margin: float = 0.6
    # "float" or "int8" (the int8 twin the sidecar records, for an .onnx model); None: "int8" when the sidecar's
    # onnx_int8 section says serve, else "float". int8 answers near the threshold come from the float model
    # (onnx.INT8_RECHECK_MARGIN); int8 is 1.3x faster, not the 2x that would justify it by default (BENCHMARKS.md).
    onnx_precision: str | None = None
    # "exact": every photo is decoded as fastai decodes it, so the answers are learn.predict's to 1e-4 at any size.
    # "reduced": for the whole-photo answer alone, a JPEG at least four times the item size on both sides is
    # decoded by libjpeg at 1/2 to 1/8 scale: a 2048x1536 photo costs half the decode and item Resize, and the
    # answers move a little (99.1 % the same labels on enlarged validation photos; BENCHMARKS.md, "Issue 20
    # again, model 12").
    jpeg_decode: str = "exact"
    # The memory one worker is budgeted (MB): gunicorn.conf.py sets WORKER_MEMORY_MB for its workers, from the
    # owner's value or capacity.WORKER_BUDGET_MB; None outside gunicorn. GET /api/model states it.
    worker_memory_mb: int | None = None

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)


def _number(environ: Mapping[str, str], name: str, default: float | None) -> float | None:
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number") from None


def _integer(environ: Mapping[str, str], name: str, default: int | None) -> int | None:
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a whole number") from None


def full_install() -> bool:
    """Whether fastai (and so torch) is installed, without importing it: False in the slim install."""
    return importlib.util.find_spec("fastai") is not None


def default_model_path() -> Path:
    """models/export.pkl, or its ONNX twin in the slim install, where fastai (and torch) are not installed."""
    if not full_install() and SLIM_MODEL_PATH.is_file():
        return SLIM_MODEL_PATH
    return DEFAULT_MODEL_PATH


def _seconds(environ: Mapping[str, str], name: str, default: float, low: float, high: float) -> float:
    """A duration in seconds within [low, high]. Heroku's router gives up after 30 s, so no wait may come near it."""
    value = _number(environ, name, default)
    if not low <= value <= high:
        raise ConfigError(f"{name} must be between {low:g} and {high:g} seconds, got {value:g}")
    return value


def settings_from_env(environ: Mapping[str, str] | None = None) -> Settings:
    """Build Settings from MODEL_PATH, MASK_THRESHOLD, MASK_TTA, MAX_UPLOAD_MB, PORT, TORCH_NUM_THREADS,
    INFERENCE_SLOTS, QUEUE_TIMEOUT, UPLOAD_TIMEOUT, FACE_TIME_BUDGET, FACE_MARGIN, ONNX_PRECISION, JPEG_DECODE and
    WORKER_MEMORY_MB."""
    environ = os.environ if environ is None else environ
    threshold = _number(environ, "MASK_THRESHOLD", None)
    if threshold is not None and not 0 < threshold < 1:
        raise ConfigError(f"MASK_THRESHOLD must be between 0 and 1 (exclusive), got {threshold}")
    tta = environ.get("MASK_TTA", "").strip().lower() or None
    if tta is not None and tta not in TTA_CHOICES:
        raise ConfigError(f"MASK_TTA must be one of {', '.join(TTA_CHOICES)}, got {tta!r}")
    max_upload_mb = _number(environ, "MAX_UPLOAD_MB", DEFAULT_MAX_UPLOAD_MB)
    if not 0 < max_upload_mb <= 1024:
        raise ConfigError(f"MAX_UPLOAD_MB must be more than 0 and at most 1024, got {max_upload_mb}")
    port = _integer(environ, "PORT", 5000)
    if not 0 < port < 65536:
        raise ConfigError(f"PORT must be between 1 and 65535, got {port}")
    torch_threads = _integer(environ, "TORCH_NUM_THREADS", Settings.torch_threads)
    if torch_threads < 1:
        raise ConfigError(f"TORCH_NUM_THREADS must be at least 1, got {torch_threads}")
    inference_slots = _integer(environ, "INFERENCE_SLOTS", Settings.inference_slots)
    if not 1 <= inference_slots <= 16:
        raise ConfigError(f"INFERENCE_SLOTS must be between 1 and 16, got {inference_slots}")
    queue_timeout_s = _seconds(environ, "QUEUE_TIMEOUT", Settings.queue_timeout_s, 0, 25)
    upload_timeout_s = _seconds(environ, "UPLOAD_TIMEOUT", Settings.upload_timeout_s, 1, 600)
    face_time_budget_s = _seconds(environ, "FACE_TIME_BUDGET", Settings.face_time_budget_s, 0.1, 25)
    face_margin = _number(environ, "FACE_MARGIN", Settings.face_margin)
    if not 0 <= face_margin <= MAX_FACE_MARGIN:
        raise ConfigError(f"FACE_MARGIN must be between 0 and {MAX_FACE_MARGIN:g} (a fraction of the face box), "
                          f"got {face_margin}")
    onnx_precision = environ.get("ONNX_PRECISION", "").strip().lower() or None
    if onnx_precision is not None and onnx_precision not in ONNX_PRECISIONS:
        raise ConfigError(f"ONNX_PRECISION must be one of {', '.join(ONNX_PRECISIONS)}, got {onnx_precision!r}")
    jpeg_decode = environ.get("JPEG_DECODE", "").strip().lower() or Settings.jpeg_decode
    if jpeg_decode not in JPEG_DECODES:
        raise ConfigError(f"JPEG_DECODE must be one of {', '.join(JPEG_DECODES)}, got {jpeg_decode!r}")
    worker_memory_mb = _integer(environ, "WORKER_MEMORY_MB", None)
    if worker_memory_mb is not None and not 64 <= worker_memory_mb <= 65536:
        raise ConfigError(f"WORKER_MEMORY_MB must be between 64 and 65536, got {worker_memory_mb}")
    model_path = Path(environ.get("MODEL_PATH", "").strip() or default_model_path())
    if onnx_precision == "int8" and model_path.suffix != ".onnx":
        raise ConfigError(f"ONNX_PRECISION=int8 needs an ONNX model (MODEL_PATH={model_path.with_suffix('.onnx')}), "
                          f"not {model_path}")
    return Settings(
        model_path=model_path,
        threshold=threshold,
        tta=tta,
        max_upload_mb=max_upload_mb,
        port=port,
        torch_threads=torch_threads,
        inference_slots=inference_slots,
        queue_timeout_s=queue_timeout_s,
        upload_timeout_s=upload_timeout_s,
        face_time_budget_s=face_time_budget_s,
        face_margin=face_margin,
        onnx_precision=onnx_precision,
        jpeg_decode=jpeg_decode,
        worker_memory_mb=worker_memory_mb,
    )
