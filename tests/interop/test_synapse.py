"""Our server and a real Synapse share rooms over HTTPS on loopback."""

from __future__ import annotations

import os
import uuid
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor, task

from tests.federation.test_two_servers import wait_for_invite
from tests.support.client import Client, q
from tests.support.federation import free_port, start_federating_server
from tests.support.server import RunningServer
from tests.support.synapse import SynapsePeer


async def sleep(seconds: float) -> None:
    await task.deferLater(reactor, seconds, lambda: None)


def name() -> str:
    return "u" + uuid.uuid4().hex[:10]


async def room_state(client: Client, room_id: str) -> dict[tuple[str, str], str]:
    resp = await client.get(f"/_matrix/client/v3/rooms/{q(room_id)}/state")
    assert resp.code == 200, resp
    return {(e["type"], e["state_key"]): e["event_id"] for e in resp.json}


async def assert_same_state(a: Client, b: Client, room_id: str, timeout: float = 15.0) -> None:
    deadline = reactor.seconds() + timeout
    while True:
        sa, sb = await room_state(a, room_id), await room_state(b, room_id)
        if sa == sb or reactor.seconds() > deadline:
            break
        await sleep(0.2)
    assert sa == sb


async def bodies_seen(
    client: Client, room_id: str, expected: list[str], timeout: float = 20.0
) -> list[str]:
    """Page /messages until every expected body is there; return bodies in order."""
    deadline = reactor.seconds() + timeout
    while True:
        resp = await client.get(
            f"/_matrix/client/v3/rooms/{q(room_id)}/messages", params={"dir": "b", "limit": "200"}
        )
        assert resp.code == 200, resp
        bodies = [
            e["content"]["body"]
            for e in reversed(resp.json["chunk"])
            if e["type"] == "m.room.message" and "body" in e.get("content", {})
        ]
        if all(b in bodies for b in expected) or reactor.seconds() > deadline:
            return bodies
        await sleep(0.2)


async def wait_joined(client: Client, room_id: str, user_id: str, timeout: float = 15.0) -> None:
    deadline = reactor.seconds() + timeout
    while reactor.seconds() < deadline:
        resp = await client.get(f"/_matrix/client/v3/rooms/{q(room_id)}/joined_members")
        if resp.code == 200 and user_id in resp.json.get("joined", {}):
            return
        await sleep(0.2)
    raise AssertionError(f"{user_id} never joined {room_id} as seen by {client.base_url}")


async def send(client: Client, room_id: str, body: str) -> None:
    resp = await client.put(
        f"/_matrix/client/v3/rooms/{q(room_id)}/send/m.room.message/{uuid.uuid4().hex}",
        {"msgtype": "m.text", "body": body},
    )
    assert resp.code == 200, resp


async def users(synapse: SynapsePeer, ours: RunningServer) -> tuple[Client, Client]:
    s_user = Client(synapse.base_url)
    await s_user.register(name())
    o_user = ours.client()
    await o_user.register(name())
    return s_user, o_user


@pytest.mark.parametrize("room_version", ["10", "11", "12"])
@pytest_twisted.ensureDeferred
async def test_synapse_invites_our_user_who_joins_and_talks(
    synapse: SynapsePeer, ours: RunningServer, room_version: str
) -> None:
    s_user, o_user = await users(synapse, ours)
    resp = await s_user.post(
        "/_matrix/client/v3/createRoom",
        {"room_version": room_version, "invite": [o_user.user_id], "name": "from synapse"},
    )
    assert resp.code == 200, resp
    room_id = resp.json["room_id"]
    await wait_for_invite(o_user, room_id)
    resp = await o_user.post(f"/_matrix/client/v3/rooms/{q(room_id)}/join", {})
    assert resp.code == 200, resp
    await wait_joined(s_user, room_id, o_user.user_id)

    s_msgs = [f"s{i}" for i in range(20)]
    o_msgs = [f"o{i}" for i in range(20)]
    for body in s_msgs:
        await send(s_user, room_id, body)
    for body in o_msgs:
        await send(o_user, room_id, body)
    seen_by_ours = await bodies_seen(o_user, room_id, s_msgs + o_msgs)
    seen_by_synapse = await bodies_seen(s_user, room_id, s_msgs + o_msgs)
    assert [b for b in seen_by_ours if b.startswith("s")] == s_msgs
    assert [b for b in seen_by_synapse if b.startswith("o")] == o_msgs
    await assert_same_state(s_user, o_user, room_id)


