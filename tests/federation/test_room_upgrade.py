"""A room upgrade on one of our servers, followed by a user of the other."""

from __future__ import annotations

from typing import Any

import pytest_twisted

from tests.federation.test_spaces import alice_and_bob
from tests.federation.test_two_servers import sleep
from tests.rooms.helpers import V3, assert_error, create_room, get_state, send_raw
from tests.support.client import Client, q
from tests.support.server import RunningServer


async def wait_for_tombstone(client: Client, old: str, new: str) -> None:
    """Until ``client``'s server holds the old room's tombstone, pointing at ``new``."""
    tombstone: Any = None
    for _ in range(50):
        tombstone = await get_state(client, old, "m.room.tombstone")
        if tombstone.code == 200:
            break
        await sleep(0.1)
    assert tombstone.code == 200, tombstone
    assert tombstone.json["replacement_room"] == new


@pytest_twisted.ensureDeferred
async def test_remote_member_sees_tombstone_and_joins_the_new_room(
    two_servers: tuple[RunningServer, RunningServer],
) -> None:
    a, _ = two_servers
    alice, bob = await alice_and_bob(two_servers)
    old = await create_room(alice, room_version="11", preset="public_chat", name="Old")
    resp = await bob.post(f"{V3}/join/{q(old)}", {}, params={"via": a.hs.server_name})
    assert resp.code == 200, resp

    resp = await alice.post(f"{V3}/rooms/{q(old)}/upgrade", {"new_version": "12"})
    assert resp.code == 200, resp
    new = resp.json["replacement_room"]

    await wait_for_tombstone(bob, old, new)
    # The old room is for moderators only now, on B too.
    for _ in range(50):
        if (await get_state(bob, old, "m.room.power_levels")).json["events_default"] == 50:
            break
        await sleep(0.1)
    assert_error(await send_raw(bob, old, "hello?"), 403, "M_FORBIDDEN")

    resp = await bob.post(f"{V3}/join/{q(new)}", {}, params={"via": a.hs.server_name})
    assert resp.code == 200, resp
    create = await get_state(bob, new, "m.room.create")
    assert create.json["predecessor"] == {"room_id": old}
    assert create.json["room_version"] == "12"
    assert (await get_state(bob, new, "m.room.name")).json == {"name": "Old"}
    resp = await send_raw(bob, new, "here now")
    assert resp.code == 200, resp


@pytest_twisted.ensureDeferred
async def test_joining_the_replacement_moves_the_other_servers_directory_and_tags(
    two_servers: tuple[RunningServer, RunningServer],
) -> None:
    a, b = two_servers
    alice, bob = await alice_and_bob(two_servers)
    old = await create_room(
        alice,
        room_version="11",
        preset="public_chat",
        power_level_content_override={"users": {alice.user_id: 100, bob.user_id: 50}},
    )
    resp = await bob.post(f"{V3}/join/{q(old)}", {}, params={"via": a.hs.server_name})
    assert resp.code == 200, resp
    # B lists the room in its own directory, and bob tagged it.
    resp = await bob.put(f"{V3}/directory/list/room/{q(old)}", {"visibility": "public"})
    assert resp.code == 200, resp
    resp = await bob.put(f"{V3}/user/{q(bob.user_id)}/rooms/{q(old)}/tags/u.x", {})
    assert resp.code == 200, resp

    resp = await alice.post(f"{V3}/rooms/{q(old)}/upgrade", {"new_version": "12"})
    assert resp.code == 200, resp
    new = resp.json["replacement_room"]
    await wait_for_tombstone(bob, old, new)
    resp = await bob.post(f"{V3}/join/{q(new)}", {}, params={"via": a.hs.server_name})
    assert resp.code == 200, resp

    listed = [r["room_id"] for r in (await bob.get(f"{V3}/publicRooms")).json["chunk"]]
    assert new in listed and old not in listed
    resp = await bob.get(f"{V3}/user/{q(bob.user_id)}/rooms/{q(new)}/tags")
    assert resp.json == {"tags": {"u.x": {}}}
