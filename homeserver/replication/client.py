"""Calling another instance's internal API.

A call picks one txn id and keeps it across its retries, so the callee runs a POST's
handler once however often the request is sent. Connection failures (refused, no such
socket, DNS, the connection dropped before an answer, a timeout) are retried with
doubling delays for at most ``retry_for_s``; then ``InstanceUnreachableError`` (503
``M_UNKNOWN`` with ``retry_after_ms``) reaches the client, who retries. An answer the
callee gave (a Matrix error included) is passed on as it is, never retried.
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Mapping
from typing import Any

import treq
from twisted.internet import defer
from twisted.internet.endpoints import HostnameEndpoint, UNIXClientEndpoint, wrapClientTLS
from twisted.internet.error import ConnectError, DNSLookupError, TimeoutError
from twisted.internet.ssl import optionsForClientTLS
from twisted.web.client import (
    Agent,
    HTTPConnectionPool,
    RequestTransmissionFailed,
    ResponseFailed,
    ResponseNeverReceived,
)
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgentEndpointFactory, IBodyProducer
from zope.interface import implementer

from homeserver.errors import Codes, MatrixError
from homeserver.replication.endpoints import EndpointSpec, JsonDict
from homeserver.untrusted import decode_json
from homeserver.workers import InstanceLocation

logger = logging.getLogger(__name__)

# Failures before the callee answered: the request may be sent again (same txn id).
_RETRYABLE = (
    ConnectError,  # refused, unreachable, no such UNIX socket (ConnectionRefusedError ...)
    DNSLookupError,
    TimeoutError,
    ResponseNeverReceived,
    RequestTransmissionFailed,
    ResponseFailed,
    defer.CancelledError,  # our own per-attempt timeout (a caller's cancel is re-raised)
)
RETRY_AFTER_MS = 1000


class InstanceUnreachableError(MatrixError):
    """Another instance did not answer within the retry window: 503, retry later."""

    def __init__(self, instance_name: str, purpose: str | None, cause: str) -> None:
        what = (
            f"{purpose} (instance {instance_name!r})" if purpose else f"instance {instance_name!r}"
        )
        super().__init__(
            503,
            Codes.UNKNOWN,
            f"{what} is unreachable; retry",
            extra={"retry_after_ms": RETRY_AFTER_MS},
            headers={"Retry-After": str(max(1, RETRY_AFTER_MS // 1000))},
        )
        self.instance_name = instance_name
        self.cause = cause


class UnknownInstanceError(MatrixError):
    """A call to an instance the configuration does not locate: a deployment error."""

    def __init__(self, instance_name: str, reason: str) -> None:
        super().__init__(500, Codes.UNKNOWN, f"instance {instance_name!r} {reason}")
        self.instance_name = instance_name


@implementer(IAgentEndpointFactory)
class _InstanceEndpoints:
    """Every request of one agent goes to one instance's socket, whatever its URI."""

    def __init__(self, reactor: Any, location: InstanceLocation, connect_timeout: float) -> None:
        self._reactor = reactor
        self._location = location
        self._timeout = connect_timeout

    def endpointForURI(self, uri: Any) -> Any:
        loc = self._location
        if loc.path is not None:
            return UNIXClientEndpoint(self._reactor, loc.path, timeout=self._timeout)
        assert loc.host is not None and loc.port is not None
        endpoint = HostnameEndpoint(self._reactor, loc.host, loc.port, timeout=self._timeout)
        if loc.tls:
            return wrapClientTLS(optionsForClientTLS(loc.host), endpoint)  # type: ignore[arg-type]
        return endpoint


