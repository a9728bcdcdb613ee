"""/sync as a live stream: long-polling, profile updates, concurrent senders, restarts."""

from __future__ import annotations

import socket
import time
from typing import Any

import pytest_twisted
from twisted.internet import defer, reactor, task

from tests.rooms.helpers import (
    V3,
    all_events,
    bodies,
    create_room,
    join,
    leave,
    send,
    send_raw,
    sync,
    sync_raw,
    timeline,
    user,
)
from tests.support.client import Client, q
from tests.support.server import RunningServer


async def sleep(seconds: float) -> None:
    await task.deferLater(reactor, seconds, lambda: None)


@pytest_twisted.ensureDeferred
async def test_long_poll_returns_as_soon_as_a_message_arrives(server: RunningServer) -> None:
    alice = await user(server, "alice")
    bob = await user(server, "bob")
    room_id = await create_room(alice, preset="public_chat")
    await join(bob, room_id)
    since = (await sync(bob))["next_batch"]

    started = time.monotonic()
    pending = defer.ensureDeferred(sync(bob, since, timeout=10_000))
    await sleep(0.2)
    assert not pending.called  # really waiting
    await send(alice, room_id, "wake up")
    body = await pending
    elapsed = time.monotonic() - started
    assert bodies(timeline(body, room_id)["events"]) == ["wake up"]
    assert elapsed < 3.0, elapsed  # far below the 10 s timeout


@pytest_twisted.ensureDeferred
async def test_long_poll_returns_empty_at_timeout(server: RunningServer) -> None:
    alice = await user(server, "alice")
    room_id = await create_room(alice)
    since = (await sync(alice))["next_batch"]
    started = time.monotonic()
    body = await sync(alice, since, timeout=400)
    elapsed = time.monotonic() - started
    assert 0.35 <= elapsed < 3.0, elapsed
    assert body["rooms"]["join"] == {}
    assert body["next_batch"] == since
    assert room_id


@pytest_twisted.ensureDeferred
async def test_long_poll_not_woken_by_other_rooms(server: RunningServer) -> None:
    alice = await user(server, "alice")
    bob = await user(server, "bob")
    bobs_room = await create_room(bob)
    alices_room = await create_room(alice)
    since = (await sync(bob))["next_batch"]
    pending = defer.ensureDeferred(sync(bob, since, timeout=600))
    await send(alice, alices_room, "not for bob")
    body = await pending
    assert body["rooms"]["join"] == {}
    assert bobs_room


@pytest_twisted.ensureDeferred
async def test_long_poll_woken_by_invite_and_account_data(server: RunningServer) -> None:
    alice = await user(server, "alice")
    bob = await user(server, "bob")
    room_id = await create_room(alice)
    since = (await sync(bob))["next_batch"]
    started = time.monotonic()
    pending = defer.ensureDeferred(sync(bob, since, timeout=10_000))
    await sleep(0.1)
    await alice.post(f"{V3}/rooms/{q(room_id)}/invite", {"user_id": bob.user_id})
    body = await pending
    assert room_id in body["rooms"]["invite"]
    assert time.monotonic() - started < 3.0

    since = body["next_batch"]
    pending = defer.ensureDeferred(sync(bob, since, timeout=10_000))
    await sleep(0.1)
    await bob.put(f"{V3}/user/{q(bob.user_id or '')}/account_data/com.example.x", {"a": 1})
    body = await pending
    assert body["account_data"]["events"] == [{"type": "com.example.x", "content": {"a": 1}}]


