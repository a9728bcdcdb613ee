"""End-to-end encryption across two of our servers over real HTTPS: remote key queries
and claims, to-device messages, device list updates, failures and refusals."""

from __future__ import annotations

from typing import Any

import pytest
import pytest_twisted
from twisted.internet import protocol, reactor

from federation.interfaces import FederationRequestError
from federation.setup import Federation
from tests.e2ee.helpers import (
    V3,
    FakeDevice,
    claim,
    cross_signing_set,
    query,
    random_curve25519,
    signing_upload_body,
    upload_device,
)
from tests.federation.test_two_servers import sleep
from tests.support.client import Client, q
from tests.support.server import RunningServer


def fed(server: RunningServer) -> Federation:
    assert server.hs.federation is not None
    return server.hs.federation


async def user_with_keys(
    server: RunningServer, name: str, otks: int = 0
) -> tuple[Client, FakeDevice]:
    client = server.client()
    await client.register(name)
    device = FakeDevice.of(client)
    await upload_device(client, device, otks=otks)
    return client, device


async def share_room(alice: Client, bob: Client, a: RunningServer) -> str:
    resp = await alice.post(f"{V3}/createRoom", {"preset": "public_chat"})
    assert resp.code == 200, resp
    room_id = str(resp.json["room_id"])
    resp = await bob.post(f"{V3}/join/{q(room_id)}", {}, params={"server_name": a.hs.server_name})
    assert resp.code == 200, resp
    return room_id


async def sync(client: Client, since: str | None = None, timeout_ms: int = 0) -> dict[str, Any]:
    params = {"timeout": str(timeout_ms)}
    if since:
        params["since"] = since
    resp = await client.get(f"{V3}/sync", params=params)
    assert resp.code == 200, resp
    return dict(resp.json)


async def to_device_events(
    client: Client, since: str | None, seconds: float
) -> tuple[list[Any], str]:
    """Every to-device event seen by syncing for ``seconds`` (acknowledging as we go)."""
    events: list[Any] = []
    deadline = reactor.seconds() + seconds
    while True:
        body = await sync(client, since, timeout_ms=300)
        since = body["next_batch"]
        events += body.get("to_device", {}).get("events", [])
        if reactor.seconds() > deadline:
            assert since is not None
            return events, since


@pytest_twisted.ensureDeferred
async def test_query_and_claim_keys_of_remote_user(
    two_servers: tuple[RunningServer, RunningServer],
) -> None:
    a, b = two_servers
    alice, _ = await user_with_keys(a, "alice")
    bob, bob_device = await user_with_keys(b, "bob", otks=2)
    master, ssk, usk = cross_signing_set(bob.user_id or "")
    resp = await bob.post(f"{V3}/keys/device_signing/upload", signing_upload_body(master, ssk, usk))
    assert resp.code == 200, resp

    # No shared room: asked live over /user/keys/query.
    result = await query(alice, {bob.user_id or "": []})
    assert result["failures"] == {}
    keys = result["device_keys"][bob.user_id][bob_device.device_id]
    assert keys["keys"] == bob_device.device_keys()["keys"]
    assert keys["signatures"] == bob_device.device_keys()["signatures"]
    assert result["master_keys"][bob.user_id]["keys"] == master.public_json()["keys"]
    assert bob.user_id in result["self_signing_keys"]
    assert bob.user_id not in result["user_signing_keys"]

    # Each one-time key is handed out once, then nothing is left (no fallback key).
    wanted = {bob.user_id or "": {bob_device.device_id: "signed_curve25519"}}
    claimed = []
    for _ in range(3):
        resp = await claim(alice, wanted)
        assert resp.code == 200, resp
        assert resp.json["failures"] == {}
        claimed.append(resp.json["one_time_keys"].get(bob.user_id, {}).get(bob_device.device_id))
    assert claimed[0] and claimed[1] and claimed[0] != claimed[1]
    assert not claimed[2]
    resp = await bob.post(f"{V3}/keys/upload", {})
    assert resp.json["one_time_key_counts"]["signed_curve25519"] == 0


@pytest_twisted.ensureDeferred
async def test_to_device_across_servers_once(
    two_servers: tuple[RunningServer, RunningServer],
) -> None:
    a, b = two_servers
    alice, _ = await user_with_keys(a, "alice")
    bob, _ = await user_with_keys(b, "bob")
    since = (await sync(bob))["next_batch"]

    path = f"{V3}/sendToDevice/m.test/txn1"
    body = {"messages": {bob.user_id: {bob.device_id: {"n": 1}}}}
    assert (await alice.put(path, body)).code == 200
    assert (await alice.put(path, body)).code == 200  # a client retry: same txn id
    events, since = await to_device_events(bob, since, 2.0)
    assert events == [{"type": "m.test", "sender": alice.user_id, "content": {"n": 1}}]

    # The same EDU in two transactions (a resend after a lost answer): delivered once.
    edu = {
        "edu_type": "m.direct_to_device",
        "content": {
            "sender": alice.user_id,
            "type": "m.test",
            "message_id": "resent-1",
            "messages": {bob.user_id: {"*": {"n": 2}}},
        },
    }
    # A message claiming a sender of another server is refused.
    forged = {
        "edu_type": "m.direct_to_device",
        "content": {**edu["content"], "sender": "@mallory:elsewhere.test", "message_id": "x"},
    }
    for txn in ("t1", "t2"):
        await fed(a).client.put_json(
            b.hs.server_name,
            f"/_matrix/federation/v1/send/{txn}",
            {"origin": a.hs.server_name, "origin_server_ts": 0, "pdus": [], "edus": [edu, forged]},
        )
    events, _ = await to_device_events(bob, since, 1.0)
    assert events == [{"type": "m.test", "sender": alice.user_id, "content": {"n": 2}}]


