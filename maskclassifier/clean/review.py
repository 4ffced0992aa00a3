"""The cleaner's state: the labelled CSV's rows (read once, never written), the model's view of each, and the
decisions, kept in the corrections file (maskclassifier/core/corrections.py) as they are made. No HTTP, no torch.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

from maskclassifier.clean import ranking
from maskclassifier.core import corrections
from maskclassifier.core.corrections import Correction, CorrectionsError, Recorder
from maskclassifier.core.errors import MaskClassifierError


class ReviewError(MaskClassifierError, ValueError):
    """The CSV, the corrections file or a decision cannot be used; the message says why."""


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def read_labels_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    """The CSV's columns and rows as strings; ReviewError for a missing file, column or a malformed CSV."""
    if not path.is_file():
        raise ReviewError(f"CSV not found: {path}")
    columns, rows, _ = corrections.read_csv_rows(path, ReviewError)
    missing = [name for name in ("fname", "labels") if name not in columns]
    if missing:
        raise ReviewError(f"{path} has no column {', '.join(missing)} (found: {', '.join(columns)})")
    return columns, rows


@dataclass
class Review:
    """Everything the page shows, and the one way to change it: `decide` (and `undo`)."""

    rows: list[dict[str, str]]  # the CSV's, in its order
    columns: list[str]  # the CSV's columns other than fname and labels, for the filters
    vocab: list[str]  # the model's categories, else the CSV's labels
    recorder: Recorder
    images_root: Path
    scored: list[ranking.Scored] | None = None  # one per row, with a model
    threshold: float | None = None
    decisions: dict[str, Correction] = field(default_factory=dict)
    allowed: set[str] = field(default_factory=set)  # labels a relabel may use: the vocab's and the CSV's
    _index: dict[str, int] = field(default_factory=dict)
    _undo: list[tuple[str, Correction | None]] = field(default_factory=list)  # fname, the decision before
    # The page's server answers requests on threads: one decision's append and another's undo (a truncate to the
    # offset of the last row) interleaved tore rows and undid the wrong one, so a decision shown as saved came back
    # undecided after a restart. Every change to the file and to the state, and every read of the state, holds it.
    lock: threading.RLock = field(default_factory=threading.RLock)

    def __post_init__(self) -> None:
        self._index = {row["fname"]: i for i, row in enumerate(self.rows)}
        self.allowed = self.allowed | set(self.vocab)

    @property
    def has_model(self) -> bool:
        return self.scored is not None

    def knows(self, fname: str) -> bool:
        return fname in self._index

    def item(self, fname: str) -> dict:
        """One image as the page shows it: labels now (after its decision), the CSV's, the model's view."""
        index = self._index[fname]
        row, decision = self.rows[index], self.decisions.get(fname)
        csv_labels = row["labels"].split()
        labels = list(decision.labels) if decision and decision.action == "relabel" else csv_labels
        scored = self.scored[index] if self.scored is not None else None
        return {
            "fname": fname, "csv_index": index, "labels": labels, "csv_labels": csv_labels,
            "decision": decision.action if decision else "",
            "probabilities": scored.probabilities if scored else None,
            "predicted": scored.predicted if scored else [],
            "loss": round(scored.loss, 4) if scored else 0.0,
            "pairs": [list(pair) for pair in scored.pairs] if scored else [],
            "columns": {name: row.get(name, "") for name in self.columns},
        }

    def items(self, how: str, **filters) -> list[dict]:
        with self.lock:
            found = [self.item(row["fname"]) for row in self.rows]
        return [item for item in ranking.order(found, how) if ranking.matches(item, **filters)]

    def decide(self, fname: str, action: str, labels: list[str] | None = None, reason: str = "") -> dict:
        """Record a decision at once (appended and fsynced). relabel needs `labels` (at least one, all in the
        vocab); delete and keep take the labels as they are. ReviewError for anything else."""
        with self.lock:
            return self._decide(fname, action, labels, reason)

    def _decide(self, fname: str, action: str, labels: list[str] | None, reason: str) -> dict:
        if not self.knows(fname):
            raise ReviewError(f"{fname!r} is not in the CSV")
        if "\x00" in reason or not _encodable(reason):
            # A NUL makes the file unreadable by the csv module (no restart); a lone surrogate cannot be written as
            # UTF-8, and failed after the recorder had noted the row's offset, so a later undo undid the wrong row.
            raise ReviewError("the reason must be plain text (no NUL byte, valid Unicode)")
        if action not in corrections.ACTIONS:
            raise ReviewError(f"action must be one of {', '.join(corrections.ACTIONS)}, got {action!r}")
        csv_labels = self.rows[self._index[fname]]["labels"].split()
        if action == "relabel":
            labels = list(dict.fromkeys(labels or []))
            unknown = [label for label in labels if label not in self.allowed]
            if unknown or not labels:
                raise ReviewError(f"relabel needs one or more of {' '.join(self.vocab)}, got {' '.join(labels)!r}"
                                  + ("; use delete to leave the image out" if not labels else ""))
        else:
            labels = csv_labels if action == "keep" else []
        try:
            self.recorder.record(fname, csv_labels, labels, action, reason)
        except OSError as exc:
            raise ReviewError(f"cannot write {self.recorder.path}: {exc}") from None
        self._undo.append((fname, self.decisions.get(fname)))
        self.decisions.pop(fname, None)
        self.decisions[fname] = Correction(fname, tuple(labels), action, reason, tuple(csv_labels))
        return self.item(fname)

    def undo(self) -> dict | None:
        """Take back this session's last decision (its row is removed from the file); None when there is none."""
        with self.lock:
            return self._undo_last()

    def _undo_last(self) -> dict | None:
        if not self._undo or not self.recorder.undo_last():
            return None
        fname, before = self._undo.pop()
        self.decisions.pop(fname, None)
        if before is not None:
            self.decisions[fname] = before
        return self.item(fname)

    def counts(self) -> dict[str, int]:
        with self.lock:
            actions = [decision.action for decision in self.decisions.values()]
        return {"images": len(self.rows), "decided": len(actions),
                **{action: actions.count(action) for action in corrections.ACTIONS}}


