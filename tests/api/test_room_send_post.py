"""POST /rooms/{roomId}/send/{eventType}: a send without a transaction id (Synapse's)."""

from __future__ import annotations

import pytest_twisted

from tests.rooms.helpers import assert_error, create_room, messages, room_path, user
from tests.support.server import RunningServer


@pytest_twisted.ensureDeferred
async def test_post_send_creates_a_new_event_each_time(server: RunningServer) -> None:
    alice = await user(server, "alice")
    room_id = await create_room(alice)
    path = room_path(room_id, "/send/m.room.message")
    body = {"msgtype": "m.text", "body": "posted"}
    first = await alice.post(path, body)
    second = await alice.post(path, body)
    assert first.code == 200 and second.code == 200, (first, second)
    assert first.json["event_id"] != second.json["event_id"]
    page = await messages(alice, room_id, dir="b", limit=2)
    chunk = page.json["chunk"]
    assert [ev["event_id"] for ev in chunk] == [second.json["event_id"], first.json["event_id"]]
    assert all("transaction_id" not in ev.get("unsigned", {}) for ev in chunk)


@pytest_twisted.ensureDeferred
async def test_post_send_by_a_non_member_is_403(server: RunningServer) -> None:
    alice = await user(server, "alice")
    bob = await user(server, "bob")
    room_id = await create_room(alice)
    resp = await bob.post(room_path(room_id, "/send/m.room.message"), {"body": "x"})
    assert_error(resp, 403, "M_FORBIDDEN")


@pytest_twisted.ensureDeferred
async def test_post_send_without_a_json_body_is_400(server: RunningServer) -> None:
    alice = await user(server, "alice")
    room_id = await create_room(alice)
    resp = await alice.request("POST", room_path(room_id, "/send/m.room.message"), raw=b"nope")
    assert_error(resp, 400, "M_NOT_JSON")
