"""Simplified sliding sync: the extensions (to_device, e2ee, account_data, receipts,
typing), over real HTTP."""

from __future__ import annotations

from typing import Any

import pytest_twisted

from tests.rooms.helpers import V3, create_room, join, room_path, send, user
from tests.support.client import q
from tests.support.server import RunningServer
from tests.sync.helpers import all_rooms, sliding, sliding_raw


def request(**extensions: Any) -> dict[str, Any]:
    return {
        "lists": {"all": all_rooms([[0, 9]], timeline_limit=1)},
        "extensions": {name: {"enabled": True, **config} for name, config in extensions.items()},
    }


@pytest_twisted.ensureDeferred
async def test_to_device_messages_until_acknowledged(server: RunningServer) -> None:
    alice = await user(server, "alice")
    bob = await user(server, "bob")
    body = await sliding(bob, request(to_device={}))
    assert body["extensions"]["to_device"]["events"] == []
    since = body["extensions"]["to_device"]["next_batch"]
    resp = await alice.put(
        f"{V3}/sendToDevice/m.test/txn1",
        {"messages": {bob.user_id: {bob.device_id: {"n": 1}}}},
    )
    assert resp.code == 200, resp
    body = await sliding(bob, request(to_device={"since": since}), body["pos"], timeout=5000)
    events = body["extensions"]["to_device"]["events"]
    assert [(e["type"], e["sender"], e["content"]) for e in events] == [
        ("m.test", alice.user_id, {"n": 1})
    ]
    # Not acknowledged (the old since again): sent again.
    again = await sliding(bob, request(to_device={"since": since}), body["pos"])
    assert len(again["extensions"]["to_device"]["events"]) == 1
    # Acknowledged: gone.
    acked = await sliding(
        bob,
        request(to_device={"since": again["extensions"]["to_device"]["next_batch"]}),
        again["pos"],
    )
    assert acked["extensions"]["to_device"]["events"] == []
    # The extension is off unless enabled.
    off = await sliding(bob, {"lists": {}, "extensions": {"to_device": {"enabled": False}}})
    assert "to_device" not in off["extensions"]


@pytest_twisted.ensureDeferred
async def test_to_device_limit_pages_through_the_messages(server: RunningServer) -> None:
    alice = await user(server, "alice")
    bob = await user(server, "bob")
    for n in range(3):
        resp = await alice.put(
            f"{V3}/sendToDevice/m.test/page{n}",
            {"messages": {bob.user_id: {bob.device_id: {"n": n}}}},
        )
        assert resp.code == 200, resp
    first = await sliding(bob, request(to_device={"limit": 2}))
    page = first["extensions"]["to_device"]
    assert [e["content"]["n"] for e in page["events"]] == [0, 1]
    # next_batch stops at the last message sent: the third is still to come.
    second = await sliding(
        bob, request(to_device={"limit": 2, "since": page["next_batch"]}), first["pos"]
    )
    page = second["extensions"]["to_device"]
    assert [e["content"]["n"] for e in page["events"]] == [2]
    third = await sliding(
        bob, request(to_device={"limit": 2, "since": page["next_batch"]}), second["pos"]
    )
    assert third["extensions"]["to_device"]["events"] == []
    # A since ahead of the stream (as Synapse): nothing, and the same next_batch back.
    ahead = str(int(third["extensions"]["to_device"]["next_batch"]) + 1000)
    body = await sliding(bob, request(to_device={"since": ahead}))
    assert body["extensions"]["to_device"] == {"next_batch": ahead, "events": []}
    bad = await sliding_raw(bob, request(to_device={"limit": 0}))
    assert bad.code == 400, bad


@pytest_twisted.ensureDeferred
async def test_e2ee_key_counts_and_device_list_changes(server: RunningServer) -> None:
    alice = await user(server, "alice")
    bob = await user(server, "bob")
    room_id = await create_room(alice, preset="public_chat")
    assert (await join(bob, room_id)).code == 200
    body = await sliding(alice, request(e2ee={}))
    e2ee = body["extensions"]["e2ee"]
    assert e2ee["device_one_time_keys_count"] == {"signed_curve25519": 0}
    assert e2ee["device_unused_fallback_key_types"] == []
    assert "device_lists" not in e2ee  # nothing on a first request

    # Bob's new device (with keys) shows as a change.
    bob2 = server.client()
    assert (await bob2.login("bob")).code == 200
    keys = {
        "device_keys": {
            "user_id": bob.user_id,
            "device_id": bob2.device_id,
            "algorithms": ["m.olm.v1.curve25519-aes-sha2"],
            "keys": {
                f"curve25519:{bob2.device_id}": "abc",
                f"ed25519:{bob2.device_id}": "def",
            },
            "signatures": {},
        }
    }
    assert (await bob2.post(f"{V3}/keys/upload", keys)).code == 200
    body = await sliding(alice, request(e2ee={}), body["pos"], timeout=5000)
    assert bob.user_id in body["extensions"]["e2ee"]["device_lists"]["changed"]


