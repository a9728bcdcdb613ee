"""``/_synapse/admin/v1/rooms...`` and ``/_synapse/admin/v1/join``: the room admin API."""

from __future__ import annotations

from typing import Any

import pytest_twisted

from tests.api.helpers import register_admin
from tests.rooms.helpers import (
    V3,
    assert_error,
    create_room,
    join,
    put_state,
    room_path,
    send,
    user,
)
from tests.support.client import Client, q
from tests.support.server import RunningServer

ADMIN = "/_synapse/admin/v1"


def admin_room(room_id: str, rest: str = "") -> str:
    return f"{ADMIN}/rooms/{q(room_id)}{rest}"


async def list_rooms(admin: Client, **params: Any) -> dict[str, Any]:
    resp = await admin.get(f"{ADMIN}/rooms", params={k: str(v) for k, v in params.items()})
    assert resp.code == 200, resp
    return dict(resp.json)


@pytest_twisted.ensureDeferred
async def test_room_admin_endpoints_are_for_admins_only(server: RunningServer) -> None:
    alice = await user(server, "alice")
    room_id = await create_room(alice)
    event_id = await send(alice, room_id, "hi")
    for method, path in (
        ("GET", f"{ADMIN}/rooms"),
        ("GET", admin_room(room_id)),
        ("GET", admin_room(room_id, "/members")),
        ("GET", admin_room(room_id, "/state")),
        ("GET", admin_room(room_id, "/messages")),
        ("GET", admin_room(room_id, f"/context/{q(event_id)}")),
        ("GET", admin_room(room_id, "/timestamp_to_event?ts=0")),
        ("GET", admin_room(room_id, "/forward_extremities")),
        ("DELETE", admin_room(room_id, "/forward_extremities")),
        ("POST", admin_room(room_id, "/make_room_admin")),
        ("GET", admin_room(room_id, "/block")),
        ("PUT", admin_room(room_id, "/block")),
        ("POST", f"{ADMIN}/join/{q(room_id)}"),
    ):
        body = {} if method in ("POST", "PUT") else None
        resp = await alice.request(method, path, body=body)
        assert_error(resp, 403, "M_FORBIDDEN")


@pytest_twisted.ensureDeferred
async def test_list_rooms_orders_pages_and_searches(server: RunningServer) -> None:
    admin = await register_admin(server)
    alice = await user(server, "alice")
    bob = await user(server, "bob")
    apple = await create_room(alice, name="Apple", room_alias_name="fruit")
    banana = await create_room(alice, name="banana", preset="public_chat")
    assert (await join(bob, banana)).code == 200
    cherry = await create_room(bob, name="Cherry", visibility="public")

    body = await list_rooms(admin)
    assert body["total_rooms"] == 3 and body["offset"] == 0
    assert "next_batch" not in body and "prev_batch" not in body
    assert [r["room_id"] for r in body["rooms"]] == [apple, cherry, banana]  # byte order
    entry = next(r for r in body["rooms"] if r["room_id"] == banana)
    assert entry["name"] == "banana"
    assert entry["joined_members"] == 2 and entry["joined_local_members"] == 2
    assert entry["creator"] == alice.user_id
    assert entry["join_rules"] == "public"
    assert entry["history_visibility"] == "shared"
    assert entry["federatable"] is True and entry["public"] is False
    assert entry["encryption"] is None and entry["room_type"] is None
    assert entry["state_events"] >= 6
    apple_entry = next(r for r in body["rooms"] if r["room_id"] == apple)
    assert apple_entry["canonical_alias"] == f"#fruit:{server.hs.server_name}"
    assert next(r for r in body["rooms"] if r["room_id"] == cherry)["public"] is True

    by_members = await list_rooms(admin, order_by="joined_members")
    assert by_members["rooms"][0]["room_id"] == banana
    backwards = await list_rooms(admin, order_by="name", dir="b")
    assert [r["room_id"] for r in backwards["rooms"]] == [banana, cherry, apple]

    page = await list_rooms(admin, limit=1, **{"from": 1})
    assert [r["room_id"] for r in page["rooms"]] == [cherry]
    assert page["next_batch"] == 2 and page["prev_batch"] == 0 and page["total_rooms"] == 3

    assert [r["room_id"] for r in (await list_rooms(admin, search_term="NAN"))["rooms"]] == [banana]
    assert [r["room_id"] for r in (await list_rooms(admin, search_term="frui"))["rooms"]] == [apple]
    assert [r["room_id"] for r in (await list_rooms(admin, search_term=cherry))["rooms"]] == [
        cherry
    ]
    only_public = await list_rooms(admin, public_rooms="true")
    assert [r["room_id"] for r in only_public["rooms"]] == [cherry]

    resp = await admin.get(f"{ADMIN}/rooms", params={"search_term": ""})
    assert_error(resp, 400, "M_INVALID_PARAM")
    resp = await admin.get(f"{ADMIN}/rooms", params={"order_by": "bogus"})
    assert_error(resp, 400, "M_INVALID_PARAM")
    resp = await admin.get(f"{ADMIN}/rooms", params={"from": "-1"})
    assert_error(resp, 400, "M_INVALID_PARAM")


