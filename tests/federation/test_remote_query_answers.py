"""Bad answers to our profile, alias and room list queries (wrong types, huge or
stalled bodies, silence) give the client a clean Matrix error, never a 500."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_twisted
from twisted.web import server

import federation.queries
from tests.federation.test_remote_queries import V3, assert_error, profile_path, user
from tests.federation.test_two_servers import sleep
from tests.federation.test_well_known_fetch import Handler, WebServer
from tests.support.client import Client, q
from tests.support.federation import start_federating_server
from tests.support.server import RunningServer


class FakePeer(WebServer):
    """Another "server" answering federation requests by path, GET and POST alike."""

    def render_POST(self, request: server.Request) -> bytes | int:
        return self.render_GET(request)

    @property
    def server_name(self) -> str:
        return f"{self.interface}:{self.port}"


def answer(body: Any, code: int = 200) -> Handler:
    def handler(request: server.Request) -> bytes:
        request.setResponseCode(code)
        return body if isinstance(body, bytes) else json.dumps(body).encode()

    return handler


def never_answer(request: server.Request) -> int:
    return server.NOT_DONE_YET


def stall_body(request: server.Request) -> int:
    request.setHeader(b"Content-Length", b"1000")
    request.write(b'{"displayname": "')
    return server.NOT_DONE_YET


@pytest_twisted.async_yield_fixture
async def setup(
    database: dict[str, Any], tmp_path: Any
) -> AsyncIterator[tuple[RunningServer, FakePeer, Client]]:
    os.makedirs(str(tmp_path / "peer"), exist_ok=True)
    peer = FakePeer("127.0.0.1", str(tmp_path / "peer"))
    ours = await start_federating_server(str(tmp_path / "ours"), database)
    try:
        alice = await user(ours, "alice")
        yield ours, peer, alice
    finally:
        await ours.stop()
        await peer.stop()


PROFILE = "/_matrix/federation/v1/query/profile"
DIRECTORY = "/_matrix/federation/v1/query/directory"
ROOMS = "/_matrix/federation/v1/publicRooms"


@pytest_twisted.ensureDeferred
async def test_bad_profile_answers(setup: tuple[RunningServer, FakePeer, Client]) -> None:
    _, peer, alice = setup
    someone = f"@someone:{peer.server_name}"

    peer.routes[PROFILE] = answer({"displayname": 5, "avatar_url": None, "m.tz": "Europe/Paris"})
    resp = await alice.get(profile_path(someone))
    assert resp.code == 200 and resp.json == {"m.tz": "Europe/Paris"}, resp
    assert_error(await alice.get(profile_path(someone, "displayname")), 404, "M_NOT_FOUND")

    for bad in (answer([1, 2]), answer(b"not json"), answer({"error": "boom"}, 500)):
        peer.routes[PROFILE] = bad
        assert_error(await alice.get(profile_path(someone)), 502, "M_UNKNOWN")
    peer.routes[PROFILE] = answer({"displayname": "x" * (federation.queries.PROFILE_MAX_BYTES)})
    assert_error(await alice.get(profile_path(someone)), 502, "M_UNKNOWN")
    peer.routes[PROFILE] = answer({"errcode": "M_FORBIDDEN", "error": "no"}, 403)
    assert_error(await alice.get(profile_path(someone)), 403, "M_FORBIDDEN")


@pytest_twisted.ensureDeferred
async def test_silent_or_stalling_server_times_out(
    setup: tuple[RunningServer, FakePeer, Client], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, peer, alice = setup
    monkeypatch.setattr(federation.queries, "PROFILE_TIMEOUT_S", 1.0)
    someone = f"@someone:{peer.server_name}"
    peer.routes[PROFILE] = never_answer
    assert_error(await alice.get(profile_path(someone)), 504, "M_UNKNOWN")
    peer.routes[PROFILE] = stall_body
    assert_error(await alice.get(profile_path(someone)), 504, "M_UNKNOWN")


@pytest_twisted.ensureDeferred
async def test_bad_alias_answers(setup: tuple[RunningServer, FakePeer, Client]) -> None:
    _, peer, alice = setup
    alias = f"#room:{peer.server_name}"
    path = f"{V3}/directory/room/{q(alias)}"
    peer.routes[DIRECTORY] = answer({"room_id": "!r:elsewhere", "servers": "abc"})
    resp = await alice.get(path)
    assert resp.code == 200, resp
    assert resp.json == {"room_id": "!r:elsewhere", "servers": [peer.server_name]}
    for bad in (answer({"room_id": 5}), answer({"servers": []}), answer(b"[]")):
        peer.routes[DIRECTORY] = bad
        assert_error(await alice.get(path), 502, "M_UNKNOWN")


@pytest_twisted.ensureDeferred
async def test_bad_room_list_answers(
    setup: tuple[RunningServer, FakePeer, Client], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, peer, alice = setup
    monkeypatch.setattr(federation.queries, "ROOM_LIST_CACHE_S", 0.0)
    good = {
        "room_id": "!good:x",
        "num_joined_members": 3,
        "world_readable": False,
        "guest_can_join": False,
        "name": "Good",
        "topic": 7,  # dropped, the entry kept
    }
    peer.routes[ROOMS] = answer(
        {
            "chunk": [
                good,
                "not an entry",
                {**good, "room_id": None},
                {**good, "num_joined_members": "3"},
                {**good, "world_readable": "no"},
            ],
            "next_batch": 5,
            "total_room_count_estimate": "many",
        }
    )
    params = {"server": peer.server_name}
    resp = await alice.get(f"{V3}/publicRooms", params=params)
    assert resp.code == 200, resp
    expected = {k: v for k, v in good.items() if k != "topic"}
    assert resp.json == {"chunk": [expected]}

    for bad in (answer({"chunk": "nope"}), answer({}), answer([]), answer({}, 500)):
        peer.routes[ROOMS] = bad
        assert_error(await alice.get(f"{V3}/publicRooms", params=params), 502, "M_UNKNOWN")
        resp = await alice.post(
            f"{V3}/publicRooms", {"filter": {"generic_search_term": "g"}}, params=params
        )
        assert_error(resp, 502, "M_UNKNOWN")
    huge = {"chunk": [good] * 100_000}
    peer.routes[ROOMS] = answer(huge)
    assert_error(await alice.get(f"{V3}/publicRooms", params=params), 502, "M_UNKNOWN")


@pytest_twisted.ensureDeferred
async def test_filtered_room_list_falls_back_for_servers_without_post(
    setup: tuple[RunningServer, FakePeer, Client],
) -> None:
    _, peer, alice = setup
    entries = [
        {
            "room_id": f"!{name}:x",
            "num_joined_members": n,
            "world_readable": False,
            "guest_can_join": False,
            "name": name,
        }
        for n, name in enumerate(["apple", "banana", "apricot"])
    ]

    def get_only(request: server.Request) -> bytes:
        if request.method == b"POST":
            request.setResponseCode(404)
            return json.dumps({"errcode": "M_UNRECOGNIZED", "error": "?"}).encode()
        return json.dumps({"chunk": entries}).encode()

    peer.routes[ROOMS] = get_only
    resp = await alice.post(
        f"{V3}/publicRooms",
        {"limit": 1, "filter": {"generic_search_term": "ap"}},
        params={"server": peer.server_name},
    )
    assert resp.code == 200, resp
    assert [r["name"] for r in resp.json["chunk"]] == ["apple"]
    assert resp.json["next_batch"]


@pytest_twisted.ensureDeferred
async def test_unfiltered_room_list_pages_are_reused_for_a_while(
    setup: tuple[RunningServer, FakePeer, Client], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, peer, alice = setup
    monkeypatch.setattr(federation.queries, "ROOM_LIST_CACHE_S", 1.0)
    entry = {"room_id": "!r:x", "num_joined_members": 1, "world_readable": False}
    peer.routes[ROOMS] = answer({"chunk": [{**entry, "guest_can_join": False}]})
    url, params = f"{V3}/publicRooms", {"server": peer.server_name}

    def asked() -> int:
        return sum(1 for path in peer.requests if path == ROOMS)

    for _ in range(3):
        resp = await alice.get(url, params=params)
        assert resp.code == 200 and len(resp.json["chunk"]) == 1, resp
    assert asked() == 1
    await alice.get(url, params={**params, "limit": "5"})  # another page: asked
    assert asked() == 2
    for _ in range(2):  # a filtered search is always asked
        await alice.post(url, {"filter": {"generic_search_term": "r"}}, params=params)
    assert asked() == 4
    await sleep(1.1)
    await alice.get(url, params=params)
    assert asked() == 5
