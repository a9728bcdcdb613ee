"""A revocation of guest access that comes over federation makes our guests leave."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest_twisted

from tests.federation.test_two_servers import sleep
from tests.security.test_also_seen import eventually_membership
from tests.support.client import Client, q
from tests.support.federation import two_federating_servers
from tests.support.server import RunningServer

V3 = "/_matrix/client/v3"


@pytest_twisted.async_yield_fixture
async def guest_servers(
    database: dict[str, Any], database_b: dict[str, Any], tmp_path: Any
) -> AsyncIterator[tuple[RunningServer, RunningServer]]:
    async with two_federating_servers(
        tmp_path, database, database_b, a_overrides={"allow_guest_access": True}
    ) as servers:
        yield servers


async def _state(client: Client, room_id: str, event_type: str, content: dict[str, Any]) -> Any:
    return await client.put(f"{V3}/rooms/{q(room_id)}/state/{event_type}", content)


@pytest_twisted.ensureDeferred
async def test_guests_leave_when_a_remote_user_revokes_guest_access(
    guest_servers: tuple[RunningServer, RunningServer],
) -> None:
    # As Synapse (SyTest 30rooms/13guestaccess.pl "... revocation of guest_access over
    # federation"): any new current guest_access that is not can_join, wherever sent.
    a, b = guest_servers
    alice = a.client()
    await alice.register("alice")
    carol = a.client()
    await carol.register("carol")
    bob = b.client()
    await bob.register("bob")
    resp = await alice.post(f"{V3}/createRoom", {"preset": "public_chat"})
    assert resp.code == 200, resp
    room_id = resp.json["room_id"]
    resp = await alice.get(f"{V3}/rooms/{q(room_id)}/state/m.room.power_levels")
    levels = resp.json
    levels.setdefault("users", {})[bob.user_id] = 50
    assert (await _state(alice, room_id, "m.room.power_levels", levels)).code == 200
    resp = await _state(alice, room_id, "m.room.guest_access", {"guest_access": "can_join"})
    assert resp.code == 200, resp
    server_a = (alice.user_id or "").split(":", 1)[1]
    resp = await bob.post(f"{V3}/join/{q(room_id)}", {}, params={"server_name": server_a})
    assert resp.code == 200, resp
    assert (await carol.post(f"{V3}/rooms/{q(room_id)}/join", {})).code == 200
    guest = a.client()
    resp = await guest.post(f"{V3}/register", {}, token=False, params={"kind": "guest"})
    assert resp.code == 200, resp
    guest.access_token = resp.json["access_token"]
    guest_id = resp.json["user_id"]
    assert (await guest.post(f"{V3}/rooms/{q(room_id)}/join", {})).code == 200

    for _ in range(100):  # B may not have the power levels yet
        resp = await _state(bob, room_id, "m.room.guest_access", {"guest_access": "forbidden"})
        if resp.code == 200:
            break
        await sleep(0.1)
    assert resp.code == 200, resp
    assert await eventually_membership(alice, room_id, guest_id, "leave", timeout=20)
    # Members who are not guests stay.
    assert await eventually_membership(alice, room_id, carol.user_id or "", "join", timeout=0)
