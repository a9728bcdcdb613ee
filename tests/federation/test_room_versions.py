"""Rooms of old versions between two of our servers: joins (make_join ``ver``,
send_join), messages both ways, invites and their rejection, over real federation."""

from __future__ import annotations

from typing import Any

import pytest
import pytest_twisted

from tests.federation.test_spaces import alice_and_bob
from tests.federation.test_two_servers import sleep, wait_for_message
from tests.rooms.helpers import V3, create_room, get_state, invite, room_path, send, sync
from tests.support.client import Client, q
from tests.support.server import RunningServer


async def wait_for_invite(client: Client, room_id: str) -> dict[str, Any]:
    for _ in range(100):
        body = await sync(client)
        invited = body.get("rooms", {}).get("invite", {})
        if room_id in invited:
            return dict(invited[room_id])
        await sleep(0.1)
    raise AssertionError(f"no invite to {room_id}")


@pytest.mark.parametrize("version", ["1", "2", "3", "4", "9"])
@pytest_twisted.ensureDeferred
async def test_remote_join_and_messages(
    two_servers: tuple[RunningServer, RunningServer], version: str
) -> None:
    a, _ = two_servers
    alice, bob = await alice_and_bob(two_servers)
    room_id = await create_room(alice, room_version=version, preset="public_chat")
    resp = await bob.post(f"{V3}/join/{q(room_id)}", {}, params={"via": a.hs.server_name})
    assert resp.code == 200, resp
    create = await get_state(bob, room_id, "m.room.create")
    assert create.json["room_version"] == version
    await send(alice, room_id, "from alice")
    await wait_for_message(bob, room_id, "from alice")
    await send(bob, room_id, "from bob")
    await wait_for_message(alice, room_id, "from bob")


@pytest.mark.parametrize("version", ["1", "4"])
@pytest_twisted.ensureDeferred
async def test_remote_invite_and_reject(
    two_servers: tuple[RunningServer, RunningServer], version: str
) -> None:
    alice, bob = await alice_and_bob(two_servers)
    room_id = await create_room(alice, room_version=version)
    resp = await invite(alice, room_id, bob.user_id)
    assert resp.code == 200, resp
    await wait_for_invite(bob, room_id)
    resp = await bob.post(room_path(room_id, "/leave"), {})
    assert resp.code == 200, resp
    for _ in range(100):
        member = await get_state(alice, room_id, "m.room.member", bob.user_id)
        if member.code == 200 and member.json["membership"] == "leave":
            break
        await sleep(0.1)
    assert member.json["membership"] == "leave", member


@pytest.mark.parametrize("version", ["1", "3", "11"])
@pytest_twisted.ensureDeferred
async def test_redaction_by_a_remote_regular_user(
    two_servers: tuple[RunningServer, RunningServer], version: str
) -> None:
    """Bob (on B) redacts his own message with POST .../redact/{eventId} (no txn id, as
    Synapse serves it); alice (on A) sees the redaction and the redacted event, whose
    ``unsigned`` names the redaction (``redacted_by``) as Synapse's does."""
    a, _ = two_servers
    alice, bob = await alice_and_bob(two_servers)
    room_id = await create_room(alice, room_version=version, invite=[bob.user_id])
    await wait_for_invite(bob, room_id)
    resp = await bob.post(f"{V3}/join/{q(room_id)}", {}, params={"via": a.hs.server_name})
    assert resp.code == 200, resp
    message_id = await send(bob, room_id, "Message")
    await wait_for_message(alice, room_id, "Message")
    resp = await bob.post(room_path(room_id, f"/redact/{q(message_id)}"), {})
    assert resp.code == 200, resp
    redaction_id = resp.json["event_id"]
    chunk: list[dict[str, Any]] = []
    for _ in range(100):
        resp = await alice.get(room_path(room_id, "/messages"), params={"dir": "b"})
        assert resp.code == 200, resp
        chunk = resp.json["chunk"]
        if chunk and chunk[0]["event_id"] == redaction_id:
            break
        await sleep(0.1)
    assert chunk[0]["event_id"] == redaction_id and chunk[0]["redacts"] == message_id
    assert chunk[1]["event_id"] == message_id
    assert chunk[1]["unsigned"]["redacted_by"] == redaction_id
    assert chunk[1]["content"] == {}


@pytest.mark.parametrize("version", ["1", "12"])
@pytest_twisted.ensureDeferred
async def test_invite_rejected_locally_when_no_server_answers(
    two_servers: tuple[RunningServer, RunningServer], version: str
) -> None:
    """With the inviting server gone, rejecting its invite still succeeds (as Synapse):
    a leave of our own follows the invite, and /sync shows it in the leave section."""
    a, _ = two_servers
    alice, bob = await alice_and_bob(two_servers)
    room_id = await create_room(alice, room_version=version)
    resp = await invite(alice, room_id, bob.user_id)
    assert resp.code == 200, resp
    await wait_for_invite(bob, room_id)
    since = (await sync(bob))["next_batch"]
    await a.stop()
    resp = await bob.post(room_path(room_id, "/leave"), {})
    assert resp.code == 200, resp
    body = await sync(bob, since)
    left = body["rooms"]["leave"][room_id]
    events = left["timeline"]["events"]
    assert [(e["type"], e["state_key"], e["content"]["membership"]) for e in events] == [
        ("m.room.member", bob.user_id, "leave")
    ]
    assert room_id not in body["rooms"].get("invite", {})