def open_review(csv_path: Path, images_root: Path, corrections_path: Path, vocab: list[str] | None = None,
                probabilities: dict[str, list[float] | None] | None = None, threshold: float | None = None) -> Review:
    """The review of `csv_path`, with the decisions already in `corrections_path` (created when missing), and the
    model's `probabilities` per fname (vocab order) when there is a model. ReviewError with one line."""
    columns, rows = read_labels_csv(csv_path)
    seen = set()
    for row in rows:
        if row["fname"] in seen:
            raise ReviewError(f"{csv_path} lists {row['fname']} twice; the cleaner needs one row per image")
        seen.add(row["fname"])
    csv_vocab = sorted({label for row in rows for label in row["labels"].split()})
    vocab = list(vocab) if vocab else csv_vocab
    try:
        recorder = Recorder(corrections_path)
        decisions = corrections.read(corrections_path, set(vocab) | set(csv_vocab))
        corrections.apply(rows, decisions)  # refuses a file made for another CSV, naming the line
    except CorrectionsError as exc:
        raise ReviewError(str(exc).replace("corrections line", f"{corrections_path} line")) from None
    except OSError as exc:
        raise ReviewError(f"cannot open {corrections_path}: {exc}") from None
    scored = None
    if probabilities is not None:
        scored = ranking.score_rows([row["labels"].split() for row in rows],
                                    [probabilities.get(row["fname"]) for row in rows], vocab, threshold)
    others = [name for name in columns if name not in ("fname", "labels")]
    return Review(rows, others, vocab, recorder, images_root, scored, threshold, decisions, set(csv_vocab))
