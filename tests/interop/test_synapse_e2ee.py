"""End-to-end encryption keys between our server and a real Synapse."""

from __future__ import annotations

from typing import Any

import pytest_twisted
from twisted.internet import reactor

from tests.e2ee.helpers import V3, FakeDevice, claim, query, upload_device
from tests.interop.test_synapse import name, sleep, users, wait_joined
from tests.support.client import Client, q
from tests.support.server import RunningServer
from tests.support.synapse import SynapsePeer


async def query_until(
    client: Client, user_id: str, device_id: str, timeout: float = 30.0
) -> dict[str, Any]:
    """Synapse sometimes answers 503 right after a device list change: retry a while."""
    deadline = reactor.seconds() + timeout
    while True:
        resp = await client.post(f"{V3}/keys/query", {"device_keys": {user_id: []}})
        if resp.code == 200 and device_id in resp.json["device_keys"].get(user_id, {}):
            return dict(resp.json)
        if reactor.seconds() > deadline:
            raise AssertionError(f"{device_id} of {user_id} never showed: {resp}")
        await sleep(0.3)


@pytest_twisted.ensureDeferred
async def test_keys_query_and_claim_with_synapse(synapse: SynapsePeer, ours: RunningServer) -> None:
    s_user, o_user = await users(synapse, ours)
    s_id, o_id = s_user.user_id or "", o_user.user_id or ""
    s_device, o_device = FakeDevice.of(s_user), FakeDevice.of(o_user)
    await upload_device(s_user, s_device, otks=2)
    await upload_device(o_user, o_device, otks=1)

    # Ours asks Synapse (no shared room: a live /user/keys/query).
    result = await query(o_user, {s_id: []})
    assert result["failures"] == {}
    assert result["device_keys"][s_id][s_device.device_id]["keys"] == s_device.device_keys()["keys"]
    resp = await claim(o_user, {s_id: {s_device.device_id: "signed_curve25519"}})
    assert resp.code == 200 and resp.json["failures"] == {}, resp
    (key,) = resp.json["one_time_keys"][s_id][s_device.device_id].values()
    assert "key" in key

    # Synapse asks ours.
    result = await query_until(s_user, o_id, o_device.device_id)
    assert result["device_keys"][o_id][o_device.device_id]["keys"] == o_device.device_keys()["keys"]
    resp = await claim(s_user, {o_id: {o_device.device_id: "signed_curve25519"}})
    assert resp.code == 200, resp
    assert resp.json["one_time_keys"][o_id][o_device.device_id]

    # Sharing a room: ours caches Synapse's list (GET /user/devices) and follows its
    # m.device_list_update EDUs.
    resp = await o_user.post(f"{V3}/createRoom", {"preset": "public_chat"})
    room_id = resp.json["room_id"]
    resp = await s_user.post(
        f"{V3}/join/{q(room_id)}", {}, params={"server_name": ours.hs.server_name}
    )
    assert resp.code == 200, resp
    await wait_joined(o_user, room_id, s_id)
    since = (await o_user.get(f"{V3}/sync")).json["next_batch"]
    await query_until(o_user, s_id, s_device.device_id)
    assert s_id in await ours.hs.storage.device_federation.get_remote_lists([s_id])

    phone = Client(synapse.base_url)
    resp = await phone.login(s_id[1:].split(":")[0], device_id="PHONE" + name().upper())
    assert resp.code == 200, resp
    phone_device = FakeDevice.of(phone)
    await upload_device(phone, phone_device)
    deadline = reactor.seconds() + 30
    changed = False
    while not changed and reactor.seconds() < deadline:
        resp = await o_user.get(f"{V3}/sync", params={"since": since, "timeout": "1000"})
        since = resp.json["next_batch"]
        changed = s_id in resp.json.get("device_lists", {}).get("changed", [])
    assert changed, "Synapse's device list update never reached our user"
    result = await query_until(o_user, s_id, phone_device.device_id)
    assert (
        result["device_keys"][s_id][phone_device.device_id]["keys"]
        == phone_device.device_keys()["keys"]
    )