@pytest_twisted.ensureDeferred
async def test_account_data_global_and_scoped_to_rooms(server: RunningServer) -> None:
    alice = await user(server, "alice")
    room_id = await create_room(alice)
    other = await create_room(alice)
    uid = q(alice.user_id or "")
    assert (await alice.put(f"{V3}/user/{uid}/account_data/x.global", {"g": 1})).code == 200
    for r in (room_id, other):
        path = f"{V3}/user/{uid}/rooms/{q(r)}/account_data/x.room"
        assert (await alice.put(path, {"r": r})).code == 200
    body = await sliding(
        alice,
        {
            "lists": {"all": all_rooms([[0, 0]], timeline_limit=1)},
            "extensions": {"account_data": {"enabled": True}},
        },
    )
    data = body["extensions"]["account_data"]
    assert {"type": "x.global", "content": {"g": 1}} in data["global"]
    # Only the room inside the list's range (the newest, ``other``).
    assert data["rooms"] == {other: [{"type": "x.room", "content": {"r": other}}]}

    assert (await alice.put(f"{V3}/user/{uid}/account_data/x.global", {"g": 2})).code == 200
    body = await sliding(
        alice,
        {
            "lists": {"all": all_rooms([[0, 0]], timeline_limit=1)},
            "extensions": {"account_data": {"enabled": True}},
        },
        body["pos"],
        timeout=5000,
    )
    assert body["extensions"]["account_data"] == {
        "global": [{"type": "x.global", "content": {"g": 2}}],
        "rooms": {},
    }

    # ``room_id`` enters the range, new to the connection: its room account data whole.
    await send(alice, room_id, "move up")
    body = await sliding(
        alice,
        {
            "lists": {"all": all_rooms([[0, 0]], timeline_limit=1)},
            "extensions": {"account_data": {"enabled": True}},
        },
        body["pos"],
    )
    assert body["rooms"][room_id]["initial"] is True
    assert body["extensions"]["account_data"] == {
        "global": [],
        "rooms": {room_id: [{"type": "x.room", "content": {"r": room_id}}]},
    }


@pytest_twisted.ensureDeferred
async def test_receipts_and_typing(server: RunningServer) -> None:
    alice = await user(server, "alice")
    bob = await user(server, "bob")
    room_id = await create_room(alice, preset="public_chat")
    assert (await join(bob, room_id)).code == 200
    event_id = await send(alice, room_id, "read me")
    body = await sliding(alice, request(receipts={}, typing={}))
    assert body["extensions"]["typing"] == {"rooms": {}}

    resp = await bob.post(room_path(room_id, f"/receipt/m.read/{q(event_id)}"), {})
    assert resp.code == 200, resp
    body = await sliding(alice, request(receipts={}, typing={}), body["pos"], timeout=5000)
    receipt = body["extensions"]["receipts"]["rooms"][room_id]
    assert receipt["type"] == "m.receipt"
    assert bob.user_id in receipt["content"][event_id]["m.read"]

    resp = await bob.put(
        room_path(room_id, f"/typing/{q(bob.user_id or '')}"), {"typing": True, "timeout": 30000}
    )
    assert resp.code == 200, resp
    body = await sliding(alice, request(receipts={}, typing={}), body["pos"], timeout=5000)
    typing = body["extensions"]["typing"]["rooms"][room_id]
    assert typing == {"type": "m.typing", "content": {"user_ids": [bob.user_id]}}

    # Scoped to no list and no room: nothing.
    scoped = await sliding(
        alice, request(typing={"lists": [], "rooms": []}, receipts={"lists": ["other"]})
    )
    assert scoped["extensions"]["typing"] == {"rooms": {}}
    assert scoped["extensions"]["receipts"] == {"rooms": {}}
