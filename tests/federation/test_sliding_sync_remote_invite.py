"""Simplified sliding sync and an invite over federation to a room this server does
not hold: listed with the stripped state it came with; its rejection shows the leave."""

from __future__ import annotations

import pytest_twisted

from tests.federation.test_push_remote_invite import invite_over_federation
from tests.support.client import q
from tests.support.server import RunningServer
from tests.sync.helpers import all_rooms, list_ids, sliding


@pytest_twisted.ensureDeferred
async def test_remote_invite_then_its_rejection(
    two_servers: tuple[RunningServer, RunningServer],
) -> None:
    a, b = two_servers
    carol = b.client()
    await carol.register("carol")
    request = {"lists": {"invites": all_rooms([[0, 9]], filters={"is_invite": True})}}
    first = await sliding(carol, request)
    room_id, sender = f"!room:{a.hs.server_name}", f"@mallory:{a.hs.server_name}"
    stripped = [
        {"type": "m.room.name", "state_key": "", "sender": sender, "content": {"name": "Far"}}
    ]
    await invite_over_federation(a, b, room_id, sender, carol.user_id or "", stripped)
    second = await sliding(carol, request, first["pos"], timeout=5000)
    assert list_ids(second, "invites") == [room_id]
    room = second["rooms"][room_id]
    assert room["initial"] is True
    assert room["name"] == "Far"
    assert {
        "type": "m.room.name",
        "state_key": "",
        "sender": sender,
        "content": {"name": "Far"},
    } in room["invite_state"]

    # A never heard of the room: the rejection is recorded locally all the same.
    resp = await carol.post(f"/_matrix/client/v3/rooms/{q(room_id)}/leave", {})
    assert resp.code == 200, resp
    third = await sliding(
        carol, {"lists": {"all": all_rooms([[0, 9]])}}, second["pos"], timeout=5000
    )
    leave = third["rooms"][room_id]["timeline"][-1]
    assert (leave["type"], leave["state_key"], leave["content"]["membership"]) == (
        "m.room.member",
        carol.user_id,
        "leave",
    )
    assert third["lists"]["all"]["count"] == 1  # shown as the change it is
    fourth = await sliding(carol, {"lists": {"all": all_rooms([[0, 9]])}}, third["pos"])
    assert fourth["lists"]["all"]["count"] == 0
