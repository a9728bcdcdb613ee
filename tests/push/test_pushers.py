"""/pushers and delivery to a real HTTP push gateway stub on loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_twisted

from tests.ephemeral.helpers import (
    V3,
    assert_error,
    room_path,
    send,
    shared_room,
    sync,
    sync_raw,
    user,
)
from tests.push.gateway import GatewayStub, sleep, start_gateway
from tests.relations.helpers import send_ok
from tests.support.client import Client, q
from tests.support.server import RunningServer


@pytest_twisted.async_yield_fixture
async def gateway() -> AsyncIterator[GatewayStub]:
    stub = await start_gateway()
    try:
        yield stub
    finally:
        await stub.stop()


def pusher_body(url: str, pushkey: str = "key-1", **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "kind": "http",
        "app_id": "com.example.app",
        "app_display_name": "Example",
        "device_display_name": "Phone",
        "pushkey": pushkey,
        "lang": "en",
        "data": {"url": url, "custom": "kept"},
    }
    body.update(extra)
    return body


async def set_pusher(client: Client, body: dict[str, Any]) -> None:
    resp = await client.post(f"{V3}/pushers/set", body)
    assert resp.code == 200 and resp.json == {}, resp


async def pushers(client: Client) -> list[dict[str, Any]]:
    resp = await client.get(f"{V3}/pushers")
    assert resp.code == 200, resp
    return list(resp.json["pushers"])


# /pushers ----------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_set_list_and_remove_pushers(server: RunningServer) -> None:
    alice = await user(server, "alice")
    assert await pushers(alice) == []
    url = "https://push.example.org/_matrix/push/v1/notify"
    await set_pusher(alice, pusher_body(url, profile_tag="tag"))
    assert await pushers(alice) == [
        {
            "pushkey": "key-1",
            "kind": "http",
            "app_id": "com.example.app",
            "app_display_name": "Example",
            "device_display_name": "Phone",
            "profile_tag": "tag",
            "lang": "en",
            "data": {"url": url, "custom": "kept"},
        }
    ]
    # Same app id and pushkey: replaced, not added.
    await set_pusher(alice, pusher_body(url, device_display_name="Tablet"))
    listed = await pushers(alice)
    assert [p["device_display_name"] for p in listed] == ["Tablet"]
    await set_pusher(alice, pusher_body(url, pushkey="key-2"))
    assert sorted(p["pushkey"] for p in await pushers(alice)) == ["key-1", "key-2"]

    await set_pusher(alice, {"kind": None, "app_id": "com.example.app", "pushkey": "key-1"})
    assert [p["pushkey"] for p in await pushers(alice)] == ["key-2"]
    # Removing a pusher that does not exist is not an error.
    await set_pusher(alice, {"kind": None, "app_id": "com.example.app", "pushkey": "nope"})


@pytest_twisted.ensureDeferred
async def test_pusher_validation(server: RunningServer) -> None:
    alice = await user(server, "alice")
    good = "https://push.example.org/_matrix/push/v1/notify"

    async def refused(body: dict[str, Any], errcode: str) -> None:
        assert_error(await alice.post(f"{V3}/pushers/set", body), 400, errcode)

    body = pusher_body(good)
    del body["lang"], body["data"]
    await refused(body, "M_MISSING_PARAM")
    body = pusher_body(good)
    del body["kind"]
    await refused(body, "M_MISSING_PARAM")
    await refused(pusher_body(good, data={}), "M_MISSING_PARAM")
    await refused(pusher_body("https://push.example.org/notify"), "M_INVALID_PARAM")
    await refused(pusher_body("ftp://push.example.org/_matrix/push/v1/notify"), "M_INVALID_PARAM")
    await refused(pusher_body(good, kind="email"), "M_INVALID_PARAM")
    await refused(pusher_body(good, app_id="x" * 65), "M_INVALID_PARAM")
    await refused(pusher_body(good, pushkey="k" * 513), "M_INVALID_PARAM")
    await refused(pusher_body(good, data="nope"), "M_BAD_JSON")
    assert await pushers(alice) == []


@pytest_twisted.ensureDeferred
async def test_append_keeps_or_takes_over_other_users_pushkeys(server: RunningServer) -> None:
    alice, bob = await user(server, "alice"), await user(server, "bob")
    url = "https://push.example.org/_matrix/push/v1/notify"
    await set_pusher(alice, pusher_body(url))
    await set_pusher(bob, pusher_body(url, append=True))
    assert len(await pushers(alice)) == len(await pushers(bob)) == 1
    await set_pusher(bob, pusher_body(url))  # append false: the key is bob's alone now
    assert await pushers(alice) == []
    assert len(await pushers(bob)) == 1


@pytest_twisted.ensureDeferred
async def test_pushers_die_with_their_device(server: RunningServer) -> None:
    alice = await user(server, "alice")
    await set_pusher(alice, pusher_body("https://p.example.org/_matrix/push/v1/notify"))
    other = server.client()
    await other.login("alice")
    assert len(await pushers(other)) == 1
    assert (await alice.post(f"{V3}/logout", {})).code == 200
    assert await pushers(other) == []


# Delivery ----------------------------------------------------------------------------------


async def room_with_pusher(
    server: RunningServer, gateway: GatewayStub, **pusher_extra: Any
) -> tuple[Client, Client, str]:
    alice = await user(server, "alice", displayname="Alice Liddell")
    bob = await user(server, "bob")
    room_id = await shared_room(alice, bob, name="Tea Party", room_alias_name="tea")
    await set_pusher(bob, pusher_body(gateway.url, **pusher_extra))
    return alice, bob, room_id


@pytest_twisted.ensureDeferred
async def test_notify_payload_is_the_push_gateway_format(
    server: RunningServer, gateway: GatewayStub
) -> None:
    alice, bob, room_id = await room_with_pusher(server, gateway)
    content = {"msgtype": "m.text", "body": "Hi Bob", "m.mentions": {"user_ids": [bob.user_id]}}
    event_id = await send_ok(alice, room_id, "m.room.message", content)
    await gateway.wait_for_events(1)
    body = gateway.received[0].body
    devices = body["notification"].pop("devices")
    assert body == {
        "notification": {
            "id": event_id,
            "event_id": event_id,
            "room_id": room_id,
            "type": "m.room.message",
            "sender": alice.user_id,
            "sender_display_name": "Alice Liddell",
            "room_name": "Tea Party",
            "room_alias": "#tea:test.local",
            "prio": "high",
            "content": content,
            "counts": {"unread": 1},
        }
    }
    assert len(devices) == 1
    device = devices[0]
    assert isinstance(device.pop("pushkey_ts"), int)
    assert device == {
        "app_id": "com.example.app",
        "pushkey": "key-1",
        "data": {"custom": "kept"},
        "tweaks": {"sound": "default", "highlight": True},
    }


@pytest_twisted.ensureDeferred
async def test_event_id_only_format_leaves_the_event_out(
    server: RunningServer, gateway: GatewayStub
) -> None:
    url_data = {"url": "", "format": "event_id_only"}
    alice, bob, room_id = await room_with_pusher(server, gateway)
    url_data["url"] = gateway.url
    await set_pusher(bob, pusher_body(gateway.url, data=url_data))
    event_id = await send(alice, room_id, "secret text")
    await gateway.wait_for_events(1)
    note = gateway.event_notifications()[0]
    assert set(note) == {"event_id", "room_id", "prio", "counts", "devices"}
    assert note["event_id"] == event_id and note["prio"] == "high"  # sound tweak (1:1 room)
    assert note["devices"][0]["data"] == {"format": "event_id_only"}


@pytest_twisted.ensureDeferred
async def test_a_failing_gateway_is_retried(server: RunningServer, gateway: GatewayStub) -> None:
    assert server.hs.push is not None
    server.hs.push.settings.initial_backoff_s = 0.05
    alice, bob, room_id = await room_with_pusher(server, gateway)
    gateway.statuses = [500, 502]
    first = await send(alice, room_id, "first")
    second = await send(alice, room_id, "second")
    await gateway.wait_for_events(2)
    assert gateway.attempts == 4
    assert [n["event_id"] for n in gateway.event_notifications()] == [first, second]
    assert [n["counts"] for n in gateway.event_notifications()] == [{"unread": 1}] * 2


SKIP_WHILE_SYNCING = {"ip_range_whitelist": ["127.0.0.0/8"], "push": {"skip_while_syncing": True}}


@pytest_twisted.ensureDeferred
async def test_pushed_while_the_user_is_syncing_by_default(
    server: RunningServer, gateway: GatewayStub
) -> None:
    """As Synapse: an online client does not hold back pushes to the user's devices."""
    alice, bob, room_id = await room_with_pusher(server, gateway)
    start = await sync(bob)
    waiting = sync_raw(bob, start["next_batch"], timeout=5000)
    await sleep(0.1)
    event_id = await send(alice, room_id, "you are online")
    assert (await waiting).code == 200
    await gateway.wait_for_events(1)
    assert gateway.event_notifications()[0]["event_id"] == event_id


