"""Presence: PUT/GET /status, set_presence on /sync, timeouts, visibility, persistence."""

from __future__ import annotations

import time
from typing import Any

import pytest_twisted

from tests.ephemeral.helpers import (
    V3,
    assert_error,
    create_room,
    join,
    presence_events,
    restart,
    send,
    shared_room,
    sleep,
    sqlite_only,
    sync,
    user,
    with_config,
)
from tests.support.client import Client, Response, q
from tests.support.server import RunningServer

FAST = {"presence": {"sync_online_timeout": 300, "offline_timeout": 700}}


async def put_status(
    client: Client, presence: str, status_msg: str | None = None, *, target: str | None = None
) -> Response:
    body: dict[str, Any] = {"presence": presence}
    if status_msg is not None:
        body["status_msg"] = status_msg
    return await client.put(f"{V3}/presence/{q(target or client.user_id or '')}/status", body)


async def get_status(client: Client, target: Client | str) -> Response:
    user_id = target if isinstance(target, str) else target.user_id
    return await client.get(f"{V3}/presence/{q(user_id or '')}/status")


@pytest_twisted.ensureDeferred
async def test_put_and_get_own_presence(server: RunningServer) -> None:
    alice = await user(server, "alice")
    resp = await put_status(alice, "online", "Making cupcakes")
    assert resp.code == 200 and resp.json == {}, resp

    resp = await get_status(alice, alice)
    assert resp.code == 200, resp
    assert resp.json["presence"] == "online"
    assert resp.json["status_msg"] == "Making cupcakes"
    assert resp.json["currently_active"] is True
    assert 0 <= resp.json["last_active_ago"] < 5000

    # A PUT without status_msg clears it, as in Synapse.
    assert (await put_status(alice, "unavailable")).code == 200
    resp = await get_status(alice, alice)
    assert resp.json["presence"] == "unavailable"
    assert "status_msg" not in resp.json and "currently_active" not in resp.json


@pytest_twisted.ensureDeferred
async def test_presence_errors(server: RunningServer) -> None:
    alice, bob = await user(server, "alice"), await user(server, "bob")
    path = f"{V3}/presence/{q(alice.user_id or '')}/status"
    assert_error(await put_status(bob, "online", target=alice.user_id), 403, "M_FORBIDDEN")
    assert_error(await alice.put(path, {"presence": "away"}), 400, "M_INVALID_PARAM")
    assert_error(await alice.put(path, {}), 400, "M_MISSING_PARAM")
    assert_error(await alice.put(path, {"presence": "online", "status_msg": 3}), 400, "M_BAD_JSON")
    too_long = {"presence": "online", "status_msg": "x" * 5000}
    assert_error(await alice.put(path, too_long), 400, "M_TOO_LARGE")
    assert_error(await alice.request("PUT", path, raw=b"?"), 400, "M_NOT_JSON")
    assert_error(await alice.get(path, token=False), 401, "M_MISSING_TOKEN")
    # Strangers (and unknown users) may not read it; a room-mate may.
    assert_error(await get_status(bob, alice), 403, "M_FORBIDDEN")
    assert_error(await get_status(bob, "@nobody:test.local"), 403, "M_FORBIDDEN")
    await shared_room(alice, bob)
    assert (await get_status(bob, alice)).code == 200


@pytest_twisted.ensureDeferred
async def test_presence_changes_reach_room_mates_but_not_strangers(
    server: RunningServer,
) -> None:
    alice, bob, eve = [await user(server, n) for n in ("alice", "bob", "eve")]
    await shared_room(alice, bob)
    await create_room(eve)
    bob_since = (await sync(bob))["next_batch"]
    eve_since = (await sync(eve))["next_batch"]

    assert (await put_status(alice, "online", "hello")).code == 200
    body = await sync(bob, bob_since, timeout=5000)
    seen = presence_events(body)
    assert seen[alice.user_id or ""]["presence"] == "online"
    assert seen[alice.user_id or ""]["status_msg"] == "hello"
    assert seen[alice.user_id or ""]["currently_active"] is True

    body = await sync(eve, eve_since, timeout=300)
    assert alice.user_id not in presence_events(body)
    assert alice.user_id not in presence_events(await sync(eve))
    # Own presence is sent to oneself.
    assert presence_events(await sync(alice))[alice.user_id or ""]["status_msg"] == "hello"


