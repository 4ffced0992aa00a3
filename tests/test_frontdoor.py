"""The worker's front door: requests read whole in the event loop, so slow and idle clients cost no thread.

The first tests drive `Arrival` with bytes and a clock; the others start the Procfile's stack and misbehave at it
the way issue 27's attacker did (40 body tricklers, 300 idle and header-trickling connections).
"""

from __future__ import annotations

import json
import select
import socket
import threading
import time

import pytest

from harness.multipart import Part, multipart
from harness.server import serving
from maskclassifier.web.frontdoor import (
    BODY_GRACE_S,
    MIN_BODY_RATE,
    PER_CLIENT_UPLOADS,
    Arrival,
    DoorPolicy,
    Refusal,
    error_response,
)

POLICY = DoorPolicy(max_body_bytes=1000, upload_timeout_s=60)


def post(body: bytes, extra: str = "") -> bytes:
    return (f"POST /api/predict HTTP/1.1\r\nHost: t\r\nContent-Length: {len(body)}\r\n{extra}\r\n").encode() + body


def test_a_request_is_complete_only_once_its_whole_body_is_in():
    whole = post(b"x" * 300)
    arrival = Arrival(POLICY, now=0.0)
    for start in range(0, len(whole) - 1, 7):
        arrival.feed(whole[start:start + 7], now=1.0)
        assert not arrival.complete or start + 7 >= len(whole)
    arrival.feed(whole[-1:], now=1.0) if not arrival.complete else None
    assert arrival.complete and bytes(arrival.raw) == whole
    assert arrival.head.target == b"/api/predict" and arrival.body_reservation() == 300


def test_a_pipelined_next_request_stays_in_the_bytes_for_gunicorn():
    first, second = b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n", post(b"abc")
    arrival = Arrival(POLICY, now=0.0, leftover=first + second[:10])
    assert arrival.complete and bytes(arrival.raw) == first + second[:10] and arrival.body_reservation() == 0


def test_a_chunked_body_ends_with_its_last_chunk_and_broken_framing_is_a_400():
    head = b"POST /api/predict HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
    arrival = Arrival(POLICY, now=0.0, leftover=head + b"3\r\nabc\r\n")
    assert not arrival.complete and arrival.body_reservation() == POLICY.max_body_bytes
    arrival.feed(b"0\r\n\r\n", now=0.5)
    assert arrival.complete
    for broken in (b"ZZ\r\nabc\r\n0\r\n\r\n", b"3\r\nabcdef\r\n", b"-1\r\n"):
        with pytest.raises(Refusal) as refused:
            Arrival(POLICY, now=0.0, leftover=head + broken)
        assert (refused.value.status, refused.value.code) == (400, "malformed_request"), broken


