"""/keys/device_signing/upload and /keys/signatures/upload."""

from __future__ import annotations

from typing import Any

import pytest_twisted

from tests.api.helpers import PASSWORD, assert_error, register, sqlite_only
from tests.e2ee.helpers import (
    V3,
    CrossSigningKey,
    FakeDevice,
    cross_signing_set,
    query,
    signing_upload_body,
    upload_device,
)
from tests.rooms.helpers import create_room, join, sync
from tests.support.client import Client, Response
from tests.support.server import RunningServer

SIGNING_UPLOAD = f"{V3}/keys/device_signing/upload"
SIGNATURES_UPLOAD = f"{V3}/keys/signatures/upload"


async def upload_signing(client: Client, body: dict[str, Any]) -> Response:
    return await client.post(SIGNING_UPLOAD, body)


def password_auth(client: Client, session: str) -> dict[str, Any]:
    return {
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": client.user_id},
        "password": PASSWORD,
        "session": session,
    }


@pytest_twisted.ensureDeferred
async def test_first_upload_needs_no_uia_and_keys_are_visible_by_the_rules(
    server: RunningServer, alice: Client, bob: Client
) -> None:
    master, ssk, usk = cross_signing_set(alice.user_id or "")
    body = signing_upload_body(master, ssk, usk)
    resp = await upload_signing(alice, body)
    assert resp.code == 200 and resp.json == {}, resp

    own = await query(alice, {alice.user_id or "": []})
    assert own["master_keys"][alice.user_id] == body["master_key"]
    assert own["self_signing_keys"][alice.user_id] == body["self_signing_key"]
    assert own["user_signing_keys"][alice.user_id] == body["user_signing_key"]
    # Others never see the user-signing key.
    theirs = await query(bob, {alice.user_id or "": []})
    assert theirs["master_keys"][alice.user_id] == body["master_key"]
    assert theirs["self_signing_keys"][alice.user_id] == body["self_signing_key"]
    assert theirs["user_signing_keys"] == {}

    # The same keys again: idempotent, still no UIA.
    assert (await upload_signing(alice, body)).code == 200


@pytest_twisted.ensureDeferred
async def test_replacing_keys_needs_uia(server: RunningServer, alice: Client) -> None:
    master, ssk, usk = cross_signing_set(alice.user_id or "")
    assert (await upload_signing(alice, signing_upload_body(master, ssk, usk))).code == 200

    new_master, new_ssk, new_usk = cross_signing_set(alice.user_id or "")
    body = signing_upload_body(new_master, new_ssk, new_usk)
    challenge = await upload_signing(alice, body)
    assert challenge.code == 401, challenge
    assert {"stages": ["m.login.password"]} in challenge.json["flows"]
    # Not replaced yet.
    own = await query(alice, {alice.user_id or "": []})
    assert own["master_keys"][alice.user_id]["keys"] == {master.key_id: master.public}

    wrong = dict(body, auth={**password_auth(alice, challenge.json["session"]), "password": "x"})
    assert (await upload_signing(alice, wrong)).code == 401
    done = await upload_signing(
        alice, dict(body, auth=password_auth(alice, challenge.json["session"]))
    )
    assert done.code == 200, done
    own = await query(alice, {alice.user_id or "": []})
    assert own["master_keys"][alice.user_id]["keys"] == {new_master.key_id: new_master.public}

    # A new self-signing key alone, signed by the stored master key, also needs UIA.
    newer_ssk = CrossSigningKey(alice.user_id or "", "self_signing")
    only_ssk = {"self_signing_key": new_master.sign(newer_ssk.public_json())}
    assert (await upload_signing(alice, only_ssk)).code == 401


