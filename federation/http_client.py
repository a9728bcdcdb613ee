"""Outbound server-server HTTP: discovery, TLS, X-Matrix signing, IP range policy.

Invariants:
- Every request to another server is signed with our key (``federation.x_matrix``).
- We connect to the IP we checked against the IP range policy (never re-resolved),
  with the Host header and TLS SNI of the server name (or its delegation).
- Certificates are verified unless ``federation_verify_certificates`` is false.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any, cast
from urllib.parse import urlencode

import treq
from OpenSSL import SSL
from signedjson.types import SigningKey
from twisted.internet import defer
from twisted.internet.error import ConnectingCancelledError
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from twisted.internet.protocol import Protocol
from twisted.internet.ssl import CertificateOptions, optionsForClientTLS
from twisted.python.failure import Failure
from twisted.web.client import Agent, HTTPConnectionPool, ResponseDone, ResponseNeverReceived
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers
from twisted.web.iweb import IPolicyForHTTPS, IResponse
from zope.interface import implementer

from federation.discovery import ServerResolver, is_ip_literal
from federation.interfaces import FederationRequestError
from federation.x_matrix import sign_request
from homeserver.errors import MatrixError
from homeserver.events.format import is_reachable_server_name
from homeserver.http.ip_filter import IpFilter
from homeserver.untrusted import decode_json

logger = logging.getLogger(__name__)

JsonDict = dict[str, Any]
Args = dict[str, str | list[str]] | None

DEFAULT_IP_RANGE_BLACKLIST = (
    "127.0.0.0/8",
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "100.64.0.0/10",
    "192.0.0.0/24",
    "169.254.0.0/16",
    "192.88.99.0/24",
    "198.18.0.0/15",
    "192.0.2.0/24",
    "198.51.100.0/24",
    "203.0.113.0/24",
    "224.0.0.0/4",
    "::1/128",
    "fe80::/10",
    "fc00::/7",
    "2001:db8::/32",
    "ff00::/8",
    "fec0::/10",
)


def error_from_response(destination: str, code: int, content: bytes) -> FederationRequestError:
    """The error for a non-2xx answer, with the Matrix errcode when the body has one."""
    try:
        parsed = decode_json(content) if content else None
    except MatrixError:
        parsed = None
    if isinstance(parsed, dict):
        errcode = parsed.get("errcode")
        retry = parsed.get("retry_after_ms")
        room_version = parsed.get("room_version")
        return FederationRequestError(
            destination,
            code,
            errcode if isinstance(errcode, str) else None,
            str(parsed.get("error", "")),
            retry if isinstance(retry, int) and not isinstance(retry, bool) else None,
            room_version if isinstance(room_version, str) and len(room_version) <= 64 else None,
        )
    return FederationRequestError(destination, code, None, content[:200].decode("utf-8", "replace"))


async def resolve_ip(reactor: Any, host: str) -> str:
    """``host``'s address (itself when it is an IP literal)."""
    if is_ip_literal(host):
        return host
    return str(await reactor.resolve(host))


@implementer(IOpenSSLClientConnectionCreator)
class _NoVerifyCreator:
    """TLS with SNI but without certificate verification (test setups, as Synapse's
    ``federation_verify_certificates: false``)."""

    def __init__(self, hostname: str) -> None:
        self._hostname = hostname.encode("idna") if not is_ip_literal(hostname) else b""
        self._ctx = CertificateOptions(verify=False).getContext()

    def clientConnectionForTLS(self, tls_protocol: Any) -> SSL.Connection:
        conn = SSL.Connection(self._ctx, None)
        if self._hostname:
            conn.set_tlsext_host_name(self._hostname)
        conn.set_app_data(tls_protocol)
        conn.set_connect_state()
        return conn


@implementer(IPolicyForHTTPS)
class FixedNamePolicy:
    """TLS for a connection to an IP, named (SNI, certificate check) by the server name."""

    def __init__(self, tls_name: str, verify: bool) -> None:
        self._tls_name = tls_name
        self._verify = verify

    def creatorForNetloc(self, hostname: bytes, port: int) -> Any:
        if self._verify:
            return optionsForClientTLS(self._tls_name)
        return _NoVerifyCreator(self._tls_name)


def _timed_out(e: Exception) -> bool:
    """Whether a request failed because ``timeout`` cancelled it (which the agent
    reports as the cancellation itself, or wrapped, depending on the moment)."""
    if isinstance(e, defer.CancelledError | ConnectingCancelledError):
        return True
    return isinstance(e, ResponseNeverReceived) and any(
        f.check(defer.CancelledError) for f in e.reasons
    )


