"""Synapse's server notices admin API over real HTTP: the notices room is created once
by the system user, tagged, reused, and read-only for the user."""

from __future__ import annotations

from typing import Any

import pytest_twisted

from tests.api.helpers import assert_error, register, register_admin, with_config
from tests.rooms.helpers import V3, join, leave, messages, room_path, send_raw, sync
from tests.support.client import Client, q
from tests.support.server import RunningServer

PATH = "/_synapse/admin/v1/send_server_notice"
NOTICES = {
    "system_mxid_localpart": "notices",
    "system_mxid_display_name": "Server Notices Bot",
    "room_topic": "Messages from the admins",
}
SYSTEM = "@notices:test.local"


def notice(user: Client, text: str = "hello", **extra: Any) -> dict[str, Any]:
    return {"user_id": user.user_id, "content": {"msgtype": "m.text", "body": text}, **extra}


async def send_notice(admin: Client, body: dict[str, Any]) -> str:
    resp = await admin.post(PATH, body)
    assert resp.code == 200, resp
    return str(resp.json["event_id"])


async def invited_rooms(user: Client) -> list[str]:
    return sorted((await sync(user))["rooms"].get("invite", {}))


async def state(user: Client, room_id: str, event_type: str, key: str = "") -> dict[str, Any]:
    resp = await user.get(room_path(room_id, f"/state/{q(event_type)}/{q(key)}"))
    assert resp.code == 200, resp
    return dict(resp.json)


@pytest_twisted.ensureDeferred
async def test_refused_when_not_configured_and_to_non_admins(server: RunningServer) -> None:
    admin = await register_admin(server)
    alice = await register(server, "alice")
    assert_error(await alice.post(PATH, notice(alice)), 403, "M_FORBIDDEN")
    assert_error(await alice.put(f"{PATH}/t1", notice(alice)), 403, "M_FORBIDDEN")
    resp = await admin.post(PATH, notice(alice))
    assert_error(resp, 400, "M_UNKNOWN")
    assert resp.json["error"] == "Server notices are not enabled on this server"
    assert await server.hs.storage.users.get_user(SYSTEM) is None


@with_config(server_notices=NOTICES)
@pytest_twisted.ensureDeferred
async def test_notice_room_created_once_tagged_and_read_only(server: RunningServer) -> None:
    admin = await register_admin(server)
    alice = await register(server, "alice")
    first = await send_notice(admin, notice(alice, "first"))

    # The system user exists now, with the configured name.
    profile = await admin.get(f"{V3}/profile/{q(SYSTEM)}")
    assert profile.json["displayname"] == "Server Notices Bot", profile
    rooms = await invited_rooms(alice)
    assert len(rooms) == 1
    room_id = rooms[0]
    tags = await alice.get(f"{V3}/user/{q(alice.user_id or '')}/rooms/{q(room_id)}/tags")
    assert tags.json == {"tags": {"m.server_notice": {}}}, tags

    second = await send_notice(admin, notice(alice, "second"))
    assert second != first
    assert await invited_rooms(alice) == [room_id]  # reused, not a second room

    assert (await join(alice, room_id)).code == 200
    third = await send_notice(admin, notice(alice, "third"))
    assert (await sync(alice))["rooms"].get("invite", {}) == {}
    assert await invited_rooms(alice) == []
    resp = await messages(alice, room_id, dir="b", limit=50)
    bodies = [
        e["content"]["body"]
        for e in resp.json["chunk"]
        if e["type"] == "m.room.message" and e["sender"] == SYSTEM
    ]
    assert bodies == ["third", "second", "first"]
    assert third in [e["event_id"] for e in resp.json["chunk"]]

    assert (await state(alice, room_id, "m.room.name"))["name"] == "Server Notices"
    assert (await state(alice, room_id, "m.room.topic"))["topic"] == "Messages from the admins"
    levels = await state(alice, room_id, "m.room.power_levels")
    assert levels["users_default"] == -10
    assert_error(await send_raw(alice, room_id, "may I?"), 403, "M_FORBIDDEN")
    member = await state(alice, room_id, "m.room.member", SYSTEM)
    assert member["displayname"] == "Server Notices Bot"


