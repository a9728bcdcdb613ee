"""Client-side backfill: history from before our join, fetched over federation."""

from __future__ import annotations

from typing import Any

import pytest_twisted
from twisted.internet import defer, reactor

from tests.federation.test_two_servers import (
    current_state,
    eventually_equal_state,
    sleep,
    wait_for_message,
)
from tests.support.client import Client, q
from tests.support.server import RunningServer

MESSAGES = 30


async def paginate_back(
    client: Client, room_id: str, from_token: str | None, limit: int
) -> tuple[list[dict[str, Any]], list[tuple[str | None, str, str | None]]]:
    """Every event from ``from_token`` back to the start; and each page's tokens."""
    events: list[dict[str, Any]] = []
    pages: list[tuple[str | None, str, str | None]] = []
    token = from_token
    for _ in range(50):
        params = {"dir": "b", "limit": str(limit)}
        if token is not None:
            params["from"] = token
        resp = await client.get(f"/_matrix/client/v3/rooms/{q(room_id)}/messages", params=params)
        assert resp.code == 200, resp
        chunk = resp.json["chunk"]
        pages.append((token, resp.json["start"], resp.json.get("end")))
        events.extend(chunk)
        if not chunk or "end" not in resp.json:
            return events, pages
        token = resp.json["end"]
    raise AssertionError("pagination never ended")


async def alice_bob_and_a_room(a: RunningServer, b: RunningServer) -> tuple[Client, Client, str]:
    """alice on A with a public room she created, bob registered on B."""
    alice = a.client()
    await alice.register("alice")
    bob = b.client()
    await bob.register("bob")
    resp = await alice.post("/_matrix/client/v3/createRoom", {"preset": "public_chat"})
    return alice, bob, str(resp.json["room_id"])


async def join_from_b(bob: Client, room_id: str, a: RunningServer) -> None:
    resp = await bob.post(
        f"/_matrix/client/v3/join/{q(room_id)}", {}, params={"server_name": a.hs.server_name}
    )
    assert resp.code == 200, resp


def bodies(events: list[dict[str, Any]]) -> list[str]:
    return [
        e["content"]["body"]
        for e in events
        if e["type"] == "m.room.message" and e["content"]["body"].startswith("m")
    ]


@pytest_twisted.ensureDeferred
async def test_backfill_history_from_before_join(
    two_servers: tuple[RunningServer, RunningServer],
) -> None:
    a, b = two_servers
    alice = a.client()
    await alice.register("alice")
    bob = b.client()
    await bob.register("bob")
    resp = await alice.post(
        "/_matrix/client/v3/createRoom",
        {"preset": "public_chat"},
    )
    assert resp.code == 200, resp
    room_id = resp.json["room_id"]
    resp = await alice.put(
        f"/_matrix/client/v3/rooms/{q(room_id)}/state/m.room.history_visibility",
        {"history_visibility": "shared"},
    )
    assert resp.code == 200, resp
    for i in range(MESSAGES):
        resp = await alice.put(
            f"/_matrix/client/v3/rooms/{q(room_id)}/send/m.room.message/t{i}",
            {"msgtype": "m.text", "body": f"m{i}"},
        )
        assert resp.code == 200, resp

    resp = await bob.get("/_matrix/client/v3/sync")
    assert resp.code == 200, resp
    since = resp.json["next_batch"]
    await join_from_b(bob, room_id, a)
    state_before = await current_state(bob, room_id)

    # Before backfill, B holds only its join in the timeline; paginating back from the
    # join fetches everything older from A.
    events, pages = await paginate_back(bob, room_id, None, 10)
    ids = [e["event_id"] for e in events]
    assert len(ids) == len(set(ids)), "duplicate events"
    assert bodies(events) == [f"m{i}" for i in reversed(range(MESSAGES))]
    assert events[0]["type"] == "m.room.member" and events[0]["state_key"] == bob.user_id
    assert events[-1]["type"] == "m.room.create", [
        (e["type"], e.get("state_key")) for e in events[-6:]
    ]
    for from_token, start, _ in pages[1:]:
        assert start == from_token
    ends = [end for _, _, end in pages if end is not None]
    assert len(ends) == len(set(ends))

    # The same pagination again: the same events, nothing duplicated by a second backfill.
    again, _ = await paginate_back(bob, room_id, None, 7)
    assert [e["event_id"] for e in again] == ids

    # Forwards from the start gives the same history in order.
    resp = await bob.get(
        f"/_matrix/client/v3/rooms/{q(room_id)}/messages",
        params={"dir": "f", "from": "t0-0", "limit": "100"},
    )
    assert resp.code == 200, resp
    assert [e["event_id"] for e in resp.json["chunk"]] == list(reversed(ids))

    # Backfill moved neither the room's state nor its forward extremities.
    assert await current_state(bob, room_id) == state_before
    resp = await bob.put(
        f"/_matrix/client/v3/rooms/{q(room_id)}/send/m.room.message/after",
        {"msgtype": "m.text", "body": "after backfill"},
    )
    assert resp.code == 200, resp
    after_id = resp.json["event_id"]
    await wait_for_message(alice, room_id, "after backfill")
    resp = await bob.get(f"/_matrix/client/v3/rooms/{q(room_id)}/event/{q(after_id)}")
    assert resp.code == 200, resp
    resp = await alice.get(f"/_matrix/client/v3/rooms/{q(room_id)}/event/{q(after_id)}")
    assert resp.code == 200, resp

    # /sync never shows the backfilled history as new timeline events: neither
    # incrementally since before the join nor in an initial sync.
    for params in ({"since": since}, {}):
        resp = await bob.get("/_matrix/client/v3/sync", params=params)
        assert resp.code == 200, resp
        timeline = resp.json["rooms"]["join"][room_id]["timeline"]["events"]
        assert bodies(timeline) == [], timeline
        assert "after backfill" in [e["content"].get("body") for e in timeline]


