"""m.room.encrypted events and m.room.encryption state pass through the server untouched."""

from __future__ import annotations

import pytest_twisted

from tests.rooms.helpers import create_room, join, room_path, send, sync, timeline
from tests.support.client import Client
from tests.support.server import RunningServer

CIPHERTEXT = {
    "algorithm": "m.megolm.v1.aes-sha2",
    "ciphertext": "AwgAEnACgAkLmt6qF84IK++J7UDH2Za1YVchHyprqTqsg2yyOwAtHaZTwyNg37afzg8f3r9IsN9r",
    "device_id": "RJYKSTBOIE",
    "sender_key": "IlRMeOPX2e0MurIyfWEucYBRVOEEUMrOHqn/8mLqMjA",
    "session_id": "X3lUlvLELLYxeTx4yOVu6UDpasGEVO0Jbu+QFnm0cKQ",
    "m.relates_to": {"rel_type": "m.thread", "event_id": "$root"},
    "extra": {"nested": [1, None, True, "é"]},
}


@pytest_twisted.ensureDeferred
async def test_encrypted_event_content_is_delivered_exactly_as_sent(
    server: RunningServer, alice: Client, bob: Client
) -> None:
    encryption = {"algorithm": "m.megolm.v1.aes-sha2", "rotation_period_ms": 604800000}
    room_id = await create_room(
        alice,
        preset="public_chat",
        initial_state=[{"type": "m.room.encryption", "state_key": "", "content": encryption}],
    )
    assert (await join(bob, room_id)).code == 200
    token = (await sync(bob))["next_batch"]
    event_id = await send(alice, room_id, event_type="m.room.encrypted", content=CIPHERTEXT)

    body = await sync(bob, token)
    [event] = [e for e in timeline(body, room_id)["events"] if e["event_id"] == event_id]
    assert event["type"] == "m.room.encrypted"
    assert event["content"] == CIPHERTEXT
    fetched = await bob.get(room_path(room_id, f"/event/{event_id}"))
    assert fetched.json["content"] == CIPHERTEXT
    state = await bob.get(room_path(room_id, "/state/m.room.encryption/"))
    assert state.json == encryption
