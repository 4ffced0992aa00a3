"""How much heavy work a worker does at once, and how long a request may wait for its turn or spend on faces.

Leaf module: no Flask, no torch. A gunicorn worker serves many connections on threads (slow uploads wait on
their own thread), but decoding and classifying are CPU-bound and memory-hungry, so only `slots` requests run them
at once; the others wait at most `max_wait_s` and are then told the server is busy (HTTP 503 with Retry-After)
instead of queueing until the client or Heroku's router gives up. Waiting clients take turns (`client_key` says
who a request is from, behind a trusted proxy too), so one client's many requests do not crowd out everyone else's.
"""

from __future__ import annotations

import ipaddress
import math
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

from maskclassifier.core.errors import MaskClassifierError


class Busy(MaskClassifierError, RuntimeError):
    """Every slot stayed taken for the whole wait (`waited_s`); `retry_after_s` is a fair guess of when one frees
    up, sent as Retry-After."""

    status = 503
    code = "busy"

    def __init__(self, waited_s: float, retry_after_s: int):
        super().__init__("The server is busy with other people's photos right now. "
                         f"Please try again in {retry_after_s} seconds.",
                         headers=[("Retry-After", str(retry_after_s))])
        self.waited_s = waited_s
        self.retry_after_s = retry_after_s


class OutOfTime(MaskClassifierError, RuntimeError):
    """A Deadline passed; `stage` names the work that was about to start. Those who set the deadline turn it into
    their own answer (TooManyFaces, ExplainTooSlow); one that escapes them is a bug: the default 500."""

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

    Waiters queue per client and clients take turns: the next slot goes to the first waiter of the client whose turn
    it is, and a client that was just served goes to the back of the line. In semaphore order, 12 phones each
    sending group photos turned 25-60 % of another user's predictions into 503 busy; in turns, that user waits for at
    most one request of each other client.

    An exclusive holder takes every slot: a photo so big that two of them at once could exceed the worker's memory
    bound runs alone. Once it is next in line, nothing overtakes it: the slots that come free stay free until it has
    them all.
    """

    def __init__(self, slots: int, max_wait_s: float):
        if slots < 1 or max_wait_s < 0:
            raise ValueError(f"need slots >= 1 and max_wait_s >= 0, got {slots} and {max_wait_s}")
        self.slots = slots
        self.max_wait_s = max_wait_s
        # One condition guards everything below; every change that can let a waiter in wakes them all (a worker has
        # at most its few dozen threads waiting, so each checks whether it is now first in line, and cheaply).
        self._changed = threading.Condition()
        self._free = slots
        self._turns: OrderedDict[str, deque[_Waiter]] = OrderedDict()  # client -> its waiters; first client is next
        self._recent_hold_s = 1.0  # moving average of how long a slot is held, for Retry-After

    @property
    def waiting(self) -> int:
        with self._changed:
            return sum(len(queue) for queue in self._turns.values())

    @contextmanager
    def hold(self, exclusive: bool = False, client: str = "") -> Iterator[None]:
        """Hold a slot (every slot when `exclusive`) for the duration of the `with` block, in `client`'s turn; raise
        Busy after waiting `max_wait_s` in vain."""
        started = time.monotonic()
        taken = self._acquire(_Waiter(self.slots if exclusive else 1), client, started + self.max_wait_s)
        if not taken:
            raise Busy(time.monotonic() - started, self._retry_after_s())
        held_from = time.monotonic()
        try:
            yield
        finally:
            with self._changed:
                self._free += taken
                self._recent_hold_s = 0.8 * self._recent_hold_s + 0.2 * (time.monotonic() - held_from)
                self._changed.notify_all()

    def _acquire(self, waiter: _Waiter, client: str, deadline: float) -> int:
        """`waiter.count` slots in `client`'s turn by `deadline` (time.monotonic()): the number taken, or 0."""
        with self._changed:
            self._turns.setdefault(client, deque()).append(waiter)
            while True:
                # checked before the deadline, so a waiter woken late by its timeout still takes a slot freed for it
                if self._next() is waiter and self._free >= waiter.count:
                    self._free -= waiter.count
                    self._leave(client, waiter, served=True)
                    self._changed.notify_all()  # the next in line may fit in what is left
                    return waiter.count
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    self._leave(client, waiter, served=False)
                    self._changed.notify_all()  # if it was first in line (an exclusive one), those behind may fit
                    return 0
                self._changed.wait(remaining)

    def _next(self) -> _Waiter | None:
        """The first waiter of the client whose turn it is."""
        for queue in self._turns.values():
            return queue[0]
        return None

    def _leave(self, client: str, waiter: _Waiter, served: bool) -> None:
        queue = self._turns[client]
        queue.remove(waiter)
        if not queue:
            del self._turns[client]
        elif served:
            self._turns.move_to_end(client)  # served: the other clients' turns come first

    def _retry_after_s(self) -> int:
        """The queue ahead divided among the slots, in whole seconds: at least 2, so a page does not hammer."""
        with self._changed:
            ahead = sum(len(queue) for queue in self._turns.values()) + self.slots
            return max(2, min(30, math.ceil(ahead * self._recent_hold_s / self.slots)))


