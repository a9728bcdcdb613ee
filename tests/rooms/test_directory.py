"""Aliases, canonical alias validation, directory visibility and /publicRooms over HTTP."""

from __future__ import annotations

from typing import Any

import pytest
import pytest_twisted

from tests.rooms.helpers import (
    V3,
    assert_error,
    create_room,
    get_state,
    join,
    put_state,
    room_path,
    user,
)
from tests.support.client import Client, q
from tests.support.server import RunningServer


def alias_path(alias: str) -> str:
    return f"{V3}/directory/room/{q(alias)}"


async def aliases_of(client: Client, room_id: str) -> list[str]:
    resp = await client.get(room_path(room_id, "/aliases"))
    assert resp.code == 200, resp
    return list(resp.json["aliases"])


@pytest_twisted.ensureDeferred
async def test_put_get_delete_alias(server: RunningServer) -> None:
    alice = await user(server, "alice")
    room_id = await create_room(alice)
    resp = await alice.put(alias_path("#home:test.local"), {"room_id": room_id})
    assert resp.code == 200, resp
    assert resp.json == {}
    resp = await server.client().get(alias_path("#home:test.local"))  # no auth needed
    assert resp.code == 200, resp
    assert resp.json == {"room_id": room_id, "servers": ["test.local"]}
    assert await aliases_of(alice, room_id) == ["#home:test.local"]

    resp = await alice.delete(alias_path("#home:test.local"))
    assert resp.code == 200, resp
    resp = await alice.get(alias_path("#home:test.local"))
    assert_error(resp, 404, "M_NOT_FOUND")
    assert await aliases_of(alice, room_id) == []
    resp = await alice.delete(alias_path("#home:test.local"))
    assert_error(resp, 404, "M_NOT_FOUND")


@pytest_twisted.ensureDeferred
async def test_deleting_an_alias_drops_it_from_the_canonical_alias(server: RunningServer) -> None:
    # As Synapse (SyTest 30rooms/05aliases.pl "Can delete canonical alias").
    alice = await user(server, "alice")
    room_id = await create_room(alice)
    for alias in ("#main:test.local", "#alt:test.local", "#kept:test.local"):
        assert (await alice.put(alias_path(alias), {"room_id": room_id})).code == 200
    content = {
        "alias": "#main:test.local",
        "alt_aliases": ["#alt:test.local", "#kept:test.local"],
    }
    assert (await put_state(alice, room_id, "m.room.canonical_alias", content)).code == 200

    assert (await alice.delete(alias_path("#main:test.local"))).code == 200
    resp = await get_state(alice, room_id, "m.room.canonical_alias")
    assert resp.json == {"alt_aliases": ["#alt:test.local", "#kept:test.local"]}
    assert (await alice.delete(alias_path("#alt:test.local"))).code == 200
    resp = await get_state(alice, room_id, "m.room.canonical_alias")
    assert resp.json == {"alt_aliases": ["#kept:test.local"]}


@pytest_twisted.ensureDeferred
async def test_put_alias_errors(server: RunningServer) -> None:
    alice = await user(server, "alice")
    bob = await user(server, "bob")
    room_id = await create_room(alice)
    other = await create_room(alice)
    assert (await alice.put(alias_path("#dup:test.local"), {"room_id": room_id})).code == 200
    resp = await alice.put(alias_path("#dup:test.local"), {"room_id": other})
    assert_error(resp, 409, "M_UNKNOWN")
    resp = await alice.get(alias_path("#dup:test.local"))
    assert resp.json["room_id"] == room_id  # unchanged

    resp = await alice.put(alias_path("#x:elsewhere.org"), {"room_id": room_id})
    assert_error(resp, 400, "M_INVALID_PARAM")
    resp = await alice.put(alias_path("no-sigil:test.local"), {"room_id": room_id})
    assert_error(resp, 400, "M_INVALID_PARAM")
    resp = await alice.put(alias_path("#nocolon"), {"room_id": room_id})
    assert_error(resp, 400, "M_INVALID_PARAM")
    resp = await alice.put(alias_path("#ok:test.local"), {})
    assert_error(resp, 400, "M_MISSING_PARAM")
    resp = await alice.put(alias_path("#ok:test.local"), {"room_id": "!unknown:test.local"})
    assert_error(resp, 404, "M_NOT_FOUND")
    resp = await alice.put(alias_path("#ok:test.local"), {"room_id": "not-a-room"})
    assert_error(resp, 400, "M_INVALID_PARAM")
    # Someone not in the room may not point an alias at it.
    resp = await bob.put(alias_path("#squat:test.local"), {"room_id": room_id})
    assert_error(resp, 403, "M_FORBIDDEN")
    resp = await alice.get(alias_path("#squat:test.local"))
    assert_error(resp, 404, "M_NOT_FOUND")
    resp = await server.client().put(alias_path("#anon:test.local"), {"room_id": room_id})
    assert_error(resp, 401, "M_MISSING_TOKEN")