@sqlite_only
@pytest_twisted.ensureDeferred
async def test_signing_key_upload_errors(server: RunningServer, alice: Client) -> None:
    user_id = alice.user_id or ""
    master, ssk, usk = cross_signing_set(user_id)
    # Self-signing key without any master key.
    resp = await upload_signing(alice, {"self_signing_key": master.sign(ssk.public_json())})
    assert_error(resp, 400, "M_MISSING_PARAM")
    # Self-signing key not signed by the master key.
    body = signing_upload_body(master, ssk, usk)
    body["self_signing_key"] = usk.sign(ssk.public_json())
    assert_error(await upload_signing(alice, body), 400, "M_INVALID_SIGNATURE")
    body = signing_upload_body(master, ssk, usk)
    body["master_key"]["user_id"] = "@bob:test.local"
    assert_error(await upload_signing(alice, body), 400, "M_INVALID_PARAM")
    body = signing_upload_body(master, ssk, usk)
    body["master_key"]["usage"] = ["self_signing"]
    assert_error(await upload_signing(alice, body), 400, "M_INVALID_PARAM")
    body = signing_upload_body(master, ssk, usk)
    body["master_key"]["keys"] = {"ed25519:abc": "def"}
    assert_error(await upload_signing(alice, body), 400, "M_INVALID_PARAM")
    assert_error(await upload_signing(alice, {"master_key": "x"}), 400, "M_BAD_JSON")
    # Nothing was stored by any of these.
    own = await query(alice, {user_id: []})
    assert own["master_keys"] == {} and own["self_signing_keys"] == {}


@pytest_twisted.ensureDeferred
async def test_cross_signing_key_may_not_equal_a_device_id(
    server: RunningServer, alice: Client
) -> None:
    master, ssk, usk = cross_signing_set(alice.user_id or "")
    other = server.client()
    resp = await other.login("alice", device_id=master.public)
    assert resp.code == 200, resp
    resp = await upload_signing(alice, signing_upload_body(master, ssk, usk))
    assert_error(resp, 403, "M_FORBIDDEN")


async def _set_up(
    client: Client,
) -> tuple[FakeDevice, CrossSigningKey, CrossSigningKey, CrossSigningKey]:
    device = FakeDevice.of(client)
    await upload_device(client, device)
    master, ssk, usk = cross_signing_set(client.user_id or "")
    assert (await upload_signing(client, signing_upload_body(master, ssk, usk))).code == 200
    return device, master, ssk, usk


@pytest_twisted.ensureDeferred
async def test_signing_own_device_and_master_key(
    server: RunningServer, alice: Client, bob: Client
) -> None:
    device, master, ssk, _ = await _set_up(alice)
    user_id = alice.user_id or ""
    signed_device = ssk.sign(device.device_keys())
    signed_master = device.sign(master.public_json())
    resp = await alice.post(
        SIGNATURES_UPLOAD,
        {user_id: {alice.device_id: signed_device, master.public: signed_master}},
    )
    assert resp.code == 200 and resp.json == {"failures": {}}, resp

    seen = await query(bob, {user_id: []})
    device_sigs = seen["device_keys"][user_id][alice.device_id]["signatures"][user_id]
    assert device_sigs[ssk.key_id] == signed_device["signatures"][user_id][ssk.key_id]
    assert f"ed25519:{alice.device_id}" in device_sigs  # the device's own signature stays
    master_sigs = seen["master_keys"][user_id]["signatures"][user_id]
    key_id = f"ed25519:{alice.device_id}"
    assert master_sigs[key_id] == signed_master["signatures"][user_id][key_id]


@sqlite_only
@pytest_twisted.ensureDeferred
async def test_cross_signing_is_served_under_the_unstable_prefix(
    server: RunningServer, alice: Client
) -> None:
    """As Synapse: SyTest and older clients use /_matrix/client/unstable for both."""
    device = FakeDevice.of(alice)
    await upload_device(alice, device)
    user_id = alice.user_id or ""
    master, ssk, usk = cross_signing_set(user_id)
    unstable = "/_matrix/client/unstable/keys"
    resp = await alice.post(
        f"{unstable}/device_signing/upload", signing_upload_body(master, ssk, usk)
    )
    assert resp.code == 200, resp
    signed = ssk.sign(device.device_keys())
    resp = await alice.post(f"{unstable}/signatures/upload", {user_id: {alice.device_id: signed}})
    assert resp.code == 200 and resp.json == {"failures": {}}, resp


