from __future__ import annotations

import pytest
import pytest_twisted

from tests.support.client import q
from tests.support.server import RunningServer


@pytest.mark.parametrize("room_version", ["10", "11", "12"])
@pytest_twisted.ensureDeferred
async def test_create_invite_join_send_sync_paginate(
    server: RunningServer, room_version: str
) -> None:
    alice = server.client()
    await alice.register("alice")
    bob = server.client()
    await bob.register("bob")

    resp = await alice.post(
        "/_matrix/client/v3/createRoom",
        {"name": "Test", "invite": [bob.user_id], "room_version": room_version},
    )
    assert resp.code == 200, resp
    room_id = resp.json["room_id"]

    resp = await bob.get("/_matrix/client/v3/sync")
    assert resp.code == 200, resp
    assert room_id in resp.json["rooms"]["invite"], resp.json
    since = resp.json["next_batch"]

    resp = await bob.post(f"/_matrix/client/v3/join/{q(room_id)}", {})
    assert resp.code == 200, resp

    for i in range(5):
        resp = await alice.put(
            f"/_matrix/client/v3/rooms/{q(room_id)}/send/m.room.message/t{i}",
            {"msgtype": "m.text", "body": f"hello {i}"},
        )
        assert resp.code == 200, resp

    resp = await bob.get(f"/_matrix/client/v3/sync?since={since}&timeout=1000")
    assert resp.code == 200, resp
    joined = resp.json["rooms"]["join"][room_id]
    bodies = [
        e["content"]["body"] for e in joined["timeline"]["events"] if e["type"] == "m.room.message"
    ]
    assert bodies == [f"hello {i}" for i in range(5)]

    resp = await bob.get(f"/_matrix/client/v3/rooms/{q(room_id)}/messages?dir=b&limit=3")
    assert resp.code == 200, resp
    assert [e["content"]["body"] for e in resp.json["chunk"]] == ["hello 4", "hello 3", "hello 2"]
    resp = await bob.get(
        f"/_matrix/client/v3/rooms/{q(room_id)}/messages?dir=b&limit=3&from={resp.json['end']}"
    )
    assert [e["content"].get("body") for e in resp.json["chunk"]][:2] == ["hello 1", "hello 0"]
