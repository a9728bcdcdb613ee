"""A fake application service: a real twisted.web server on loopback.

It records every request the homeserver makes, answers transactions, pings, queries
and third-party lookups with what a test configures, and lets a test wait for the
next transaction.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from twisted.internet import defer, reactor
from twisted.internet.task import deferLater
from twisted.web import resource, server

JsonDict = dict[str, Any]
# An async handler: (path after /_matrix/app/v1, query args, JSON body) -> (status, JSON)
Handler = Callable[[str, dict[str, list[str]], Any], Awaitable[tuple[int, Any]]]


@dataclass
class Recorded:
    method: str
    path: str  # decoded, e.g. /_matrix/app/v1/users/@a:test.local
    args: dict[str, list[str]]
    authorization: str | None
    body: Any
    status: int | None = None  # what the fake answered


@dataclass
class FakeState:
    hs_token: str
    requests: list[Recorded] = field(default_factory=list)
    # Status codes for the next transaction attempts (then 200).
    transaction_failures: list[int] = field(default_factory=list)
    fail_all_transactions: bool = False
    handlers: dict[str, Handler] = field(default_factory=dict)  # path prefix -> handler
    hang: bool = False
    check_token: bool = True


class _Resource(resource.Resource):
    isLeaf = True

    def __init__(self, state: FakeState) -> None:
        super().__init__()
        self.state = state
        self.hanging: list[defer.Deferred[None]] = []

    def render(self, request: server.Request) -> Any:
        d = defer.ensureDeferred(self._handle(request))

        def _write(result: tuple[int, Any]) -> None:
            if request.finished or request._disconnected:  # type: ignore[attr-defined]
                return
            status, body = result
            payload = json.dumps(body).encode()
            request.setResponseCode(status)
            request.setHeader(b"Content-Type", b"application/json")
            request.write(payload)
            request.finish()

        d.addCallback(_write)
        d.addErrback(lambda f: _write((500, {"error": str(f.value)})))
        return server.NOT_DONE_YET

    async def _handle(self, request: server.Request) -> tuple[int, Any]:
        state = self.state
        path = unquote(request.path.decode())
        raw = request.content.read() if request.content else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        args = {k.decode(): [v.decode() for v in vs] for k, vs in (request.args or {}).items()}
        auth = request.getHeader("authorization")
        record = Recorded(request.method.decode(), path, args, auth, body)
        state.requests.append(record)
        status, answer = await self._answer(record)
        record.status = status
        return status, answer

    async def _answer(self, record: Recorded) -> tuple[int, Any]:
        state = self.state
        path, args, body, auth = record.path, record.args, record.body, record.authorization
        if state.hang:
            hanging: defer.Deferred[None] = defer.Deferred()
            self.hanging.append(hanging)
            await hanging  # fired when the fake stops
        if state.check_token and auth != f"Bearer {state.hs_token}":
            return 403, {"errcode": "M_FORBIDDEN", "error": "bad hs_token"}
        sub = path.removeprefix("/_matrix/app/v1")
        if sub.startswith("/transactions/"):
            return self._transaction()
        for prefix, handler in state.handlers.items():
            if sub.startswith(prefix):
                return await handler(sub, args, body)
        if sub == "/ping":
            return 200, {}
        return 404, {"errcode": "M_NOT_FOUND", "error": "nothing here"}

    def _transaction(self) -> tuple[int, Any]:
        state = self.state
        if state.fail_all_transactions:
            return 500, {"errcode": "M_UNKNOWN", "error": "down"}
        if state.transaction_failures:
            return state.transaction_failures.pop(0), {"errcode": "M_UNKNOWN"}
        return 200, {}


class FakeAppService:
    def __init__(self, hs_token: str = "hs_secret") -> None:
        self.state = FakeState(hs_token)
        self._resource = _Resource(self.state)
        site = server.Site(self._resource)
        site.noisy = False
        self._port: Any = reactor.listenTCP(0, site, interface="127.0.0.1")  # type: ignore[attr-defined]
        self.url = f"http://127.0.0.1:{self._port.getHost().port}"

    async def stop(self) -> None:
        hanging, self._resource.hanging = self._resource.hanging, []
        for d in hanging:
            d.callback(None)
        if self._port is not None:
            port, self._port = self._port, None
            await port.stopListening()

    # What was received ------------------------------------------------------------------

    def transaction_requests(self) -> list[Recorded]:
        return [
            r for r in self.state.requests if r.path.startswith("/_matrix/app/v1/transactions/")
        ]

    def accepted_transactions(self) -> list[Recorded]:
        return [r for r in self.transaction_requests() if r.status == 200]

    def requests_to(self, prefix: str) -> list[Recorded]:
        return [r for r in self.state.requests if r.path.startswith("/_matrix/app/v1" + prefix)]

    def received_events(self) -> list[JsonDict]:
        """Every event of every distinct transaction id, in first-seen order."""
        seen: dict[str, JsonDict] = {}
        for r in self.transaction_requests():
            txn_id = r.path.rsplit("/", 1)[-1]
            seen.setdefault(txn_id, r.body)
        return [ev for body in seen.values() for ev in body.get("events", [])]

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        """Wait until ``predicate()`` holds (checked at each request and every 20 ms)."""
        waited = 0.0
        while not predicate():
            if waited >= timeout:
                raise AssertionError(f"timed out after {timeout}s; requests: {self.state.requests}")
            await deferLater(reactor, 0.02, lambda: None)
            waited += 0.02

    async def wait_for_event(
        self, match: Callable[[JsonDict], bool], timeout: float = 10.0
    ) -> JsonDict:
        await self.wait_for(lambda: any(match(e) for e in self.received_events()), timeout)
        return next(e for e in self.received_events() if match(e))