@pytest_twisted.ensureDeferred
async def test_synapse_user_joins_our_room_by_alias(
    synapse: SynapsePeer, ours: RunningServer
) -> None:
    s_user, o_user = await users(synapse, ours)
    alias_local = name()
    resp = await o_user.post(
        "/_matrix/client/v3/createRoom", {"preset": "public_chat", "room_alias_name": alias_local}
    )
    assert resp.code == 200, resp
    room_id, alias = resp.json["room_id"], resp.json["room_alias"]
    resp = await s_user.post(f"/_matrix/client/v3/join/{q(alias)}", {})
    assert resp.code == 200, resp
    assert resp.json["room_id"] == room_id
    await wait_joined(o_user, room_id, s_user.user_id)
    await send(o_user, room_id, "hi synapse")
    await send(s_user, room_id, "hi ours")
    assert "hi synapse" in await bodies_seen(s_user, room_id, ["hi synapse"])
    assert "hi ours" in await bodies_seen(o_user, room_id, ["hi ours"])

    # State changes from both sides show on both.
    resp = await o_user.put(
        f"/_matrix/client/v3/rooms/{q(room_id)}/state/m.room.name", {"name": "N"}
    )
    assert resp.code == 200, resp
    resp = await o_user.put(
        f"/_matrix/client/v3/rooms/{q(room_id)}/state/m.room.topic", {"topic": "T"}
    )
    assert resp.code == 200, resp
    pl = (await o_user.get(f"/_matrix/client/v3/rooms/{q(room_id)}/state/m.room.power_levels")).json
    pl.setdefault("users", {})[s_user.user_id] = 50
    resp = await o_user.put(f"/_matrix/client/v3/rooms/{q(room_id)}/state/m.room.power_levels", pl)
    assert resp.code == 200, resp
    await assert_same_state(s_user, o_user, room_id)
    resp = await s_user.put(
        f"/_matrix/client/v3/rooms/{q(room_id)}/state/m.room.topic", {"topic": "from synapse"}
    )
    assert resp.code == 200, resp
    await assert_same_state(s_user, o_user, room_id)
    topic = await o_user.get(f"/_matrix/client/v3/rooms/{q(room_id)}/state/m.room.topic")
    assert topic.json == {"topic": "from synapse"}


@pytest_twisted.ensureDeferred
async def test_kick_and_ban_take_effect_on_both_sides(
    synapse: SynapsePeer, ours: RunningServer
) -> None:
    s_user, o_user = await users(synapse, ours)
    resp = await o_user.post("/_matrix/client/v3/createRoom", {"preset": "public_chat"})
    room_id = resp.json["room_id"]
    resp = await s_user.post(
        f"/_matrix/client/v3/join/{q(room_id)}", {}, params={"server_name": ours.hs.server_name}
    )
    assert resp.code == 200, resp
    await wait_joined(o_user, room_id, s_user.user_id)
    resp = await o_user.post(
        f"/_matrix/client/v3/rooms/{q(room_id)}/kick", {"user_id": s_user.user_id}
    )
    assert resp.code == 200, resp
    await assert_same_state(s_user, o_user, room_id)
    resp = await s_user.post(
        f"/_matrix/client/v3/join/{q(room_id)}", {}, params={"server_name": ours.hs.server_name}
    )
    assert resp.code == 200, resp
    await wait_joined(o_user, room_id, s_user.user_id)
    resp = await o_user.post(
        f"/_matrix/client/v3/rooms/{q(room_id)}/ban", {"user_id": s_user.user_id}
    )
    assert resp.code == 200, resp
    # Once Synapse has the ban, its user can no longer read the room, nor rejoin.
    for _ in range(75):
        if (await s_user.get(f"/_matrix/client/v3/rooms/{q(room_id)}/state")).code == 403:
            break
        await sleep(0.2)
    resp = await s_user.post(
        f"/_matrix/client/v3/join/{q(room_id)}", {}, params={"server_name": ours.hs.server_name}
    )
    assert resp.code == 403, resp
    members = await o_user.get(f"/_matrix/client/v3/rooms/{q(room_id)}/members")
    memberships = {e["state_key"]: e["content"]["membership"] for e in members.json["chunk"]}
    assert memberships[s_user.user_id] == "ban"


@pytest_twisted.ensureDeferred
async def test_our_restart_while_synapse_keeps_sending_catches_up(
    synapse: SynapsePeer, tmp_path: Any
) -> None:
    data = str(tmp_path / "restarting")
    os.makedirs(data, exist_ok=True)
    db = {"name": "sqlite3", "args": {"database": os.path.join(data, "homeserver.db")}}
    fed_port = free_port()
    ours = await start_federating_server(data, db, fed_port)
    try:
        s_user, o_user = await users(synapse, ours)
        resp = await s_user.post(
            "/_matrix/client/v3/createRoom", {"preset": "public_chat", "invite": [o_user.user_id]}
        )
        room_id = resp.json["room_id"]
        await wait_for_invite(o_user, room_id)
        resp = await o_user.post(f"/_matrix/client/v3/rooms/{q(room_id)}/join", {})
        assert resp.code == 200, resp
        await wait_joined(s_user, room_id, o_user.user_id)
    finally:
        await ours.stop()

    missed = [f"while-down-{i}" for i in range(5)]
    for body in missed:
        await send(s_user, room_id, body)

    ours = await start_federating_server(data, db, fed_port)
    try:
        o_user.base_url = ours.base_url
        # Synapse keeps sending: its next transaction lets us notice the gap and fetch
        # what we missed (get_missing_events), in order.
        await send(s_user, room_id, "after-restart")
        seen = await bodies_seen(o_user, room_id, [*missed, "after-restart"], timeout=40)
        assert [b for b in seen if b.startswith(("while-down", "after"))] == [
            *missed,
            "after-restart",
        ]
        await send(o_user, room_id, "back")
        assert "back" in await bodies_seen(s_user, room_id, ["back"])
    finally:
        await ours.stop()
