"""The ``.well-known/matrix/server`` fetch over real HTTPS on loopback: redirects only
to addresses the outbound IP range policy allows and at most ``MAX_REDIRECTS`` of
them, a body read of at most 50 KiB, and the cache rules of discovery unchanged."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor, ssl, task
from twisted.web import resource, server

from federation.discovery import (
    WELL_KNOWN_ERROR_TTL_S,
    WELL_KNOWN_MAX_BYTES,
    ResolvedServer,
    ServerResolver,
)
from federation.http_client import DEFAULT_IP_RANGE_BLACKLIST
from federation.well_known import MAX_REDIRECTS, WellKnownError, WellKnownFetcher
from homeserver.http.ip_filter import IpFilter
from tests.support.federation import write_self_signed_cert

WELL_KNOWN = "/.well-known/matrix/server"
Handler = Callable[[server.Request], bytes | int]


class WebServer(resource.Resource):
    """An HTTPS server on one loopback address: answers by path, records each request."""

    isLeaf = True

    def __init__(self, interface: str, cert_dir: str) -> None:
        super().__init__()
        self.interface = interface
        self.routes: dict[str, Handler] = {}
        self.requests: list[str] = []
        cert, key = write_self_signed_cert(cert_dir)
        self._port = reactor.listenSSL(
            0, server.Site(self), ssl.DefaultOpenSSLContextFactory(key, cert), interface=interface
        )
        self.port: int = self._port.getHost().port

    def url(self, path: str) -> str:
        return f"https://{self.interface}:{self.port}{path}"

    def render_GET(self, request: server.Request) -> bytes | int:
        path = request.path.decode()
        self.requests.append(path)
        handler = self.routes.get(path)
        if handler is None:
            request.setResponseCode(404)
            return b"{}"
        return handler(request)

    async def stop(self) -> None:
        await self._port.stopListening()


def delegation(target: str, max_age: int | None = None, pad: int = 0) -> Handler:
    def handler(request: server.Request) -> bytes:
        if max_age is not None:
            request.setHeader(b"Cache-Control", f"max-age={max_age}".encode())
        body: dict[str, Any] = {"m.server": target}
        if pad:
            body["pad"] = "x" * pad
        return json.dumps(body).encode()

    return handler


def redirect(location: str, code: int = 302) -> Handler:
    def handler(request: server.Request) -> bytes:
        request.setResponseCode(code)
        request.setHeader(b"Location", location.encode())
        return b""

    return handler


@pytest_twisted.async_yield_fixture
async def web(tmp_path: Any) -> AsyncIterator[tuple[WebServer, WebServer, WebServer]]:
    """Two servers on 127.0.0.1 (allowed by the tests' policy) and one on 127.0.0.2
    (blacklisted: in 127.0.0.0/8 and not whitelisted)."""
    servers = []
    for i, interface in enumerate(("127.0.0.1", "127.0.0.1", "127.0.0.2")):
        d = tmp_path / f"web{i}"
        d.mkdir()
        servers.append(WebServer(interface, str(d)))
    try:
        yield servers[0], servers[1], servers[2]
    finally:
        for s in servers:
            await s.stop()


def fetcher(home: WebServer, whitelist: list[str] | None = None) -> WellKnownFetcher:
    """``https://localhost/`` is ``home``; only 127.0.0.1 is allowed by default."""
    policy = IpFilter(
        list(DEFAULT_IP_RANGE_BLACKLIST), ["127.0.0.1/32"] if whitelist is None else whitelist
    )
    return WellKnownFetcher(reactor, policy, verify_certificates=False, https_port=home.port)


async def no_srv(name: str) -> list[tuple[str, int]]:
    return []


@pytest_twisted.ensureDeferred
async def test_delegation_with_its_cache_lifetime(web: tuple[WebServer, ...]) -> None:
    home = web[0]
    home.routes[WELL_KNOWN] = delegation("matrix.example.org:443", max_age=7200)
    status, body, ttl = await fetcher(home)("localhost")
    assert (status, json.loads(body)["m.server"], ttl) == (200, "matrix.example.org:443", 7200.0)

    clock = task.Clock()
    resolver = ServerResolver(clock, fetcher(home), no_srv)
    assert await resolver.resolve("localhost") == ResolvedServer(
        "matrix.example.org", 443, "matrix.example.org:443", "matrix.example.org"
    )
    clock.advance(7199)
    await resolver.resolve("localhost")
    assert home.requests == [WELL_KNOWN, WELL_KNOWN]  # cached for its max-age
    clock.advance(2)
    await resolver.resolve("localhost")
    assert len(home.requests) == 3


@pytest_twisted.ensureDeferred
async def test_redirect_to_an_allowed_address_is_followed(web: tuple[WebServer, ...]) -> None:
    home, other, _ = web
    home.routes[WELL_KNOWN] = redirect(other.url("/moved"), code=301)
    other.routes["/moved"] = redirect("/moved/again", code=307)  # relative
    other.routes["/moved/again"] = delegation("matrix.example.org:8443", max_age=600)
    status, body, ttl = await fetcher(home)("localhost")
    assert (status, json.loads(body)["m.server"], ttl) == (200, "matrix.example.org:8443", 600.0)
    assert home.requests == [WELL_KNOWN]
    assert other.requests == ["/moved", "/moved/again"]


@pytest_twisted.ensureDeferred
async def test_redirect_to_a_blacklisted_address_is_not_followed(
    web: tuple[WebServer, ...],
) -> None:
    home, _, blocked = web
    home.routes[WELL_KNOWN] = redirect(blocked.url(WELL_KNOWN))
    blocked.routes[WELL_KNOWN] = delegation("evil.example.org:443")
    with pytest.raises(WellKnownError, match="blacklisted"):
        await fetcher(home)("localhost")
    assert blocked.requests == []

    # Discovery goes on as if there were no delegation, and retries after an hour.
    clock = task.Clock()
    resolver = ServerResolver(clock, fetcher(home), no_srv)
    assert await resolver.resolve("localhost") == ResolvedServer(
        "localhost", 8448, "localhost", "localhost"
    )
    clock.advance(WELL_KNOWN_ERROR_TTL_S - 1)
    await resolver.resolve("localhost")
    assert home.requests == [WELL_KNOWN, WELL_KNOWN]
    assert blocked.requests == []


@pytest_twisted.ensureDeferred
async def test_the_first_request_obeys_the_policy_too(web: tuple[WebServer, ...]) -> None:
    home = web[0]
    home.routes[WELL_KNOWN] = delegation("matrix.example.org:443")
    with pytest.raises(WellKnownError, match="blacklisted"):
        await fetcher(home, whitelist=[])("localhost")
    assert home.requests == []


@pytest_twisted.ensureDeferred
async def test_redirects_are_limited(web: tuple[WebServer, ...]) -> None:
    home = web[0]
    home.routes[WELL_KNOWN] = redirect("/r/1")
    for i in range(1, 20):
        home.routes[f"/r/{i}"] = redirect(f"/r/{i + 1}")
    home.routes[f"/r/{MAX_REDIRECTS}"] = delegation("matrix.example.org:443")
    # Exactly MAX_REDIRECTS redirects are fine...
    status, _, _ = await fetcher(home)("localhost")
    assert status == 200
    # ...one more is not.
    home.requests.clear()
    home.routes[f"/r/{MAX_REDIRECTS}"] = redirect(f"/r/{MAX_REDIRECTS + 1}")
    with pytest.raises(WellKnownError, match="redirects"):
        await fetcher(home)("localhost")
    assert len(home.requests) == MAX_REDIRECTS + 1


@pytest_twisted.ensureDeferred
async def test_redirect_to_plain_http_is_refused(web: tuple[WebServer, ...]) -> None:
    home = web[0]
    home.routes[WELL_KNOWN] = redirect(f"http://127.0.0.1:{home.port}/plain")
    with pytest.raises(WellKnownError, match="Refusing"):
        await fetcher(home)("localhost")
    assert home.requests == [WELL_KNOWN]


@pytest_twisted.ensureDeferred
async def test_body_near_the_limit_is_read(web: tuple[WebServer, ...]) -> None:
    home = web[0]
    home.routes[WELL_KNOWN] = delegation("matrix.example.org:443", pad=WELL_KNOWN_MAX_BYTES - 100)
    status, body, _ = await fetcher(home)("localhost")
    assert status == 200 and len(body) <= WELL_KNOWN_MAX_BYTES


@pytest_twisted.ensureDeferred
async def test_body_over_the_limit_with_a_length_is_not_read(
    web: tuple[WebServer, ...],
) -> None:
    home = web[0]
    home.routes[WELL_KNOWN] = delegation("matrix.example.org:443", pad=WELL_KNOWN_MAX_BYTES)
    with pytest.raises(WellKnownError, match="over"):
        await fetcher(home)("localhost")


@pytest_twisted.ensureDeferred
async def test_endless_streamed_body_is_cut_after_the_limit(web: tuple[WebServer, ...]) -> None:
    """No Content-Length, a body that would go on for 256 MiB: the fetch fails after
    50 KiB and the connection is dropped, long before the server is done."""
    home = web[0]
    chunk = b" " * 65536
    written = [0]
    lost: list[bool] = []

    def stream(request: server.Request) -> int:
        request.notifyFinish().addBoth(lambda _: lost.append(True))

        def more() -> None:
            if lost or written[0] >= 256 * 1024 * 1024:
                loop.stop()
                return
            request.write(chunk)
            written[0] += len(chunk)

        loop = task.LoopingCall(more)
        loop.start(0.001)
        return server.NOT_DONE_YET

    home.routes[WELL_KNOWN] = stream
    start = reactor.seconds()
    with pytest.raises(WellKnownError, match="over"):
        await fetcher(home)("localhost")
    for _ in range(200):
        if lost:
            break
        await task.deferLater(reactor, 0.01, lambda: None)
    assert lost, "the connection was never dropped"
    assert written[0] < 16 * 1024 * 1024
    assert reactor.seconds() - start < 5
