"""Two of our servers share rooms over real HTTPS on loopback."""

from __future__ import annotations

from typing import Any

import pytest_twisted
from twisted.internet import defer, reactor, task

from tests.support.client import Client, q
from tests.support.server import RunningServer


async def sleep(seconds: float) -> None:
    await task.deferLater(reactor, seconds, lambda: None)


async def wait_for_message(
    client: Client, room_id: str, body: str, timeout: float = 30.0
) -> dict[str, Any]:
    """Sync until a message with ``body`` shows up in ``room_id``."""
    since = None
    deadline = reactor.seconds() + timeout
    while reactor.seconds() < deadline:
        params = {"timeout": "1000"}
        if since:
            params["since"] = since
        resp = await client.get("/_matrix/client/v3/sync", params=params)
        assert resp.code == 200, resp
        since = resp.json["next_batch"]
        room = resp.json["rooms"]["join"].get(room_id)
        if room:
            for ev in room["timeline"]["events"]:
                if ev.get("content", {}).get("body") == body:
                    return ev
    raise AssertionError(f"{body!r} never arrived in {room_id}")


async def wait_for_invite(client: Client, room_id: str, timeout: float = 15.0) -> dict[str, Any]:
    """Sync until the invite to ``room_id`` shows up; the sync body that holds it."""
    deadline = reactor.seconds() + timeout
    while reactor.seconds() < deadline:
        resp = await client.get("/_matrix/client/v3/sync")
        assert resp.code == 200, resp
        if room_id in resp.json["rooms"]["invite"]:
            return dict(resp.json)
        await sleep(0.1)
    raise AssertionError(f"the invite to {room_id} never arrived at {client.user_id}")


async def current_state(client: Client, room_id: str) -> dict[tuple[str, str], str]:
    resp = await client.get(f"/_matrix/client/v3/rooms/{q(room_id)}/state")
    assert resp.code == 200, resp
    return {(e["type"], e["state_key"]): e["event_id"] for e in resp.json}


async def eventually_equal_state(a: Client, b: Client, room_id: str) -> None:
    for _ in range(50):
        sa, sb = await current_state(a, room_id), await current_state(b, room_id)
        if sa == sb:
            return
        await sleep(0.1)
    assert sa == sb


@pytest_twisted.ensureDeferred
async def test_remote_join_by_alias_and_messages_both_ways(
    two_servers: tuple[RunningServer, RunningServer],
) -> None:
    a, b = two_servers
    alice = a.client()
    await alice.register("alice")
    bob = b.client()
    await bob.register("bob")

    resp = await alice.post(
        "/_matrix/client/v3/createRoom",
        {"preset": "public_chat", "room_alias_name": "lobby", "name": "Lobby"},
    )
    assert resp.code == 200, resp
    room_id = resp.json["room_id"]
    alias = resp.json["room_alias"]

    resp = await bob.post(f"/_matrix/client/v3/join/{q(alias)}", {})
    assert resp.code == 200, resp
    assert resp.json["room_id"] == room_id

    resp = await alice.put(
        f"/_matrix/client/v3/rooms/{q(room_id)}/send/m.room.message/a1",
        {"msgtype": "m.text", "body": "hello from A"},
    )
    assert resp.code == 200, resp
    await wait_for_message(bob, room_id, "hello from A")

    resp = await bob.put(
        f"/_matrix/client/v3/rooms/{q(room_id)}/send/m.room.message/b1",
        {"msgtype": "m.text", "body": "hello from B"},
    )
    assert resp.code == 200, resp
    await wait_for_message(alice, room_id, "hello from B")

    resp = await alice.put(
        f"/_matrix/client/v3/rooms/{q(room_id)}/state/m.room.topic", {"topic": "federated"}
    )
    assert resp.code == 200, resp
    await eventually_equal_state(alice, bob, room_id)


