"""Label corrections kept beside a labelled CSV, never written into it: what the cleaner records, and what
`train` and `evaluate` apply with `--corrections FILE`.

Leaf module (the standard library only). The file is one CSV,

    fname,old_labels,labels,action,reason,time

appended one row per decision; the last row for an fname wins, so a changed mind is one more row. `action` is
`relabel` (the image's labels become `labels`, space-separated), `delete` (leave the image out) or `keep` (a
look that changed nothing). Only `fname` and `labels` are required: a hand-written `fname,labels,reason` file of
label fixes (such as the review in models/label_review.csv) reads as relabels. `old_labels` and `time` are for the
reader of the file; `apply` does not need them.
"""

from __future__ import annotations

import csv
import hashlib
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from maskclassifier.core.errors import MaskClassifierError

COLUMNS = ("fname", "old_labels", "labels", "action", "reason", "time")
ACTIONS = ("relabel", "delete", "keep")


class CorrectionsError(MaskClassifierError, ValueError):
    """The corrections file cannot be used; the message names the file and line."""


@dataclass(frozen=True)
class Correction:
    fname: str
    labels: tuple[str, ...]  # the new labels (relabel), else as recorded
    action: str  # one of ACTIONS
    reason: str = ""
    old_labels: tuple[str, ...] = ()
    time: str = ""
    line: int = 0  # in the file, for error messages


@dataclass(frozen=True)
class Applied:
    """What `apply` did: the corrected rows and how many rows each action changed."""

    rows: list[dict]
    relabelled: int  # rows whose labels changed
    deleted: int  # rows left out
    kept: int  # rows looked at and left as they were (keep, or a relabel to the labels they had)

    def counts(self) -> dict[str, int]:
        return {"relabelled": self.relabelled, "deleted": self.deleted, "kept": self.kept}


