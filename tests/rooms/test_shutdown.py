"""``DELETE /_synapse/admin/v1/rooms/{roomId}``: shutting a room down."""

from __future__ import annotations

import pytest_twisted

from tests.api.helpers import register_admin
from tests.rooms.helpers import (
    V3,
    assert_error,
    create_room,
    invite,
    join,
    room_path,
    send_raw,
    sync,
    user,
)
from tests.support.client import q
from tests.support.server import RunningServer


def shutdown_path(room_id: str) -> str:
    return f"/_synapse/admin/v1/rooms/{q(room_id)}"


@pytest_twisted.ensureDeferred
async def test_shutdown_moves_local_members_to_a_notice_room_and_blocks(
    server: RunningServer,
) -> None:
    admin = await register_admin(server)
    alice = await user(server, "alice")
    bob = await user(server, "bob")
    notice = await user(server, "notice")
    room_id = await create_room(alice, room_alias_name="doomed")
    assert (await invite(alice, room_id, bob.user_id or "")).code == 200
    assert (await join(bob, room_id)).code == 200
    alias = f"#doomed:{server.hs.server_name}"

    body = {"new_room_user_id": notice.user_id, "block": True, "purge": False}
    assert_error(await alice.delete(shutdown_path(room_id), body), 403, "M_FORBIDDEN")
    resp = await admin.delete(shutdown_path(room_id), body)
    assert resp.code == 200, resp
    new_room_id = resp.json["new_room_id"]
    assert sorted(resp.json["kicked_users"]) == sorted([alice.user_id, bob.user_id])
    assert resp.json["failed_to_kick_users"] == []
    assert resp.json["local_aliases"] == [alias]

    # Out of the old room, and blocked from it.
    assert_error(await send_raw(alice, room_id, "hello"), 403, "M_FORBIDDEN")
    assert_error(await join(alice, room_id), 403, "M_FORBIDDEN")
    assert_error(await invite(notice, room_id, alice.user_id or ""), 403, "M_FORBIDDEN")
    assert room_id not in (await sync(alice))["rooms"]["join"]
    # The alias points at the notice room, where members are joined but cannot speak.
    resolved = await alice.get(f"{V3}/directory/room/{q(alias)}")
    assert resolved.json["room_id"] == new_room_id, resolved
    name = await alice.get(room_path(new_room_id, "/state/m.room.name/"))
    assert name.code == 200 and name.json["name"] == "Content Violation Notification", name
    assert_error(await send_raw(bob, new_room_id, "hi"), 403, "M_FORBIDDEN")


@pytest_twisted.ensureDeferred
async def test_shutdown_errors(server: RunningServer) -> None:
    admin = await register_admin(server)
    assert_error(await admin.delete(shutdown_path("not-a-room"), {}), 400, "M_INVALID_PARAM")
    assert_error(await admin.delete(shutdown_path("!unknown:test"), {}), 404, "M_NOT_FOUND")
    room_id = await create_room(admin)
    assert_error(
        await admin.delete(shutdown_path(room_id), {"new_room_user_id": "@x:elsewhere"}),
        400,
        "M_INVALID_PARAM",
    )
    # Without a notice room: members leave, the room's aliases go.
    resp = await admin.delete(shutdown_path(room_id), {})
    assert resp.code == 200 and resp.json["new_room_id"] is None, resp
    assert resp.json["kicked_users"] == [admin.user_id]
