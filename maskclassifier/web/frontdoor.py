"""The front door: each request's line, headers and body read in the worker's event loop, before any thread sees it.

gunicorn's threaded worker hands a connection to a thread as soon as it is readable, and the thread then reads the
request with blocking calls: 32 clients sending their bodies at 1 byte/s held all 32 threads for the whole upload
deadline, and every other request, /healthz included, waited (issue 27). Here the worker's main loop reads what each
socket has without blocking and feeds it to an `Arrival`, which uses h11 (a well-kept HTTP/1.1 state machine) only
to tell where the request ends; the bytes themselves are kept as received and handed to gunicorn's own parser once
the whole request is there. A slow client costs a socket and its bytes so far, never a thread.

What an arrival may cost is bounded here, in one place (`DoorPolicy`): how long its head may take, a minimum body
rate after a grace period and an overall upload deadline, the largest body, how many uploads one client address may
have in progress, and how many body bytes all arrivals together may hold. A request refused here gets the same
JSON errors as the app's (`Refusal`), with its stable code.

Web layer, no Flask: `maskclassifier.web.worker` drives it; the tests drive it directly with bytes and clocks.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import h11

from maskclassifier.core.errors import MaskClassifierError

# Request line and headers: a phone on a weak network sends them in one or two packets, well within this.
HEADER_TIMEOUT_S = 10.0
# The largest request line plus headers kept while they arrive (h11's own default). gunicorn's parser, which reads
# them again, answers 414 and 431 for its finer limits (a 4094-byte request line, 100 fields of 8190 bytes).
MAX_HEAD_BYTES = 16 * 1024
# A body must keep arriving at MIN_BODY_RATE on average once BODY_GRACE_S have passed: a 500 KB photo from the page
# at a poor 8 KB/s takes a minute and passes; a client trickling a byte a second is refused after about 10 s.
MIN_BODY_RATE = 1024  # bytes per second
BODY_GRACE_S = 10.0
# Uploads in progress from one client address (X-Forwarded-For's last hop behind Heroku's router, else the peer).
# A room of phones behind one conference NAT shares an address, so this is a bound on one attacker, not a quota.
PER_CLIENT_UPLOADS = 32
# Body bytes that all arrivals may hold at once, reserved when a request's headers announce its length (the whole
# limit for a chunked body): 6 API uploads of 10 MB, or about 150 photos from the page (400 KB each). One client
# address may reserve at most half, so one laptop announcing big bodies cannot shut everyone else out.
BUFFER_BUDGET_BYTES = 64 * 1024 * 1024
CLIENT_SHARE = 0.5
READ_SIZE = 256 * 1024  # one recv() from a readable socket


@dataclass(frozen=True)
class DoorPolicy:
    """What one arrival may cost; `max_body_bytes` and `upload_timeout_s` come from the app's settings."""

    max_body_bytes: int
    upload_timeout_s: float
    header_timeout_s: float = HEADER_TIMEOUT_S
    min_body_rate: float = MIN_BODY_RATE
    body_grace_s: float = BODY_GRACE_S
    per_client_uploads: int = PER_CLIENT_UPLOADS
    buffer_budget_bytes: int = BUFFER_BUDGET_BYTES


class Refusal(MaskClassifierError):
    """A request answered at the door: HTTP `status`, the stable `code` and a `message` for a person."""

    def __init__(self, status: int, code: str, message: str, retry_after_s: int | None = None):
        retry_after = [("Retry-After", str(retry_after_s))] if retry_after_s is not None else []
        super().__init__(message, headers=retry_after)
        self.status, self.code, self.retry_after_s = status, code, retry_after_s

    def __str__(self) -> str:  # as the worker logs it
        return f"{self.status} {self.code}: {self.message}"


REASONS = {400: "Bad Request", 408: "Request Timeout", 413: "Content Too Large",
           403: "Forbidden", 414: "URI Too Long", 417: "Expectation Failed",
           431: "Request Header Fields Too Large", 500: "Internal Server Error", 501: "Not Implemented",
           503: "Service Unavailable"}


def error_response(status: int, code: str, message: str, security_headers: dict[str, str],
                   retry_after_s: int | None = None) -> bytes:
    """A complete HTTP/1.1 response: the app's JSON error body, its security headers, and Connection: close."""
    body = json.dumps({"error": code, "message": message}).encode()
    headers = {"Content-Type": "application/json", "Content-Length": str(len(body)), "Connection": "close",
               "Cache-Control": "no-store", **security_headers}
    if retry_after_s is not None:
        headers["Retry-After"] = str(retry_after_s)
    head = f"HTTP/1.1 {status} {REASONS.get(status, 'Error')}\r\n" + "".join(
        f"{name}: {value}\r\n" for name, value in headers.items()) + "\r\n"
    return head.encode("latin-1") + body