class InternalClient:
    """Calls to the other instances named in ``instance_map``."""

    def __init__(
        self,
        reactor: Any,
        instance_name: str,
        instance_map: Mapping[str, InstanceLocation],
        secret: str | None,
        *,
        endpoints: Mapping[str, EndpointSpec] | None = None,
        retry_for_s: float = 10.0,
        first_delay_s: float = 0.1,
        max_delay_s: float = 2.0,
        request_timeout_s: float = 60.0,
        connect_timeout_s: float = 5.0,
    ) -> None:
        self._reactor = reactor
        self._instance_name = instance_name
        self._instance_map = dict(instance_map)
        self._auth = f"Bearer {secret}".encode() if secret else None
        self._endpoints = dict(endpoints or {})
        self.retry_for_s = retry_for_s
        self._first_delay_s = first_delay_s
        self._max_delay_s = max_delay_s
        self._request_timeout_s = request_timeout_s
        self._connect_timeout_s = connect_timeout_s
        # One pool per instance: two UNIX sockets share a URI host, and a pool is keyed by it.
        self._agents: dict[str, tuple[Agent, HTTPConnectionPool]] = {}

    def _agent(self, instance_name: str, location: InstanceLocation) -> Agent:
        found = self._agents.get(instance_name)
        if found is None:
            pool = HTTPConnectionPool(self._reactor, persistent=True)
            pool.retryAutomatically = False  # we retry, with the same txn id
            endpoints = _InstanceEndpoints(self._reactor, location, self._connect_timeout_s)
            agent = Agent.usingEndpointFactory(self._reactor, endpoints, pool=pool)
            found = self._agents[instance_name] = (agent, pool)
        return found[0]

    async def close(self) -> None:
        agents, self._agents = self._agents, {}
        await defer.gatherResults(
            [pool.closeCachedConnections() for _, pool in agents.values()], consumeErrors=True
        )

    async def call(
        self,
        instance_name: str,
        endpoint: EndpointSpec | str,
        params: Mapping[str, str] | None = None,
        body: JsonDict | None = None,
        *,
        purpose: str | None = None,
    ) -> JsonDict:
        """The callee's JSON answer; its Matrix errors are raised as ``MatrixError``.

        ``purpose`` names the callee's role in the unreachable error the client sees
        ("the event writer for this room").
        """
        spec = self._endpoints.get(endpoint) if isinstance(endpoint, str) else endpoint
        if spec is None:
            raise ValueError(f"unknown internal endpoint {endpoint!r}")
        if instance_name == self._instance_name:
            raise UnknownInstanceError(instance_name, "is this process: no request to self")
        location = self._instance_map.get(instance_name)
        if location is None:
            raise UnknownInstanceError(instance_name, "is not in instance_map")
        txn_id = secrets.token_urlsafe(12) if spec.cached else None
        path = spec.path(params or {}, txn_id)
        base = "http://localhost" if location.path is not None else location.base_url
        headers = Headers({b"Content-Type": [b"application/json"]})
        if self._auth is not None:
            headers.addRawHeader(b"Authorization", self._auth)
        data: Any = _JsonBody(json.dumps(body or {}).encode()) if spec.method == "POST" else None
        agent = self._agent(instance_name, location)

        deadline = self._reactor.seconds() + self.retry_for_s
        delay = self._first_delay_s
        attempt = 0
        while True:
            attempt += 1
            # [whether this attempt timed out, what it waits for now]
            state: list[Any] = [False, None]

            def time_out(state: list[Any] = state) -> None:
                state[0] = True
                state[1].cancel()

            timer = self._reactor.callLater(self._request_timeout_s, time_out)
            try:
                state[1] = treq.request(
                    spec.method,
                    base + path,
                    data=data,
                    headers=headers,
                    agent=agent,  # type: ignore[arg-type]
                )
                response = await state[1]
                state[1] = treq.content(response)
                content: bytes = await state[1]
                break
            except _RETRYABLE as e:
                if _is_cancel(e) and not state[0]:
                    raise defer.CancelledError() from None  # our caller gave up
                cause = f"{type(e).__name__}: {e}"
                now = self._reactor.seconds()
                if now + delay > deadline:
                    logger.warning(
                        "Internal %s to %s failed %d times in %.1fs, giving up: %s",
                        spec.name,
                        instance_name,
                        attempt,
                        self.retry_for_s,
                        cause,
                    )
                    raise InstanceUnreachableError(instance_name, purpose, cause) from None
                logger.info(
                    "Internal %s to %s failed (%s); retrying in %.2fs",
                    spec.name,
                    instance_name,
                    cause,
                    delay,
                )
                await _sleep(self._reactor, delay)
                delay = min(delay * 2, self._max_delay_s)
            finally:
                if timer.active():
                    timer.cancel()
        return _answer(instance_name, spec, response.code, content)


@implementer(IBodyProducer)
class _JsonBody:
    """A request body written at once, with its length: treq's producer for bytes
    writes it from a cooperator task, a reactor turn after the headers."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self.length = len(data)

    def startProducing(self, consumer: Any) -> defer.Deferred[None]:
        consumer.write(self._data)
        return defer.succeed(None)

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        pass


def _answer(instance_name: str, spec: EndpointSpec, code: int, content: bytes) -> JsonDict:
    try:
        parsed = decode_json(content) if content else None
    except MatrixError:
        parsed = None
    if 200 <= code < 300 and isinstance(parsed, dict):
        return parsed
    if isinstance(parsed, dict) and isinstance(parsed.get("errcode"), str):
        extra = {k: v for k, v in parsed.items() if k not in ("errcode", "error")}
        message = parsed.get("error")
        raise MatrixError(
            code,
            parsed["errcode"],
            message if isinstance(message, str) else "",
            extra=extra,
        )
    logger.error("Internal %s to %s: unexpected answer %d", spec.name, instance_name, code)
    raise MatrixError(502, Codes.UNKNOWN, f"instance {instance_name!r} gave an invalid answer")


def _is_cancel(e: BaseException) -> bool:
    if isinstance(e, defer.CancelledError):
        return True
    reasons = getattr(e, "reasons", None) or []
    return any(r.check(defer.CancelledError) for r in reasons)


def _sleep(reactor: Any, seconds: float) -> defer.Deferred[None]:
    d: defer.Deferred[None] = defer.Deferred(lambda _: call.cancel())
    call = reactor.callLater(seconds, d.callback, None)
    return d
