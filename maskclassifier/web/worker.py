"""gunicorn's threaded worker with read deadlines, so that slow or stalled clients cost a thread, never the worker.

gunicorn's `gthread` worker serves each connection on a thread of a pool while its main loop keeps answering the
arbiter's heartbeat, so a slow upload no longer blocks every other request (as the sync worker did) and cannot get
the worker killed. It still reads with no time limit: a client that sends its headers a line every few seconds, or
its body a byte at a time, would hold a thread for ever. Here each connection's socket is wrapped in a
DeadlineSocket: the request line and headers must arrive within HEADER_TIMEOUT_S of the thread starting to read
them, and the web app (`maskclassifier.web.uploads.buffer_body`) gives the body its own deadline (UPLOAD_TIMEOUT) through
`set_read_deadline`. A read past a deadline returns end-of-file, which gunicorn treats as a client that went away.

Used by gunicorn.conf.py as `worker_class = "maskclassifier.web.worker.DeadlineThreadWorker"`.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import socket
import time
from typing import Any

from gunicorn.workers.gthread import ThreadWorker

# Request line and headers: a phone on a weak network sends them in one or two packets, well within this.
HEADER_TIMEOUT_S = 10.0
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
# of its own and can keep freed blocks for the next image: 16 blocks of 2 MB hold everything a 2048x1536 photo
# needs, so at most 32 MB stay mapped, however many photos come, and bigger photos still give theirs back.
# 2 MB, not 1: a block holds whole rows, so 1 MB blocks of a 7000 px wide photo were 1,036,000 bytes, just under
# the mmap threshold: they came from the arenas, and once freed stayed resident under the next allocations (the
# 49 MB reduced copy the face detector shrinks a 49 MP photo through, for one). A block of 2 MB is always over
# 1 MB, so it goes back to the kernel when freed: a 49 MP JPEG's peak with faces=auto fell from 306 to 280 MB
# (BENCHMARKS.md, "Issue 27").
PILLOW_BLOCK_BYTES = 2 << 20
PILLOW_BLOCKS_MAX = 16


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


def _timeout_response() -> bytes:
    body = json.dumps({"error": "request_timeout",
                       "message": "The request's headers did not arrive in time. Please try again."}).encode()
    return (b"HTTP/1.1 408 Request Timeout\r\nContent-Type: application/json\r\nConnection: close\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)


class DeadlineSocket:
    """A client socket whose reads give up (return b"") once `deadline` (time.monotonic()) has passed.

    Everything but `recv` is the wrapped socket's own, so gunicorn's poller, writes and close work unchanged.
    Only the thread that serves the connection touches it, so the deadline needs no lock.
    """

    def __init__(self, sock: socket.socket):
        self._sock = sock
        self.deadline: float | None = None
        self.read_timed_out = False
        self.received = 0  # bytes read since the deadline was last set
        self.in_headers = False  # the worker is reading a request's line and headers, not the app its body

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)

    def start_headers(self, deadline: float) -> None:
        """Called by the worker before it reads a request: `deadline` is for the request line and headers."""
        self.deadline, self.read_timed_out, self.received, self.in_headers = deadline, False, 0, True

    def set_read_deadline(self, deadline: float | None) -> None:
        """Called by the app for the body (None: no limit); from then on the headers have arrived."""
        self.deadline, self.read_timed_out, self.received, self.in_headers = deadline, False, 0, False

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
            data = self._sock.recv(size, *flags)
        except TimeoutError:
            self.read_timed_out = True
            return b""
        finally:
            self._sock.settimeout(previous)
        self.received += len(data)
        return data


class DeadlineThreadWorker(ThreadWorker):
    """gthread with a deadline on every read: HEADER_TIMEOUT_S for the request line and headers, then whatever
    the app sets for the body; a client that sent part of a request before its deadline gets a JSON 408."""

    def init_process(self) -> None:
        if not limit_allocator_retention():
            self.log.warning("could not limit the C allocator's arenas: memory may grow with the threads")
        reuse_image_blocks()
        super().init_process()

    def enqueue_req(self, conn) -> None:
        if not isinstance(conn.sock, DeadlineSocket):
            conn.sock = DeadlineSocket(conn.sock)
        super().enqueue_req(conn)

    def handle(self, conn):
        sock: DeadlineSocket = conn.sock
        sock.start_headers(time.monotonic() + HEADER_TIMEOUT_S)
        try:
            result = super().handle(conn)
            if result is False and sock.in_headers and sock.read_timed_out and sock.received:
                self._send_timeout(sock)  # part of a request came, too slowly; no answer was sent yet
            return result
        finally:
            sock.set_read_deadline(None)

    def _send_timeout(self, sock: DeadlineSocket) -> None:
        """Best effort: the client may already be gone."""
        try:
            sock.settimeout(2)
            sock.sendall(_timeout_response())
        except OSError:
            pass
        self.log.info("closed a connection whose request did not arrive within %g s", HEADER_TIMEOUT_S)