class BodyTooLarge(Exception):
    pass


def discard_body(response: IResponse) -> None:
    """Drop the connection without reading the body."""
    cast(Any, response).deliverBody(_Discard())


async def read_limited(response: IResponse, limit: int) -> bytes:
    """The body; ``BodyTooLarge`` once it passes ``limit`` bytes (the rest unread).
    Cancelling the wait drops the connection."""
    if isinstance(response.length, int) and response.length > limit:
        discard_body(response)
        raise BodyTooLarge(f"Body of {response.length} bytes is over {limit}")
    reader = _LimitedReader(limit)
    cast(Any, response).deliverBody(reader)
    return await reader.finished


class _LimitedReader(Protocol):
    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._chunks: list[bytes] = []
        self._size = 0
        self.finished: defer.Deferred[bytes] = defer.Deferred(self._cancel)

    def _cancel(self, _d: defer.Deferred[bytes]) -> None:
        if self.transport is not None:
            self.transport.stopProducing()  # type: ignore[attr-defined]

    def dataReceived(self, data: bytes) -> None:
        if self.finished.called:
            return
        self._chunks.append(data)
        self._size += len(data)
        if self._size > self._limit:
            self._chunks.clear()
            self.finished.errback(BodyTooLarge(f"Body is over {self._limit} bytes"))
            self.transport.stopProducing()  # type: ignore[union-attr]

    def connectionLost(self, reason: Failure = ResponseDone()) -> None:  # type: ignore[assignment]
        if self.finished.called:
            return
        if reason.check(ResponseDone, PotentialDataLoss):
            self.finished.callback(b"".join(self._chunks))
        else:
            self.finished.errback(reason)


class _Discard(Protocol):
    def connectionMade(self) -> None:
        self.transport.stopProducing()  # type: ignore[union-attr]


