"""Server discovery per the spec's order, with injected .well-known and SRV lookups:
IP literals, explicit ports, delegation, SRV (``_matrix-fed`` before ``_matrix``),
the 8448 default, and the caching rules."""

from __future__ import annotations

import json

import pytest_twisted
from twisted.internet import task

from federation.discovery import (
    WELL_KNOWN_DEFAULT_TTL_S,
    WELL_KNOWN_ERROR_TTL_S,
    WELL_KNOWN_MAX_TTL_S,
    ResolvedServer,
    ServerResolver,
    split_server_name,
)


class Network:
    """What the resolver may ask, and what it did ask."""

    def __init__(self) -> None:
        self.well_known: dict[str, tuple[int, bytes, float | None]] = {}
        self.srv: dict[str, list[tuple[str, int]]] = {}
        self.asked: list[str] = []

    async def fetch_well_known(self, host: str) -> tuple[int, bytes, float | None]:
        self.asked.append(f"well-known {host}")
        if host not in self.well_known:
            raise ConnectionRefusedError(host)
        return self.well_known[host]

    async def lookup_srv(self, name: str) -> list[tuple[str, int]]:
        self.asked.append(f"srv {name}")
        return self.srv.get(name, [])

    def delegate(self, host: str, target: str, ttl: float | None = None) -> None:
        self.well_known[host] = (200, json.dumps({"m.server": target}).encode(), ttl)


def _resolver(network: Network, clock: task.Clock | None = None) -> ServerResolver:
    return ServerResolver(clock or task.Clock(), network.fetch_well_known, network.lookup_srv)


def test_split_server_name() -> None:
    assert split_server_name("example.org") == ("example.org", None)
    assert split_server_name("example.org:8080") == ("example.org", 8080)
    assert split_server_name("127.0.0.1:8448") == ("127.0.0.1", 8448)
    assert split_server_name("[::1]") == ("::1", None)
    assert split_server_name("[2001:db8::1]:443") == ("2001:db8::1", 443)


@pytest_twisted.ensureDeferred
async def test_ip_literals_and_explicit_ports_ask_nothing() -> None:
    network = Network()
    resolver = _resolver(network)
    assert await resolver.resolve("127.0.0.1:8448") == ResolvedServer(
        "127.0.0.1", 8448, "127.0.0.1:8448", "127.0.0.1"
    )
    assert await resolver.resolve("[::1]") == ResolvedServer("::1", 8448, "[::1]", "::1")
    assert await resolver.resolve("example.org:8080") == ResolvedServer(
        "example.org", 8080, "example.org:8080", "example.org"
    )
    assert network.asked == []


@pytest_twisted.ensureDeferred
async def test_well_known_delegation_to_a_host_and_port() -> None:
    network = Network()
    network.delegate("example.org", "matrix.example.org:443")
    resolved = await _resolver(network).resolve("example.org")
    # Host header and certificate name are the delegated server's.
    assert resolved == ResolvedServer(
        "matrix.example.org", 443, "matrix.example.org:443", "matrix.example.org"
    )
    assert network.asked == ["well-known example.org"]


@pytest_twisted.ensureDeferred
async def test_delegation_without_port_uses_the_delegated_srv_then_8448() -> None:
    network = Network()
    network.delegate("example.org", "matrix.example.org")
    network.srv["_matrix-fed._tcp.matrix.example.org"] = [("fed.example.net", 8000)]
    resolved = await _resolver(network).resolve("example.org")
    assert resolved == ResolvedServer(
        "fed.example.net", 8000, "matrix.example.org", "matrix.example.org"
    )

    network = Network()
    network.delegate("example.org", "matrix.example.org")
    resolved = await _resolver(network).resolve("example.org")
    assert resolved == ResolvedServer(
        "matrix.example.org", 8448, "matrix.example.org", "matrix.example.org"
    )


@pytest_twisted.ensureDeferred
async def test_without_delegation_srv_matrix_fed_before_the_deprecated_matrix() -> None:
    network = Network()
    network.srv["_matrix-fed._tcp.example.org"] = [("a.example.org", 1111)]
    network.srv["_matrix._tcp.example.org"] = [("b.example.org", 2222)]
    resolved = await _resolver(network).resolve("example.org")
    # Connect to the SRV target, but present and check the server name itself.
    assert resolved == ResolvedServer("a.example.org", 1111, "example.org", "example.org")

    network = Network()
    network.srv["_matrix._tcp.example.org"] = [("b.example.org", 2222)]
    resolved = await _resolver(network).resolve("example.org")
    assert resolved == ResolvedServer("b.example.org", 2222, "example.org", "example.org")
    assert network.asked == [
        "well-known example.org",
        "srv _matrix-fed._tcp.example.org",
        "srv _matrix._tcp.example.org",
    ]


@pytest_twisted.ensureDeferred
async def test_nothing_found_means_port_8448() -> None:
    network = Network()
    resolved = await _resolver(network).resolve("example.org")
    assert resolved == ResolvedServer("example.org", 8448, "example.org", "example.org")


@pytest_twisted.ensureDeferred
async def test_bad_well_known_answers_are_ignored() -> None:
    for answer in (
        (404, b"", None),
        (200, b"not json", None),
        (200, json.dumps({"m.server": 5}).encode(), None),
        (200, json.dumps({"m.server": "evil.example/path"}).encode(), None),
        (200, json.dumps(["m.server"]).encode(), None),
        (200, b"{" + b" " * (60 * 1024) + b"}", None),
        (200, b"[" * 5000 + b"]" * 5000, None),  # a RecursionError escaped, once
    ):
        network = Network()
        network.well_known["example.org"] = answer
        resolved = await _resolver(network).resolve("example.org")
        assert resolved == ResolvedServer("example.org", 8448, "example.org", "example.org"), answer


async def _cached_for(network: Network, name: str) -> float:
    """How long a resolution stays cached (the resolver asks again only after it)."""
    clock = task.Clock()
    resolver = _resolver(network, clock)
    await resolver.resolve(name)
    asked = len(network.asked)
    step = 60.0
    for elapsed in range(0, int(WELL_KNOWN_MAX_TTL_S + 2 * step), int(step)):
        clock.advance(step)
        await resolver.resolve(name)
        if len(network.asked) > asked:
            return float(elapsed + step)
    raise AssertionError("never asked again")


@pytest_twisted.ensureDeferred
async def test_caching_follows_the_answer_with_bounds() -> None:
    network = Network()
    network.delegate("example.org", "m.example.org:443")  # no Cache-Control
    assert await _cached_for(network, "example.org") == WELL_KNOWN_DEFAULT_TTL_S

    network = Network()
    network.delegate("example.org", "m.example.org:443", ttl=600.0)
    assert await _cached_for(network, "example.org") == 600.0

    network = Network()
    network.delegate("example.org", "m.example.org:443", ttl=10 * 86400.0)  # capped
    assert await _cached_for(network, "example.org") == WELL_KNOWN_MAX_TTL_S

    network = Network()  # an error is remembered for an hour
    assert await _cached_for(network, "example.org") == WELL_KNOWN_ERROR_TTL_S