@pytest_twisted.ensureDeferred
async def test_room_details_members_and_state(server: RunningServer) -> None:
    admin = await register_admin(server)
    alice = await user(server, "alice")
    room_id = await create_room(alice, name="Den", topic="talk")

    resp = await admin.get(admin_room(room_id))
    assert resp.code == 200, resp
    assert resp.json["room_id"] == room_id
    assert resp.json["name"] == "Den" and resp.json["topic"] == "talk"
    assert resp.json["joined_members"] == 1
    assert resp.json["joined_local_devices"] == 1
    assert resp.json["forgotten"] is False
    assert resp.json["tombstoned"] is False and resp.json["replacement_room"] is None
    assert resp.json["room_type"] is None

    members = await admin.get(admin_room(room_id, "/members"))
    assert members.json == {"members": [alice.user_id], "total": 1}
    state = await admin.get(admin_room(room_id, "/state"))
    assert {ev["type"] for ev in state.json["state"]} >= {"m.room.create", "m.room.name"}
    only = await admin.get(admin_room(room_id, "/state"), params={"type": "m.room.topic"})
    assert [ev["content"]["topic"] for ev in only.json["state"]] == ["talk"]

    assert (await alice.post(room_path(room_id, "/leave"), {})).code == 200
    assert (await alice.post(room_path(room_id, "/forget"), {})).code == 200
    resp = await admin.get(admin_room(room_id))
    assert resp.json["forgotten"] is True and resp.json["joined_members"] == 0

    missing = "!missing:" + server.hs.server_name
    for path in (admin_room(missing), admin_room(missing, "/members")):
        assert_error(await admin.get(path), 404, "M_NOT_FOUND")


@pytest_twisted.ensureDeferred
async def test_admin_reads_history_without_membership(server: RunningServer) -> None:
    admin = await register_admin(server)
    alice = await user(server, "alice")
    room_id = await create_room(alice)
    first = await send(alice, room_id, "one")
    await send(alice, room_id, "two")
    # Not a member: the client API refuses, the admin API answers.
    assert_error(await admin.get(room_path(room_id, "/messages")), 403, "M_FORBIDDEN")
    resp = await admin.get(admin_room(room_id, "/messages"), params={"limit": "2"})
    assert resp.code == 200, resp
    assert [ev["content"].get("body") for ev in resp.json["chunk"]] == ["two", "one"]
    older = await admin.get(
        admin_room(room_id, "/messages"), params={"from": resp.json["end"], "limit": "50"}
    )
    assert older.json["chunk"][-1]["type"] == "m.room.create"

    ctx = await admin.get(admin_room(room_id, f"/context/{q(first)}"), params={"limit": "2"})
    assert ctx.code == 200, ctx
    assert ctx.json["event"]["event_id"] == first
    assert [ev["content"].get("body") for ev in ctx.json["events_after"]] == ["two"]
    missing_ctx = await admin.get(admin_room(room_id, f"/context/{q('$nope')}"))
    assert_error(missing_ctx, 404, "M_NOT_FOUND")

    found = await admin.get(admin_room(room_id, "/timestamp_to_event"), params={"ts": "0"})
    assert found.code == 200, found
    assert found.json["event_id"].startswith("$")
    resp = await admin.get(admin_room(room_id, "/timestamp_to_event"))
    assert_error(resp, 400, "M_MISSING_PARAM")


@pytest_twisted.ensureDeferred
async def test_forward_extremities(server: RunningServer) -> None:
    admin = await register_admin(server)
    alice = await user(server, "alice")
    room_id = await create_room(alice, room_alias_name="ext")
    last = await send(alice, room_id, "hi")
    resp = await admin.get(admin_room(room_id, "/forward_extremities"))
    assert resp.code == 200, resp
    assert resp.json["count"] == 1
    (only,) = resp.json["results"]
    assert only["event_id"] == last and isinstance(only["depth"], int)
    by_alias = await admin.get(admin_room(f"#ext:{server.hs.server_name}", "/forward_extremities"))
    assert by_alias.json == resp.json
    deleted = await admin.delete(admin_room(room_id, "/forward_extremities"))
    assert deleted.code == 200 and deleted.json == {"deleted": 0}, deleted

    # A second, older extremity (as a gap in federated history leaves): only the newest
    # is kept, and the room goes on.
    older = await send(alice, room_id, "older")
    newest = await send(alice, room_id, "newest")
    await server.hs.storage.db.run_interaction(
        "add_extremity",
        lambda txn: txn.execute(
            "INSERT INTO event_forward_extremities (room_id, event_id) VALUES (?, ?)",
            (room_id, older),
        ),
    )
    resp = await admin.get(admin_room(room_id, "/forward_extremities"))
    assert [r["event_id"] for r in resp.json["results"]] == [older, newest]
    deleted = await admin.delete(admin_room(room_id, "/forward_extremities"))
    assert deleted.json == {"deleted": 1}, deleted
    resp = await admin.get(admin_room(room_id, "/forward_extremities"))
    assert [r["event_id"] for r in resp.json["results"]] == [newest]
    after = await send(alice, room_id, "after")
    resp = await admin.get(admin_room(room_id, "/forward_extremities"))
    assert [r["event_id"] for r in resp.json["results"]] == [after]