@pytest_twisted.ensureDeferred
async def test_invite_remote_user_then_join(
    two_servers: tuple[RunningServer, RunningServer],
) -> None:
    a, b = two_servers
    alice = a.client()
    await alice.register("alice")
    carol = b.client()
    await carol.register("carol")
    resp = await alice.post("/_matrix/client/v3/createRoom", {"invite": [carol.user_id]})
    assert resp.code == 200, resp
    room_id = resp.json["room_id"]

    await wait_for_invite(carol, room_id)

    resp = await carol.post(f"/_matrix/client/v3/rooms/{q(room_id)}/join", {})
    assert resp.code == 200, resp
    resp = await alice.put(
        f"/_matrix/client/v3/rooms/{q(room_id)}/send/m.room.message/x",
        {"msgtype": "m.text", "body": "welcome"},
    )
    assert resp.code == 200, resp
    await wait_for_message(carol, room_id, "welcome")
    await eventually_equal_state(alice, carol, room_id)


@pytest_twisted.ensureDeferred
async def test_reject_remote_invite(
    two_servers: tuple[RunningServer, RunningServer],
) -> None:
    # B holds nothing of the room but the invite: /leave goes through A (make_leave).
    a, b = two_servers
    alice = a.client()
    await alice.register("alice")
    carol = b.client()
    await carol.register("carol")
    resp = await alice.post("/_matrix/client/v3/createRoom", {"invite": [carol.user_id]})
    assert resp.code == 200, resp
    room_id = resp.json["room_id"]
    since = (await wait_for_invite(carol, room_id))["next_batch"]

    resp = await carol.post(f"/_matrix/client/v3/rooms/{q(room_id)}/leave", {})
    assert resp.code == 200, resp
    path = f"/_matrix/client/v3/rooms/{q(room_id)}/state/m.room.member/{q(carol.user_id or '')}"
    resp = await alice.get(path)
    assert resp.code == 200 and resp.json["membership"] == "leave", resp
    resp = await carol.get("/_matrix/client/v3/sync")
    assert room_id not in resp.json["rooms"]["invite"], resp.json
    resp = await carol.get("/_matrix/client/v3/sync", params={"since": since})
    assert room_id in resp.json["rooms"]["leave"], resp.json
    # A room one was never invited to stays unknown.
    resp = await carol.post("/_matrix/client/v3/rooms/!nope:elsewhere/leave", {})
    assert resp.code == 404 and resp.json["errcode"] == "M_NOT_FOUND", resp


async def room_anyone_may_change(a: RunningServer, b: RunningServer) -> tuple[Client, Client, str]:
    """alice (on A) and bob (on B) in a public room of A where anyone may set state."""
    alice = a.client()
    await alice.register("alice")
    bob = b.client()
    await bob.register("bob")
    resp = await alice.post(
        "/_matrix/client/v3/createRoom",
        {"preset": "public_chat", "power_level_content_override": {"state_default": 0}},
    )
    room_id = resp.json["room_id"]
    resp = await bob.post(
        f"/_matrix/client/v3/join/{q(room_id)}", {}, params={"server_name": a.hs.server_name}
    )
    assert resp.code == 200, resp
    return alice, bob, room_id


@pytest_twisted.ensureDeferred
async def test_forked_dag_resolves_to_same_state(
    two_servers: tuple[RunningServer, RunningServer],
) -> None:
    alice, bob, room_id = await room_anyone_may_change(*two_servers)
    # Both sides change the same state at once: the graph forks, then resolves.
    r1, r2 = await defer.gatherResults(
        [
            defer.ensureDeferred(
                alice.put(
                    f"/_matrix/client/v3/rooms/{q(room_id)}/state/m.room.topic", {"topic": "from A"}
                )
            ),
            defer.ensureDeferred(
                bob.put(
                    f"/_matrix/client/v3/rooms/{q(room_id)}/state/m.room.topic", {"topic": "from B"}
                )
            ),
        ]
    )
    assert r1.code == 200 and r2.code == 200
    for i in range(3):
        await alice.put(
            f"/_matrix/client/v3/rooms/{q(room_id)}/send/m.room.message/m{i}",
            {"msgtype": "m.text", "body": f"a{i}"},
        )
        await bob.put(
            f"/_matrix/client/v3/rooms/{q(room_id)}/send/m.room.message/m{i}",
            {"msgtype": "m.text", "body": f"b{i}"},
        )
    await wait_for_message(alice, room_id, "b2")
    await wait_for_message(bob, room_id, "a2")
    await eventually_equal_state(alice, bob, room_id)