@pytest_twisted.ensureDeferred
async def test_get_alias_errors(server: RunningServer) -> None:
    alice = await user(server, "alice")
    resp = await alice.get(alias_path("#missing:test.local"))
    assert_error(resp, 404, "M_NOT_FOUND")
    resp = await alice.get(alias_path("missing"))
    assert_error(resp, 400, "M_INVALID_PARAM")


@pytest_twisted.ensureDeferred
async def test_delete_alias_permissions(server: RunningServer) -> None:
    alice = await user(server, "alice")
    bob = await user(server, "bob")
    carol = await user(server, "carol")
    room_id = await create_room(
        alice,
        preset="public_chat",
        room_version="11",
        power_level_content_override={"users": {alice.user_id: 100, carol.user_id: 50}},
    )
    await join(bob, room_id)
    await join(carol, room_id)
    assert (await bob.put(alias_path("#bobs:test.local"), {"room_id": room_id})).code == 200
    assert (await alice.put(alias_path("#alices:test.local"), {"room_id": room_id})).code == 200

    # Bob (level 0, canonical_alias needs 50) may not delete alice's alias...
    resp = await bob.delete(alias_path("#alices:test.local"))
    assert_error(resp, 403, "M_FORBIDDEN")
    assert (await bob.get(alias_path("#alices:test.local"))).code == 200
    # ...but may delete his own.
    assert (await bob.delete(alias_path("#bobs:test.local"))).code == 200
    # Carol has the power to change the canonical alias: she may delete it.
    assert (await carol.delete(alias_path("#alices:test.local"))).code == 200
    assert await aliases_of(alice, room_id) == []


@pytest_twisted.ensureDeferred
async def test_room_aliases_list_needs_membership(server: RunningServer) -> None:
    alice = await user(server, "alice")
    bob = await user(server, "bob")
    room_id = await create_room(alice, room_alias_name="b")
    await alice.put(alias_path("#a:test.local"), {"room_id": room_id})
    assert await aliases_of(alice, room_id) == ["#a:test.local", "#b:test.local"]
    resp = await bob.get(room_path(room_id, "/aliases"))
    assert_error(resp, 403, "M_FORBIDDEN")
    resp = await alice.get(room_path("!unknown:test.local", "/aliases"))
    assert resp.code in (403, 404), resp


@pytest_twisted.ensureDeferred
async def test_canonical_alias_must_point_to_the_room(server: RunningServer) -> None:
    alice = await user(server, "alice")
    room_id = await create_room(alice)
    other = await create_room(alice, room_alias_name="elsewhere")
    assert other
    await alice.put(alias_path("#mine:test.local"), {"room_id": room_id})

    resp = await put_state(alice, room_id, "m.room.canonical_alias", {"alias": "#mine:test.local"})
    assert resp.code == 200, resp
    resp = await put_state(
        alice, room_id, "m.room.canonical_alias", {"alias": "#elsewhere:test.local"}
    )
    assert_error(resp, 400, "M_BAD_ALIAS")
    resp = await put_state(
        alice, room_id, "m.room.canonical_alias", {"alias": "#unmapped:test.local"}
    )
    assert_error(resp, 400, "M_BAD_ALIAS")
    resp = await put_state(
        alice,
        room_id,
        "m.room.canonical_alias",
        {"alias": "#mine:test.local", "alt_aliases": ["#elsewhere:test.local"]},
    )
    assert_error(resp, 400, "M_BAD_ALIAS")
    resp = await put_state(alice, room_id, "m.room.canonical_alias", {"alias": "not an alias"})
    assert_error(resp, 400, "M_INVALID_PARAM")
    resp = await put_state(alice, room_id, "m.room.canonical_alias", {"alt_aliases": "x"})
    assert_error(resp, 400, "M_BAD_JSON")
    # The state still holds the last valid content.
    resp = await get_state(alice, room_id, "m.room.canonical_alias")
    assert resp.json == {"alias": "#mine:test.local"}
    # Removing the canonical alias (empty content) is always allowed.
    resp = await put_state(alice, room_id, "m.room.canonical_alias", {})
    assert resp.code == 200, resp