@pytest_twisted.ensureDeferred
async def test_canonical_alias_names_an_unnamed_room(
    server: RunningServer, gateway: GatewayStub
) -> None:
    alice, bob, room_id = await room_with_pusher(server, gateway)
    resp = await alice.put(room_path(room_id, "/state/m.room.name"), {})
    assert resp.code == 200, resp
    await send(alice, room_id, "unnamed")
    await gateway.wait_for_events(1)
    note = gateway.event_notifications()[0]
    assert note["room_name"] == note["room_alias"] == "#tea:test.local"
    assert note["id"] == note["event_id"]


@pytest.mark.parametrize("config_overrides", [SKIP_WHILE_SYNCING])
@pytest_twisted.ensureDeferred
async def test_no_push_while_the_user_is_syncing(
    server: RunningServer, gateway: GatewayStub
) -> None:
    alice, bob, room_id = await room_with_pusher(server, gateway)
    start = await sync(bob)
    waiting = sync_raw(bob, start["next_batch"], timeout=5000)
    await sleep(0.1)
    await send(alice, room_id, "you are online")
    woke = await waiting
    assert woke.code == 200, woke
    await sleep(0.3)
    assert gateway.event_notifications() == []
    # Once the user has been away for longer than the grace period, pushes resume.
    assert server.hs.push is not None
    server.hs.push.settings.active_grace_s = 0.0
    event_id = await send(alice, room_id, "you went away")
    await gateway.wait_for_events(1)
    assert gateway.event_notifications()[0]["event_id"] == event_id


@pytest_twisted.ensureDeferred
async def test_rejected_pushkey_loses_its_pusher(
    server: RunningServer, gateway: GatewayStub
) -> None:
    alice, bob, room_id = await room_with_pusher(server, gateway)
    gateway.rejected = ["key-1"]
    await send(alice, room_id, "one")
    await gateway.wait_for_events(1)
    for _ in range(50):
        if not await pushers(bob):
            break
        await sleep(0.02)
    assert await pushers(bob) == []
    await send(alice, room_id, "two")
    await sleep(0.3)
    assert len(gateway.event_notifications()) == 1


@pytest_twisted.ensureDeferred
async def test_read_receipt_sends_the_new_badge(
    server: RunningServer, gateway: GatewayStub
) -> None:
    alice, bob, room_id = await room_with_pusher(server, gateway)
    event_id = await send(alice, room_id, "read me")
    await gateway.wait_for_events(1)
    resp = await bob.post(room_path(room_id, f"/receipt/m.read/{q(event_id)}"), {})
    assert resp.code == 200, resp
    await gateway.wait_until(lambda: len(gateway.notifications()) >= 2)
    badge = gateway.notifications()[-1]
    assert badge["counts"] == {"unread": 0} and not badge.get("event_id")
