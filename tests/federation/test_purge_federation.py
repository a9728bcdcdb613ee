"""A room whose history was purged on one server stays whole over federation: the purged
history is backfilled again from the other server, new events flow both ways, and a
server joining after the purge gets the room's state and pages back cleanly."""

from __future__ import annotations

import pytest_twisted

from tests.federation.test_backfill import bodies, join_from_b, paginate_back
from tests.federation.test_two_servers import eventually_equal_state, wait_for_message
from tests.rooms.test_purge import purge
from tests.support.client import Client, q
from tests.support.server import RunningServer

V3 = "/_matrix/client/v3"


async def say(client: Client, room_id: str, body: str) -> str:
    resp = await client.put(
        f"{V3}/rooms/{q(room_id)}/send/m.room.message/{body}",
        {"msgtype": "m.text", "body": body},
    )
    assert resp.code == 200, resp
    return str(resp.json["event_id"])


async def admin_of(server: RunningServer) -> Client:
    admin = server.client()
    await admin.register("admin")
    await server.hs.storage.users.set_admin(admin.user_id or "", True)
    return admin


@pytest_twisted.ensureDeferred
async def test_purged_history_is_backfilled_and_the_room_goes_on(
    two_servers: tuple[RunningServer, RunningServer],
) -> None:
    a, b = two_servers
    admin = await admin_of(a)
    alice = a.client()
    await alice.register("alice")
    bob = b.client()
    await bob.register("bob")
    resp = await alice.post(f"{V3}/createRoom", {"preset": "private_chat"})
    room_id = str(resp.json["room_id"])
    resp = await alice.post(f"{V3}/rooms/{q(room_id)}/invite", {"user_id": bob.user_id})
    assert resp.code == 200, resp
    await join_from_b(bob, room_id, a)
    resp = await alice.put(f"{V3}/rooms/{q(room_id)}/state/m.room.name", {"name": "A room"})
    assert resp.code == 200, resp
    sent = [await say(alice, room_id, f"m{i}") for i in range(3)]
    await wait_for_message(bob, room_id, "m2")
    sent += [await say(bob, room_id, f"m{i}") for i in range(3, 6)]
    await wait_for_message(alice, room_id, "m5")

    await purge(admin, room_id, sent[-1])
    events = a.hs.storage.events
    assert await events.get_event(sent[3]) is None  # remote: deleted
    kept = await events.get_event(sent[0])  # local: out of the timeline
    assert kept is not None and kept.outlier
    resp = await alice.get(f"{V3}/sync")
    tl = resp.json["rooms"]["join"][room_id]["timeline"]
    assert bodies(tl["events"]) == ["m5"], tl

    # Paging back on A fetches the purged history from B again, down to the create.
    history, _ = await paginate_back(alice, room_id, None, 20)
    assert bodies(history) == [f"m{i}" for i in reversed(range(6))]
    assert history[-1]["type"] == "m.room.create"

    # New events both ways, built on the purged room's extremities.
    await say(alice, room_id, "mA")
    await wait_for_message(bob, room_id, "mA")
    await say(bob, room_id, "mB")
    await wait_for_message(alice, room_id, "mB")
    await eventually_equal_state(alice, bob, room_id)


@pytest_twisted.ensureDeferred
async def test_a_server_joining_after_a_purge_gets_state_and_pages_back_cleanly(
    two_servers: tuple[RunningServer, RunningServer],
) -> None:
    a, b = two_servers
    admin = await admin_of(a)
    alice = a.client()
    await alice.register("alice")
    resp = await alice.post(f"{V3}/createRoom", {"preset": "public_chat", "name": "Purged"})
    room_id = str(resp.json["room_id"])
    sent = [await say(alice, room_id, f"m{i}") for i in range(4)]
    await purge(admin, room_id, sent[-1], delete_local_events=True)

    bob = b.client()
    await bob.register("bob")
    await join_from_b(bob, room_id, a)
    await eventually_equal_state(alice, bob, room_id)
    resp = await bob.get(f"{V3}/rooms/{q(room_id)}/state/m.room.name/")
    assert resp.code == 200 and resp.json["name"] == "Purged", resp
    # B's history holds nothing A purged, and paging back ends.
    history, _ = await paginate_back(bob, room_id, None, 5)
    assert set(bodies(history)) <= {"m3"}, bodies(history)
    await say(bob, room_id, "mB")
    await wait_for_message(alice, room_id, "mB")
    await say(alice, room_id, "mA")
    await wait_for_message(bob, room_id, "mA")
