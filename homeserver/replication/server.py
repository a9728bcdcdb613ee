"""Serving the internal API: authentication, the txn-id response cache, dispatch.

Invariants:
- every request is authenticated before it is routed: with ``worker_replication_secret``
  set, by ``Authorization: Bearer <secret>`` (compared in constant time); without one,
  only callers on a UNIX socket or a loopback address are served (Synapse serves anyone
  then, trusting the network; a listener opened by mistake on a public address must not
  let the internet drive a writer). The transport's peer is checked, never
  ``X-Forwarded-For``.
- a POST's handler runs at most once per (endpoint, txn id) while its answer is cached
  (30 minutes, as Synapse's ``ResponseCache``): a repeat waits for the first run or gets
  its answer. A run that raises is forgotten, so a retry runs it again. The run is not
  cancelled when its caller goes away (the retry will want its answer).
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
from collections import OrderedDict
from collections.abc import Callable, Coroutine
from typing import Any

from twisted.internet import defer
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.python.failure import Failure
from twisted.web import server
from twisted.web.server import NOT_DONE_YET

from homeserver.clock import Clock
from homeserver.errors import Codes, MatrixError
from homeserver.http.server import JsonResource, MatrixRequest, respond_error
from homeserver.http.servlet import parse_json_body
from homeserver.replication.endpoints import REPLICATION_PREFIX, InternalEndpoint, JsonDict

logger = logging.getLogger(__name__)

Answer = tuple[int, JsonDict]


class _Entry:
    __slots__ = ("answer", "done", "failure", "stored_at", "waited", "waiters")

    def __init__(self, stored_at: float) -> None:
        self.stored_at = stored_at
        self.done = False
        self.answer: Answer | None = None
        self.failure: Failure | None = None  # a run that raised (already out of the cache)
        self.waiters: list[defer.Deferred[Answer]] = []
        self.waited = False


class ResponseCache:
    """Answers by key (endpoint name, txn id): bounded, least recently used evicted
    first, each kept ``expiry_s`` after it was computed; runs in flight are shared."""

    def __init__(self, clock: Clock, *, max_entries: int = 10_000, expiry_s: float = 1800.0):
        self._clock = clock
        self._max_entries = max_entries
        self._expiry_s = expiry_s
        self._entries: OrderedDict[tuple[str, str], _Entry] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    async def wrap(
        self, key: tuple[str, str], compute: Callable[[], Coroutine[Any, Any, Answer]]
    ) -> Answer:
        now = self._clock.seconds()
        entry = self._entries.get(key)
        if entry is not None and entry.done and now - entry.stored_at > self._expiry_s:
            del self._entries[key]
            entry = None
        if entry is None:
            entry = _Entry(now)
            self._entries[key] = entry
            self._evict(now)
            running: defer.Deferred[Answer] = defer.ensureDeferred(compute())
            # Never cancelled by a caller: each waits on its own Deferred below.
            running.addCallback(self._succeeded, key, entry)
            running.addErrback(self._failed, key, entry)
        else:
            self._entries.move_to_end(key)
        if entry.done:
            assert entry.answer is not None
            return entry.answer
        if entry.failure is not None:  # the run failed before it was waited for
            entry.failure.raiseException()
        waiter: defer.Deferred[Answer] = defer.Deferred()
        entry.waiters.append(waiter)
        entry.waited = True
        return await waiter

    def _succeeded(self, answer: Answer, key: tuple[str, str], entry: _Entry) -> None:
        entry.done, entry.answer = True, answer
        entry.stored_at = self._clock.seconds()
        waiters, entry.waiters = entry.waiters, []
        for waiter in waiters:
            if not waiter.called:  # a cancelled waiter has been called
                waiter.callback(answer)

    def _failed(self, failure: Failure, key: tuple[str, str], entry: _Entry) -> None:
        if self._entries.get(key) is entry:
            del self._entries[key]
        entry.failure = failure
        waiters, entry.waiters = entry.waiters, []
        live = [w for w in waiters if not w.called]
        if entry.waited and not live and not failure.check(MatrixError):
            # Its callers went away: nobody else will log it.
            logger.error("Internal request %s failed", key, exc_info=failure.value)
        for waiter in live:
            waiter.errback(failure)

    def _evict(self, now: float) -> None:
        excess = len(self._entries) - self._max_entries
        stale = []
        # Least recently used first; runs in flight are kept (their callers wait).
        for key, entry in self._entries.items():
            if not entry.done:
                continue
            if excess > 0:
                stale.append(key)
                excess -= 1
            elif now - entry.stored_at > self._expiry_s:
                stale.append(key)
            else:
                break
        for key in stale:
            del self._entries[key]


def _is_local_peer(peer: Any) -> bool:
    if isinstance(peer, UNIXAddress):
        return True
    if isinstance(peer, (IPv4Address, IPv6Address)):
        try:
            ip = ipaddress.ip_address(peer.host.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return ip.is_loopback
    return False


class ReplicationResource(JsonResource):
    """The ``replication`` listener resource: ``/_synapse/replication/...`` only."""

    def __init__(
        self,
        clock: Clock,
        secret: str | None,
        *,
        cache: ResponseCache | None = None,
    ) -> None:
        super().__init__()
        self._secret = secret.encode("utf-8") if secret else None
        self.cache = cache if cache is not None else ResponseCache(clock)
        self._names: set[str] = set()

    def register_endpoint(self, endpoint: InternalEndpoint) -> None:
        spec = endpoint.spec
        if spec.name in self._names:
            raise ValueError(f"internal endpoint {spec.name} registered twice")
        self._names.add(spec.name)
        handler = endpoint.handler

        async def serve(request: MatrixRequest, **params: str) -> Answer:
            txn_id = params.pop("txn_id", None)
            if spec.method == "GET":
                return await handler({}, params)
            body = parse_json_body(request, forbid_nul=False)
            assert txn_id is not None
            return await self.cache.wrap((spec.name, txn_id), lambda: handler(body, params))

        self.register(spec.method, spec.pattern, serve)

    def render(self, request: server.Request) -> Any:
        assert isinstance(request, MatrixRequest)
        try:
            self._authenticate(request)
        except MatrixError as e:
            respond_error(request, e)
            return NOT_DONE_YET
        return super().render(request)

    def _authenticate(self, request: MatrixRequest) -> None:
        if not request.path.startswith(REPLICATION_PREFIX.encode()):
            raise MatrixError(404, Codes.UNRECOGNIZED, "Unrecognized request")
        if self._secret is None:
            if _is_local_peer(request.getClientAddress()):
                return
            raise MatrixError(
                403,
                Codes.FORBIDDEN,
                "Internal requests from another host need worker_replication_secret",
            )
        headers = request.requestHeaders.getRawHeaders(b"Authorization") or []
        if len(headers) == 1:
            scheme, _, token = headers[0].partition(b" ")
            if scheme == b"Bearer" and hmac.compare_digest(token, self._secret):
                return
        raise MatrixError(403, Codes.FORBIDDEN, "Invalid or missing internal API credentials")
