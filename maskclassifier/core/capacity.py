"""How much heavy work a worker does at once, and how long a request may wait for its turn or spend on faces.

Leaf module: no Flask, no torch. A gunicorn worker serves many connections on threads (slow uploads wait on
their own thread), but decoding and classifying are CPU-bound and memory-hungry, so only `slots` requests run them
at once; the others wait at most `max_wait_s` and are then told the server is busy (HTTP 503 with Retry-After)
instead of queueing until the client or Heroku's router gives up.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass


class Busy(RuntimeError):
    """Every slot stayed taken for the whole wait; `retry_after_s` is a fair guess of when one frees up."""

    def __init__(self, waited_s: float, retry_after_s: int):
        super().__init__(f"no inference slot came free in {waited_s:.1f} s")
        self.retry_after_s = retry_after_s


class OutOfTime(RuntimeError):
    """A Deadline passed; `stage` names the work that was about to start."""

    def __init__(self, stage: str, budget_s: float):
        super().__init__(f"{stage} would start after the {budget_s:g} s budget was spent")
        self.stage = stage
        self.budget_s = budget_s


@dataclass(frozen=True)
class Deadline:
    """A point in time (time.monotonic()) by which a piece of work must be done."""

    at: float
    budget_s: float

    @classmethod
    def after(cls, seconds: float) -> Deadline:
        return cls(time.monotonic() + seconds, seconds)

    def remaining(self) -> float:
        return self.at - time.monotonic()

    def check(self, stage: str) -> None:
        """Raise OutOfTime when the deadline has passed: called between stages, since torch cannot be interrupted."""
        if self.remaining() <= 0:
            raise OutOfTime(stage, self.budget_s)


class InferenceSlots:
    """At most `slots` holders at once; a would-be holder waits at most `max_wait_s`, then gets Busy.

    An exclusive holder takes every slot: a photo so big that two of them at once could exceed the worker's memory
    bound runs alone. Exclusive holders queue one at a time for the slots, so two of them never hold half each.
    """

    def __init__(self, slots: int, max_wait_s: float):
        if slots < 1 or max_wait_s < 0:
            raise ValueError(f"need slots >= 1 and max_wait_s >= 0, got {slots} and {max_wait_s}")
        self.slots = slots
        self.max_wait_s = max_wait_s
        self._semaphore = threading.BoundedSemaphore(slots)
        self._exclusive = threading.Lock()  # held while an exclusive holder gathers every slot
        self._lock = threading.Lock()
        self._waiting = 0
        self._recent_hold_s = 1.0  # moving average of how long a slot is held, for Retry-After

    @property
    def waiting(self) -> int:
        return self._waiting

    @contextmanager
    def hold(self, exclusive: bool = False) -> Iterator[None]:
        """Hold a slot (every slot when `exclusive`) for the duration of the `with` block; raise Busy after waiting
        `max_wait_s` in vain."""
        with self._lock:
            self._waiting += 1
        started = time.monotonic()
        try:
            acquired = self._acquire(self.slots if exclusive else 1, started + self.max_wait_s)
        finally:
            with self._lock:
                self._waiting -= 1
        if not acquired:
            raise Busy(time.monotonic() - started, self._retry_after_s())
        held_from = time.monotonic()
        try:
            yield
        finally:
            for _ in range(acquired):
                self._semaphore.release()
            with self._lock:
                self._recent_hold_s = 0.8 * self._recent_hold_s + 0.2 * (time.monotonic() - held_from)

    def _acquire(self, count: int, deadline: float) -> int:
        """`count` slots by `deadline` (time.monotonic()): the number taken, or 0 (and none kept) on timeout."""
        if count == 1:
            return int(self._semaphore.acquire(timeout=max(0.0, deadline - time.monotonic())))
        if not self._exclusive.acquire(timeout=max(0.0, deadline - time.monotonic())):
            return 0
        taken = 0
        try:
            while taken < count and self._semaphore.acquire(timeout=max(0.0, deadline - time.monotonic())):
                taken += 1
        finally:
            self._exclusive.release()
        if taken < count:
            for _ in range(taken):
                self._semaphore.release()
            return 0
        return taken

    def _retry_after_s(self) -> int:
        """The queue ahead divided among the slots, in whole seconds: at least 2, so a page does not hammer."""
        with self._lock:
            ahead = self._waiting + self.slots
            return max(2, min(30, math.ceil(ahead * self._recent_hold_s / self.slots)))
