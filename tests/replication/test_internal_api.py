"""The internal API between processes over real HTTP: TCP on loopback and a UNIX
socket; authentication, txn-id idempotency, retries and the unreachable error."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import pytest_twisted
import treq
from twisted.internet import defer, reactor
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.protocol import ClientFactory, Factory, Protocol
from twisted.web.client import HTTPConnectionPool

from homeserver.errors import Codes, MatrixError
from homeserver.http.server import JsonResource, MatrixSite
from homeserver.replication.client import (
    InstanceUnreachableError,
    InternalClient,
    UnknownInstanceError,
)
from homeserver.replication.endpoints import EndpointSpec, InternalEndpoint, JsonDict
from homeserver.replication.server import ReplicationResource, _is_local_peer
from homeserver.workers import InstanceLocation

SECRET = "s3cret-between-processes"
ECHO = EndpointSpec("echo", "POST", ("room_id",))
FAIL = EndpointSpec("fail", "POST")
STATUS = EndpointSpec("status", "GET", ("what",))

_pool = HTTPConnectionPool(reactor, persistent=False)


class Callee:
    """One instance's replication listener with counting handlers."""

    def __init__(self, secret: str | None) -> None:
        self.calls: list[tuple[str, JsonDict, dict[str, str]]] = []
        self.gate: defer.Deferred[None] | None = None  # handlers wait on it when set
        self.resource = ReplicationResource(reactor, secret)
        self.resource.register_endpoint(InternalEndpoint(ECHO, self._echo))
        self.resource.register_endpoint(InternalEndpoint(FAIL, self._fail))
        self.resource.register_endpoint(InternalEndpoint(STATUS, self._status))
        self.site = MatrixSite(self.resource, max_body_size=1 << 20, x_forwarded=True)
        self.ports: list[Any] = []

    async def _echo(self, body: JsonDict, params: dict[str, str]) -> tuple[int, JsonDict]:
        self.calls.append(("echo", body, params))
        if self.gate is not None:
            await self.gate
        return 200, {"room_id": params["room_id"], "got": body, "n": len(self.calls)}

    async def _fail(self, body: JsonDict, params: dict[str, str]) -> tuple[int, JsonDict]:
        self.calls.append(("fail", body, params))
        raise MatrixError(400, Codes.INVALID_PARAM, "not that", extra={"detail": 7})

    async def _status(self, body: JsonDict, params: dict[str, str]) -> tuple[int, JsonDict]:
        self.calls.append(("status", body, params))
        return 200, {"what": params["what"]}

    def listen_tcp(self, port: int = 0) -> int:
        listening = reactor.listenTCP(port, self.site, interface="127.0.0.1")
        self.ports.append(listening)
        return int(listening.getHost().port)

    def listen_unix(self, path: str) -> None:
        self.ports.append(reactor.listenUNIX(path, self.site))

    async def stop(self) -> None:
        ports, self.ports = self.ports, []
        for p in ports:
            await p.stopListening()
        self.site.close_connections()


@pytest.fixture
def callee() -> Iterator[Callee]:
    c = Callee(SECRET)
    yield c
    pytest_twisted.blockon(defer.ensureDeferred(c.stop()))


def make_client(
    locations: dict[str, InstanceLocation], secret: str | None = SECRET, **kw: Any
) -> InternalClient:
    return InternalClient(reactor, "worker1", locations, secret, **kw)


@pytest_twisted.async_yield_fixture
async def clients() -> AsyncIterator[list[InternalClient]]:
    made: list[InternalClient] = []
    yield made
    for c in made:
        await c.close()


def free_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    listening = reactor.listenTCP(0, Factory(), interface="127.0.0.1")
    port = int(listening.getHost().port)
    listening.stopListening()
    return port


async def raw(method: str, url: str, body: bytes | None, auth: str | None) -> tuple[int, Any]:
    headers = {b"Authorization": [auth.encode()]} if auth is not None else {}
    response = await treq.request(method, url, data=body, headers=headers, pool=_pool)
    content = await treq.content(response)
    return response.code, json.loads(content) if content else None