def read_csv_rows(path: Path, error: type[Exception]) -> tuple[list[str], list[dict[str, str]], list[int]]:
    """A CSV of this project (a labelled CSV, a corrections file) as its columns, its rows as strings (a missing
    trailing value reads as "") and each row's line in the file; `error(message)` for a file that is not UTF-8
    (a BOM, as Excel writes, is allowed), not a CSV, or has a row with more values than its header."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle, restval="")
            columns = list(reader.fieldnames or [])
            rows, lines = [], []
            for row in reader:
                if None in row:  # DictReader files surplus values under the key None
                    raise error(f"{path} line {reader.line_num} has more values than the header has columns "
                                f"({len(columns)})")
                rows.append(row)
                lines.append(reader.line_num)
    except UnicodeDecodeError:
        raise error(f"{path} is not UTF-8 text; save it as UTF-8 CSV") from None
    except csv.Error as exc:
        raise error(f"{path} is not a readable CSV: {exc}") from None
    return columns, rows, lines


def read(path: Path, vocab: Iterable[str] | None = None) -> dict[str, Correction]:
    """The decision in force for each fname (the file's last row for it), in the order first decided.

    CorrectionsError, naming the line, for a missing file or column, a bad action, a relabel to no label or a label
    outside `vocab` (when given). An empty file (no header yet) has no corrections.
    """
    path = Path(path)
    if not path.is_file():
        raise CorrectionsError(f"corrections file not found: {path}")
    known = None if vocab is None else set(vocab)
    found: dict[str, Correction] = {}
    columns, rows, lines = read_csv_rows(path, CorrectionsError)
    if not columns:
        return {}
    missing = [column for column in ("fname", "labels") if column not in columns]
    if missing:
        raise CorrectionsError(f"{path} has no column {', '.join(missing)} (found: {', '.join(columns)}); "
                               f"the header is {','.join(COLUMNS)}")
    for line, row in zip(lines, rows, strict=True):
        correction = _parse_row(path, line, row, known)
        found.pop(correction.fname, None)  # the last decision wins, in the order it was made
        found[correction.fname] = correction
    return found


def _parse_row(path: Path, line: int, row: dict, vocab: set[str] | None) -> Correction:
    where = f"{path} line {line}"
    fname = (row.get("fname") or "").strip()
    if not fname:
        raise CorrectionsError(f"{where} has no fname")
    labels = tuple((row.get("labels") or "").split())
    action = (row.get("action") or "").strip() or "relabel"  # a plain fname,labels file holds relabels
    if action not in ACTIONS:
        raise CorrectionsError(f"{where}: unknown action {action!r} (one of {', '.join(ACTIONS)})")
    if action == "relabel" and not labels:
        raise CorrectionsError(f"{where}: relabel of {fname} to no label; use action delete to leave it out")
    if vocab is not None:
        unknown = [label for label in labels if label not in vocab]
        if unknown:
            raise CorrectionsError(f"{where}: unknown categor{'y' if len(unknown) == 1 else 'ies'} "
                                   f"{', '.join(unknown)} for {fname} (categories: {' '.join(sorted(vocab))})")
    return Correction(fname=fname, labels=labels, action=action, reason=(row.get("reason") or "").strip(),
                      old_labels=tuple((row.get("old_labels") or "").split()), time=(row.get("time") or "").strip(),
                      line=line)


def apply(rows: Sequence[dict], corrections: dict[str, Correction], also_known: Iterable[str] = ()) -> Applied:
    """`rows` (dicts with at least fname and labels, labels space-separated) with the corrections applied: relabelled
    rows get the new labels (other columns kept), deleted rows are left out, order is kept; the input is not changed.

    CorrectionsError, naming the line, for a correction whose fname is in neither `rows` nor `also_known` (e.g. the
    CSV's unreadable images, which are left out before this and whose corrections are then moot).
    """
    fnames = {row["fname"] for row in rows} | set(also_known)
    strangers = [c for c in corrections.values() if c.fname not in fnames]
    if strangers:
        first = min(strangers, key=lambda c: c.line)
        raise CorrectionsError(f"corrections line {first.line}: {first.fname} is not in the labelled CSV"
                               + (f" ({len(strangers) - 1} more such lines)" if len(strangers) > 1 else ""))
    out, relabelled, deleted, kept = [], 0, 0, 0
    for row in rows:
        correction = corrections.get(row["fname"])
        if correction is None:
            out.append(row)
        elif correction.action == "delete":
            deleted += 1
        elif correction.action == "relabel" and set(correction.labels) != set(row["labels"].split()):
            out.append({**row, "labels": " ".join(correction.labels)})
            relabelled += 1
        else:
            out.append(row)
            kept += 1
    return Applied(out, relabelled, deleted, kept)


def describe(path: Path, applied: Applied) -> dict:
    """What a sidecar or report records about an applied corrections file: its path, sha256 and counts."""
    return {"file": str(path), "sha256": _sha256(path), **applied.counts()}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def now() -> str:
    """The time column's format: ISO 8601 in UTC, to the second."""
    return datetime.now(UTC).isoformat(timespec="seconds")


class Recorder:
    """Appends decisions to a corrections file, each one flushed and fsynced before `record` returns, so a crash or
    Ctrl-C loses nothing already shown as saved. Writes the header when the file is new or empty. `undo_last`
    removes the last row this recorder wrote (truncating the file), so an undo leaves no trace in the file."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._offsets: list[int] = []  # where each row this recorder appended starts
        if not self.path.exists() or self.path.stat().st_size == 0:
            self._append(COLUMNS)
            self._offsets.clear()
        elif not self.path.read_bytes().endswith(b"\n"):
            raise CorrectionsError(f"{self.path} does not end with a line break: was it cut off? fix its last line")

    def record(self, fname: str, old_labels: Sequence[str], labels: Sequence[str], action: str,
               reason: str = "") -> None:
        if action not in ACTIONS:
            raise CorrectionsError(f"unknown action {action!r} (one of {', '.join(ACTIONS)})")
        self._append((fname, " ".join(old_labels), " ".join(labels), action, reason, now()))

    def undo_last(self) -> bool:
        """Remove the last row this recorder appended; False when there is none (older rows are kept)."""
        if not self._offsets:
            return False
        offset = self._offsets.pop()
        with open(self.path, "r+b") as handle:
            handle.truncate(offset)
            handle.flush()
            os.fsync(handle.fileno())
        return True

    def _append(self, values: Sequence[str]) -> None:
        with open(self.path, "a", newline="", encoding="utf-8") as handle:
            self._offsets.append(handle.tell())
            csv.writer(handle, lineterminator="\n").writerow(values)
            handle.flush()
            os.fsync(handle.fileno())