@pytest_twisted.ensureDeferred
async def test_block_and_unblock_a_room(server: RunningServer) -> None:
    admin = await register_admin(server)
    alice = await user(server, "alice")
    bob = await user(server, "bob")
    room_id = await create_room(alice, preset="public_chat")
    block = admin_room(room_id, "/block")
    assert (await admin.get(block)).json == {"block": False}
    resp = await admin.put(block, {"block": True})
    assert resp.code == 200 and resp.json == {"block": True}, resp
    assert (await admin.get(block)).json == {"block": True, "user_id": admin.user_id}
    assert_error(await join(bob, room_id), 403, "M_FORBIDDEN")
    assert (await admin.put(block, {"block": False})).json == {"block": False}
    assert (await join(bob, room_id)).code == 200

    assert_error(await admin.put(block, {}), 400, "M_MISSING_PARAM")
    assert_error(await admin.put(block, {"block": "yes"}), 400, "M_BAD_JSON")
    assert_error(await admin.get(admin_room("not-a-room", "/block")), 400, "M_INVALID_PARAM")


@pytest_twisted.ensureDeferred
async def test_make_room_admin_grants_power_and_invites(server: RunningServer) -> None:
    admin = await register_admin(server)
    alice = await user(server, "alice")
    bob = await user(server, "bob")
    room_id = await create_room(alice, preset="private_chat", room_version="10")
    resp = await admin.post(admin_room(room_id, "/make_room_admin"), {"user_id": bob.user_id})
    assert resp.code == 200 and resp.json == {}, resp
    power = await alice.get(room_path(room_id, "/state/m.room.power_levels/"))
    assert power.json["users"][bob.user_id] == 100
    # Bob was invited (a private room), and can now join.
    assert (await join(bob, room_id)).code == 200
    # Without a body: the admin themselves.
    resp = await admin.request("POST", admin_room(room_id, "/make_room_admin"))
    assert resp.code == 200, resp
    power = await alice.get(room_path(room_id, "/state/m.room.power_levels/"))
    assert power.json["users"][admin.user_id] == 100

    # No local member with power left: refused.
    lonely = await create_room(alice, room_version="10")
    await put_state(alice, lonely, "m.room.power_levels", {"users": {alice.user_id: 100}})
    assert (await alice.post(room_path(lonely, "/leave"), {})).code == 200
    resp = await admin.post(admin_room(lonely, "/make_room_admin"), {})
    assert_error(resp, 400, "M_UNKNOWN")


@pytest_twisted.ensureDeferred
async def test_join_a_local_user_to_a_room(server: RunningServer) -> None:
    admin = await register_admin(server)
    alice = await user(server, "alice")
    bob = await user(server, "bob")
    private = await create_room(alice, preset="private_chat", room_alias_name="club")
    # The admin must be able to invite: give them power first (as Synapse's docs say).
    assert (await admin.post(admin_room(private, "/make_room_admin"), {})).code == 200
    assert (await join(admin, private)).code == 200
    resp = await admin.post(
        f"{ADMIN}/join/{q(f'#club:{server.hs.server_name}')}", {"user_id": bob.user_id}
    )
    assert resp.code == 200 and resp.json == {"room_id": private}, resp
    members = await admin.get(admin_room(private, "/members"))
    assert bob.user_id in members.json["members"]

    public = await create_room(alice, preset="public_chat")
    carol = await user(server, "carol")
    resp = await admin.post(f"{ADMIN}/join/{q(public)}", {"user_id": carol.user_id})
    assert resp.code == 200, resp
    joined = await carol.get(f"{V3}/joined_rooms")
    assert public in joined.json["joined_rooms"]

    resp = await admin.post(f"{ADMIN}/join/{q(public)}", {"user_id": "@nobody:elsewhere"})
    assert_error(resp, 400, "M_UNKNOWN")
    resp = await admin.post(
        f"{ADMIN}/join/{q(public)}", {"user_id": f"@ghost:{server.hs.server_name}"}
    )
    assert_error(resp, 404, "M_NOT_FOUND")
    assert_error(await admin.post(f"{ADMIN}/join/{q(public)}", {}), 400, "M_MISSING_PARAM")