def test_too_large_bodies_are_refused_before_they_are_read():
    with pytest.raises(Refusal) as refused:
        Arrival(POLICY, now=0.0, leftover=b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 1001\r\n\r\n")
    assert (refused.value.status, refused.value.code) == (413, "file_too_large")
    chunked = Arrival(POLICY, now=0.0, leftover=b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n")
    with pytest.raises(Refusal) as refused:
        chunked.feed(b"3e9\r\n" + b"x" * 1001, now=0.1)
    assert refused.value.status == 413
    with pytest.raises(Refusal) as refused:
        Arrival(POLICY, now=0.0, leftover=b"GET / HTTP/1.1\r\nX-Big: " + b"y" * 20000)
    assert (refused.value.status, refused.value.code) == (431, "headers_too_large")


def test_headers_have_a_deadline_and_bodies_a_minimum_rate_after_a_grace_period():
    slow_head = Arrival(POLICY, now=0.0, leftover=b"POST / HTTP/1.1\r\n")
    assert slow_head.overdue(9.0) is None and slow_head.overdue(10.5).code == "request_timeout"
    trickle = Arrival(POLICY, now=0.0, leftover=post(b"")[:-2].replace(b"Length: 0", b"Length: 900") + b"\r\n")
    for second in range(1, 30):
        trickle.feed(b"x", now=float(second))  # a byte a second
        if trickle.overdue(float(second)):
            break
    assert BODY_GRACE_S <= second <= BODY_GRACE_S + 1 and trickle.overdue(float(second)).code == "upload_timeout"
    steady = Arrival(DoorPolicy(max_body_bytes=10**7, upload_timeout_s=60), now=0.0,
                     leftover=b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5000000\r\n\r\n")
    for second in range(1, 50):  # 2 KB a second: slower than any phone should be, but above the minimum
        steady.feed(b"x" * 2 * MIN_BODY_RATE, now=float(second))
        assert steady.overdue(float(second)) is None
    assert steady.overdue(61.0).code == "upload_timeout"  # the overall deadline still holds


def test_expect_100_continue_is_noticed_for_requests_with_a_body():
    waits = Arrival(POLICY, now=0.0, leftover=post(b"abc", "Expect: 100-continue\r\n")[:-3])
    assert waits.wants_continue
    assert not Arrival(POLICY, now=0.0, leftover=b"GET / HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\n\r\n"
                       ).wants_continue


def test_door_answers_are_the_apps_json_errors_with_its_headers():
    raw = error_response(503, "busy", "Try later.", {"X-Frame-Options": "DENY"}, retry_after_s=5)
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 503 ") and b"Retry-After: 5" in head and b"X-Frame-Options: DENY" in head
    assert b"Cache-Control: no-store" in head and json.loads(body) == {"error": "busy", "message": "Try later."}
    assert f"Content-Length: {len(body)}".encode() in head


# The Procfile's stack, misbehaved at -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stack(tiny_model):
    """The Procfile's stack with the default upload deadline (60 s); yields its port."""
    with serving(tiny_model) as served:
        yield served.port
    assert "WORKER TIMEOUT" not in served.output and "Traceback" not in served.output, served.output


def answer(port: int, data: bytes, timeout: float = 30) -> tuple[int | None, bytes, float]:
    """Send a whole request; the status, the body and the seconds it took."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    status = int(head.split()[1]) if head else None
    return status, body, time.monotonic() - started


def probes_while(port: int, jpeg: bytes, seconds: float) -> list[tuple[int | None, float]]:
    """/healthz and a small /api/predict, one after the other for `seconds`: (status, seconds taken) each."""
    body, content_type = multipart([Part("file", jpeg, b"face.jpg")])
    predict = (f"POST /api/predict HTTP/1.1\r\nHost: t\r\nContent-Type: {content_type}\r\nContent-Length: "
               f"{len(body)}\r\nConnection: close\r\n\r\n").encode() + body
    health = b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    results, until = [], time.monotonic() + seconds
    while time.monotonic() < until:
        for request in (health, predict):
            status, _, took = answer(port, request)
            results.append((status, took))
        time.sleep(0.2)
    return results


def trickle(sock: socket.socket, first: bytes, then: bytes, seconds: float, outcome: list) -> None:
    """Send `first`, then `then` a byte a second for `seconds`; append what the server answered."""
    try:
        sock.sendall(first)
        for byte in then[: int(seconds)]:
            if select.select([sock], [], [], 1.0)[0]:
                break  # the server has answered: stop sending
            sock.sendall(bytes([byte]))
    except OSError:  # the server answered and closed meanwhile
        pass
    try:
        sock.settimeout(15)
        data = sock.recv(4096)
        outcome.append(int(data.split()[1]) if data else None)
    except OSError:
        outcome.append(None)


def test_forty_body_tricklers_cost_no_thread(stack, face_jpeg):
    """Issue 27: 32 connections sending their bodies at 1 byte/s held every thread for 60 s."""
    body = b"x" * 5000
    head = (f"POST /api/predict HTTP/1.1\r\nHost: t\r\nContent-Type: multipart/form-data; boundary=b\r\n"
            f"X-Forwarded-For: 203.0.113.9\r\nContent-Length: {len(body)}\r\n\r\n").encode()  # one laptop
    sockets = [socket.create_connection(("127.0.0.1", stack)) for _ in range(40)]
    outcomes: list = []
    threads = [threading.Thread(target=trickle, args=(sock, head, body, 20, outcomes)) for sock in sockets]
    for thread in threads:
        thread.start()
    time.sleep(2)  # every trickler is in
    probes = probes_while(stack, face_jpeg, 8)
    for thread in threads:
        thread.join(timeout=60)
    for sock in sockets:
        sock.close()
    assert probes and all(status == 200 for status, _ in probes), probes
    assert max(took for _, took in probes) < 5, probes
    # PER_CLIENT_UPLOADS were let in and refused with the JSON 408 once the grace period had passed at 1 byte/s;
    # the others were told at once that their address had too many uploads in progress
    assert outcomes.count(408) == PER_CLIENT_UPLOADS and outcomes.count(503) == 40 - PER_CLIENT_UPLOADS, outcomes


def test_three_hundred_idle_and_header_trickling_connections_cost_no_thread(stack, face_jpeg):
    idle = [socket.create_connection(("127.0.0.1", stack)) for _ in range(150)]
    slow_heads = [socket.create_connection(("127.0.0.1", stack)) for _ in range(150)]
    outcomes: list = []
    threads = [threading.Thread(target=trickle, args=(sock, b"GET /healthz HTTP/1.1\r\n", b"X-Slow: yyyyyyyyyyyyyyyy",
                                                      14, outcomes)) for sock in slow_heads]
    for thread in threads:
        thread.start()
    time.sleep(2)
    probes = probes_while(stack, face_jpeg, 6)
    closed = 0
    for sock in idle:  # closed by the server without an answer
        sock.settimeout(15)
        try:
            closed += sock.recv(100) == b""
        except OSError:
            pass
        sock.close()
    for thread in threads:
        thread.join(timeout=60)
    for sock in slow_heads:
        sock.close()
    assert probes and all(status == 200 for status, _ in probes), probes
    assert max(took for _, took in probes) < 5, probes
    assert closed == len(idle)
    assert outcomes.count(408) == len(slow_heads), outcomes


def test_a_malformed_chunked_body_is_a_json_400(stack):
    status, body, _ = answer(stack, b"POST /api/predict HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                                    b"ZZ\r\nabc\r\n0\r\n\r\n")
    assert status == 400 and json.loads(body)["error"] == "malformed_request"


@pytest.mark.parametrize("request_bytes,status,code", [
    (b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\nHost: t\r\n\r\n", 414, "uri_too_long"),
    (b"GET / HTTP/1.1\r\nHost: t\r\n" + b"".join(b"X-%d: y\r\n" % i for i in range(120)) + b"\r\n", 431,
     "headers_too_large"),
    (b"GET / HTTP/1.1\r\nHost: t\r\nBad Header: y\r\n\r\n", 400, "malformed_request"),
    (b"POST /api/predict HTTP/1.1\r\nHost: t\r\nContent-Length: 99999999\r\n\r\n", 413, "file_too_large"),
])
def test_gunicorns_and_the_doors_own_errors_are_json_with_the_security_headers(stack, request_bytes, status, code):
    with socket.create_connection(("127.0.0.1", stack), timeout=30) as sock:
        sock.sendall(request_bytes)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    assert int(head.split()[1]) == status, received[:300]
    assert json.loads(body)["error"] == code
    for header in (b"Content-Security-Policy: ", b"X-Content-Type-Options: nosniff", b"X-Frame-Options: DENY",
                   b"Content-Type: application/json"):
        assert header in head, (header, head)


def test_expect_100_continue_gets_one_interim_answer_then_the_result(stack, face_jpeg):
    body, content_type = multipart([Part("file", face_jpeg, b"face.jpg")])
    head = (f"POST /api/predict HTTP/1.1\r\nHost: t\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}"
            "\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", stack), timeout=30) as sock:
        sock.sendall(head)
        assert sock.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"  # before the body is sent
        sock.sendall(body)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    assert received.startswith(b"HTTP/1.1 200 ") and b"100 Continue" not in received


def test_kept_alive_and_pipelined_requests_are_read_by_the_door_too(stack):
    health = b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n"
    with socket.create_connection(("127.0.0.1", stack), timeout=30) as sock:
        sock.sendall(health * 3 + b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    assert received.count(b"HTTP/1.1 200 OK") == 4