@pytest_twisted.ensureDeferred
async def test_displayname_change_writes_member_events_seen_in_sync(
    server: RunningServer,
) -> None:
    alice = await user(server, "alice")
    bob = await user(server, "bob")
    r1 = await create_room(alice, preset="public_chat")
    r2 = await create_room(alice, preset="public_chat")
    gone = await create_room(alice, preset="public_chat")
    for room_id in (r1, r2, gone):
        await join(bob, room_id)
    await leave(bob, gone)
    since = (await sync(alice))["next_batch"]

    resp = await bob.put(
        f"{V3}/profile/{q(bob.user_id or '')}/displayname", {"displayname": "Bobby"}
    )
    assert resp.code == 200, resp
    resp = await bob.put(
        f"{V3}/profile/{q(bob.user_id or '')}/avatar_url", {"avatar_url": "mxc://x/y"}
    )
    assert resp.code == 200, resp

    body = await sync(alice, since)
    for room_id in (r1, r2):
        events = timeline(body, room_id)["events"]
        members = [e for e in events if e["type"] == "m.room.member"]
        assert [m["state_key"] for m in members] == [bob.user_id, bob.user_id]
        assert members[0]["content"] == {"membership": "join", "displayname": "Bobby"}
        assert members[1]["content"] == {
            "membership": "join",
            "displayname": "Bobby",
            "avatar_url": "mxc://x/y",
        }
        assert members[0]["unsigned"].get("prev_content", {}).get("membership") in (
            "join",
            None,
        )
    assert gone not in body["rooms"]["join"]
    resp = await alice.get(f"{V3}/rooms/{q(r1)}/joined_members")
    assert resp.json["joined"][bob.user_id] == {
        "display_name": "Bobby",
        "avatar_url": "mxc://x/y",
    }
    # Setting the same name again writes nothing new.
    since = body["next_batch"]
    await bob.put(f"{V3}/profile/{q(bob.user_id or '')}/displayname", {"displayname": "Bobby"})
    body = await sync(alice, since)
    assert r1 not in body["rooms"]["join"]


async def _all_sync_events(client: Client, room_id: str, since: str) -> list[dict[str, Any]]:
    """Every event after ``since`` by incremental syncs (small limit: follows gaps too)."""
    out: list[dict[str, Any]] = []
    body = await sync(client, since, filter={"room": {"timeline": {"limit": 100}}})
    tl = timeline(body, room_id)
    assert tl["limited"] is False
    out += tl["events"]
    return out


@pytest_twisted.ensureDeferred
async def test_concurrent_senders_are_seen_in_one_order_everywhere(
    server: RunningServer,
) -> None:
    alice = await user(server, "alice")
    bob = await user(server, "bob")
    carol = await user(server, "carol")
    clients = [alice, bob, carol]
    room_id = await create_room(alice, preset="public_chat")
    await join(bob, room_id)
    await join(carol, room_id)
    tokens = [(await sync(c))["next_batch"] for c in clients]

    async def burst(client: Client, name: str) -> list[str]:
        ids = []
        for i in range(20):
            resp = await send_raw(client, room_id, f"{name}-{i}", txn=f"{name}-{i}")
            assert resp.code == 200, resp
            ids.append(resp.json["event_id"])
        return ids

    results = await defer.gatherResults(
        [defer.ensureDeferred(burst(c, n)) for c, n in zip(clients, ["a", "b", "c"], strict=True)]
    )
    sent = {eid for ids in results for eid in ids}
    assert len(sent) == 60

    orders = []
    for client, since in zip(clients, tokens, strict=True):
        events = await _all_sync_events(client, room_id, since)
        ids = [e["event_id"] for e in events if e["type"] == "m.room.message"]
        assert set(ids) == sent and len(ids) == 60
        orders.append(ids)
        history = [
            e["event_id"]
            for e in await all_events(client, room_id, page=25)
            if e["type"] == "m.room.message"
        ]
        assert history == ids
    assert orders[0] == orders[1] == orders[2]
    # Each sender's own messages stay in the order they were sent.
    for name in ("a", "b", "c"):
        events = await all_events(alice, room_id, page=50)
        mine = [b for b in bodies(events) if b.startswith(f"{name}-")]
        assert mine == [f"{name}-{i}" for i in range(20)]


@pytest_twisted.ensureDeferred
async def test_sync_token_survives_a_restart(server: RunningServer) -> None:
    alice = await user(server, "alice")
    bob = await user(server, "bob")
    room_id = await create_room(alice, preset="public_chat")
    await join(bob, room_id)
    await send(alice, room_id, "seen before restart")
    since = (await sync(bob))["next_batch"]
    for i in range(3):
        await send(alice, room_id, f"unseen {i}", txn=f"u{i}")

    await server.restart()
    alice2 = Client(server.base_url, alice.access_token)
    bob2 = Client(server.base_url, bob.access_token)
    alice2.user_id, alice2.device_id = alice.user_id, alice.device_id
    bob2.user_id, bob2.device_id = bob.user_id, bob.device_id

    body = await sync(bob2, since)
    got = bodies(timeline(body, room_id)["events"])
    assert got == ["unseen 0", "unseen 1", "unseen 2"]
    since = body["next_batch"]

    # A retried transaction after the restart is still the same event.
    resp = await send_raw(alice2, room_id, "unseen 2", txn="u2")
    assert resp.code == 200, resp
    body = await sync(bob2, since, timeout=200)
    assert room_id not in body["rooms"]["join"]

    pending = defer.ensureDeferred(sync(bob2, since, timeout=10_000))
    await sleep(0.1)
    await send(alice2, room_id, "after restart")
    body = await pending
    assert bodies(timeline(body, room_id)["events"]) == ["after restart"]
    assert bodies(await all_events(bob2, room_id)) == [
        "seen before restart",
        "unseen 0",
        "unseen 1",
        "unseen 2",
        "after restart",
    ]