class MatrixFederationHttpClient:
    def __init__(
        self,
        reactor: Any,
        server_name: str,
        signing_key: SigningKey,
        resolver: ServerResolver,
        *,
        verify_certificates: bool,
        ip_policy: IpFilter,
        domain_whitelist: Sequence[str] | None = None,
    ) -> None:
        self._reactor = reactor
        self.server_name = server_name
        self._key = signing_key
        self._resolver = resolver
        self._verify = verify_certificates
        self._ip_policy = ip_policy
        self._whitelist = set(domain_whitelist) if domain_whitelist is not None else None
        self._pool = HTTPConnectionPool(reactor, persistent=True)
        self._pool.maxPersistentPerHost = 5
        self._pool.retryAutomatically = False
        self._agents: dict[tuple[str, bool], Agent] = {}

    def close(self) -> defer.Deferred[None]:
        closing: defer.Deferred[None] = self._pool.closeCachedConnections()
        return closing

    def _agent(self, tls_name: str) -> Agent:
        key = (tls_name, self._verify)
        agent = self._agents.get(key)
        if agent is None:
            agent = Agent(
                self._reactor,
                contextFactory=FixedNamePolicy(tls_name, self._verify),
                pool=self._pool,
                connectTimeout=20,
            )
            self._agents[key] = agent
        return agent

    def destination_allowed(self, destination: str) -> bool:
        return self._whitelist is None or destination in self._whitelist

    async def send(
        self,
        method: str,
        destination: str,
        path: str,
        *,
        args: Args = None,
        body: Any | None = None,
        timeout_s: float = 60.0,
        sign: bool = True,
    ) -> IResponse:
        """Send a request; the answer once its headers are in, its body not yet read.

        ``timeout_s`` bounds the wait for the headers only. Connection failures raise
        ``FederationRequestError`` (502, or 504 on timeout); HTTP errors do not.
        """
        if destination == self.server_name:
            raise FederationRequestError(
                destination, 400, None, "Refusing to federate with ourselves"
            )
        if not self.destination_allowed(destination):
            raise FederationRequestError(destination, 403, None, "Destination not whitelisted")
        if not is_reachable_server_name(destination):
            raise FederationRequestError(destination, 400, None, "Invalid server name")
        resolved = await self._resolver.resolve(destination)
        try:
            ip = await resolve_ip(self._reactor, resolved.host)
        except Exception as e:
            raise FederationRequestError(
                destination, 502, None, f"DNS lookup failed: {e}"
            ) from None
        if not self._ip_policy.allows(ip):
            raise FederationRequestError(destination, 403, None, f"IP {ip} is blacklisted")
        query = urlencode(
            [
                (k, v)
                for k, vs in (args or {}).items()
                for v in ([vs] if isinstance(vs, str) else vs)
            ]
        )
        uri = path + (f"?{query}" if query else "")
        host = f"[{ip}]" if ":" in ip else ip
        url = f"https://{host}:{resolved.port}{uri}"
        headers = Headers(
            {
                b"Host": [resolved.host_header.encode()],
                b"User-Agent": [b"homeserver"],
            }
        )
        data = None
        if body is not None:
            data = json.dumps(body).encode("utf-8")
            headers.addRawHeader(b"Content-Type", b"application/json")
        if sign:
            auth = sign_request(self._key, method, uri, self.server_name, destination, body)
            headers.addRawHeader(b"Authorization", auth.encode())
        try:
            response: IResponse = await treq.request(
                method,
                url,
                data=data,
                headers=headers,
                agent=self._agent(resolved.tls_server_name),  # type: ignore[arg-type]
                timeout=timeout_s,
                unbuffered=True,
            )
        except Exception as e:
            if _timed_out(e):
                raise FederationRequestError(destination, 504, None, "Request timed out") from None
            raise FederationRequestError(
                destination, 502, None, f"Connection failed: {e}"
            ) from None
        return response

    async def request(
        self,
        method: str,
        destination: str,
        path: str,
        *,
        args: Args = None,
        body: Any | None = None,
        timeout_s: float = 60.0,
        sign: bool = True,
        max_body_bytes: int | None = None,
    ) -> Any:
        """Send a request and parse its JSON answer.

        With ``max_body_bytes``, an answer whose body passes it is cut off (the
        connection dropped) and raises 502, and reading the body also counts against
        ``timeout_s`` (504 when it runs out).
        """
        response = await self.send(
            method, destination, path, args=args, body=body, timeout_s=timeout_s, sign=sign
        )
        if max_body_bytes is None:
            content = await self._read_body(destination, response)
        else:
            content = await self._read_bounded_body(
                destination, response, max_body_bytes, timeout_s
            )
        try:  # another server's answer: as strict as a request to us (depth, Unicode)
            parsed = decode_json(content) if content else {}
        except MatrixError:
            parsed = None
        if not 200 <= response.code < 300:
            raise error_from_response(destination, response.code, content)
        if parsed is None:
            raise FederationRequestError(destination, 502, None, "Response was not JSON")
        return parsed

    async def _read_body(self, destination: str, response: IResponse) -> bytes:
        try:
            content: bytes = await treq.content(response)
        except Exception as e:
            raise FederationRequestError(
                destination, 502, None, f"Connection failed: {e}"
            ) from None
        return content

    async def _read_bounded_body(
        self, destination: str, response: IResponse, limit: int, timeout_s: float
    ) -> bytes:
        reading = defer.ensureDeferred(read_limited(response, limit))
        timer = self._reactor.callLater(timeout_s, reading.cancel)
        try:
            return await reading
        except BodyTooLarge:
            raise FederationRequestError(
                destination, 502, None, "Response body too large"
            ) from None
        except defer.CancelledError:
            raise FederationRequestError(destination, 504, None, "Request timed out") from None
        except Exception as e:
            raise FederationRequestError(
                destination, 502, None, f"Connection failed: {e}"
            ) from None
        finally:
            if timer.active():
                timer.cancel()

    async def get_json(
        self,
        destination: str,
        path: str,
        args: Args = None,
        *,
        timeout_s: float = 60.0,
        max_body_bytes: int | None = None,
    ) -> JsonDict:
        result = await self.request(
            "GET",
            destination,
            path,
            args=args,
            timeout_s=timeout_s,
            max_body_bytes=max_body_bytes,
        )
        if not isinstance(result, dict):
            raise FederationRequestError(destination, 502, None, "Expected a JSON object")
        return result

    async def put_json(
        self,
        destination: str,
        path: str,
        body: JsonDict,
        *,
        timeout_s: float = 60.0,
        args: Args = None,
    ) -> Any:
        return await self.request(
            "PUT", destination, path, args=args, body=body, timeout_s=timeout_s
        )

    async def post_json(
        self,
        destination: str,
        path: str,
        body: JsonDict,
        *,
        timeout_s: float = 60.0,
        args: Args = None,
        max_body_bytes: int | None = None,
    ) -> Any:
        return await self.request(
            "POST",
            destination,
            path,
            args=args,
            body=body,
            timeout_s=timeout_s,
            max_body_bytes=max_body_bytes,
        )
