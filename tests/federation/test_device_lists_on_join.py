"""Device lists pushed on join: a server newly sharing a room with a user learns of
their devices at once, without a /keys/query first."""

from __future__ import annotations

import pytest_twisted
from twisted.internet import reactor

from tests.e2ee.helpers import V3, query
from tests.federation.test_e2ee_federation import sync, user_with_keys
from tests.federation.test_two_servers import sleep
from tests.support.client import q
from tests.support.server import RunningServer


@pytest_twisted.ensureDeferred
async def test_join_announces_devices_to_the_new_server(
    two_servers: tuple[RunningServer, RunningServer],
) -> None:
    a, b = two_servers
    alice, alice_device = await user_with_keys(a, "alice")
    bob, bob_device = await user_with_keys(b, "bob")
    alice_id, bob_id = alice.user_id or "", bob.user_id or ""
    resp = await bob.post(f"{V3}/createRoom", {"preset": "public_chat"})
    assert resp.code == 200, resp
    room_id = resp.json["room_id"]
    since = (await sync(bob))["next_batch"]

    resp = await alice.post(f"{V3}/join/{q(room_id)}", {}, params={"server_name": b.hs.server_name})
    assert resp.code == 200, resp

    changed = False
    deadline = reactor.seconds() + 20
    while not changed and reactor.seconds() < deadline:
        body = await sync(bob, since, timeout_ms=1000)
        since = body["next_batch"]
        changed = alice_id in body.get("device_lists", {}).get("changed", [])
    assert changed, "bob was never told about alice's devices"

    # Both servers hold the other's list without any /keys/query having been made.
    for _ in range(100):
        on_b = await b.hs.storage.device_federation.get_remote_lists([alice_id])
        on_a = await a.hs.storage.device_federation.get_remote_lists([bob_id])
        if alice_id in on_b and bob_id in on_a:
            break
        await sleep(0.1)
    assert set(on_b[alice_id].devices) == {alice_device.device_id}
    assert set(on_a[bob_id].devices) == {bob_device.device_id}

    # So B answers from its cache even with A gone.
    await a.stop()
    result = await query(bob, {alice_id: []})
    assert result["failures"] == {}
    keys = result["device_keys"][alice_id][alice_device.device_id]["keys"]
    assert keys == alice_device.device_keys()["keys"]