@dataclass(eq=False)
class _Waiter:
    """One request waiting for `count` slots (compared by identity: two waiters of a client are never equal)."""

    count: int


# Whose turn a request is: the address it came from, or, behind a proxy the server trusts, the address that proxy
# saw. Only proxies may be believed: anyone else can write any X-Forwarded-For and take every client's turn.
# What one gunicorn worker needs at its peak, by install, for gunicorn.conf.py (how many workers the memory holds)
# and GET /api/model: benchmarks/soak.py's steady figure, the most RSS over the second half of 10 minutes of mixed
# traffic with up to two photos in flight (BENCHMARKS.md, "Issue 27"). Slim (an .onnx model: ONNX Runtime, Pillow,
# NumPy): 259 MB, then under 250 once detection and heat-maps worked in bands. Full (a fastai .pkl): 706 MB with
# CPU torch 2.13 (516 MB before its first request: torch alone imports 218 MB, fastai.vision.all about 230 more),
# so a 512 MB dyno cannot hold it; the ONNX twin gives the same answers in a slim-sized worker.
WORKER_BUDGET_MB = {"slim": 250, "full": 720}
HEROKU_PROXIES = ("*",)  # every dyno has DYNO set, and only Heroku's router can reach a dyno's port
LOCAL_PROXIES = ("127.0.0.1", "::1")  # elsewhere gunicorn may face clients itself: only a proxy on this machine


def trusted_proxies(environ: Mapping[str, str]) -> list[str]:
    """The peers whose X-Forwarded-* headers are believed, as gunicorn's `forwarded_allow_ips` takes them (addresses,
    networks, or "*" for any): FORWARDED_ALLOW_IPS when set, else HEROKU_PROXIES on Heroku, else LOCAL_PROXIES.
    ValueError, in one line, for an entry that is neither an address nor a network."""
    raw = environ.get("FORWARDED_ALLOW_IPS", "").strip()
    if not raw:
        return list(HEROKU_PROXIES if environ.get("DYNO", "").strip() else LOCAL_PROXIES)
    entries = [entry.strip() for entry in raw.split(",") if entry.strip()]
    for entry in entries:
        if entry != "*":
            try:
                ipaddress.ip_network(entry)  # strict, as gunicorn checks it: 10.0.0.1/8 is a mistake for 10.0.0.0/8
            except ValueError:
                raise ValueError(f"FORWARDED_ALLOW_IPS must be IP addresses or networks separated by commas, or *, "
                                 f"got {entry!r}") from None
    return entries


def client_key(peer: str, forwarded_for: str | None, trusted: Iterable[str]) -> str:
    """Whose turn a request is (InferenceSlots.hold's `client`): when `peer` is one of the `trusted` proxies (see
    trusted_proxies), the last address in its X-Forwarded-For, the one that proxy saw connect (Heroku's router appends
    it; what comes before is whatever the client sent); else `peer` itself."""
    if forwarded_for and _is_trusted(peer, trusted):
        last = forwarded_for.rsplit(",", 1)[-1].strip()
        if last:
            return last
    return peer


def _is_trusted(peer: str, trusted: Iterable[str]) -> bool:
    """As gunicorn decides it for X-Forwarded-Proto: "*" trusts anyone, else the peer's address must be in one of the
    addresses or networks."""
    trusted = list(trusted)
    if "*" in trusted:
        return True
    try:
        address = ipaddress.ip_address(peer)
    except ValueError:
        return False
    return any(address in ipaddress.ip_network(entry) for entry in trusted)
