"""Backfill from a real Synapse: our user joins a Synapse room with history and pages
back past the join."""

from __future__ import annotations

import pytest
import pytest_twisted

from tests.interop.test_synapse import send, users, wait_joined
from tests.support.client import q
from tests.support.server import RunningServer
from tests.support.synapse import SynapsePeer


@pytest.mark.parametrize("room_version", ["10", "12"])
@pytest_twisted.ensureDeferred
async def test_our_user_backfills_synapse_history(
    synapse: SynapsePeer, ours: RunningServer, room_version: str
) -> None:
    s_user, o_user = await users(synapse, ours)
    resp = await s_user.post(
        "/_matrix/client/v3/createRoom",
        {
            "room_version": room_version,
            "preset": "public_chat",
            "initial_state": [
                {
                    "type": "m.room.history_visibility",
                    "state_key": "",
                    "content": {"history_visibility": "shared"},
                }
            ],
        },
    )
    assert resp.code == 200, resp
    room_id = resp.json["room_id"]
    history = [f"h{i}" for i in range(30)]
    for body in history:
        await send(s_user, room_id, body)
    resp = await o_user.post(
        f"/_matrix/client/v3/join/{q(room_id)}", {}, params={"server_name": synapse.server_name}
    )
    assert resp.code == 200, resp
    await wait_joined(s_user, room_id, o_user.user_id or "")

    seen: list[str] = []
    ids: list[str] = []
    token = None
    for _ in range(30):
        params = {"dir": "b", "limit": "10"}
        if token:
            params["from"] = token
        resp = await o_user.get(f"/_matrix/client/v3/rooms/{q(room_id)}/messages", params=params)
        assert resp.code == 200, resp
        chunk = resp.json["chunk"]
        ids += [e["event_id"] for e in chunk]
        seen += [
            e["content"]["body"]
            for e in chunk
            if e["type"] == "m.room.message" and e["content"].get("body", "").startswith("h")
        ]
        if not chunk or "end" not in resp.json:
            break
        token = resp.json["end"]
    assert seen == list(reversed(history))
    assert len(ids) == len(set(ids))
    resp = await o_user.get(
        f"/_matrix/client/v3/rooms/{q(room_id)}/messages", params={"dir": "b", "limit": "1000"}
    )
    assert resp.code == 200
    types = [e["type"] for e in resp.json["chunk"]]
    assert types[-1] == "m.room.create"
