"""Typing notifications: PUT /typing, expiry, and m.typing through /sync."""

from __future__ import annotations

import time
from typing import Any

import pytest_twisted

from tests.ephemeral.helpers import (
    assert_error,
    create_room,
    ephemeral,
    restart,
    room_path,
    send,
    shared_room,
    sqlite_only,
    sync,
    user,
)
from tests.support.client import Client, Response, q
from tests.support.server import RunningServer


async def set_typing(
    client: Client, room_id: str, typing: bool = True, timeout: int | None = 30000, **extra: Any
) -> Response:
    body: dict[str, Any] = {"typing": typing, **extra}
    if timeout is not None:
        body["timeout"] = timeout
    return await client.put(room_path(room_id, f"/typing/{q(client.user_id or '')}"), body)


def typers(body: dict[str, Any], room_id: str) -> list[str] | None:
    events = ephemeral(body, room_id, "m.typing")
    assert len(events) <= 1
    return events[0]["content"]["user_ids"] if events else None


@pytest_twisted.ensureDeferred
async def test_typing_appears_for_members_and_expires(server: RunningServer) -> None:
    alice, bob = await user(server, "alice"), await user(server, "bob")
    room = await shared_room(alice, bob)
    since = (await sync(bob))["next_batch"]

    resp = await set_typing(alice, room, timeout=200)
    assert resp.code == 200 and resp.json == {}, resp
    body = await sync(bob, since, timeout=5000)
    assert typers(body, room) == [alice.user_id]

    # The expiry wakes a waiting sync with the emptied list.
    started = time.monotonic()
    body = await sync(bob, body["next_batch"], timeout=5000)
    assert typers(body, room) == []
    assert time.monotonic() - started < 2.0


@pytest_twisted.ensureDeferred
async def test_sending_a_message_does_not_end_typing(server: RunningServer) -> None:
    # As Synapse (SyTest 31sync/11typing.pl): only the client says when typing stops.
    alice, bob = await user(server, "alice"), await user(server, "bob")
    room = await shared_room(alice, bob)
    assert (await set_typing(alice, room)).code == 200
    since = (await sync(bob))["next_batch"]

    await send(alice, room, "still typing")
    body = await sync(bob, since, timeout=5000)
    assert typers(body, room) is None  # no change to the typing list
    assert typers(await sync(bob), room) == [alice.user_id]
    assert typers(await sync(alice), room) == [alice.user_id]


@pytest_twisted.ensureDeferred
async def test_explicit_stop_and_initial_sync(server: RunningServer) -> None:
    alice, bob, carol = [await user(server, n) for n in ("alice", "bob", "carol")]
    room = await shared_room(alice, bob, carol)
    assert (await set_typing(alice, room)).code == 200
    assert (await set_typing(carol, room)).code == 200
    assert typers(await sync(bob), room) == [alice.user_id, carol.user_id]

    since = (await sync(bob))["next_batch"]
    assert (await set_typing(alice, room, typing=False, timeout=None)).code == 200
    body = await sync(bob, since, timeout=5000)
    assert typers(body, room) == [carol.user_id]
    # Stopping again changes nothing.
    assert (await set_typing(alice, room, typing=False, timeout=None)).code == 200
    body = await sync(bob, body["next_batch"], timeout=200)
    assert typers(body, room) is None


@pytest_twisted.ensureDeferred
async def test_stop_reaches_a_sync_from_before_the_join(server: RunningServer) -> None:
    # A token from before bob joined (SyTest 30rooms/20typing.pl syncs from one): the
    # room is new to that window, yet the emptied list is sent, as it changed.
    alice, bob = await user(server, "alice"), await user(server, "bob")
    before = (await sync(bob))["next_batch"]
    room = await shared_room(alice, bob)
    assert (await set_typing(alice, room)).code == 200
    assert typers(await sync(bob, before), room) == [alice.user_id]
    assert (await set_typing(alice, room, typing=False, timeout=None)).code == 200
    assert typers(await sync(bob, before), room) == []
    # A first sync: the emptied list too (as Synapse: the room had typing since start).
    assert typers(await sync(alice), room) == []