# Calls --------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_call_over_tcp_returns_the_handlers_answer(
    callee: Callee, clients: list[InternalClient]
) -> None:
    port = callee.listen_tcp()
    client = make_client({"master": InstanceLocation(host="127.0.0.1", port=port)})
    clients.append(client)
    answer = await client.call("master", ECHO, {"room_id": "!a/b:x"}, {"k": "v"})
    assert answer == {"room_id": "!a/b:x", "got": {"k": "v"}, "n": 1}
    # By name, and a GET (no body, no txn id).
    client2 = make_client(
        {"master": InstanceLocation(host="127.0.0.1", port=port)}, endpoints={"status": STATUS}
    )
    clients.append(client2)
    assert await client2.call("master", "status", {"what": "ok"}) == {"what": "ok"}


@pytest_twisted.ensureDeferred
async def test_call_over_a_unix_socket_without_secret(
    tmp_path: Any, clients: list[InternalClient]
) -> None:
    unsecured = Callee(None)
    path = str(tmp_path / "master.sock")
    unsecured.listen_unix(path)
    try:
        client = make_client({"master": InstanceLocation(path=path)}, secret=None)
        clients.append(client)
        answer = await client.call("master", ECHO, {"room_id": "!r:x"}, {"n": 1})
        assert answer["got"] == {"n": 1}
        assert len(unsecured.calls) == 1
    finally:
        await unsecured.stop()


@pytest_twisted.ensureDeferred
async def test_without_secret_loopback_callers_are_served(clients: list[InternalClient]) -> None:
    unsecured = Callee(None)
    port = unsecured.listen_tcp()
    try:
        # X-Forwarded-For is not what is checked: the transport's peer is.
        url = f"http://127.0.0.1:{port}/_synapse/replication/status/x"
        response = await treq.get(url, headers={"X-Forwarded-For": "203.0.113.9"}, pool=_pool)
        assert response.code == 200
        assert json.loads(await treq.content(response)) == {"what": "x"}
    finally:
        await unsecured.stop()


