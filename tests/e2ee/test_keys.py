"""/keys/upload, /keys/query and /keys/claim over real HTTP, with their errors."""

from __future__ import annotations

from typing import Any

import pytest_twisted

from tests.api.helpers import assert_error, sqlite_only, uia_password
from tests.e2ee.helpers import (
    V3,
    FakeDevice,
    claim,
    query,
    random_curve25519,
    upload,
    upload_device,
)
from tests.support.client import Client
from tests.support.server import RunningServer


@pytest_twisted.ensureDeferred
async def test_upload_device_keys_then_query_returns_them_with_display_name(
    server: RunningServer, alice: Client, bob: Client
) -> None:
    device = FakeDevice.of(alice)
    resp = await client_put_display_name(alice, "Alice's phone")
    result = await upload_device(alice, device, otks=3)
    assert result == {"one_time_key_counts": {"signed_curve25519": 3}}

    body = await query(bob, {alice.user_id: []})
    assert body["failures"] == {}
    info = body["device_keys"][alice.user_id][alice.device_id]
    expected = device.device_keys()
    for key in ("user_id", "device_id", "algorithms", "keys", "signatures"):
        assert info[key] == expected[key]
    assert info["unsigned"] == {"device_display_name": "Alice's phone"}
    assert resp.code == 200


async def client_put_display_name(client: Client, name: str) -> Any:
    return await client.put(f"{V3}/devices/{client.device_id}", {"display_name": name})


@pytest_twisted.ensureDeferred
async def test_query_by_device_id_and_unknown_users_and_devices(
    server: RunningServer, alice: Client, bob: Client
) -> None:
    await upload_device(alice, FakeDevice.of(alice))
    second = server.client()
    await second.login("alice")
    await upload_device(second, FakeDevice.of(second))

    body = await query(bob, {alice.user_id: [second.device_id or ""]})
    assert list(body["device_keys"][alice.user_id]) == [second.device_id]
    everything = await query(bob, {alice.user_id: []})
    assert set(everything["device_keys"][alice.user_id]) == {alice.device_id, second.device_id}

    # Unknown users and devices are simply absent (or empty), not failures.
    body = await query(bob, {"@nobody:test.local": [], alice.user_id: ["NOPE"]})
    assert body["device_keys"] == {"@nobody:test.local": {}, alice.user_id: {}}
    assert body["failures"] == {}


@pytest_twisted.ensureDeferred
async def test_query_of_remote_user_reports_a_failure_for_its_server(
    server: RunningServer, alice: Client
) -> None:
    body = await query(alice, {"@carol:elsewhere.example": []})
    assert list(body["failures"]) == ["elsewhere.example"]
    assert body["device_keys"] == {}


@sqlite_only
@pytest_twisted.ensureDeferred
async def test_query_rejects_malformed_requests(server: RunningServer, alice: Client) -> None:
    assert_error(await alice.post(f"{V3}/keys/query", {}), 400, "M_MISSING_PARAM")
    resp = await alice.post(f"{V3}/keys/query", {"device_keys": {alice.user_id: "all"}})
    assert_error(resp, 400, "M_BAD_JSON")
    resp = await alice.post(f"{V3}/keys/query", {"device_keys": {"not-a-user": []}})
    assert_error(resp, 400, "M_INVALID_PARAM")
    resp = await alice.post(f"{V3}/keys/query", {"device_keys": {}}, token=False)
    assert_error(resp, 401, "M_MISSING_TOKEN")


@sqlite_only
@pytest_twisted.ensureDeferred
async def test_upload_refuses_keys_for_another_user_or_device(
    server: RunningServer, alice: Client
) -> None:
    other_user = FakeDevice("@mallory:test.local", alice.device_id or "")
    resp = await upload(alice, {"device_keys": other_user.device_keys()})
    assert_error(resp, 400, "M_INVALID_PARAM")
    other_device = FakeDevice(alice.user_id or "", "OTHERDEVICE")
    resp = await upload(alice, {"device_keys": other_device.device_keys()})
    assert_error(resp, 400, "M_INVALID_PARAM")