@pytest_twisted.ensureDeferred
async def test_renewing_typing_wakes_nobody(server: RunningServer) -> None:
    alice, bob = await user(server, "alice"), await user(server, "bob")
    room = await shared_room(alice, bob)
    assert (await set_typing(alice, room)).code == 200
    since = (await sync(bob))["next_batch"]

    assert (await set_typing(alice, room, timeout=60000)).code == 200
    body = await sync(bob, since, timeout=300)
    assert typers(body, room) is None
    assert body["next_batch"] == since


@pytest_twisted.ensureDeferred
async def test_typing_errors(server: RunningServer) -> None:
    alice, bob, eve = [await user(server, n) for n in ("alice", "bob", "eve")]
    room = await shared_room(alice, bob)
    path = room_path(room, f"/typing/{q(alice.user_id or '')}")

    assert_error(await bob.put(path, {"typing": True, "timeout": 1000}), 403, "M_FORBIDDEN")
    assert_error(await set_typing(eve, room), 403, "M_FORBIDDEN")
    assert_error(await set_typing(alice, "!nope:test.local"), 404, "M_NOT_FOUND")
    assert_error(await alice.put(path, {"timeout": 1000}), 400, "M_MISSING_PARAM")
    assert_error(await alice.put(path, {"typing": "yes"}), 400, "M_BAD_JSON")
    assert_error(await alice.put(path, {"typing": True, "timeout": "5"}), 400, "M_BAD_JSON")
    assert_error(await alice.put(path, {"typing": True, "timeout": -1}), 400, "M_INVALID_PARAM")
    assert_error(await alice.request("PUT", path, raw=b"{"), 400, "M_NOT_JSON")
    assert_error(await alice.put(path, {"typing": True}, token=False), 401, "M_MISSING_TOKEN")
    # Without a timeout the default applies.
    assert (await alice.put(path, {"typing": True})).code == 200


@pytest_twisted.ensureDeferred
async def test_leaving_ends_typing(server: RunningServer) -> None:
    alice, bob = await user(server, "alice"), await user(server, "bob")
    room = await shared_room(alice, bob)
    assert (await set_typing(bob, room)).code == 200
    assert (await bob.post(room_path(room, "/leave"), {})).code == 200
    assert typers(await sync(alice), room) == []  # nobody typing any more


@sqlite_only
@pytest_twisted.ensureDeferred
async def test_typing_stream_restarts_from_zero_after_a_restart(
    server: RunningServer, tmp_path: Any, database: dict[str, Any]
) -> None:
    alice, bob = await user(server, "alice"), await user(server, "bob")
    room = await shared_room(alice, bob)
    for _ in range(3):
        assert (await set_typing(alice, room, typing=True)).code == 200
        assert (await set_typing(alice, room, typing=False, timeout=None)).code == 200
    old_since = (await sync(bob))["next_batch"]

    restarted = await restart(server, str(tmp_path), database)
    try:
        alice.base_url = bob.base_url = restarted.base_url
        # A token whose typing position is ahead of the new stream still works.
        body = await sync(bob, old_since, timeout=0)
        assert typers(body, room) is None
        assert (await set_typing(alice, room)).code == 200
        assert typers(await sync(bob), room) == [alice.user_id]
    finally:
        await restarted.stop()


@pytest_twisted.ensureDeferred
async def test_typing_in_a_room_one_is_not_in_is_not_sent(server: RunningServer) -> None:
    alice, bob = await user(server, "alice"), await user(server, "bob")
    private = await create_room(alice)
    assert (await set_typing(alice, private)).code == 200
    assert private not in (await sync(bob))["rooms"]["join"]