@pytest_twisted.ensureDeferred
async def test_syncing_sets_online_unless_set_presence_says_otherwise(
    server: RunningServer,
) -> None:
    alice, bob, carol = [await user(server, n) for n in ("alice", "bob", "carol")]
    await shared_room(alice, bob, carol)

    assert (await put_status(carol, "offline")).code == 200
    await sync(carol, set_presence="offline")
    assert (await get_status(bob, carol)).json["presence"] == "offline"
    await sync(carol, set_presence="unavailable")
    assert (await get_status(bob, carol)).json["presence"] == "unavailable"

    assert (await put_status(alice, "offline")).code == 200
    bob_since = (await sync(bob))["next_batch"]
    await sync(alice)
    resp = await get_status(bob, alice)
    assert resp.json["presence"] == "online" and resp.json["currently_active"] is True
    seen = presence_events(await sync(bob, bob_since, timeout=5000))
    assert seen[alice.user_id or ""]["presence"] == "online"


@pytest_twisted.ensureDeferred
async def test_initial_sync_lists_room_mates_who_are_not_offline(server: RunningServer) -> None:
    alice, bob, carol = [await user(server, n) for n in ("alice", "bob", "carol")]
    await shared_room(alice, bob, carol)
    assert (await put_status(alice, "unavailable", "lunch")).code == 200
    assert (await put_status(carol, "offline")).code == 200

    seen = presence_events(await sync(bob))
    # Never active (joining is not activity): no last_active_ago, as in Synapse.
    assert seen[alice.user_id or ""] == {"presence": "unavailable", "status_msg": "lunch"}
    assert carol.user_id not in seen


@sqlite_only
@with_config(**FAST)
@pytest_twisted.ensureDeferred
async def test_user_whose_syncs_stop_goes_unavailable_then_offline(
    server: RunningServer,
) -> None:
    alice, bob = await user(server, "alice"), await user(server, "bob")
    await shared_room(alice, bob)
    await sync(alice)
    stopped = time.monotonic()
    since = (await sync(bob))["next_batch"]
    assert (await get_status(bob, alice)).json["presence"] == "online"  # since her sync

    # Bob keeps a sync waiting, as a client does, and notes each state he is sent.
    seen: list[tuple[str, float]] = []
    for _ in range(20):
        body = await sync(bob, since, timeout=3000)
        since = body["next_batch"]
        content = presence_events(body).get(alice.user_id or "")
        if content is not None:
            seen.append((content["presence"], time.monotonic() - stopped))
        if seen and seen[-1][0] == "offline":
            break
    states = [state for state, _ in seen]
    assert states == ["unavailable", "offline"], seen
    assert seen[0][1] >= 0.3 and seen[1][1] >= 0.7  # not before the timeouts
    assert (await get_status(bob, alice)).json["presence"] == "offline"


@sqlite_only
@with_config(presence={"sync_online_timeout": 1000, "offline_timeout": 2000})
@pytest_twisted.ensureDeferred
async def test_quick_reconnects_do_not_change_presence(server: RunningServer) -> None:
    alice, bob = await user(server, "alice"), await user(server, "bob")
    await shared_room(alice, bob)
    await sync(alice)
    bob_since = (await sync(bob))["next_batch"]

    started = time.monotonic()
    while time.monotonic() - started < 1.5:  # longer than the grace period in all
        await sleep(0.1)
        await sync(alice)
    assert (await get_status(bob, alice)).json["presence"] == "online"
    body = await sync(bob, bob_since, timeout=100)
    assert alice.user_id not in presence_events(body)


@sqlite_only
@with_config(**FAST)
@pytest_twisted.ensureDeferred
async def test_a_long_poll_keeps_the_user_online(server: RunningServer) -> None:
    alice, bob = await user(server, "alice"), await user(server, "bob")
    await shared_room(alice, bob)
    since = (await sync(alice))["next_batch"]
    await sync(alice, since, timeout=900)  # in flight for longer than both timeouts
    assert (await get_status(bob, alice)).json["presence"] == "online"


@pytest_twisted.ensureDeferred
async def test_sending_a_message_brings_an_unavailable_sender_back_online(
    server: RunningServer,
) -> None:
    alice, bob = await user(server, "alice"), await user(server, "bob")
    room = await shared_room(alice, bob)
    assert (await put_status(alice, "unavailable")).code == 200
    await send(alice, room, "back")
    for _ in range(50):  # the bump runs beside the send
        if (await get_status(bob, alice)).json["presence"] == "online":
            break
        await sleep(0.02)
    assert (await get_status(bob, alice)).json["presence"] == "online"


@pytest_twisted.ensureDeferred
async def test_activity_does_not_make_an_offline_user_online(server: RunningServer) -> None:
    # As in Synapse: creating, joining and sending only move the last active time;
    # a sync (or PUT /status) is what brings a user online.
    alice, bob = await user(server, "alice"), await user(server, "bob")
    room = await shared_room(alice, bob)
    await send(alice, room, "hello")
    await sleep(0.1)  # the bump runs beside the send
    resp = await get_status(bob, alice)
    assert resp.json["presence"] == "offline", resp
    assert resp.json["last_active_ago"] < 5000
    assert (await get_status(alice, bob)).json == {"presence": "offline"}


