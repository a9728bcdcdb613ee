"""User and alias queries: the bridge is asked before an unknown entity of its namespaces
is used, and the lookup is tried again once it answered."""

from __future__ import annotations

from typing import Any

import pytest_twisted

from tests.appservice.fake_as import FakeAppService
from tests.appservice.helpers import HS_TOKEN, V3, as_request, assert_error, puppet
from tests.support.client import q
from tests.support.server import RunningServer


def on_user_query(server: RunningServer, fake_as: FakeAppService, *, create: bool) -> None:
    async def handler(path: str, args: Any, body: Any) -> tuple[int, Any]:
        user_id = path.removeprefix("/users/")
        if not create:
            return 404, {"errcode": "M_NOT_FOUND"}
        await puppet(server, user_id[1:].split(":")[0])
        return 200, {}

    fake_as.state.handlers["/users/"] = handler


def on_alias_query(server: RunningServer, fake_as: FakeAppService, *, create: bool) -> None:
    async def handler(path: str, args: Any, body: Any) -> tuple[int, Any]:
        alias = path.removeprefix("/rooms/")
        if not create:
            return 404, {"errcode": "M_NOT_FOUND"}
        localpart = alias[1:].split(":")[0]
        resp = await as_request(
            server,
            "POST",
            f"{V3}/createRoom",
            {"room_alias_name": localpart, "preset": "public_chat"},
        )
        assert resp.code == 200, resp
        return 200, {}

    fake_as.state.handlers["/rooms/"] = handler


@pytest_twisted.ensureDeferred
async def test_inviting_an_unknown_bridge_user_asks_the_bridge(
    server: RunningServer, fake_as: FakeAppService
) -> None:
    on_user_query(server, fake_as, create=True)
    alice = server.client()
    await alice.register("alice")
    room_id = (await alice.post(f"{V3}/createRoom", {})).json["room_id"]
    target = "@irc-dave:test.local"
    resp = await alice.post(f"{V3}/rooms/{q(room_id)}/invite", {"user_id": target})
    assert resp.code == 200, resp
    queries = fake_as.requests_to("/users/")
    assert [r.path for r in queries] == [f"/_matrix/app/v1/users/{target}"]
    assert queries[0].method == "GET"
    assert queries[0].authorization == f"Bearer {HS_TOKEN}"
    # Known now: no second query.
    resp = await alice.post(f"{V3}/rooms/{q(room_id)}/kick", {"user_id": target})
    resp = await alice.post(f"{V3}/rooms/{q(room_id)}/invite", {"user_id": target})
    assert resp.code == 200, resp
    assert len(fake_as.requests_to("/users/")) == 1


@pytest_twisted.ensureDeferred
async def test_an_unknown_user_the_bridge_denies_stays_unknown(
    server: RunningServer, fake_as: FakeAppService
) -> None:
    on_user_query(server, fake_as, create=False)
    alice = server.client()
    await alice.register("alice")
    room_id = (await alice.post(f"{V3}/createRoom", {})).json["room_id"]
    resp = await alice.post(f"{V3}/rooms/{q(room_id)}/invite", {"user_id": "@irc-x:test.local"})
    assert_error(resp, 404, "M_NOT_FOUND")
    assert len(fake_as.requests_to("/users/")) == 1
    # Users outside every namespace are never asked about.
    resp = await alice.post(f"{V3}/rooms/{q(room_id)}/invite", {"user_id": "@nobody:test.local"})
    assert_error(resp, 404, "M_NOT_FOUND")
    assert len(fake_as.requests_to("/users/")) == 1


@pytest_twisted.ensureDeferred
async def test_a_profile_lookup_of_an_unknown_bridge_user_asks_the_bridge(
    server: RunningServer, fake_as: FakeAppService
) -> None:
    on_user_query(server, fake_as, create=True)
    resp = await server.client().get(f"{V3}/profile/{q('@irc-erin:test.local')}")
    assert resp.code == 200, resp
    assert resp.json["displayname"] == "irc-erin"
    assert len(fake_as.requests_to("/users/")) == 1


@pytest_twisted.ensureDeferred
async def test_resolving_an_unknown_alias_asks_the_bridge(
    server: RunningServer, fake_as: FakeAppService
) -> None:
    on_alias_query(server, fake_as, create=True)
    alias = "#_bridge_chan:test.local"
    resp = await server.client().get(f"{V3}/directory/room/{q(alias)}")
    assert resp.code == 200, resp
    assert resp.json["room_id"].startswith("!")
    queries = fake_as.requests_to("/rooms/")
    assert [r.path for r in queries] == [f"/_matrix/app/v1/rooms/{alias}"]
    assert queries[0].authorization == f"Bearer {HS_TOKEN}"


@pytest_twisted.ensureDeferred
async def test_joining_an_unknown_alias_asks_the_bridge(
    server: RunningServer, fake_as: FakeAppService
) -> None:
    on_alias_query(server, fake_as, create=True)
    alice = server.client()
    await alice.register("alice")
    resp = await alice.post(f"{V3}/join/{q('#_bridge_other:test.local')}", {})
    assert resp.code == 200, resp
    joined = await alice.get(f"{V3}/joined_rooms")
    assert resp.json["room_id"] in joined.json["joined_rooms"]


@pytest_twisted.ensureDeferred
async def test_an_alias_the_bridge_denies_is_not_found(
    server: RunningServer, fake_as: FakeAppService
) -> None:
    on_alias_query(server, fake_as, create=False)
    resp = await server.client().get(f"{V3}/directory/room/{q('#_bridge_none:test.local')}")
    assert_error(resp, 404, "M_NOT_FOUND")
    resp = await server.client().get(f"{V3}/directory/room/{q('#outside:test.local')}")
    assert_error(resp, 404, "M_NOT_FOUND")
    assert len(fake_as.requests_to("/rooms/")) == 1


@pytest_twisted.ensureDeferred
async def test_a_bridge_that_is_down_means_not_found(
    server: RunningServer, fake_as: FakeAppService
) -> None:
    await fake_as.stop()
    resp = await server.client().get(f"{V3}/directory/room/{q('#_bridge_down:test.local')}")
    assert_error(resp, 404, "M_NOT_FOUND")
