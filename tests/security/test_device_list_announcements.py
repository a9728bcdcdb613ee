"""Which device list updates a server newly sharing a room with our users is sent: the
devices with keys at once (push on join), a keyless device only once it uploads keys, and
then chained by ``prev_id`` (SyTest 50federation/40devicelists.pl)."""

from __future__ import annotations

from typing import Any

import pytest_twisted

from tests.e2ee.helpers import V3, FakeDevice, upload_device
from tests.federation.test_two_servers import sleep
from tests.support.malicious_server import MaliciousServer
from tests.support.server import RunningServer

JsonDict = dict[str, Any]


def device_list_updates(peer: MaliciousServer) -> list[JsonDict]:
    return [
        edu["content"]
        for txn in peer.transactions
        for edu in txn.get("edus", [])
        if edu.get("edu_type") == "m.device_list_update"
    ]


async def wait_for_updates(peer: MaliciousServer, count: int) -> list[JsonDict]:
    for _ in range(100):
        updates = device_list_updates(peer)
        if len(updates) >= count:
            return updates
        await sleep(0.05)
    return device_list_updates(peer)


@pytest_twisted.ensureDeferred
async def test_only_devices_with_keys_are_announced_on_join(
    ours: RunningServer, attacker: MaliciousServer
) -> None:
    keyed = ours.client()
    await keyed.register("keyed")
    keyed_device = FakeDevice.of(keyed)
    await upload_device(keyed, keyed_device)
    keyless = ours.client()
    await keyless.register("keyless")
    resp = await keyed.post(f"{V3}/createRoom", {"preset": "public_chat"})
    assert resp.code == 200, resp
    room_id = resp.json["room_id"]
    assert (await keyless.post(f"{V3}/join/{room_id}", {})).code == 200

    await attacker.join(ours, room_id)
    updates = await wait_for_updates(attacker, 1)
    await sleep(0.3)  # anything else would have been sent by now
    updates = device_list_updates(attacker)
    assert [u["user_id"] for u in updates] == [keyed.user_id]
    assert updates[0]["device_id"] == keyed.device_id and updates[0]["prev_id"] == []
    assert updates[0]["keys"]["keys"] == keyed_device.device_keys()["keys"]

    # The keyless device's first keys are sent as an update, then chained.
    device = FakeDevice.of(keyless)
    await upload_device(keyless, device)
    updates = await wait_for_updates(attacker, 2)
    first = updates[1]
    assert (first["user_id"], first["device_id"]) == (keyless.user_id, keyless.device_id)
    device.curve25519 = "newcurvekey"
    await upload_device(keyless, device)
    updates = await wait_for_updates(attacker, 3)
    assert updates[2]["user_id"] == keyless.user_id
    assert updates[2]["prev_id"] == [first["stream_id"]]