@pytest_twisted.ensureDeferred
async def test_room_mate_coming_online_reaches_an_incremental_sync(
    server: RunningServer,
) -> None:
    # SyTest 31sync/05presence: bob joined without ever syncing online; his first
    # plain sync is news to alice. (Joining used to count as activity, so bob was
    # online already and his sync changed nothing alice could see.)
    presence_only = {"presence": {"types": ["m.presence"]}}
    alice, bob = await user(server, "alice"), await user(server, "bob")
    await shared_room(alice, bob)
    body = await sync(alice, filter=presence_only)
    assert bob.user_id not in presence_events(body)
    since = (await sync(alice, body["next_batch"], filter=presence_only))["next_batch"]
    await sync(bob, filter=presence_only)
    body = await sync(alice, since, filter=presence_only, set_presence="offline", timeout=5000)
    assert presence_events(body)[bob.user_id or ""]["presence"] == "online"


@pytest_twisted.ensureDeferred
async def test_incremental_sync_has_presence_of_new_rooms_and_new_members(
    server: RunningServer,
) -> None:
    # As in Synapse (SyTest 31sync/03joined): everyone in a room joined within the
    # window, and everyone who joined one of the user's rooms in it, offline or never
    # seen included; once only.
    alice, bob, carol = [await user(server, n) for n in ("alice", "bob", "carol")]
    room_id = await create_room(alice, preset="public_chat")
    since = (await sync(bob, set_presence="offline"))["next_batch"]
    await join(bob, room_id)
    body = await sync(bob, since, set_presence="offline")
    assert presence_events(body) == {alice.user_id: {"presence": "offline"}}
    since = body["next_batch"]
    await join(carol, room_id)
    body = await sync(bob, since, set_presence="offline")
    assert presence_events(body) == {carol.user_id: {"presence": "offline"}}
    body = await sync(bob, body["next_batch"], set_presence="offline")
    assert presence_events(body) == {}


@pytest_twisted.ensureDeferred
async def test_status_message_survives_a_restart(
    server: RunningServer, tmp_path: Any, database: dict[str, Any]
) -> None:
    alice, bob = await user(server, "alice"), await user(server, "bob")
    await shared_room(alice, bob)
    assert (await put_status(alice, "unavailable", "on holiday")).code == 200
    since = (await sync(bob))["next_batch"]

    restarted = await restart(server, str(tmp_path), database)
    try:
        alice.base_url = bob.base_url = restarted.base_url
        resp = await get_status(bob, alice)
        assert resp.json["presence"] == "unavailable"
        assert resp.json["status_msg"] == "on holiday"
        # Tokens from before the restart keep working; new changes arrive.
        assert (await put_status(alice, "online", "back")).code == 200
        seen = presence_events(await sync(bob, since, timeout=5000))
        assert seen[alice.user_id or ""]["status_msg"] == "back"
    finally:
        await restarted.stop()


@with_config(presence={"enabled": False})
@pytest_twisted.ensureDeferred
async def test_disabled_presence_tracks_and_sends_nothing(server: RunningServer) -> None:
    alice, bob = await user(server, "alice"), await user(server, "bob")
    await shared_room(alice, bob)
    bob_since = (await sync(bob))["next_batch"]
    await sync(alice)
    assert (await put_status(alice, "online", "ignored")).code == 200

    assert (await get_status(bob, alice)).json == {"presence": "offline"}
    assert (await get_status(alice, alice)).json == {"presence": "offline"}
    body = await sync(bob, bob_since, timeout=200)
    assert body["presence"]["events"] == []
    assert (await sync(alice))["presence"]["events"] == []
    stored = await server.hs.storage.presence.get_states([alice.user_id or ""])
    assert stored == {}


@pytest_twisted.ensureDeferred
async def test_a_device_syncing_as_unavailable_does_not_flip_one_online_elsewhere(
    server: RunningServer,
) -> None:
    alice, bob = await user(server, "alice"), await user(server, "bob")
    await shared_room(alice, bob)
    phone = server.client()
    assert (await phone.login("alice")).code == 200
    await sync(alice)  # the desktop asks for online
    bob_since = (await sync(bob))["next_batch"]

    for _ in range(3):
        await sync(phone, set_presence="unavailable")
        await sync(alice)
    assert (await get_status(bob, alice)).json["presence"] == "online"
    body = await sync(bob, bob_since, timeout=100)
    assert alice.user_id not in presence_events(body)