@pytest_twisted.ensureDeferred
async def test_redacting_state_loaded_after_a_restart_redacts_current_state(
    server: RunningServer,
) -> None:
    from tests.rooms.helpers import get_state, put_state

    alice = await user(server, "alice")
    room_id = await create_room(alice, room_version="11")
    resp = await put_state(alice, room_id, "m.room.topic", {"topic": "rude"})
    topic_id = resp.json["event_id"]
    await server.restart()  # the room is reloaded from the database: nothing "recent"
    alice2 = Client(server.base_url, alice.access_token)
    alice2.user_id, alice2.device_id = alice.user_id, alice.device_id
    since = (await sync(alice2))["next_batch"]
    resp = await alice2.put(f"{V3}/rooms/{q(room_id)}/redact/{q(topic_id)}/r1", {})
    assert resp.code == 200, resp
    resp = await get_state(alice2, room_id, "m.room.topic")
    assert resp.code == 200 and resp.json == {}, resp
    resp = await alice2.get(f"{V3}/rooms/{q(room_id)}/state")
    topic = next(e for e in resp.json if e["type"] == "m.room.topic")
    assert topic["content"] == {}
    body = await sync(alice2, since, full_state=True)
    topic = next(
        e for e in body["rooms"]["join"][room_id]["state"]["events"] if e["type"] == "m.room.topic"
    )
    assert topic["content"] == {}


@pytest_twisted.ensureDeferred
async def test_members_woken_together_share_the_room_but_keep_their_own_parts(
    server: RunningServer,
) -> None:
    """One event wakes several long-polls at the same token: the room section is built
    once for them (SyncHandler's shared sections), yet the sender alone sees the
    transaction id, and each member gets their own unread counts and summary."""
    alice, bob, carol = [await user(server, n) for n in ("alice", "bob", "carol")]
    room_id = await create_room(alice, preset="public_chat")
    await join(bob, room_id)
    await join(carol, room_id)
    for n in (1, 2):  # a second round: sections cached for the first are not reused
        tokens = {c.user_id: (await sync(c))["next_batch"] for c in (alice, bob, carol)}
        # (Without presence: the first message makes alice's presence news, which would
        # wake a long-poll by itself.)
        polls = {
            c.user_id: defer.ensureDeferred(
                sync(c, tokens[c.user_id], timeout=10_000, filter={"presence": {"types": []}})
            )
            for c in (carol, bob, alice)
        }
        await sleep(0.2)
        event_id = await send(alice, room_id, "together", txn="shared-txn-" + tokens[alice.user_id])
        results = {uid: await d for uid, d in polls.items()}
        for uid, body in results.items():
            (ev,) = [e for e in timeline(body, room_id)["events"] if e["event_id"] == event_id]
            assert ev["content"]["body"] == "together"
            has_txn = "transaction_id" in ev.get("unsigned", {})
            assert has_txn == (uid == alice.user_id), (uid, ev)
            counts = body["rooms"]["join"][room_id]["unread_notifications"]
            # Own messages never count; the others were notified (3 members: .m.rule.message).
            assert counts["notification_count"] == (0 if uid == alice.user_id else n), (uid, counts)
        bob_tl = timeline(results[bob.user_id], room_id)
        carol_tl = timeline(results[carol.user_id], room_id)
        assert bob_tl == carol_tl


def _notifier(server: RunningServer) -> Any:
    assert server.hs.websockets is not None
    return server.hs.websockets.sync.notifier


async def _until(condition: Any, what: str, seconds: float = 5.0) -> None:
    for _ in range(int(seconds / 0.02)):
        if condition():
            return
        await sleep(0.02)
    raise AssertionError(f"timed out waiting until {what}")