@pytest_twisted.ensureDeferred
async def test_new_remote_device_is_a_device_list_change(
    two_servers: tuple[RunningServer, RunningServer],
) -> None:
    a, b = two_servers
    alice, _ = await user_with_keys(a, "alice")
    bob, first = await user_with_keys(b, "bob")
    await share_room(alice, bob, a)
    since = (await sync(alice))["next_batch"]
    result = await query(alice, {bob.user_id or "": []})
    assert set(result["device_keys"][bob.user_id]) == {first.device_id}
    cached = await a.hs.storage.device_federation.get_remote_lists([bob.user_id or ""])
    assert bob.user_id in cached  # we share a room: the list is cached

    phone = b.client()
    resp = await phone.login("bob", device_id="PHONE", initial_device_display_name="Phone")
    assert resp.code == 200, resp
    phone_device = FakeDevice.of(phone)
    await upload_device(phone, phone_device)

    changed = False
    deadline = reactor.seconds() + 20
    while not changed and reactor.seconds() < deadline:
        body = await sync(alice, since, timeout_ms=1000)
        since = body["next_batch"]
        changed = bob.user_id in body.get("device_lists", {}).get("changed", [])
    assert changed, "alice was never told that bob's devices changed"

    for _ in range(50):
        result = await query(alice, {bob.user_id or "": []})
        if "keys" in result["device_keys"][bob.user_id].get("PHONE", {}):
            break
        await sleep(0.1)
    phone_keys = result["device_keys"][bob.user_id]["PHONE"]
    assert phone_keys["keys"] == phone_device.device_keys()["keys"]
    # As Synapse by default (allow_device_name_lookup_over_federation): no names.
    assert "device_display_name" not in phone_keys.get("unsigned", {})
    assert set(result["device_keys"][bob.user_id]) == {first.device_id, "PHONE"}

    # Applied from EDUs (prev_id chain), answered from the cache.
    cached = await a.hs.storage.device_federation.get_remote_lists([bob.user_id or ""])
    served = await fed(a).client.get_json(
        b.hs.server_name, f"/_matrix/federation/v1/user/devices/{q(bob.user_id or '')}"
    )
    assert cached[bob.user_id or ""].stream_id == served["stream_id"]
    assert {d["device_id"] for d in served["devices"]} == {first.device_id, "PHONE"}

    # New cross-signing keys reach A's cache as an m.signing_key_update.
    master, ssk, usk = cross_signing_set(bob.user_id or "")
    resp = await bob.post(f"{V3}/keys/device_signing/upload", signing_upload_body(master, ssk, usk))
    assert resp.code == 200, resp
    for _ in range(50):
        result = await query(alice, {bob.user_id or "": []})
        if bob.user_id in result["master_keys"]:
            break
        await sleep(0.1)
    assert result["master_keys"][bob.user_id]["keys"] == master.public_json()["keys"]
    assert result["self_signing_keys"][bob.user_id]["keys"] == ssk.public_json()["keys"]

    # Deleting the device reaches A as well.
    resp = await bob.post(
        f"{V3}/delete_devices",
        {
            "devices": ["PHONE"],
            "auth": {
                "type": "m.login.password",
                "identifier": {"type": "m.id.user", "user": "bob"},
                "password": "correct horse",
            },
        },
    )
    assert resp.code == 200, resp
    for _ in range(50):
        cached = await a.hs.storage.device_federation.get_remote_lists([bob.user_id or ""])
        if "PHONE" not in cached[bob.user_id or ""].devices:
            break
        await sleep(0.1)
    assert "PHONE" not in cached[bob.user_id or ""].devices


@pytest_twisted.ensureDeferred
async def test_key_upload_returns_once_room_mates_servers_have_it(
    two_servers: tuple[RunningServer, RunningServer],
) -> None:
    # SyTest 41end-to-end-keys/06-device-lists ("If remote user leaves room we no
    # longer receive device updates") syncs right after a remote key upload returns
    # and expects the change: the upload waits for the update to be accepted.
    a, b = two_servers
    alice, _ = await user_with_keys(a, "alice")
    bob, device = await user_with_keys(b, "bob")
    await share_room(alice, bob, a)
    result = await query(alice, {bob.user_id or "": []})  # caches bob's list on A
    assert set(result["device_keys"][bob.user_id]) == {device.device_id}
    since = (await sync(alice))["next_batch"]

    for _ in range(3):
        before = a.hs.storage.e2ee.device_lists.current_position
        device.curve25519 = random_curve25519()
        await upload_device(bob, device)
        # No wait: A applied the update before B's upload answered.
        assert a.hs.storage.e2ee.device_lists.current_position > before
        body = await sync(alice, since)
        since = body["next_batch"]
        assert body["device_lists"]["changed"] == [bob.user_id]
    result = await query(alice, {bob.user_id or "": []})
    keys = result["device_keys"][bob.user_id][device.device_id]["keys"]
    assert keys[f"curve25519:{device.device_id}"] == device.curve25519


