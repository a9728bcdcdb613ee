"""Issue #14 item 11: a request head has a deadline, a stalled body an idle timeout; a
long-poll being answered and a body that keeps arriving are not cut."""

from __future__ import annotations

import time
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer, reactor, task
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure

from tests.rooms.helpers import V3, sync_raw, user
from tests.support.server import RunningServer

HEAD_TIMEOUT_S = 1.0
IDLE_TIMEOUT_S = 1.5


@pytest.fixture
def config_overrides() -> dict[str, Any]:
    return {
        "http_request_head_timeout": int(HEAD_TIMEOUT_S * 1000),
        "http_idle_timeout": int(IDLE_TIMEOUT_S * 1000),
    }


class _Raw(Protocol):
    def __init__(self) -> None:
        self.received = b""
        self.closed: defer.Deferred[float] = defer.Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Failure = Failure(ConnectionError())) -> None:
        self.closed.callback(time.monotonic())

    def send(self, data: bytes) -> None:
        if self.transport is not None and not self.closed.called:
            self.transport.write(data)


async def _connect(server: RunningServer) -> _Raw:
    port = server.hs.ports[0].getHost().port
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port)
    return await connectProtocol(endpoint, _Raw())


async def _trickle(conn: _Raw, lines: list[bytes], every: float) -> None:
    for line in lines:
        if conn.closed.called:
            return
        conn.send(line)
        await task.deferLater(reactor, every, lambda: None)


@pytest_twisted.ensureDeferred
async def test_trickled_header_lines_are_cut_at_the_head_deadline(server: RunningServer) -> None:
    conn = await _connect(server)
    started = time.monotonic()
    lines = [b"GET /_matrix/client/versions HTTP/1.1\r\n"] + [
        b"X-Slow-%d: x\r\n" % i for i in range(40)
    ]
    # A line every 0.25 s: the idle timeout (1.5 s) alone would never fire.
    trickling = defer.ensureDeferred(_trickle(conn, lines, 0.25))
    closed_at = await conn.closed.addTimeout(8, reactor)
    await trickling
    assert HEAD_TIMEOUT_S * 0.9 <= closed_at - started < HEAD_TIMEOUT_S + 1.0
    assert conn.received == b""  # cut, not answered


@pytest_twisted.ensureDeferred
async def test_stalled_body_is_cut_at_the_idle_timeout(server: RunningServer) -> None:
    conn = await _connect(server)
    conn.send(
        b"POST /_matrix/client/v3/login HTTP/1.1\r\nHost: x\r\n"
        b'Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"type":'
    )
    started = time.monotonic()
    closed_at = await conn.closed.addTimeout(8, reactor)
    assert IDLE_TIMEOUT_S * 0.9 <= closed_at - started < IDLE_TIMEOUT_S + 1.5


@pytest_twisted.ensureDeferred
async def test_slow_but_steady_body_and_keep_alive_requests_are_answered(
    server: RunningServer,
) -> None:
    """A body arriving in pieces for longer than both timeouts is fine (the head came
    quickly; the body never paused for the idle timeout), and the next request on the
    same connection gets a fresh head deadline."""
    conn = await _connect(server)
    body = b'{"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "nobody"}, "password": "wrong password, padded to be long enough"}'
    conn.send(
        b"POST /_matrix/client/v3/login HTTP/1.1\r\nHost: x\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
    )
    pieces = [body[i : i + 8] for i in range(0, len(body), 8)]
    started = time.monotonic()
    await _trickle(conn, pieces, 0.2)  # about 3.4 s in all
    assert time.monotonic() - started > HEAD_TIMEOUT_S + IDLE_TIMEOUT_S
    await task.deferLater(reactor, 0.3, lambda: None)
    assert not conn.closed.called
    assert conn.received.startswith(b"HTTP/1.1 403"), conn.received[:200]
    conn.received = b""
    await task.deferLater(reactor, HEAD_TIMEOUT_S * 0.7, lambda: None)
    conn.send(b"GET /_matrix/client/versions HTTP/1.1\r\nHost: x\r\n\r\n")
    await task.deferLater(reactor, 0.5, lambda: None)
    assert conn.received.startswith(b"HTTP/1.1 200"), conn.received[:200]
    assert conn.transport is not None
    conn.transport.loseConnection()
    await conn.closed


@pytest_twisted.ensureDeferred
async def test_long_poll_outlives_both_timeouts(server: RunningServer) -> None:
    alice = await user(server, "alice")
    first = await sync_raw(alice)
    since = first.json["next_batch"]
    timeout_ms = int((HEAD_TIMEOUT_S + IDLE_TIMEOUT_S + 0.5) * 1000)
    started = time.monotonic()
    resp = await sync_raw(alice, since, timeout=timeout_ms)
    assert resp.code == 200, resp
    assert time.monotonic() - started >= timeout_ms / 1000 * 0.9
    resp = await alice.get(f"{V3}/account/whoami")
    assert resp.code == 200
