"""Giving back to the kernel the memory that requests freed, once their answer has been sent.

Pillow's blocks of about 1 MB (a 49-megapixel photo's pixels), numpy's arrays under 1 MB and the face detector's
buffers come from glibc's two arenas (maskclassifier/web/worker.py fixes its mmap threshold at 1 MB). Freed, they
stay resident: glibc hands back free memory only at the top of an arena, and whatever later requests allocate lies
above it. After one 49 MP JPEG the slim worker kept 113-122 MB more than before it (the tester saw 200-285 MB
after 49 MP WebP and HEIC files); after a minute of ordinary mixed traffic 68 MB of its 250 MB were such free
memory. `malloc_trim(0)` returns the free pages inside the arenas too (madvise), at a cost that grows with the free
memory it walks: 25-48 ms after a 49 MP photo, 1-2 ms after one ordinary request, 31 ms after a minute of them
without a trim (BENCHMARKS.md, "Issue 27").

So it runs after the response of a photo over SHARED_SLOT_PIXELS (one that runs alone), and after any other
request's response once the worker's RSS is more than TRIM_SLACK_BYTES above the least it has been just after a
trim (what the worker needs at rest): ordinary photos keep the pages the allocator reuses for the next one, and
the worker at rest stays within that slack of what it really uses. Measured from the last trim instead, a trim
made while another request was in flight set the mark high, and the soak's worker sat 60-100 MB above its needs.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import threading

from flask import Response, after_this_request

TRIM_SLACK_BYTES = 16 << 20  # at 32 MB the soak's steady figure was 9 MB higher (254 against 245 MB)
_PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")


def _malloc_trim():
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):  # musl and other C libraries have no malloc_trim
        return None


_MALLOC_TRIM = _malloc_trim()
_lock = threading.Lock()
_at_rest = 0  # the least RSS in bytes seen just after a trim: what the worker needs between requests


def resident_bytes() -> int:
    """This process's RSS (Linux), 0 where it cannot be read."""
    try:
        with open("/proc/self/statm", "rb") as handle:
            return int(handle.read().split()[1]) * _PAGE_BYTES
    except (OSError, ValueError, IndexError):
        return 0


def release_freed_memory(always: bool = True) -> bool:
    """Return the C allocator's free pages to the kernel (glibc only): always, or only when the RSS has grown by
    TRIM_SLACK_BYTES above the least RSS seen after a trim. True when it trimmed; one thread trims at a time, the
    others skip."""
    global _at_rest
    if _MALLOC_TRIM is None or not _lock.acquire(blocking=False):
        return False
    try:
        if not always and _at_rest and resident_bytes() < _at_rest + TRIM_SLACK_BYTES:
            return False
        _MALLOC_TRIM(0)
        after = resident_bytes()
        _at_rest = min(_at_rest, after) if _at_rest else after
        return True
    finally:
        _lock.release()


def release_after_response(always: bool) -> None:
    """Within a request: call release_freed_memory(always) once the response has been sent (its body closed), when
    the view's images are gone."""

    @after_this_request
    def _when_sent(response: Response) -> Response:
        response.call_on_close(lambda: release_freed_memory(always))
        return response
