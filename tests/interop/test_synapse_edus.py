"""Typing notifications and read receipts between our server and a real Synapse."""

from __future__ import annotations

import pytest_twisted

from tests.federation.test_edus import (
    JsonDict,
    receipts_of,
    send_receipt,
    send_text,
    set_typing,
    sync_until,
    typing_users,
)
from tests.federation.test_two_servers import wait_for_invite
from tests.interop.test_synapse import users, wait_joined
from tests.support.client import q
from tests.support.server import RunningServer
from tests.support.synapse import SynapsePeer


def has_event(sync: JsonDict, room_id: str, event_id: str) -> bool:
    room = sync["rooms"]["join"].get(room_id, {})
    return any(e["event_id"] == event_id for e in room.get("timeline", {}).get("events", []))


@pytest_twisted.ensureDeferred
async def test_typing_and_receipts_both_ways_with_synapse(
    synapse: SynapsePeer, ours: RunningServer
) -> None:
    s_user, o_user = await users(synapse, ours)
    resp = await s_user.post("/_matrix/client/v3/createRoom", {"invite": [o_user.user_id]})
    assert resp.code == 200, resp
    room_id = resp.json["room_id"]
    await wait_for_invite(o_user, room_id)
    resp = await o_user.post(f"/_matrix/client/v3/rooms/{q(room_id)}/join", {})
    assert resp.code == 200, resp
    await wait_joined(s_user, room_id, o_user.user_id)

    # Typing, Synapse -> us and us -> Synapse.
    await set_typing(s_user, room_id, True)
    await sync_until(o_user, lambda s: typing_users(s, room_id) == [s_user.user_id], "typing")
    await set_typing(s_user, room_id, False)
    await sync_until(o_user, lambda s: typing_users(s, room_id) == [], "typing stopped")
    await set_typing(o_user, room_id, True)
    await sync_until(s_user, lambda s: typing_users(s, room_id) == [o_user.user_id], "ours")
    await set_typing(o_user, room_id, False)
    await sync_until(s_user, lambda s: typing_users(s, room_id) == [], "ours stopped")

    # Receipts: Synapse's on our copy of its message, ours (threaded) on Synapse's copy.
    from_synapse = await send_text(s_user, room_id, "from-synapse")
    await sync_until(o_user, lambda s: has_event(s, room_id, from_synapse), "synapse's message")
    await send_receipt(o_user, room_id, "m.read", from_synapse, {"thread_id": "main"})
    seen = await sync_until(
        s_user, lambda s: receipts_of(s, room_id, o_user.user_id), "our receipt on synapse"
    )
    assert seen[from_synapse]["m.read"]["thread_id"] == "main"

    from_us = await send_text(o_user, room_id, "from-us")
    await sync_until(s_user, lambda s: has_event(s, room_id, from_us), "our message")
    await send_receipt(s_user, room_id, "m.read", from_us, {})
    seen = await sync_until(
        o_user, lambda s: receipts_of(s, room_id, s_user.user_id).get(from_us), "synapse's"
    )
    assert "m.read" in seen
