"""device_lists in /sync and GET /keys/changes."""

from __future__ import annotations

from typing import Any

import pytest_twisted
from twisted.internet import defer

from tests.api.helpers import assert_error, register, sqlite_only, uia_password
from tests.e2ee.helpers import V3, FakeDevice, upload_device
from tests.rooms.helpers import create_room, join, leave, sync
from tests.support.client import Client
from tests.support.server import RunningServer


def changed(body: dict[str, Any]) -> list[str]:
    return list(body["device_lists"]["changed"])


def left(body: dict[str, Any]) -> list[str]:
    return list(body["device_lists"]["left"])


async def shared_room(*clients: Client) -> str:
    room_id = await create_room(clients[0], preset="public_chat")
    for client in clients[1:]:
        assert (await join(client, room_id)).code == 200
    return room_id


@pytest_twisted.ensureDeferred
async def test_key_upload_shows_in_device_lists_of_users_sharing_a_room(
    server: RunningServer, alice: Client, bob: Client
) -> None:
    await shared_room(alice, bob)
    carol = await register(server, "carol")  # shares no room
    bob_token = (await sync(bob))["next_batch"]
    alice_token = (await sync(alice))["next_batch"]

    await upload_device(alice, FakeDevice.of(alice))
    await upload_device(carol, FakeDevice.of(carol))

    body = await sync(bob, bob_token)
    assert changed(body) == [alice.user_id]
    assert left(body) == []
    # Alice is told of her own change (her other devices need it).
    assert alice.user_id in changed(await sync(alice, alice_token))
    # Once seen, not repeated.
    assert changed(await sync(bob, body["next_batch"])) == []


@pytest_twisted.ensureDeferred
async def test_initial_sync_has_no_device_list_changes(
    server: RunningServer, alice: Client, bob: Client
) -> None:
    await shared_room(alice, bob)
    await upload_device(alice, FakeDevice.of(alice))
    body = await sync(bob)
    assert body["device_lists"] == {"changed": [], "left": []}


@pytest_twisted.ensureDeferred
async def test_waiting_sync_wakes_on_a_device_list_change(
    server: RunningServer, alice: Client, bob: Client
) -> None:
    await shared_room(alice, bob)
    token = (await sync(bob))["next_batch"]
    waiting = defer.ensureDeferred(sync(bob, token, timeout=10_000))
    await upload_device(alice, FakeDevice.of(alice))
    body = await waiting
    assert changed(body) == [alice.user_id]


@pytest_twisted.ensureDeferred
async def test_reuploading_identical_keys_is_not_a_change(
    server: RunningServer, alice: Client, bob: Client
) -> None:
    await shared_room(alice, bob)
    device = FakeDevice.of(alice)
    await upload_device(alice, device)
    token = (await sync(bob))["next_batch"]
    resp = await alice.post(f"{V3}/keys/upload", {"device_keys": device.device_keys()})
    assert resp.code == 200
    assert changed(await sync(bob, token)) == []


@pytest_twisted.ensureDeferred
async def test_new_and_deleted_devices_are_changes(
    server: RunningServer, alice: Client, bob: Client
) -> None:
    await shared_room(alice, bob)
    token = (await sync(bob))["next_batch"]
    second = server.client()
    await second.login("alice")
    body = await sync(bob, token)
    assert changed(body) == [alice.user_id]

    token = body["next_batch"]
    resp = await uia_password(alice, "DELETE", f"{V3}/devices/{second.device_id}")
    assert resp.code == 200, resp
    assert changed(await sync(bob, token)) == [alice.user_id]


@pytest_twisted.ensureDeferred
async def test_joining_and_leaving_shared_rooms(
    server: RunningServer, alice: Client, bob: Client
) -> None:
    room_id = await shared_room(alice, bob)
    carol = await register(server, "carol")
    bob_token = (await sync(bob))["next_batch"]
    carol_token = (await sync(carol))["next_batch"]

    assert (await join(carol, room_id)).code == 200
    body = await sync(bob, bob_token)
    assert changed(body) == [carol.user_id]
    bob_token = body["next_batch"]
    # Carol now shares a room with alice and bob: she should fetch their keys.
    body = await sync(carol, carol_token)
    assert {alice.user_id, bob.user_id} <= set(changed(body))
    carol_token = body["next_batch"]

    assert (await leave(carol, room_id)).code == 200
    body = await sync(bob, bob_token)
    assert left(body) == [carol.user_id]
    assert carol.user_id not in changed(body)
    body = await sync(carol, carol_token)
    assert set(left(body)) == {alice.user_id, bob.user_id}


@pytest_twisted.ensureDeferred
async def test_leaving_one_of_two_shared_rooms_is_not_left(
    server: RunningServer, alice: Client, bob: Client
) -> None:
    first = await shared_room(alice, bob)
    await shared_room(alice, bob)
    token = (await sync(bob))["next_batch"]
    assert (await leave(alice, first)).code == 200
    body = await sync(bob, token)
    assert left(body) == []


@pytest_twisted.ensureDeferred
async def test_keys_changes_between_two_sync_tokens(
    server: RunningServer, alice: Client, bob: Client
) -> None:
    room_id = await shared_room(alice, bob)
    carol = await register(server, "carol")
    start = (await sync(bob))["next_batch"]
    await upload_device(alice, FakeDevice.of(alice))
    await upload_device(carol, FakeDevice.of(carol))  # shares nothing with bob
    middle = (await sync(bob, start))["next_batch"]
    dave = await register(server, "dave")
    assert (await join(dave, room_id)).code == 200
    end = (await sync(bob, middle))["next_batch"]

    resp = await bob.get(f"{V3}/keys/changes", params={"from": start, "to": middle})
    assert resp.code == 200, resp
    assert resp.json == {"changed": [alice.user_id], "left": []}
    resp = await bob.get(f"{V3}/keys/changes", params={"from": middle, "to": end})
    assert resp.json == {"changed": [dave.user_id], "left": []}
    resp = await bob.get(f"{V3}/keys/changes", params={"from": start, "to": end})
    assert resp.json == {"changed": sorted([alice.user_id, dave.user_id]), "left": []}
    # "to" is only a hint: without it, up to now.
    resp = await bob.get(f"{V3}/keys/changes", params={"from": start})
    assert resp.json["changed"] == sorted([alice.user_id, dave.user_id])


@sqlite_only
@pytest_twisted.ensureDeferred
async def test_keys_changes_rejects_bad_tokens(server: RunningServer, alice: Client) -> None:
    assert_error(await alice.get(f"{V3}/keys/changes"), 400, "M_MISSING_PARAM")
    resp = await alice.get(f"{V3}/keys/changes", params={"from": "garbage", "to": "s1"})
    assert_error(resp, 400, "M_INVALID_PARAM")
    resp = await alice.get(f"{V3}/keys/changes", params={"from": "s1"}, token=False)
    assert_error(resp, 401, "M_MISSING_TOKEN")