@pytest_twisted.ensureDeferred
async def test_directory_visibility_get_and_put(server: RunningServer) -> None:
    alice = await user(server, "alice")
    bob = await user(server, "bob")
    outsider = await user(server, "outsider")
    room_id = await create_room(alice, preset="public_chat")
    await join(bob, room_id)
    vis = f"{V3}/directory/list/room/{q(room_id)}"

    resp = await server.client().get(vis)  # no auth needed
    assert resp.code == 200 and resp.json == {"visibility": "private"}, resp
    resp = await bob.put(vis, {"visibility": "public"})
    assert_error(resp, 403, "M_FORBIDDEN")
    resp = await outsider.put(vis, {"visibility": "public"})
    assert_error(resp, 403, "M_FORBIDDEN")
    resp = await alice.put(vis, {"visibility": "sideways"})
    assert_error(resp, 400, "M_INVALID_PARAM")
    resp = await alice.put(vis, {"visibility": "public"})
    assert resp.code == 200, resp
    assert (await alice.get(vis)).json == {"visibility": "public"}
    public = await alice.get(f"{V3}/publicRooms")
    assert room_id in [r["room_id"] for r in public.json["chunk"]]
    resp = await alice.put(vis, {"visibility": "private"})
    assert resp.code == 200, resp
    public = await alice.get(f"{V3}/publicRooms")
    assert room_id not in [r["room_id"] for r in public.json["chunk"]]

    resp = await alice.get(f"{V3}/directory/list/room/{q('!unknown:test.local')}")
    assert_error(resp, 404, "M_NOT_FOUND")
    resp = await alice.put(
        f"{V3}/directory/list/room/{q('!unknown:test.local')}", {"visibility": "public"}
    )
    assert_error(resp, 404, "M_NOT_FOUND")


async def _public_rooms(server: RunningServer) -> tuple[Client, list[str]]:
    alice = await user(server, "alice")
    names = ["Apple pie", "Banana split", "Cherry tart", "Date loaf", "Elder cordial"]
    ids = []
    for i, name in enumerate(names):
        ids.append(
            await create_room(
                alice,
                visibility="public",
                name=name,
                topic=f"topic {i}",
                room_alias_name=name.split()[0].lower(),
            )
        )
    await create_room(alice, visibility="private", name="Apple secret")
    return alice, ids


@pytest_twisted.ensureDeferred
async def test_public_rooms_entries_and_get_pagination(server: RunningServer) -> None:
    alice, ids = await _public_rooms(server)
    bob = await user(server, "bob")
    await join(bob, ids[2])  # Cherry has two members: listed first

    resp = await server.client().get(f"{V3}/publicRooms")
    assert_error(resp, 401, "M_MISSING_TOKEN")  # allow_public_rooms_without_auth is off
    resp = await alice.get(f"{V3}/publicRooms")
    assert resp.code == 200, resp
    chunk = resp.json["chunk"]
    assert [r["room_id"] for r in chunk][0] == ids[2]
    assert sorted(r["room_id"] for r in chunk) == sorted(ids)
    assert resp.json["total_room_count_estimate"] == 5
    cherry = chunk[0]
    assert cherry["name"] == "Cherry tart"
    assert cherry["topic"] == "topic 2"
    assert cherry["canonical_alias"] == "#cherry:test.local"
    assert cherry["num_joined_members"] == 2
    assert cherry["world_readable"] is False
    assert cherry["guest_can_join"] is False
    assert cherry["join_rule"] == "public"

    seen: list[str] = []
    since = None
    for _ in range(5):
        params: dict[str, Any] = {"limit": "2"}
        if since:
            params["since"] = since
        resp = await alice.get(f"{V3}/publicRooms", params=params)
        assert resp.code == 200, resp
        assert len(resp.json["chunk"]) <= 2
        seen += [r["room_id"] for r in resp.json["chunk"]]
        since = resp.json.get("next_batch")
        if since is None:
            break
    assert sorted(seen) == sorted(ids) and len(seen) == 5
    assert "prev_batch" in resp.json

    resp = await alice.get(f"{V3}/publicRooms", params={"since": "bogus"})
    assert_error(resp, 400, "M_INVALID_PARAM")
    resp = await alice.get(f"{V3}/publicRooms", params={"limit": "-1"})
    assert_error(resp, 400, "M_INVALID_PARAM")
    resp = await alice.get(f"{V3}/publicRooms", params={"server": "test.local"})
    assert resp.code == 200, resp