@sqlite_only
@pytest_twisted.ensureDeferred
async def test_upload_checks_the_shape_of_device_keys_not_their_signatures(
    server: RunningServer, alice: Client
) -> None:
    """As Synapse (and SyTest's 'Can upload device keys'): clients verify signatures, the
    server only checks the object's shape."""
    uid, did = alice.user_id or "", alice.device_id or ""
    base = {"user_id": uid, "device_id": did, "algorithms": ["m.megolm.v1.aes-sha2"]}
    for missing in ("algorithms", "keys", "signatures"):
        keys = {**base, "keys": {f"ed25519:{did}": "k"}, "signatures": {}}
        del keys[missing]
        assert_error(await upload(alice, {"device_keys": keys}), 400, "M_BAD_JSON")
    keys = {**base, "keys": {f"ed25519:{did}": "k"}, "signatures": {uid: {"ed25519:X": 1}}}
    assert_error(await upload(alice, {"device_keys": keys}), 400, "M_BAD_JSON")
    keys = {
        **base,
        "keys": {f"ed25519:{did}": "ed25519+key", f"curve25519:{did}": "curve25519+key"},
        "signatures": {uid: {f"ed25519:{did}": "self+signature"}},
    }
    resp = await upload(alice, {"device_keys": keys, "one_time_keys": {"my_algorithm:1": "k1"}})
    assert resp.code == 200, resp.json
    assert resp.json["one_time_key_counts"]["my_algorithm"] == 1
    body = await query(alice, {uid: [did]})
    assert body["device_keys"][uid][did]["keys"] == keys["keys"]


@pytest_twisted.ensureDeferred
async def test_device_keys_can_be_replaced_and_notify_the_device_list(
    server: RunningServer, alice: Client
) -> None:
    device = FakeDevice.of(alice)
    await upload_device(alice, device)
    since = (await alice.get(f"{V3}/sync", params={"timeout": "0"})).json["next_batch"]
    # The same keys again: fine (clients re-upload).
    assert (await upload(alice, {"device_keys": device.device_keys()})).code == 200
    device.curve25519 = random_curve25519()
    assert (await upload(alice, {"device_keys": device.device_keys()})).code == 200
    body = await query(alice, {alice.user_id or "": []})
    stored = body["device_keys"][alice.user_id][alice.device_id]
    assert stored["keys"][f"curve25519:{alice.device_id}"] == device.curve25519
    sync = await alice.get(f"{V3}/sync", params={"since": since, "timeout": "0"})
    assert alice.user_id in sync.json.get("device_lists", {}).get("changed", [])


@sqlite_only
@pytest_twisted.ensureDeferred
async def test_one_time_key_validation(server: RunningServer, alice: Client) -> None:
    resp = await upload(alice, {"one_time_keys": {"nocolon": {"key": "x"}}})
    assert_error(resp, 400, "M_INVALID_PARAM")
    resp = await upload(alice, {"one_time_keys": ["not", "an", "object"]})
    assert_error(resp, 400, "M_BAD_JSON")
    resp = await upload(alice, {"fallback_keys": {"signed_curve25519:X": "unsigned"}})
    assert_error(resp, 400, "M_BAD_JSON")
    counts = await upload(alice, {})
    assert counts.json == {"one_time_key_counts": {"signed_curve25519": 0}}


@pytest_twisted.ensureDeferred
async def test_reusing_a_one_time_key_id_with_another_key_is_refused(
    server: RunningServer, alice: Client
) -> None:
    device = FakeDevice.of(alice)
    await upload_device(alice, device)
    otks = device.one_time_keys(2)
    assert (await upload(alice, {"one_time_keys": otks})).code == 200
    # The same keys again are accepted and not counted twice.
    again = await upload(alice, {"one_time_keys": otks})
    assert again.json == {"one_time_key_counts": {"signed_curve25519": 2}}
    key_id = next(iter(otks))
    clash = {key_id: device.sign({"key": random_curve25519()})}
    assert_error(await upload(alice, {"one_time_keys": clash}), 400, "M_INVALID_PARAM")