def too_slow(seconds: float) -> Refusal:
    return Refusal(408, "upload_timeout",
                   f"The photo did not arrive in time (within {seconds:g} seconds, or at least "
                   f"{MIN_BODY_RATE // 1024} KB a second): the connection is too slow or stalled. "
                   "Please try again on a better connection, or with a smaller photo.")


class Arrival:
    """One request on its way in: the raw bytes as received, and where it stands.

    `feed` takes bytes from the socket and raises Refusal for a request the app must not see; `complete` turns True
    once the whole request (head and body) is in `raw`, which may also hold the start of a pipelined next request.
    `head` is h11's Request once the request line and headers are in; `reserved` the body bytes counted against the
    budget (set by the worker).
    """

    def __init__(self, policy: DoorPolicy, now: float, leftover: bytes = b""):
        self.policy = policy
        self.started = now
        self.raw = bytearray()
        self.head: h11.Request | None = None
        self.body_started: float | None = None
        self.body_bytes = 0
        self.declared_length: int | None = None  # Content-Length, None for a chunked body
        self.complete = False
        self.client = ""
        self.reserved = 0
        self.wants_continue = False  # the client waits for "100 Continue" before it sends the body
        self._parser = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD_BYTES)
        if leftover:
            self.feed(leftover, now)

    def feed(self, data: bytes, now: float) -> None:
        self.raw += data
        if self.complete:  # bytes of a pipelined next request: gunicorn reads them after this one
            return
        self._parser.receive_data(data)
        try:
            self._advance(now)
        except h11.RemoteProtocolError as error:
            status = error.error_status_hint if error.error_status_hint in (400, 431) else 400
            if status == 431:
                raise Refusal(431, "headers_too_large", "The request's headers are too large.") from None
            raise Refusal(400, "malformed_request",
                          f"The request could not be read: {error}. Send the photo as a file in a "
                          "multipart form (as a browser form or curl -F file=@photo.jpg does).") from None

    def _advance(self, now: float) -> None:
        while not self.complete:
            event = self._parser.next_event()
            if event is h11.NEED_DATA or event is h11.PAUSED:
                return
            if isinstance(event, h11.Request):
                self._start_body(event, now)
            elif isinstance(event, h11.Data):
                self.body_bytes += len(event.data)
                if self.body_bytes > self.policy.max_body_bytes:
                    raise self._too_large()
            elif isinstance(event, h11.EndOfMessage):
                self.complete = True
            elif isinstance(event, h11.ConnectionClosed):
                return

    def _start_body(self, head: h11.Request, now: float) -> None:
        self.head = head
        self.body_started = now
        headers = {name.lower(): value for name, value in head.headers}
        if b"content-length" in headers:
            self.declared_length = int(headers[b"content-length"])  # h11 has checked it is a number
            if self.declared_length > self.policy.max_body_bytes:
                raise self._too_large()
        elif headers.get(b"transfer-encoding", b"").lower() == b"chunked":
            self.declared_length = None
        else:
            self.declared_length = 0
        self.wants_continue = (headers.get(b"expect", b"").lower() == b"100-continue"
                               and head.http_version == b"1.1" and self.declared_length != 0)

    def _too_large(self) -> Refusal:
        limit_mb = self.policy.max_body_bytes / (1024 * 1024)
        return Refusal(413, "file_too_large", f"The file is too large. The limit is about {limit_mb:.0f} MB per photo.")

    def body_reservation(self) -> int:
        """The body bytes this request may still bring: what it announced, or the limit for a chunked body."""
        return self.policy.max_body_bytes if self.declared_length is None else self.declared_length

    def header(self, name: bytes) -> bytes | None:
        if self.head is None:
            return None
        for key, value in self.head.headers:
            if key.lower() == name:
                return value
        return None

    def overdue(self, now: float) -> Refusal | None:
        """The refusal for an arrival that has taken too long by `now`, else None."""
        if self.complete:
            return None
        if self.head is None:
            if now - self.started <= self.policy.header_timeout_s:
                return None
            return Refusal(408, "request_timeout", "The request's headers did not arrive in time. Please try again.")
        elapsed = now - (self.body_started or self.started)
        allowed = min(self.policy.upload_timeout_s,
                      self.policy.body_grace_s + self.body_bytes / self.policy.min_body_rate)
        return too_slow(self.policy.upload_timeout_s) if elapsed > allowed else None

    def next_check(self, now: float) -> float:
        """When `overdue` could next turn true (time.monotonic()), for the worker's timer."""
        if self.head is None:
            return self.started + self.policy.header_timeout_s
        start = self.body_started or self.started
        return start + min(self.policy.upload_timeout_s,
                           self.policy.body_grace_s + self.body_bytes / self.policy.min_body_rate)