@pytest_twisted.ensureDeferred
async def test_post_public_rooms_search_and_pagination(server: RunningServer) -> None:
    alice, ids = await _public_rooms(server)
    url = f"{V3}/publicRooms"
    resp = await alice.post(url, {"filter": {"generic_search_term": "apple"}})
    assert resp.code == 200, resp
    assert [r["room_id"] for r in resp.json["chunk"]] == [ids[0]]  # the private one is not
    resp = await alice.post(url, {"filter": {"generic_search_term": "TOPIC 3"}})
    assert [r["room_id"] for r in resp.json["chunk"]] == [ids[3]]
    resp = await alice.post(url, {"filter": {"generic_search_term": "#elder"}})
    assert [r["room_id"] for r in resp.json["chunk"]] == [ids[4]]
    resp = await alice.post(url, {"filter": {"generic_search_term": "zzz"}})
    assert resp.json["chunk"] == []

    resp = await alice.post(url, {"limit": 3, "filter": {"generic_search_term": "topic"}})
    first = resp.json
    assert len(first["chunk"]) == 3
    resp = await alice.post(
        url, {"limit": 3, "since": first["next_batch"], "filter": {"generic_search_term": "topic"}}
    )
    second = resp.json
    assert len(second["chunk"]) == 2
    assert "next_batch" not in second
    got = [r["room_id"] for r in first["chunk"] + second["chunk"]]
    assert sorted(got) == sorted(ids)

    resp = await alice.post(url, {"limit": "3"})
    assert_error(resp, 400, "M_BAD_JSON")
    resp = await alice.post(url, {"filter": "apple"})
    assert_error(resp, 400, "M_BAD_JSON")
    resp = await alice.post(url, {"limit": -2})
    assert_error(resp, 400, "M_INVALID_PARAM")
    resp = await server.client().post(url, {})
    assert_error(resp, 401, "M_MISSING_TOKEN")


@pytest.mark.parametrize("config_overrides", [{"allow_public_rooms_without_auth": True}])
@pytest_twisted.ensureDeferred
async def test_public_rooms_without_auth_only_for_our_own_list(server: RunningServer) -> None:
    _, ids = await _public_rooms(server)
    anonymous = server.client()
    resp = await anonymous.get(f"{V3}/publicRooms")
    assert resp.code == 200, resp
    assert sorted(r["room_id"] for r in resp.json["chunk"]) == sorted(ids)
    # Having another server's list fetched always takes a token (as Synapse).
    resp = await anonymous.get(f"{V3}/publicRooms", params={"server": "elsewhere.org"})
    assert_error(resp, 401, "M_MISSING_TOKEN")


@pytest_twisted.ensureDeferred
async def test_post_public_rooms_room_types_filter(server: RunningServer) -> None:
    alice, ids = await _public_rooms(server)
    resp = await alice.post(
        f"{V3}/createRoom",
        {"visibility": "public", "name": "Space", "creation_content": {"type": "m.space"}},
    )
    assert resp.code == 200, resp
    space = resp.json["room_id"]
    url = f"{V3}/publicRooms"
    resp = await alice.post(url, {"filter": {"room_types": ["m.space"]}})
    assert resp.code == 200, resp
    assert [r["room_id"] for r in resp.json["chunk"]] == [space]
    assert resp.json["chunk"][0]["room_type"] == "m.space"
    resp = await alice.post(url, {"filter": {"room_types": [None]}})
    assert sorted(r["room_id"] for r in resp.json["chunk"]) == sorted(ids)
    resp = await alice.post(url, {"filter": {"room_types": [None, "m.space"]}})
    assert len(resp.json["chunk"]) == len(ids) + 1
    resp = await alice.post(url, {"filter": {"room_types": "m.space"}})
    assert_error(resp, 400, "M_BAD_JSON")
    resp = await alice.post(url, {"filter": {"room_types": [1]}})
    assert_error(resp, 400, "M_BAD_JSON")