@pytest_twisted.ensureDeferred
async def test_claim_hands_out_keys_in_upload_order_then_the_fallback_key(
    server: RunningServer, alice: Client, bob: Client
) -> None:
    device = FakeDevice.of(alice)
    first = device.one_time_keys(2)
    fallback = device.fallback_key()
    await upload(
        alice,
        {"device_keys": device.device_keys(), "one_time_keys": first, "fallback_keys": fallback},
    )
    second = device.one_time_keys(1)
    await upload(alice, {"one_time_keys": second})

    wanted = {alice.user_id or "": {alice.device_id or "": "signed_curve25519"}}
    got = []
    for _ in range(5):
        resp = await claim(bob, wanted)
        assert resp.code == 200, resp
        assert resp.json["failures"] == {}
        got.append(resp.json["one_time_keys"][alice.user_id][alice.device_id])
    # Keys of one upload are equivalent: the first two claims get both, in some order.
    assert {next(iter(g)) for g in got[:2]} == set(first)
    assert all(g[k] == first[k] for g in got[:2] for k in g)
    assert got[2] == second
    # Then the fallback key, again and again (it is not consumed).
    assert got[3] == fallback and got[4] == fallback

    sync_counts = await alice.get(f"{V3}/sync")
    assert sync_counts.json["device_one_time_keys_count"] == {"signed_curve25519": 0}
    assert sync_counts.json["device_unused_fallback_key_types"] == []


@pytest_twisted.ensureDeferred
async def test_sync_reports_key_counts_and_unused_fallback_key(
    server: RunningServer, alice: Client, bob: Client
) -> None:
    first = (await alice.get(f"{V3}/sync")).json
    assert first["device_unused_fallback_key_types"] == []
    assert first["device_one_time_keys_count"] == {"signed_curve25519": 0}
    device = FakeDevice.of(alice)
    fallback = device.fallback_key()
    body = {
        "device_keys": device.device_keys(),
        "one_time_keys": device.one_time_keys(1),
        "fallback_keys": fallback,
    }
    assert (await upload(alice, body)).code == 200
    body = (await alice.get(f"{V3}/sync")).json
    assert body["device_one_time_keys_count"] == {"signed_curve25519": 1}
    assert body["device_unused_fallback_key_types"] == ["signed_curve25519"]

    wanted = {alice.user_id or "": {alice.device_id or "": "signed_curve25519"}}
    await claim(bob, wanted)
    body = (await alice.get(f"{V3}/sync")).json
    assert body["device_one_time_keys_count"] == {"signed_curve25519": 0}
    assert body["device_unused_fallback_key_types"] == ["signed_curve25519"]
    await claim(bob, wanted)  # the fallback key now
    body = (await alice.get(f"{V3}/sync")).json
    assert body["device_unused_fallback_key_types"] == []

    # Re-uploading the used key leaves it used; a new fallback key is unused again.
    assert (await upload(alice, {"fallback_keys": fallback})).code == 200
    body = (await alice.get(f"{V3}/sync")).json
    assert body["device_unused_fallback_key_types"] == []
    resp = await upload(alice, {"fallback_keys": device.fallback_key()})
    assert resp.code == 200, resp
    body = (await alice.get(f"{V3}/sync")).json
    assert body["device_unused_fallback_key_types"] == ["signed_curve25519"]


@pytest_twisted.ensureDeferred
async def test_claim_of_unknown_devices_and_remote_users(
    server: RunningServer, alice: Client, bob: Client
) -> None:
    resp = await claim(
        bob,
        {
            alice.user_id or "": {"NODEVICE": "signed_curve25519"},
            "@carol:remote.example": {"DEV": "signed_curve25519"},
        },
    )
    assert resp.code == 200, resp
    assert resp.json["one_time_keys"] == {}
    assert list(resp.json["failures"]) == ["remote.example"]


@sqlite_only
@pytest_twisted.ensureDeferred
async def test_claim_rejects_malformed_requests(server: RunningServer, alice: Client) -> None:
    assert_error(await alice.post(f"{V3}/keys/claim", {}), 400, "M_MISSING_PARAM")
    resp = await claim(alice, {alice.user_id or "": {"DEV": 5}})  # type: ignore[dict-item]
    assert_error(resp, 400, "M_BAD_JSON")
    resp = await alice.post(f"{V3}/keys/claim", {"one_time_keys": []})
    assert_error(resp, 400, "M_BAD_JSON")


@pytest_twisted.ensureDeferred
async def test_deleting_a_device_deletes_its_keys(server: RunningServer, alice: Client) -> None:
    second = server.client()
    await second.login("alice")
    await upload_device(second, FakeDevice.of(second), otks=2)
    resp = await uia_password(
        alice, "POST", f"{V3}/delete_devices", {"devices": [second.device_id]}
    )
    assert resp.code == 200, resp
    body = await query(alice, {alice.user_id or "": []})
    assert body["device_keys"][alice.user_id] == {}
    resp = await claim(alice, {alice.user_id or "": {second.device_id or "": "signed_curve25519"}})
    assert resp.json["one_time_keys"] == {}