@pytest_twisted.ensureDeferred
async def test_bad_signatures_fail_per_key(server: RunningServer, alice: Client) -> None:
    device, master, ssk, usk = await _set_up(alice)
    user_id = alice.user_id or ""
    wrong_signer = usk.sign(device.device_keys())  # not the self-signing key
    wrong_signer["signatures"][user_id][ssk.key_id] = wrong_signer["signatures"][user_id].pop(
        usk.key_id
    )
    tampered = ssk.sign(device.device_keys())
    tampered["algorithms"] = ["m.megolm.v1.aes-sha2"]
    resp = await alice.post(
        SIGNATURES_UPLOAD,
        {
            user_id: {
                alice.device_id: wrong_signer,
                "NOSUCHDEVICE": ssk.sign({"device_id": "NOSUCHDEVICE"}),
            }
        },
    )
    assert resp.code == 200, resp
    failures = resp.json["failures"][user_id]
    assert failures[alice.device_id]["errcode"] == "M_INVALID_SIGNATURE"
    assert failures["NOSUCHDEVICE"]["errcode"] == "M_NOT_FOUND"
    resp = await alice.post(SIGNATURES_UPLOAD, {user_id: {alice.device_id: tampered}})
    assert resp.json["failures"][user_id][alice.device_id]["errcode"] == "M_INVALID_PARAM"
    # None of them were stored.
    seen = await query(alice, {user_id: []})
    assert ssk.key_id not in seen["device_keys"][user_id][alice.device_id]["signatures"][user_id]
    resp = await alice.post(SIGNATURES_UPLOAD, {user_id: ["x"]})
    assert_error(resp, 400, "M_BAD_JSON")


@pytest_twisted.ensureDeferred
async def test_signing_another_users_master_key_is_seen_only_by_the_signer(
    server: RunningServer, alice: Client, bob: Client
) -> None:
    _, _, _, alice_usk = await _set_up(alice)
    _, bob_master, _, _ = await _set_up(bob)
    _, _, _, usk = await _set_up(await register(server, "mallory"))  # someone else's
    room_id = await create_room(alice, preset="public_chat")
    assert (await join(bob, room_id)).code == 200
    alice_token = (await sync(alice))["next_batch"]
    bob_token = (await sync(bob))["next_batch"]

    bob_id = bob.user_id or ""
    signed = alice_usk.sign(bob_master.public_json())
    resp = await alice.post(SIGNATURES_UPLOAD, {bob_id: {bob_master.public: signed}})
    assert resp.code == 200 and resp.json == {"failures": {}}, resp

    mine = await query(alice, {bob_id: []})
    assert alice_usk.key_id in mine["master_keys"][bob_id]["signatures"][alice.user_id]
    for viewer in (bob, await register(server, "carol")):
        theirs = await query(viewer, {bob_id: []})
        assert alice.user_id not in theirs["master_keys"][bob_id].get("signatures", {})
    # Alice's devices re-check Bob; Bob is not told about it.
    assert bob_id in (await sync(alice, alice_token))["device_lists"]["changed"]
    assert (await sync(bob, bob_token))["device_lists"]["changed"] == []

    # A signature by someone else's user-signing key is refused.
    forged = usk.sign(bob_master.public_json())
    resp = await alice.post(SIGNATURES_UPLOAD, {bob_id: {bob_master.public: forged}})
    assert resp.json["failures"][bob_id][bob_master.public]["errcode"] == "M_INVALID_SIGNATURE"
    # Only the master key can be signed.
    resp = await alice.post(SIGNATURES_UPLOAD, {bob_id: {bob.device_id: {"x": 1}}})
    assert resp.json["failures"][bob_id][bob.device_id]["errcode"] == "M_NOT_FOUND"


@pytest_twisted.ensureDeferred
async def test_cross_signing_upload_is_a_device_list_change(
    server: RunningServer, alice: Client, bob: Client
) -> None:
    room_id = await create_room(alice, preset="public_chat")
    assert (await join(bob, room_id)).code == 200
    token = (await sync(bob))["next_batch"]
    master, ssk, usk = cross_signing_set(alice.user_id or "")
    assert (await upload_signing(alice, signing_upload_body(master, ssk, usk))).code == 200
    assert (await sync(bob, token))["device_lists"]["changed"] == [alice.user_id]
