"""A push gateway stub: a real twisted.web server on loopback recording each notify."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from twisted.internet import defer, reactor, task
from twisted.web import resource, server

NOTIFY_PATH = "/_matrix/push/v1/notify"


@dataclass
class Received:
    body: dict[str, Any]
    at: float  # time.monotonic() on arrival


@dataclass
class GatewayStub:
    received: list[Received] = field(default_factory=list)
    # Statuses to answer with, in order; 200 once they are used up.
    statuses: list[int] = field(default_factory=list)
    # Pushkeys to list in `rejected` in every 200 answer.
    rejected: list[str] = field(default_factory=list)
    attempts: int = 0
    port: Any = None
    _waiters: list[tuple[Callable[[], bool], defer.Deferred[None]]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port.getHost().port}{NOTIFY_PATH}"

    def notifications(self) -> list[dict[str, Any]]:
        return [r.body["notification"] for r in self.received]

    def event_notifications(self) -> list[dict[str, Any]]:
        """Notifications about an event (not badge-only updates)."""
        return [n for n in self.notifications() if n.get("event_id")]

    def _arrived(self, body: dict[str, Any]) -> None:
        self.received.append(Received(body, time.monotonic()))
        ready = [(c, d) for c, d in self._waiters if c()]
        self._waiters = [(c, d) for c, d in self._waiters if (c, d) not in ready]
        for _, d in ready:
            d.callback(None)

    async def wait_until(self, condition: Callable[[], bool], timeout: float = 5.0) -> None:
        if condition():
            return
        d: defer.Deferred[None] = defer.Deferred()
        self._waiters.append((condition, d))
        d.addTimeout(timeout, reactor)
        await d

    async def wait_for_events(self, count: int, timeout: float = 5.0) -> None:
        await self.wait_until(lambda: len(self.event_notifications()) >= count, timeout)

    async def stop(self) -> None:
        if self.port is not None:
            await self.port.stopListening()


class _Notify(resource.Resource):
    isLeaf = True

    def __init__(self, stub: GatewayStub) -> None:
        super().__init__()
        self._stub = stub

    def render_POST(self, request: server.Request) -> bytes:
        stub = self._stub
        stub.attempts += 1
        request.setHeader(b"Content-Type", b"application/json")
        if request.path.decode() != NOTIFY_PATH:
            request.setResponseCode(404)
            return b'{"errcode":"M_UNRECOGNIZED"}'
        assert request.content is not None
        body = json.loads(request.content.read())
        status = stub.statuses.pop(0) if stub.statuses else 200
        request.setResponseCode(status)
        if status != 200:
            return b'{"error":"try later"}'
        stub._arrived(body)
        return json.dumps({"rejected": stub.rejected}).encode()


async def start_gateway() -> GatewayStub:
    stub = GatewayStub()
    site = server.Site(_Notify(stub))
    site.noisy = False
    stub.port = reactor.listenTCP(0, site, interface="127.0.0.1")  # type: ignore[attr-defined]
    return stub


async def sleep(seconds: float) -> None:
    await task.deferLater(reactor, seconds, lambda: None)