@pytest_twisted.ensureDeferred
async def test_client_going_away_ends_its_long_poll(server: RunningServer) -> None:
    """A parked long-poll whose client disconnects leaves the notifier (waiter and
    deadline) and ends its sync hooks (the user stops counting as syncing)."""
    assert server.hs.push is not None
    server.hs.push.settings.active_grace_s = 0.0  # "syncing" only while a sync is open
    pushers = server.hs.push.pushers
    alice = await user(server, "alice")
    bob = await user(server, "bob")
    room_id = await create_room(alice, preset="public_chat")
    await join(bob, room_id)
    since = (await sync(bob))["next_batch"]
    notifier = _notifier(server)
    assert notifier.waiting_count() == 0

    host, port = server.base_url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)))
    try:
        sock.sendall(
            f"GET {V3}/sync?since={since}&timeout=60000 HTTP/1.1\r\nHost: {host}\r\n"
            f"Authorization: Bearer {bob.access_token}\r\n\r\n".encode()
        )
        await _until(lambda: notifier.waiting_count() == 1, "the long-poll is parked")
        assert pushers.is_active(bob.user_id or "")
        assert sum(len(b) for b in notifier._buckets.values()) == 1  # its deadline
    finally:
        sock.close()
    await _until(lambda: notifier.waiting_count() == 0, "the long-poll leaves the notifier")
    assert sum(len(b) for b in notifier._buckets.values()) == 0
    await _until(lambda: not pushers.is_active(bob.user_id or ""), "its sync hooks end")
    # The next event finds nobody waiting and no error; a new long-poll still works.
    pending = defer.ensureDeferred(sync(bob, since, timeout=10_000))
    await send(alice, room_id, "still here")
    assert bodies(timeline(await pending, room_id)["events"]) == ["still here"]


@pytest_twisted.ensureDeferred
async def test_a_burst_of_long_polls_waits_in_line_then_all_wake(server: RunningServer) -> None:
    """More long-polls than may build at once (each first build reading the database:
    their ``since`` is behind the account data stream) all park, and one event wakes
    every one of them."""
    from homeserver.api.client.sync import FIRST_BUILDS_AT_ONCE

    alice = await user(server, "alice")
    bob = await user(server, "bob")
    room_id = await create_room(alice, preset="public_chat")
    await join(bob, room_id)
    since = (await sync(bob))["next_batch"]
    await bob.put(f"{V3}/user/{q(bob.user_id or '')}/account_data/com.example.x", {"a": 1})
    since = (await sync(bob, since))["next_batch"]
    await alice.put(f"{V3}/user/{q(alice.user_id or '')}/account_data/com.example.y", {})
    count = FIRST_BUILDS_AT_ONCE + 8
    pending = [defer.ensureDeferred(sync(bob, since, timeout=20_000)) for _ in range(count)]
    notifier = _notifier(server)
    await _until(lambda: notifier.waiting_count() == count, "every long-poll is parked", 15)
    assert not any(p.called for p in pending)
    await send(alice, room_id, "everyone")
    results = await defer.gatherResults(pending)
    assert [bodies(timeline(r, room_id)["events"]) for r in results] == [["everyone"]] * count
    assert notifier.waiting_count() == 0


@pytest_twisted.ensureDeferred
async def test_long_poll_errors_are_answered_not_left_hanging(server: RunningServer) -> None:
    """A long-poll's build runs outside the request's coroutine: its errors still come
    back as Matrix errors, and the user stops counting as syncing."""
    assert server.hs.push is not None
    server.hs.push.settings.active_grace_s = 0.0
    bob = await user(server, "bob")
    since = (await sync(bob))["next_batch"]
    ahead = "s" + "_".join(str(int(p) + 1000) for p in since[1:].split("_"))
    started = time.monotonic()
    resp = await sync_raw(bob, ahead, timeout=10_000)
    assert resp.code == 400 and resp.json["errcode"] == "M_INVALID_PARAM", resp
    assert time.monotonic() - started < 3.0
    assert not server.hs.push.pushers.is_active(bob.user_id or "")
    assert _notifier(server).waiting_count() == 0


@pytest_twisted.ensureDeferred
async def test_long_poll_at_the_current_token_parks_and_times_out_empty(
    server: RunningServer,
) -> None:
    """A long-poll from the newest token parks without building; at its timeout the
    empty answer is built then, with the same next_batch."""
    alice = await user(server, "alice")
    room_id = await create_room(alice)
    since = (await sync(alice))["next_batch"]
    started = time.monotonic()
    body = await sync(alice, since, timeout=1500)
    elapsed = time.monotonic() - started
    assert 1.4 <= elapsed < 4.0, elapsed
    assert body["next_batch"] == since
    assert body["rooms"]["join"] == {}
    assert room_id  # the room exists; nothing happened in it