@pytest_twisted.ensureDeferred
async def test_backfill_respects_history_visibility(
    two_servers: tuple[RunningServer, RunningServer],
) -> None:
    """With ``joined`` visibility, B stores the history but its user sees none of it."""
    a, b = two_servers
    alice, bob, room_id = await alice_bob_and_a_room(a, b)
    resp = await alice.put(
        f"/_matrix/client/v3/rooms/{q(room_id)}/state/m.room.history_visibility",
        {"history_visibility": "joined"},
    )
    assert resp.code == 200, resp
    for i in range(5):
        await alice.put(
            f"/_matrix/client/v3/rooms/{q(room_id)}/send/m.room.message/t{i}",
            {"msgtype": "m.text", "body": f"m{i}"},
        )
    await join_from_b(bob, room_id, a)
    events, _ = await paginate_back(bob, room_id, None, 10)
    assert bodies(events) == []
    assert events and events[0]["state_key"] == bob.user_id


@pytest_twisted.ensureDeferred
async def test_backfill_with_remote_gone_returns_what_we_hold(
    two_servers: tuple[RunningServer, RunningServer],
) -> None:
    a, b = two_servers
    alice, bob, room_id = await alice_bob_and_a_room(a, b)
    await join_from_b(bob, room_id, a)
    await a.stop()
    resp = await bob.get(
        f"/_matrix/client/v3/rooms/{q(room_id)}/messages", params={"dir": "b", "limit": "10"}
    )
    assert resp.code == 200, resp
    assert [e["event_id"] for e in resp.json["chunk"]] != []
    assert resp.json["chunk"][0]["state_key"] == bob.user_id


@pytest_twisted.ensureDeferred
async def test_room_is_not_locked_while_fetching_the_state_at_a_gap(
    two_servers: tuple[RunningServer, RunningServer],
) -> None:
    """While B waits on A's /state_ids at a gap below a backfilled batch, B's room lock
    is free: bob's own message goes out meanwhile. The history is complete after."""
    a, b = two_servers
    alice, bob, room_id = await alice_bob_and_a_room(a, b)
    resp = await alice.put(
        f"/_matrix/client/v3/rooms/{q(room_id)}/state/m.room.history_visibility",
        {"history_visibility": "shared"},
    )
    assert resp.code == 200, resp
    for i in range(MESSAGES):
        resp = await alice.put(
            f"/_matrix/client/v3/rooms/{q(room_id)}/send/m.room.message/t{i}",
            {"msgtype": "m.text", "body": f"m{i}"},
        )
        assert resp.code == 200, resp
    await join_from_b(bob, room_id, a)

    assert b.hs.federation is not None
    client = b.hs.federation.client
    real_get_json = client.get_json
    reached: defer.Deferred[None] = defer.Deferred()
    gate: defer.Deferred[None] = defer.Deferred()
    state_ids_calls = [0]

    async def gated_get_json(destination: str, path: str, *args: Any, **kw: Any) -> Any:
        if "/state_ids/" in path:
            state_ids_calls[0] += 1
            if not reached.called:
                reached.callback(None)
            await gate  # A is slow to answer
        return await real_get_json(destination, path, *args, **kw)

    client.get_json = gated_get_json  # type: ignore[method-assign]
    paging = defer.ensureDeferred(paginate_back(bob, room_id, None, 10))
    await with_timeout(reached, 20, "a /state_ids request at the gap")

    try:
        # The room lock is free: a local send completes while /state_ids is pending.
        send = bob.put(
            f"/_matrix/client/v3/rooms/{q(room_id)}/send/m.room.message/during",
            {"msgtype": "m.text", "body": "during backfill"},
        )
        resp = await with_timeout(defer.ensureDeferred(send), 10, "bob's send during backfill")
        assert resp.code == 200, resp
        assert not paging.called
    finally:
        gate.callback(None)
    events, _ = await with_timeout(paging, 60, "the pagination")
    assert state_ids_calls[0] >= 1
    assert bodies(events) == [f"m{i}" for i in reversed(range(MESSAGES))]
    assert events[-1]["type"] == "m.room.create"
    await wait_for_message(alice, room_id, "during backfill")


