"""Admin suspension and locking of accounts (MSC3823/MSC4323), and their effects."""

from __future__ import annotations

import pytest_twisted

from tests.api.helpers import register_admin
from tests.rooms.helpers import (
    V3,
    assert_error,
    create_room,
    join,
    leave,
    room_path,
    send,
    send_raw,
    user,
)
from tests.support.client import q
from tests.support.server import RunningServer

ADMIN = "/_matrix/client/v1/admin"


@pytest_twisted.ensureDeferred
async def test_suspended_user_cannot_send_join_or_change_profile(server: RunningServer) -> None:
    admin = await register_admin(server)
    alice = await user(server, "alice")
    mallory = await user(server, "mallory")
    room_id = await create_room(alice, preset="public_chat")
    other = await create_room(alice, preset="public_chat")
    assert (await join(mallory, room_id)).code == 200

    path = f"{ADMIN}/suspend/{q(mallory.user_id)}"
    assert (await admin.get(path)).json == {"suspended": False}
    resp = await admin.put(path, {"suspended": True})
    assert resp.code == 200, resp
    assert resp.json == {"suspended": True}
    assert (await admin.get(path)).json == {"suspended": True}

    assert_error(await send_raw(mallory, room_id, "spam"), 403, "M_USER_SUSPENDED")
    assert_error(await join(mallory, other), 403, "M_USER_SUSPENDED")
    resp = await mallory.post(f"{V3}/createRoom", {})
    assert_error(resp, 403, "M_USER_SUSPENDED")
    resp = await mallory.put(f"{V3}/profile/{q(mallory.user_id)}/displayname", {"displayname": "x"})
    assert_error(resp, 403, "M_USER_SUSPENDED")
    resp = await mallory.put(room_path(room_id, "/state/m.room.topic"), {"topic": "x"})
    assert_error(resp, 403, "M_USER_SUSPENDED")
    # Reading and leaving still work.
    assert (await mallory.get(room_path(room_id, "/messages?dir=b"))).code == 200
    assert (await leave(mallory, room_id)).code == 200

    assert (await admin.put(path, {"suspended": False})).code == 200
    assert (await join(mallory, room_id)).code == 200
    await send(mallory, room_id, "back")


@pytest_twisted.ensureDeferred
async def test_locked_user_tokens_answer_user_locked(server: RunningServer) -> None:
    admin = await register_admin(server)
    alice = await user(server, "alice")
    path = f"{ADMIN}/lock/{q(alice.user_id)}"
    assert (await admin.get(path)).json == {"locked": False}
    assert (await admin.put(path, {"locked": True})).json == {"locked": True}
    resp = await alice.get(f"{V3}/account/whoami")
    assert_error(resp, 401, "M_USER_LOCKED")
    assert resp.json["soft_logout"] is True
    assert (await admin.put(path, {"locked": False})).code == 200
    # The session survived the lock.
    assert (await alice.get(f"{V3}/account/whoami")).code == 200
    assert (await admin.put(path, {"locked": True})).code == 200
    # Logging out stays possible.
    assert (await alice.post(f"{V3}/logout", {})).code == 200


@pytest_twisted.ensureDeferred
async def test_restriction_endpoints_errors(server: RunningServer) -> None:
    admin = await register_admin(server)
    alice = await user(server, "alice")
    path = f"{ADMIN}/suspend/{q(admin.user_id)}"
    assert_error(await alice.get(path), 403, "M_FORBIDDEN")
    assert_error(await alice.put(path, {"suspended": True}), 403, "M_FORBIDDEN")
    assert_error(await admin.put(path, {"suspended": "yes"}), 400, "M_BAD_JSON")
    assert_error(await admin.put(path, {}), 400, "M_MISSING_PARAM")
    resp = await admin.get(f"{ADMIN}/lock/{q('@x:elsewhere.example')}")
    assert_error(resp, 400, "M_INVALID_PARAM")
    server_name = alice.user_id.split(":", 1)[1]
    resp = await admin.get(f"{ADMIN}/lock/{q('@nobody:' + server_name)}")
    assert_error(resp, 404, "M_NOT_FOUND")


@pytest_twisted.ensureDeferred
async def test_suspension_survives_a_restart(server: RunningServer) -> None:
    admin = await register_admin(server)
    alice = await user(server, "alice")
    room_id = await create_room(alice)
    path = f"{ADMIN}/suspend/{q(alice.user_id)}"
    assert (await admin.put(path, {"suspended": True})).code == 200
    await server.restart()
    alice.base_url = server.base_url
    assert_error(await send_raw(alice, room_id, "x"), 403, "M_USER_SUSPENDED")