@with_config(server_notices=NOTICES)
@pytest_twisted.ensureDeferred
async def test_put_is_idempotent_and_state_events_can_be_sent(server: RunningServer) -> None:
    admin = await register_admin(server)
    alice = await register(server, "alice")
    resp1 = await admin.put(f"{PATH}/txn1", notice(alice))
    resp2 = await admin.put(f"{PATH}/txn1", notice(alice))
    assert resp1.code == 200 and resp2.code == 200, (resp1, resp2)
    assert resp1.json["event_id"] == resp2.json["event_id"]
    resp3 = await admin.put(f"{PATH}/txn2", notice(alice))
    assert resp3.json["event_id"] != resp1.json["event_id"]

    body = {
        "user_id": alice.user_id,
        "type": "m.room.custom_state",
        "state_key": "k",
        "content": {"a": 1},
    }
    await send_notice(admin, body)
    (room_id,) = await invited_rooms(alice)
    await join(alice, room_id)
    assert await state(alice, room_id, "m.room.custom_state", "k") == {"a": 1}


@with_config(server_notices=NOTICES)
@pytest_twisted.ensureDeferred
async def test_bad_requests(server: RunningServer) -> None:
    admin = await register_admin(server)
    alice = await register(server, "alice")
    assert_error(await admin.post(PATH, {"user_id": alice.user_id}), 400, "M_MISSING_PARAM")
    assert_error(await admin.post(PATH, {"content": {}}), 400, "M_MISSING_PARAM")
    resp = await admin.post(PATH, {"user_id": alice.user_id, "content": "text"})
    assert_error(resp, 400, "M_BAD_JSON")
    resp = await admin.post(PATH, {"user_id": "@bob:elsewhere.example", "content": {}})
    assert_error(resp, 400, "M_UNKNOWN")
    resp = await admin.post(PATH, {"user_id": "@ghost:test.local", "content": {}})
    assert_error(resp, 404, "M_NOT_FOUND")
    resp = await admin.post(PATH, {"user_id": "not an id", "content": {}})
    assert_error(resp, 400, "M_INVALID_PARAM")


@with_config(server_notices={**NOTICES, "auto_join": True, "room_name": "Admin says"})
@pytest_twisted.ensureDeferred
async def test_auto_join_and_a_new_room_after_leaving(server: RunningServer) -> None:
    admin = await register_admin(server)
    alice = await register(server, "alice")
    await send_notice(admin, notice(alice, "one"))
    joined = (await alice.get(f"{V3}/joined_rooms")).json["joined_rooms"]
    assert len(joined) == 1 and await invited_rooms(alice) == []
    room_id = joined[0]
    assert (await state(alice, room_id, "m.room.name"))["name"] == "Admin says"

    await send_notice(admin, notice(alice, "two"))
    assert (await alice.get(f"{V3}/joined_rooms")).json["joined_rooms"] == [room_id]

    # As Synapse: once the user left, the next notice opens a new room.
    assert (await leave(alice, room_id)).code == 200
    await send_notice(admin, notice(alice, "three"))
    joined = (await alice.get(f"{V3}/joined_rooms")).json["joined_rooms"]
    assert len(joined) == 1 and joined[0] != room_id


@with_config(server_notices=NOTICES)
@pytest_twisted.ensureDeferred
async def test_existing_room_follows_a_changed_configuration(server: RunningServer) -> None:
    admin = await register_admin(server)
    alice = await register(server, "alice")
    await send_notice(admin, notice(alice, "before"))
    (room_id,) = await invited_rooms(alice)
    assert (await join(alice, room_id)).code == 200

    assert server.config_dict is not None
    server.config_dict["server_notices"] = {
        "system_mxid_localpart": "notices",
        "system_mxid_display_name": "The Admins",
        "room_name": "News",
    }
    await server.restart()
    admin.base_url = alice.base_url = server.base_url
    await send_notice(admin, notice(alice, "after"))
    assert (await alice.get(f"{V3}/joined_rooms")).json["joined_rooms"] == [room_id]
    assert (await state(alice, room_id, "m.room.name"))["name"] == "News"
    assert (await state(alice, room_id, "m.room.topic"))["topic"] == ""
    member = await state(alice, room_id, "m.room.member", SYSTEM)
    assert member["displayname"] == "The Admins" and member["membership"] == "join"