@pytest_twisted.ensureDeferred
async def test_unreachable_servers_are_failures(
    two_servers: tuple[RunningServer, RunningServer],
) -> None:
    a, _ = two_servers
    alice, _ = await user_with_keys(a, "alice")

    # One server refuses connections; another accepts them and never answers.
    silent = reactor.listenTCP(0, protocol.Factory.forProtocol(protocol.Protocol))
    try:
        down = "@x:127.0.0.1:1"
        hung = f"@y:127.0.0.1:{silent.getHost().port}"
        started = reactor.seconds()
        resp = await alice.post(
            f"{V3}/keys/query",
            {"device_keys": {down: [], hung: [], alice.user_id: []}, "timeout": 1500},
        )
        elapsed = reactor.seconds() - started
        assert resp.code == 200, resp
        assert set(resp.json["failures"]) == {"127.0.0.1:1", hung.split(":", 1)[1]}
        assert alice.user_id in resp.json["device_keys"]  # local users still answered
        assert elapsed < 6, elapsed  # the 1.5 s timeout, not the 10 s default

        resp = await alice.post(
            f"{V3}/keys/claim",
            {"one_time_keys": {down: {"D": "signed_curve25519"}}, "timeout": 1000},
        )
        assert resp.code == 200, resp
        assert set(resp.json["failures"]) == {"127.0.0.1:1"}
        assert resp.json["one_time_keys"] == {}
    finally:
        await silent.stopListening()


@pytest_twisted.ensureDeferred
async def test_federation_key_endpoints_refuse_other_servers_users(
    two_servers: tuple[RunningServer, RunningServer],
) -> None:
    a, b = two_servers
    bob, _ = await user_with_keys(b, "bob")
    alice, _ = await user_with_keys(a, "alice")
    client = fed(a).client  # A asks B about users that are not B's
    foreign = alice.user_id or ""
    with pytest.raises(FederationRequestError) as e:
        await client.get_json(b.hs.server_name, f"/_matrix/federation/v1/user/devices/{q(foreign)}")
    assert e.value.code == 400
    with pytest.raises(FederationRequestError) as e:
        await client.post_json(
            b.hs.server_name,
            "/_matrix/federation/v1/user/keys/query",
            {"device_keys": {foreign: [], bob.user_id: []}},
        )
    assert e.value.code == 400
    with pytest.raises(FederationRequestError) as e:
        await client.post_json(
            b.hs.server_name,
            "/_matrix/federation/v1/user/keys/claim",
            {"one_time_keys": {foreign: {"X": "signed_curve25519"}}},
        )
    assert e.value.code == 400
    # B's own user is served.
    answer = await client.post_json(
        b.hs.server_name,
        "/_matrix/federation/v1/user/keys/query",
        {"device_keys": {bob.user_id: []}},
    )
    assert bob.device_id in answer["device_keys"][bob.user_id]
    assert "user_signing_keys" not in answer


@pytest.mark.parametrize("server_b_overrides", [{"allow_device_name_lookup_over_federation": True}])
@pytest_twisted.ensureDeferred
async def test_renamed_device_and_leaving_the_last_shared_room(
    two_servers: tuple[RunningServer, RunningServer],
) -> None:
    a, b = two_servers
    alice, _ = await user_with_keys(a, "alice")
    bob, bob_device = await user_with_keys(b, "bob")
    bob_id = bob.user_id or ""
    room_id = await share_room(alice, bob, a)
    await query(alice, {bob_id: []})

    resp = await bob.put(f"{V3}/devices/{bob.device_id}", {"display_name": "Laptop"})
    assert resp.code == 200, resp
    for _ in range(50):
        result = await query(alice, {bob_id: []})
        unsigned = result["device_keys"][bob_id][bob_device.device_id].get("unsigned", {})
        if unsigned.get("device_display_name") == "Laptop":
            break
        await sleep(0.1)
    assert unsigned.get("device_display_name") == "Laptop"

    # Once no room is shared, updates stop coming: the cache is dropped, queries go live.
    resp = await bob.post(f"{V3}/rooms/{q(room_id)}/leave", {})
    assert resp.code == 200, resp
    for _ in range(50):
        cached = await a.hs.storage.device_federation.get_remote_lists([bob_id])
        if not cached:
            break
        await sleep(0.1)
    assert cached == {}
    result = await query(alice, {bob_id: []})
    assert result["device_keys"][bob_id][bob_device.device_id]["unsigned"] == {
        "device_display_name": "Laptop"
    }