async def with_timeout(d: defer.Deferred[Any], seconds: float, what: str) -> Any:
    timed_out: list[bool] = []

    def _cancel() -> None:
        timed_out.append(True)
        d.cancel()

    timer = reactor.callLater(seconds, _cancel)
    try:
        return await d
    except Exception:
        if timed_out:
            raise AssertionError(f"timed out waiting for {what}") from None
        raise
    finally:
        if timer.active():
            timer.cancel()


@pytest_twisted.ensureDeferred
async def test_inbound_gap_is_filled_without_holding_the_room_lock(
    two_servers: tuple[RunningServer, RunningServer],
) -> None:
    """B misses 25 of A's events, then gets the next: /get_missing_events brings 10 and
    the state below them comes by /state_ids. While that request is pending, B's room
    lock is free (bob's message goes out), and the room ends equal on both sides."""
    a, b = two_servers
    alice, bob, room_id = await alice_bob_and_a_room(a, b)
    await join_from_b(bob, room_id, a)

    # A's transactions to B vanish (answered as if delivered) while 25 messages go out.
    assert a.hs.federation is not None and b.hs.federation is not None
    a_client = a.hs.federation.client
    real_put_json = a_client.put_json
    dropping = [True]

    async def lossy_put_json(destination: str, path: str, *args: Any, **kw: Any) -> Any:
        if dropping[0] and "/send/" in path:
            return {"pdus": {}}
        return await real_put_json(destination, path, *args, **kw)

    a_client.put_json = lossy_put_json  # type: ignore[method-assign]
    for i in range(25):
        resp = await alice.put(
            f"/_matrix/client/v3/rooms/{q(room_id)}/send/m.room.message/gap{i}",
            {"msgtype": "m.text", "body": f"gap {i}"},
        )
        assert resp.code == 200, resp
    for _ in range(100):  # until A's outbox to B is drained (into the void)
        if b.hs.server_name not in await a.hs.storage.federation.destinations_with_pending():
            break
        await sleep(0.1)
    dropping[0] = False

    b_client = b.hs.federation.client
    real_get_json = b_client.get_json
    reached: defer.Deferred[None] = defer.Deferred()
    gate: defer.Deferred[None] = defer.Deferred()

    async def gated_get_json(destination: str, path: str, *args: Any, **kw: Any) -> Any:
        if "/state_ids/" in path:
            if not reached.called:
                reached.callback(None)
            await gate  # A is slow to answer
        return await real_get_json(destination, path, *args, **kw)

    b_client.get_json = gated_get_json  # type: ignore[method-assign]
    resp = await alice.put(
        f"/_matrix/client/v3/rooms/{q(room_id)}/send/m.room.message/after",
        {"msgtype": "m.text", "body": "after the gap"},
    )
    assert resp.code == 200, resp
    await with_timeout(reached, 20, "a /state_ids request at the gap")
    try:
        send = bob.put(
            f"/_matrix/client/v3/rooms/{q(room_id)}/send/m.room.message/during",
            {"msgtype": "m.text", "body": "during the gap"},
        )
        resp = await with_timeout(defer.ensureDeferred(send), 10, "bob's send during the gap")
        assert resp.code == 200, resp
    finally:
        gate.callback(None)
    await wait_for_message(bob, room_id, "after the gap")
    await wait_for_message(alice, room_id, "during the gap")
    await eventually_equal_state(alice, bob, room_id)
