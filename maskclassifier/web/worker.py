"""gunicorn's threaded worker with a front door: slow or stalled clients cost a socket, never a thread.

gunicorn's `gthread` worker serves each connection on a thread of a pool while its main loop keeps answering the
arbiter's heartbeat, but a thread reads the request with blocking calls: 32 clients sending their bodies at 1 byte/s
held all 32 threads for the whole upload deadline, and every other request, /healthz included, waited. Here the
main loop reads each request, line, headers and body, without blocking (`maskclassifier.web.frontdoor.Arrival`)
and hands the connection to a thread only once the whole request is in memory, so a thread never waits for a
client. The door also answers what the app must not see (too slow, too large, malformed, too many uploads from one
address, the body budget spent) with the app's JSON errors, and gunicorn's own error pages (400, 414, 431) become
the same JSON with the app's security headers. Closing a connection after a refusal lingers in the event loop
instead of blocking it.

Each socket is still wrapped in a DeadlineSocket whose reads give up after a deadline: should gunicorn's parser ever
want more than the door saw as the whole request, a thread waits HEADER_TIMEOUT_S at most, not for ever.

Used by gunicorn.conf.py as `worker_class = "maskclassifier.web.worker.FrontDoorWorker"`.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import selectors
import socket
import time
from functools import partial
from typing import Any

from gunicorn.workers.gthread import TConn, ThreadWorker

from maskclassifier.core.capacity import client_key
from maskclassifier.web.frontdoor import (
    CLIENT_SHARE,
    HEADER_TIMEOUT_S,
    READ_SIZE,
    Arrival,
    DoorPolicy,
    Refusal,
    error_response,
)
from maskclassifier.web.headers import SECURITY_HEADERS

CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
# After a refusal, the rest of what the client is sending is read and dropped for at most this long (and this
# much) before the socket is closed: closing with unread data makes the kernel send a reset, which can destroy the
# answer before the client reads it (RFC 9112, 9.6). gunicorn's own close does this with blocking reads on the main
# loop, which stalled every other connection for up to 2 s a time.
LINGER_S = 2.0
LINGER_BYTES = 256 * 1024
# gunicorn's own error pages, by status: the code the app's JSON gives them.
GUNICORN_ERROR_CODES = {400: "malformed_request", 403: "forbidden", 414: "uri_too_long", 417: "expectation_failed",
                        431: "headers_too_large", 501: "not_implemented", 500: "internal_error"}
# glibc's allocator gives each thread that allocates its own arena (up to 8 per core) and keeps what is freed in
# it; buffers over a threshold that grows to 32 MB with use come straight from the kernel and go straight back.
# With 32 threads taking turns to decode photos, each arena kept the high-water mark of the photos it had seen: in a
# 20 s crowd run (6 phones, seed 0) the worker's peak grew by 720 MB, with two arenas by 230 MB. Two arenas, and a
# fixed 1 MB threshold (so a decoded photo's blocks are always returned on free), keep it near what the photos need.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_ARENA_MAX = -1, -3, -8  # mallopt parameters, from glibc's malloc.h
MALLOC_ARENAS = 2
MMAP_THRESHOLD_BYTES = 1 << 20
# A fixed mmap threshold also fixes the trim threshold at glibc's 128 KB: the copies of an upload under 1 MB (the
# body, its form part, the file's bytes) came from the top of the heap, were handed back to the kernel on free and
# faulted in again by the next request (1.4 ms of CPU for an 870 KB upload). At most 4 MB free at the top of each
# of the two arenas is kept instead.
TRIM_THRESHOLD_BYTES = 4 << 20
# That threshold has a price: every photo's decoded pixels, its crop and the resize's scratch image are fresh
# mappings whose pages the kernel faults in and zeroes on each request (12 ms of CPU for a 2048x1536 JPEG, 1.5 ms
# for a 640x480 one; BENCHMARKS.md, "Issue 20: the rest of the request"). Pillow allocates image memory in blocks
# of its own and can keep freed blocks for the next image: 8 blocks of 2 MB hold a 2048x1536 photo's pixels (4
# bytes each: 6 blocks) and a little more, so at most 16 MB stay mapped, however many photos come, and bigger
# photos still give theirs back. 16 blocks held everything such a request needs (the model's crop is 6 more) and
# saved 3-4 ms a request (benchmarks.overhead: 43.0 against 47.3 ms at 2048x1536), but with two photos in flight
# the idle blocks raised the worker's peak: the soak's steady figure was 255 MB with 16, 245 with 8 (BENCHMARKS.md,
# "Issue 27"), and the 250 MB budget is what lets a 512 MB dyno hold the worker with room to spare.
# 2 MB, not 1: a block holds whole rows, so 1 MB blocks of a 7000 px wide photo were 1,036,000 bytes, just under
# the mmap threshold: they came from the arenas, and once freed stayed resident under the next allocations (the
# 49 MB reduced copy the face detector shrinks a 49 MP photo through, for one). A block of 2 MB is always over
# 1 MB, so it goes back to the kernel when freed: a 49 MP JPEG's peak with faces=auto fell from 306 to 280 MB
# (BENCHMARKS.md, "Issue 27").
PILLOW_BLOCK_BYTES = 2 << 20
PILLOW_BLOCKS_MAX = 8


def limit_allocator_retention() -> bool:
    """Apply MALLOC_ARENAS, MMAP_THRESHOLD_BYTES and TRIM_THRESHOLD_BYTES to this process (glibc only); False where
    it cannot."""
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):  # musl and other C libraries have no mallopt
        return False
    return (bool(mallopt(_M_ARENA_MAX, MALLOC_ARENAS)) and bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))
            and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)))


def reuse_image_blocks() -> None:
    """Have Pillow keep up to PILLOW_BLOCKS_MAX freed blocks of PILLOW_BLOCK_BYTES for the next images (Pillow's
    block allocator; the default keeps none, with 16 MB blocks)."""
    from PIL import Image

    Image.core.set_block_size(PILLOW_BLOCK_BYTES)
    Image.core.set_blocks_max(PILLOW_BLOCKS_MAX)



class DeadlineSocket:
    """A client socket whose reads give up (return b"") once `deadline` (time.monotonic()) has passed.

    Everything but `recv` and `send` is the wrapped socket's own, so gunicorn's poller, writes and close work
    unchanged. Only one thread at a time (the main loop's reads, or the thread serving a request) touches it.
    """

    def __init__(self, sock: socket.socket):
        self._sock = sock
        self.deadline: float | None = None
        self.read_timed_out = False
        self.continue_sent = False  # the door has answered "Expect: 100-continue"; gunicorn must not again

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)

    def set_read_deadline(self, deadline: float | None) -> None:
        """None: no limit. The app calls it for the body (now always in memory already)."""
        self.deadline, self.read_timed_out = deadline, False

    def send(self, data: bytes, *flags: int) -> int:
        if self.continue_sent and bytes(data) == CONTINUE:
            self.continue_sent = False
            return len(data)
        return self._sock.send(data, *flags)

    def recv(self, size: int, *flags: int) -> bytes:
        if self.deadline is None:
            return self._sock.recv(size, *flags)
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            self.read_timed_out = True
            return b""
        previous = self._sock.gettimeout()
        self._sock.settimeout(remaining)
        try:
            return self._sock.recv(size, *flags)
        except TimeoutError:
            self.read_timed_out = True
            return b""
        finally:
            self._sock.settimeout(previous)


def _recv_nowait(conn) -> bytes | None:
    """What a readable socket holds (up to READ_SIZE): b"" when the client closed or reset it, None when nothing
    was there after all (a spurious wake-up)."""
    try:
        return conn.sock.recv(READ_SIZE)
    except (BlockingIOError, InterruptedError):
        return None
    except OSError:
        return b""


class _Captured:
    """Takes what gunicorn's handle_error writes (its HTML page), so the worker can answer in JSON instead."""

    def __init__(self):
        self.data = b""

    def gettimeout(self) -> float:
        return 0.0

    def setblocking(self, flag: bool) -> None:
        pass

    def send(self, data: bytes) -> int:
        self.data += bytes(data)
        return len(data)

    def sendall(self, data: bytes) -> None:
        self.data += bytes(data)


class FrontDoorWorker(ThreadWorker):
    """gthread whose main loop reads every request whole (`Arrival`) before a thread serves it."""

    def init_process(self) -> None:
        if not limit_allocator_retention():
            self.log.warning("could not limit the C allocator's arenas: memory may grow with the threads")
        reuse_image_blocks()
        self.arrivals: set[TConn] = set()
        self.lingering: dict[TConn, tuple[float, int]] = {}
        self.uploads_by_client: dict[str, tuple[int, int]] = {}  # uploads, bytes reserved
        self.reserved = 0
        super().init_process()  # loads the app, then runs the loop

    def run(self) -> None:
        self.policy = self._door_policy()
        super().run()

    def _door_policy(self) -> DoorPolicy:
        """The app's body limit and upload deadline (Flask's config), else Werkzeug-like defaults."""
        config = getattr(self.wsgi, "config", {})
        settings = config.get("SETTINGS")
        return DoorPolicy(max_body_bytes=int(config.get("MAX_CONTENT_LENGTH") or 16 * 1024 * 1024),
                          upload_timeout_s=float(getattr(settings, "upload_timeout_s", 60.0)))

    # Connections arriving: read in the loop --------------------------------------------------------------------

    def accept(self, listener) -> None:
        try:
            client_sock, client_addr = listener.accept()
        except OSError as error:
            if error.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return
        self.nr_conns += 1
        conn = TConn(self.cfg, client_sock, client_addr, listener.getsockname())  # non-blocking
        conn.sock = DeadlineSocket(conn.sock)
        self._start_arrival(conn)

    def on_client_socket_readable(self, conn, client) -> None:
        """A kept-alive connection sends its next request: read it in the loop too."""
        self.poller.unregister(client)
        self.keepalived_conns.remove(conn)
        self._start_arrival(conn)
        self._read_arrival(conn, client)

    def _start_arrival(self, conn, leftover: bytes = b"") -> None:
        conn.arrival = None
        self.arrivals.add(conn)
        conn.sock.setblocking(False)
        try:
            conn.arrival = Arrival(self.policy, time.monotonic(), leftover)
            self._admit(conn)
        except Refusal as refusal:
            self._refuse(conn, refusal)
            return
        if conn.arrival.complete:
            self._dispatch(conn)
        else:
            self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._read_arrival, conn))

    def _read_arrival(self, conn, _sock) -> None:
        arrival: Arrival = conn.arrival
        data = _recv_nowait(conn)
        if data is None:
            return
        if not data:  # the client went away; nobody to answer
            self._drop(conn)
            return
        try:
            arrival.feed(data, time.monotonic())
            self._admit(conn)
        except Refusal as refusal:
            self._refuse(conn, refusal)
            return
        if arrival.complete:
            self._dispatch(conn)

    def _admit(self, conn) -> None:
        """Once a request's headers are in: its client's uploads and the body budget, and "100 Continue"."""
        arrival: Arrival = conn.arrival
        if arrival.head is None or arrival.client:
            return
        arrival.client = self._client_key(conn, arrival)
        reservation = arrival.body_reservation()
        if reservation:
            uploads, reserved = self.uploads_by_client.get(arrival.client, (0, 0))
            if (uploads >= self.policy.per_client_uploads
                    or reserved + reservation > self.policy.buffer_budget_bytes * CLIENT_SHARE):
                raise Refusal(503, "busy", "Too many uploads are in progress from your network. Please wait for "
                                           "them to finish and try again.", retry_after_s=10)
            if self.reserved + reservation > self.policy.buffer_budget_bytes:
                raise Refusal(503, "busy", "The server is receiving too many photos right now. "
                                           "Please try again in a few seconds.", retry_after_s=5)
            self.uploads_by_client[arrival.client] = (uploads + 1, reserved + reservation)
            self.reserved += reservation
            arrival.reserved = reservation
        if arrival.wants_continue and not arrival.complete:
            try:
                conn.sock._sock.send(CONTINUE)
                conn.sock.continue_sent = True
            except OSError:
                pass  # the client sends its body after a second or so anyway

    def _client_key(self, conn, arrival: Arrival) -> str:
        """The app's rule (capacity.client_key) with gunicorn's trusted proxies: X-Forwarded-For's last hop behind
        Heroku's router, else the peer."""
        peer = conn.client[0] if isinstance(conn.client, tuple) else str(conn.client)
        forwarded = arrival.header(b"x-forwarded-for")
        return client_key(peer, forwarded.decode("latin-1") if forwarded else None, self.cfg.forwarded_allow_ips)

    def _release(self, conn) -> None:
        arrival: Arrival | None = getattr(conn, "arrival", None)
        if arrival is None:
            return
        conn.arrival = None
        if arrival.reserved:
            self.reserved -= arrival.reserved
            uploads, reserved = self.uploads_by_client.pop(arrival.client, (1, arrival.reserved))
            if uploads > 1:
                self.uploads_by_client[arrival.client] = (uploads - 1, reserved - arrival.reserved)

    def _dispatch(self, conn) -> None:
        """The whole request is in: gunicorn's parser reads it from memory on a thread."""
        self._unregister(conn)
        self.arrivals.discard(conn)
        conn.init()  # creates the parser on a new connection (a kept-alive one has its own)
        conn.parser.unreader.unread(conn.arrival.raw)  # one copy, into the parser's buffer
        conn.arrival.raw = bytearray()
        conn.data_ready = True
        self.enqueue_req(conn)

    # Answers and closes in the loop --------------------------------------------------------------------------

    def _refuse(self, conn, refusal: Refusal) -> None:
        arrival = getattr(conn, "arrival", None)
        self.log.info("refused a request from %s at the door: %s", getattr(arrival, "client", "") or conn.client,
                      refusal)
        self._send_quietly(conn, error_response(refusal.status, refusal.code, refusal.message, SECURITY_HEADERS,
                                                refusal.retry_after_s))
        self._linger(conn)

    def _send_quietly(self, conn, data: bytes) -> None:
        """Best effort without blocking: an error answer fits the socket's buffer; the client may be gone."""
        try:
            conn.sock._sock.send(data)
        except OSError:
            pass

    def _linger(self, conn) -> None:
        """Half-close, then drop what the client still sends for LINGER_S at most, in the loop."""
        self._release(conn)
        self._unregister(conn)
        self.arrivals.discard(conn)
        try:
            conn.sock.setblocking(False)
            conn.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self._close(conn)
            return
        self.lingering[conn] = (time.monotonic() + LINGER_S, 0)
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._drain, conn))

    def _drain(self, conn, _sock) -> None:
        deadline, drained = self.lingering[conn]
        data = _recv_nowait(conn)
        if data is None:
            return
        drained += len(data)
        if not data or drained >= LINGER_BYTES:
            self._unregister(conn)
            self.lingering.pop(conn, None)
            self._close(conn)
        else:
            self.lingering[conn] = (deadline, drained)

    def _drop(self, conn) -> None:
        self._release(conn)
        self._unregister(conn)
        self.arrivals.discard(conn)
        self._close(conn)

    def _close(self, conn) -> None:
        self.nr_conns -= 1
        conn.close()

    def _unregister(self, conn) -> None:
        try:
            self.poller.unregister(conn.sock)
        except (KeyError, ValueError, OSError):
            pass

    def murder_pending(self) -> None:
        """Each turn of the loop: arrivals that took too long, and lingering closes that are done."""
        super().murder_pending()
        now = time.monotonic()
        for conn in list(self.arrivals):
            arrival: Arrival | None = conn.arrival
            if arrival is None:
                continue
            if not arrival.raw and (not self.alive or now - arrival.started > self.policy.header_timeout_s):
                self._drop(conn)  # sent nothing: closed without an answer (and at once when the worker stops)
                continue
            refusal = arrival.overdue(now)
            if refusal is not None:
                self._refuse(conn, refusal)
        for conn, (deadline, _) in list(self.lingering.items()):
            if now >= deadline:
                self._unregister(conn)
                del self.lingering[conn]
                self._close(conn)

    def handle(self, conn):
        """On a thread: gunicorn parses the request from memory. Should its parser want more than the door saw as the
        whole request, the socket's reads give up after HEADER_TIMEOUT_S instead of holding the thread."""
        conn.sock.set_read_deadline(time.monotonic() + HEADER_TIMEOUT_S)
        try:
            return super().handle(conn)
        finally:
            conn.sock.set_read_deadline(None)

    def finish_request(self, conn, fs) -> None:
        """A thread has answered: keep the connection for its next request (read by the door), or close it in the
        loop. gunicorn's own version closes with blocking reads on the main loop and reads kept-alive requests on a
        thread."""
        self._release(conn)
        try:
            keep = bool(fs.result()) if not fs.cancelled() else False
        except Exception:
            keep = False
        if keep and self.alive:
            leftover = conn.parser.unreader.take_buffered()  # a pipelined next request
            if leftover:
                self._start_arrival(conn, leftover)
                return
            conn.sock.setblocking(False)
            conn.set_timeout()
            self.keepalived_conns.append(conn)
            self.poller.register(conn.sock, selectors.EVENT_READ, partial(self.on_client_socket_readable, conn))
        elif keep:  # stopping: no next request
            self._close(conn)
        else:
            self._linger(conn)

    def handle_error(self, req, client, addr, exc) -> None:
        """gunicorn's own error pages (400 bad request line or chunk, 414, 431, 500) as the app's JSON errors."""
        captured = _Captured()
        super().handle_error(req, captured, addr, exc)  # classifies and logs as gunicorn does
        try:
            status = int(captured.data.split(b" ", 2)[1])
        except (IndexError, ValueError):
            status = 500
        code = GUNICORN_ERROR_CODES.get(status, "bad_request")
        message = ("Something went wrong on our side. Please try again." if status >= 500 and status != 501 else
                   f"The request could not be read ({str(exc)[:200]}). Please upload the photo again.")
        try:
            client.setblocking(True)
            client.settimeout(2)
            client.sendall(error_response(status, code, message, SECURITY_HEADERS))
        except OSError:
            pass

