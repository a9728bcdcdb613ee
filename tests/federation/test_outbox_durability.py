"""A local event's federation send commits with the event: a crash right after the
commit (before any post-commit step ran) loses nothing, and a restart sends it."""

from __future__ import annotations

import pytest_twisted

from homeserver.events.event import Event
from tests.federation.test_two_servers import sleep, wait_for_message
from tests.support.client import Client, q
from tests.support.server import RunningServer


def crash_after_commit(server: RunningServer) -> list[Event]:
    """From now on the federation sender is dead: nothing runs after an event's commit
    (as if the process died right then). Returns the committed events it missed."""
    federation = server.hs.federation
    assert federation is not None
    federation.sender.stop()
    missed: list[Event] = []
    federation.sender.on_persisted = missed.extend  # type: ignore[assignment,method-assign]
    return missed


async def send(client: Client, room_id: str, body: str, txn: str) -> str:
    resp = await client.put(
        f"/_matrix/client/v3/rooms/{q(room_id)}/send/m.room.message/{txn}",
        {"msgtype": "m.text", "body": body},
    )
    assert resp.code == 200, resp
    return str(resp.json["event_id"])


@pytest_twisted.ensureDeferred
async def test_send_queued_in_the_events_transaction_survives_a_crash(
    two_servers: tuple[RunningServer, RunningServer],
) -> None:
    a, b = two_servers
    alice = a.client()
    await alice.register("alice")
    bob = b.client()
    await bob.register("bob")
    resp = await alice.post(
        "/_matrix/client/v3/createRoom", {"preset": "public_chat", "room_alias_name": "durable"}
    )
    assert resp.code == 200, resp
    room_id = resp.json["room_id"]
    resp = await bob.post(f"/_matrix/client/v3/join/{q(resp.json['room_alias'])}", {})
    assert resp.code == 200, resp
    await send(alice, room_id, "before the crash", "t1")
    await wait_for_message(bob, room_id, "before the crash")
    # B may show it before A has read B's answer and emptied its outbox.
    for _ in range(100):
        if not await a.hs.storage.federation.peek(b.hs.server_name, "pdu", 50):
            break
        await sleep(0.05)

    missed = crash_after_commit(a)
    event_id = await send(alice, room_id, "committed, then the crash", "t2")
    assert [e.event_id for e in missed] == [event_id]
    # Already queued for B by the commit itself, with nothing run after it.
    queued = await a.hs.storage.federation.peek(b.hs.server_name, "pdu", 50)
    assert [item.payload["content"]["body"] for item in queued] == ["committed, then the crash"]
    # Never for ourselves.
    assert await a.hs.storage.federation.peek(a.hs.server_name, "pdu", 50) == []

    await a.restart()
    await wait_for_message(bob, room_id, "committed, then the crash")
