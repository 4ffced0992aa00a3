"""The face boxes of training images, kept between runs: finding them takes MTCNN about 3 minutes on the 5,564
training images (2 cores), on every run with --face-crops, --occluders or --render, for the same answer each time.

One JSON file per detector version (a hash of the detector's three ONNX files and of its code), mapping each
image's resolved path to its size in bytes, its modification time (ns) and the box found ("x0 y0 x1 y1", or ""
when not exactly one face was found). An entry counts only while the file's size and time are unchanged, so an
edited or replaced image is looked at again; a new detector starts a new file. The dataset folder is never written
(it is read-only); the cache lives in the owner's cache folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

from maskclassifier.classifier import mtcnn_onnx

DEFAULT_DIR = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "maskclassifier"


def detector_version() -> str:
    """16 hex digits of the sha256 of models/mtcnn/{pnet,rnet,onet}.onnx and the detector's source (its
    thresholds, pyramid and NMS live there): what the boxes depend on besides the image."""
    digest = hashlib.sha256()
    for path in [mtcnn_onnx.MODEL_DIR / f"{name}.onnx" for name in ("pnet", "rnet", "onet")] + [
            Path(mtcnn_onnx.__file__)]:
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


class FaceCache:
    """Boxes by image path for one detector version; `get` before detecting, `put` after, `save` at the end."""

    def __init__(self, folder: Path):
        self.path = folder / f"faces-{detector_version()}.json"
        try:
            self._entries: dict[str, list] = json.loads(self.path.read_text())
        except (OSError, ValueError):  # none yet, or cut short by a crash: find the faces again
            self._entries = {}
        self.hits = 0

    @staticmethod
    def _key(image: Path) -> tuple[str, int, int]:
        stat = image.stat()
        return str(image.resolve()), stat.st_size, stat.st_mtime_ns

    def get(self, image: Path) -> str | None:
        """The box stored for `image` ("" for not exactly one face), or None when unknown or the file changed."""
        name, size, mtime = self._key(image)
        entry = self._entries.get(name)
        if entry is None or entry[:2] != [size, mtime]:
            return None
        self.hits += 1
        return entry[2]

    def put(self, image: Path, box: str) -> None:
        name, size, mtime = self._key(image)
        self._entries[name] = [size, mtime, box]

    def save(self) -> None:
        """Write the file atomically (a run stopped half-way never leaves half a file)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=self.path.parent, suffix=".tmp", delete=False) as handle:
            json.dump(self._entries, handle)
        os.replace(handle.name, self.path)