def _non_loopback_address() -> str | None:
    """This machine's address on its default route (no packet is sent), if any."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.connect(("192.0.2.1", 9))
        address = str(probe.getsockname()[0])
    except OSError:
        return None
    finally:
        probe.close()
    return None if address.startswith("127.") else address


@pytest_twisted.ensureDeferred
async def test_without_secret_a_caller_from_another_address_is_refused() -> None:
    address = _non_loopback_address()
    if address is None:
        pytest.skip("no non-loopback IPv4 address on this machine")
    unsecured, secured = Callee(None), Callee(SECRET)
    try:
        for callee in (unsecured, secured):
            listening = reactor.listenTCP(0, callee.site, interface=address)
            callee.ports.append(listening)
        url = "http://{}:{}/_synapse/replication/status/x"
        code, body = await raw(
            "GET", url.format(address, unsecured.ports[0].getHost().port), None, None
        )
        assert (code, body["errcode"]) == (403, "M_FORBIDDEN")
        assert unsecured.calls == []
        # The same caller with the secret, where one is configured, is served.
        secured_url = url.format(address, secured.ports[0].getHost().port)
        assert await raw("GET", secured_url, None, f"Bearer {SECRET}") == (200, {"what": "x"})
    finally:
        await unsecured.stop()
        await secured.stop()


@pytest.mark.parametrize(
    ("peer", "local"),
    [
        (UNIXAddress(None), True),
        (IPv4Address("TCP", "127.0.0.1", 1), True),
        (IPv4Address("TCP", "127.8.9.1", 1), True),
        (IPv6Address("TCP", "::1", 1), True),
        (IPv6Address("TCP", "::ffff:127.0.0.1", 1), True),
        (IPv4Address("TCP", "10.0.0.1", 1), False),
        (IPv4Address("TCP", "192.168.1.5", 1), False),
        (IPv6Address("TCP", "::ffff:10.0.0.1", 1), False),
        (IPv6Address("TCP", "fe80::1%eth0", 1), False),
        (None, False),
    ],
)
def test_only_unix_and_loopback_peers_count_as_local(peer: Any, local: bool) -> None:
    assert _is_local_peer(peer) is local


# Authentication and errors ------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_missing_or_wrong_secret_is_refused_before_routing(
    callee: Callee, clients: list[InternalClient]
) -> None:
    port = callee.listen_tcp()
    url = f"http://127.0.0.1:{port}/_synapse/replication/echo/r/txn1"
    for auth in (None, "Bearer wrong", f"Basic {SECRET}", SECRET, f"Bearer {SECRET}x"):
        code, body = await raw("POST", url, b"{}", auth)
        assert (code, body["errcode"]) == (403, "M_FORBIDDEN"), auth
    # An unknown endpoint is not revealed to an unauthenticated caller either.
    code, body = await raw(
        "POST", f"http://127.0.0.1:{port}/_synapse/replication/nope/1", b"{}", None
    )
    assert (code, body["errcode"]) == (403, "M_FORBIDDEN")
    assert callee.calls == []
    wrong = make_client({"master": InstanceLocation(host="127.0.0.1", port=port)}, secret="no")
    clients.append(wrong)
    with pytest.raises(MatrixError) as caught:
        await wrong.call("master", ECHO, {"room_id": "r"}, {})
    assert (caught.value.status, caught.value.errcode) == (403, "M_FORBIDDEN")
    assert callee.calls == []


@pytest_twisted.ensureDeferred
async def test_unknown_endpoint_404_and_bad_json_400(callee: Callee) -> None:
    port = callee.listen_tcp()
    base = f"http://127.0.0.1:{port}/_synapse/replication"
    auth = f"Bearer {SECRET}"
    code, body = await raw("POST", f"{base}/nope/1", b"{}", auth)
    assert (code, body["errcode"]) == (404, "M_UNRECOGNIZED")
    code, body = await raw("POST", f"{base}/echo/r/t1", b"{not json", auth)
    assert (code, body["errcode"]) == (400, "M_NOT_JSON")
    code, body = await raw("GET", f"{base}/echo/r/t1", None, auth)
    assert (code, body["errcode"]) == (405, "M_UNRECOGNIZED")
    assert callee.calls == []


@pytest_twisted.ensureDeferred
async def test_a_callees_matrix_error_reaches_the_caller_and_is_not_cached(
    callee: Callee, clients: list[InternalClient]
) -> None:
    port = callee.listen_tcp()
    client = make_client({"master": InstanceLocation(host="127.0.0.1", port=port)})
    clients.append(client)
    with pytest.raises(MatrixError) as caught:
        await client.call("master", FAIL, {}, {})
    err = caught.value
    assert (err.status, err.errcode, err.message, err.extra) == (
        400,
        "M_INVALID_PARAM",
        "not that",
        {"detail": 7},
    )
    # A failed run is forgotten: the same txn id runs it again.
    auth = f"Bearer {SECRET}"
    url = f"http://127.0.0.1:{port}/_synapse/replication/fail/same"
    assert (await raw("POST", url, b"{}", auth))[0] == 400
    assert (await raw("POST", url, b"{}", auth))[0] == 400
    assert [c[0] for c in callee.calls] == ["fail"] * 3


# Txn ids ----------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_a_repeated_txn_id_gets_the_cached_answer_without_a_second_run(
    callee: Callee,
) -> None:
    port = callee.listen_tcp()
    auth = f"Bearer {SECRET}"
    url = f"http://127.0.0.1:{port}/_synapse/replication/echo/r/txn-A"
    first = await raw("POST", url, b'{"x":1}', auth)
    again = await raw("POST", url, b'{"x":1}', auth)
    assert first == again == (200, {"room_id": "r", "got": {"x": 1}, "n": 1})
    assert len(callee.calls) == 1
    # Another txn id is another call.
    other = await raw("POST", url.replace("txn-A", "txn-B"), b'{"x":1}', auth)
    assert other[1]["n"] == 2
    # Concurrent repeats while the first still runs share its run.
    callee.gate = defer.Deferred()
    url_c = url.replace("txn-A", "txn-C")
    racing = [defer.ensureDeferred(raw("POST", url_c, b"{}", auth)) for _ in range(3)]
    await _until(lambda: len(callee.calls) == 3)
    await _sleep(0.1)
    assert len(callee.calls) == 3  # one run for the three
    callee.gate.callback(None)
    results = await defer.gatherResults(racing)
    assert {json.dumps(r) for r in results} == {
        json.dumps((200, {"room_id": "r", "got": {}, "n": 3}))
    }


class _DropFirstAnswer(Protocol):
    """A TCP proxy whose first connection is cut when the callee's answer arrives: the
    request was handled, the caller never heard."""

    dropped = 0

    def __init__(self, backend_port: int, state: dict[str, int]) -> None:
        self._backend_port = backend_port
        self._state = state
        self._backend: Protocol | None = None
        self._buffer: list[bytes] = []

    def connectionMade(self) -> None:
        front = self
        self._state["connections"] += 1
        drop = self._state["connections"] == 1

        class Back(Protocol):
            def connectionMade(self) -> None:
                front._backend = self
                for chunk in front._buffer:
                    self.transport.write(chunk)  # type: ignore[union-attr]
                front._buffer = []

            def dataReceived(self, data: bytes) -> None:
                if drop:
                    front.transport.abortConnection()  # type: ignore[union-attr]
                    self.transport.loseConnection()  # type: ignore[union-attr]
                    return
                front.transport.write(data)  # type: ignore[union-attr]

            def connectionLost(self, reason: Any = None) -> None:
                front.transport.loseConnection()  # type: ignore[union-attr]

        factory = ClientFactory()
        factory.protocol = Back
        reactor.connectTCP("127.0.0.1", self._backend_port, factory)

    def dataReceived(self, data: bytes) -> None:
        if self._backend is None:
            self._buffer.append(data)
        else:
            self._backend.transport.write(data)  # type: ignore[union-attr]

    def connectionLost(self, reason: Any = None) -> None:
        if self._backend is not None and self._backend.transport is not None:
            self._backend.transport.loseConnection()


@pytest_twisted.ensureDeferred
async def test_a_call_whose_answer_was_lost_is_retried_and_runs_once(
    callee: Callee, clients: list[InternalClient]
) -> None:
    backend = callee.listen_tcp()
    state = {"connections": 0}
    factory = Factory.forProtocol(lambda: _DropFirstAnswer(backend, state))
    proxy = reactor.listenTCP(0, factory, interface="127.0.0.1")
    try:
        client = make_client(
            {"master": InstanceLocation(host="127.0.0.1", port=proxy.getHost().port)},
            first_delay_s=0.05,
        )
        clients.append(client)
        answer = await client.call("master", ECHO, {"room_id": "r"}, {"once": True})
        assert answer == {"room_id": "r", "got": {"once": True}, "n": 1}
        assert state["connections"] == 2  # sent twice
        assert len(callee.calls) == 1  # run once
    finally:
        await proxy.stopListening()


# Unreachable instances ---------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_an_instance_that_stays_down_gives_a_clear_error_in_bounded_time(
    clients: list[InternalClient],
) -> None:
    port = free_port()
    client = make_client(
        {"writer1": InstanceLocation(host="127.0.0.1", port=port)},
        retry_for_s=0.6,
        first_delay_s=0.05,
    )
    clients.append(client)
    start = time.monotonic()
    with pytest.raises(InstanceUnreachableError) as caught:
        await client.call(
            "writer1", ECHO, {"room_id": "r"}, {}, purpose="the event writer for this room"
        )
    elapsed = time.monotonic() - start
    assert 0.3 <= elapsed < 5.0, elapsed  # it retried for the window, then gave up
    err = caught.value
    assert (err.status, err.errcode) == (503, "M_UNKNOWN")
    assert (
        err.message == "the event writer for this room (instance 'writer1') is unreachable; retry"
    )
    assert err.to_json()["retry_after_ms"] == 1000
    assert err.headers == {"Retry-After": "1"}
    assert "ConnectionRefused" in err.cause


@pytest_twisted.ensureDeferred
async def test_a_missing_unix_socket_is_unreachable_too(
    tmp_path: Any, clients: list[InternalClient]
) -> None:
    client = make_client(
        {"writer1": InstanceLocation(path=str(tmp_path / "none.sock"))},
        retry_for_s=0.2,
        first_delay_s=0.05,
    )
    clients.append(client)
    with pytest.raises(InstanceUnreachableError):
        await client.call("writer1", ECHO, {"room_id": "r"}, {})


@pytest_twisted.ensureDeferred
async def test_an_instance_back_within_the_retry_window_answers(
    callee: Callee, clients: list[InternalClient]
) -> None:
    port = free_port()
    client = make_client(
        {"master": InstanceLocation(host="127.0.0.1", port=port)},
        retry_for_s=10.0,
        first_delay_s=0.05,
        max_delay_s=0.2,
    )
    clients.append(client)
    reactor.callLater(0.5, callee.listen_tcp, port)
    start = time.monotonic()
    answer = await client.call("master", ECHO, {"room_id": "r"}, {"late": 1})
    assert answer["got"] == {"late": 1}
    assert 0.4 <= time.monotonic() - start < 3.0
    assert len(callee.calls) == 1


@pytest_twisted.ensureDeferred
async def test_an_unknown_instance_name_is_named_in_the_error(
    clients: list[InternalClient],
) -> None:
    client = make_client({"master": InstanceLocation(host="127.0.0.1", port=1)})
    clients.append(client)
    with pytest.raises(UnknownInstanceError, match="'writer9' is not in instance_map"):
        await client.call("writer9", ECHO, {"room_id": "r"}, {})
    with pytest.raises(UnknownInstanceError, match="'worker1' is this process"):
        await client.call("worker1", ECHO, {"room_id": "r"}, {})


@pytest_twisted.ensureDeferred
async def test_the_client_api_answers_503_with_retry_after_when_an_instance_is_down(
    clients: list[InternalClient],
) -> None:
    """What a Matrix client sees when a servlet's call to another instance fails."""
    client = make_client(
        {"writer1": InstanceLocation(host="127.0.0.1", port=free_port())},
        retry_for_s=0.1,
        first_delay_s=0.05,
    )
    clients.append(client)
    front = JsonResource()

    async def send(request: Any, room_id: str) -> tuple[int, JsonDict]:
        purpose = "the event writer for this room"
        return 200, await client.call("writer1", ECHO, {"room_id": room_id}, {}, purpose=purpose)

    front.register("POST", "/_matrix/client/v3/rooms/{room_id}/send", send)
    site = MatrixSite(front, max_body_size=1 << 20, x_forwarded=False)
    listening = reactor.listenTCP(0, site, interface="127.0.0.1")
    try:
        port = listening.getHost().port
        response = await treq.request(
            "POST",
            f"http://127.0.0.1:{port}/_matrix/client/v3/rooms/r/send",
            data=b"{}",
            pool=_pool,
        )
        body = json.loads(await treq.content(response))
        assert response.code == 503
        assert response.headers.getRawHeaders("Retry-After") == ["1"]
        assert body == {
            "errcode": "M_UNKNOWN",
            "error": "the event writer for this room (instance 'writer1') is unreachable; retry",
            "retry_after_ms": 1000,
        }
    finally:
        await listening.stopListening()


# Helpers --------------------------------------------------------------------------


def _sleep(seconds: float) -> defer.Deferred[None]:
    d: defer.Deferred[None] = defer.Deferred()
    reactor.callLater(seconds, d.callback, None)
    return d


async def _until(check: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await _sleep(0.01)
