"""Initial /sync of an account in several rooms: the rooms' timelines, state and bundled
aggregations are read for all rooms at once, from memory or (after a restart) from the
database, and both give the same response."""

from __future__ import annotations

from typing import Any, cast

import pytest_twisted
from signedjson.key import generate_signing_key
from twisted.internet import defer, task

from homeserver.bus import LocalBus
from homeserver.events.event import Event
from homeserver.events.room_versions import DEFAULT_ROOM_VERSION, get_room_version
from homeserver.rooms.event_creation import EventCreator
from homeserver.rooms.room_cache import LiveRoom
from tests.rooms.helpers import (
    create_room,
    join,
    put_state,
    room_path,
    send,
    sync,
    user,
)
from tests.support.client import Client, q
from tests.support.server import RunningServer

# Element Web's first-sync filter (see bench/initial_sync.py).
ELEMENT = {
    "room": {
        "state": {"lazy_load_members": True},
        "timeline": {"unread_thread_notifications": True, "limit": 5},
    }
}


def joined_view(body: dict[str, Any]) -> dict[str, Any]:
    """What must not depend on where the server read it from."""
    out = {}
    for room_id, section in body["rooms"]["join"].items():
        timeline = section["timeline"]
        out[room_id] = {
            "timeline": [
                (
                    e["event_id"],
                    e.get("unsigned", {}).get("m.relations"),
                    "redacted_because" in e.get("unsigned", {}),
                )
                for e in timeline["events"]
            ],
            "limited": timeline["limited"],
            "prev_batch": timeline["prev_batch"],
            "state": sorted(e["event_id"] for e in section["state"]["events"]),
            "summary": section.get("summary"),
            "unread": section.get("unread_notifications"),
        }
    return out


def repoint(server: RunningServer, *clients: Client) -> None:
    for client in clients:
        client.base_url = server.base_url


@pytest_twisted.ensureDeferred
async def test_initial_sync_is_the_same_from_memory_and_after_a_restart(
    server: RunningServer,
) -> None:
    alice = await user(server, "alice")
    bob = await user(server, "bob")
    carol = await user(server, "carol")
    # Rooms created at once by one user: each gets its own id.
    rooms = list(
        await defer.gatherResults(
            [
                defer.ensureDeferred(create_room(alice, preset="public_chat", name=f"r{i}"))
                for i in range(4)
            ]
        )
    )
    assert len(set(rooms)) == 4
    for room_id in rooms:
        assert (await join(bob, room_id)).code == 200
    busy, quiet, edited, late = rooms
    for i in range(8):
        await send(bob if i % 2 else alice, busy, f"busy {i}")
    await send(bob, quiet, "only one")
    original = await send(alice, edited, "tpyo")
    await send(
        alice,
        edited,
        content={
            "msgtype": "m.text",
            "body": "* typo",
            "m.new_content": {"msgtype": "m.text", "body": "typo"},
            "m.relates_to": {"rel_type": "m.replace", "event_id": original},
        },
    )
    gone = await send(bob, edited, "oops")
    resp = await bob.put(room_path(edited, f"/redact/{q(gone)}/r1"), {})
    assert resp.code == 200, resp
    # Carol joins ``late`` after history that "joined" visibility hides from her.
    resp = await put_state(
        alice, late, "m.room.history_visibility", {"history_visibility": "joined"}
    )
    assert resp.code == 200, resp
    hidden = await send(alice, late, "before carol")
    assert (await join(carol, late)).code == 200
    await send(alice, late, "after carol")

    from_memory = await sync(alice, filter=ELEMENT)
    view = joined_view(from_memory)
    assert set(view) == set(rooms)
    assert len(view[busy]["timeline"]) == 5 and view[busy]["limited"] is True
    bundled = {eid: rel for eid, rel, _ in view[edited]["timeline"] if rel}
    assert original in bundled and "m.replace" in bundled[original]
    assert any(eid == gone and redacted for eid, _, redacted in view[edited]["timeline"])
    carols = joined_view(await sync(carol, filter=ELEMENT))
    assert hidden not in [eid for eid, _, _ in carols[late]["timeline"]]

    await server.restart()  # nothing in memory: rooms and timelines come from the database
    repoint(server, alice, carol)
    after_restart = await sync(alice, filter=ELEMENT)
    assert joined_view(after_restart) == view
    # The rooms' recent events are now in memory: the same once more.
    assert joined_view(await sync(alice, filter=ELEMENT)) == view
    assert joined_view(await sync(carol, filter=ELEMENT)) == carols

    # Live events after the database's events: incremental and initial syncs see them.
    since = after_restart["next_batch"]
    new = await send(bob_after(server, bob), busy, "after the restart")
    body = await sync(alice, since, filter=ELEMENT)
    assert [e["event_id"] for e in body["rooms"]["join"][busy]["timeline"]["events"]] == [new]
    fresh = joined_view(await sync(alice, filter=ELEMENT))
    assert fresh[busy]["timeline"][-1][0] == new
    assert [eid for eid, _, _ in fresh[busy]["timeline"][:-1]] == [
        eid for eid, _, _ in view[busy]["timeline"][1:]
    ]


def bob_after(server: RunningServer, bob: Client) -> Client:
    repoint(server, bob)
    return bob


def test_create_events_in_one_millisecond_get_distinct_room_ids() -> None:
    """Where the room id is the create event's hash, two identical createRoom requests
    of one user in the same millisecond must still make two rooms."""
    clock = task.Clock()
    clock.advance(1_700_000_000.0)
    creator = EventCreator(
        "test",
        generate_signing_key("0"),
        clock,
        cast(Any, None),
        cast(Any, None),
        cast(Any, None),
        LocalBus(),
    )
    version = get_room_version(DEFAULT_ROOM_VERSION)
    assert version is not None and version.room_id_is_create_event_hash
    content = {"room_version": DEFAULT_ROOM_VERSION}
    ids = {creator.build_create_event(version, "@a:test", content, None).room_id for _ in range(5)}
    assert len(ids) == 5


def _event(n: int, event_type: str = "m.room.message", **content: Any) -> Event:
    version = get_room_version("10")
    assert version is not None
    pdu = {"type": event_type, "room_id": "!r:test", "sender": "@a:test", "content": content}
    return Event(event_id=f"$e{n}", pdu=pdu, room_version=version, stream_ordering=n)


def _room(recent: list[Event], floor: int) -> LiveRoom:
    version = get_room_version("10")
    assert version is not None
    room = LiveRoom("!r:test", version, {}, [], 1, 1, 0, recent_floor=floor)
    room.recent.extend(recent)
    return room


def test_seed_recent_puts_older_events_before_the_live_ones() -> None:
    # Loaded at position 10 (nothing held); then 11 and a redaction of 9 (applied, maybe
    # not yet committed, so 9 was read unredacted) arrived.
    redaction = _event(12, "m.room.redaction")
    redaction.pdu["redacts"] = "$e9"  # room v10: the target is a top-level key
    room = _room([_event(11), redaction], floor=10)
    read = [_event(n) for n in (7, 8, 9, 10)]
    assert room.seed_recent(read, True, 10)
    assert [ev.stream_ordering for ev in room.recent] == [7, 8, 9, 10, 11, 12]
    assert room.recent_floor == 6  # older than 7 may exist: not held
    assert read[2].redacted_by == "$e12"
    # All of the room's events: nothing is missing below them.
    room = _room([_event(11)], floor=10)
    assert room.seed_recent([_event(n) for n in (1, 2)], False, 10)
    assert room.recent_floor == 0


def test_seed_recent_refuses_gaps_and_keeps_to_its_size() -> None:
    room = _room([_event(31)], floor=30)
    assert not room.seed_recent([_event(n) for n in (20, 21)], True, 25)  # 26..30 unknown
    assert list(room.recent) == [room.recent[0]] and room.recent_floor == 30
    full = _room([], floor=1000)
    maxlen = full.recent.maxlen or 0
    full.recent.extend(_event(1000 + i) for i in range(1, maxlen - 1))
    assert full.seed_recent([_event(n) for n in range(990, 1001)], False, 1000)
    assert len(full.recent) == maxlen
    assert [ev.stream_ordering for ev in list(full.recent)[:2]] == [999, 1000]
    assert full.recent_floor == 998  # cut to fit: older ones are not held


@pytest_twisted.ensureDeferred
async def test_batched_room_reads_match_the_per_room_ones(server: RunningServer) -> None:
    alice = await user(server, "alice")
    rooms = [await create_room(alice, preset="public_chat") for _ in range(3)]
    for i in range(7):
        await send(alice, rooms[0], f"m{i}")
    await put_state(alice, rooms[1], "m.room.topic", {"topic": "t"})
    store = server.hs.storage.events
    position = store.stream.current_position
    unknown = "!nope:test"

    loaded = await store.load_rooms([*rooms, unknown])
    assert set(loaded) == set(rooms)
    for room_id in rooms:
        one = await store.load_room(room_id)
        assert one is not None and one.state_group is not None
        snapshot, depth = loaded[room_id]
        assert snapshot == one
        assert depth == await server.hs.storage.state_groups.get_state_group_delta_depth(
            one.state_group
        )

    for limit in (0, 3, 100):
        latest = await store.get_rooms_latest_events([*rooms, unknown], position, limit)
        assert latest[unknown] == ([], False)
        for room_id in rooms:
            events, cut = await store.get_room_events_between(room_id, 0, position, limit)
            got, got_cut = latest[room_id]
            assert [e.event_id for e in got] == [e.event_id for e in events]
            assert got_cut == cut
    # Up to an older position only.
    old = (await store.get_room_events_between(rooms[0], 0, position, 3))[0][0].stream_ordering
    got, _ = (await store.get_rooms_latest_events([rooms[0]], old, 2))[rooms[0]]
    assert got[-1].stream_ordering == old and len(got) == 2


@pytest_twisted.ensureDeferred
async def test_sends_during_a_restarts_first_initial_sync_are_not_lost(
    server: RunningServer,
) -> None:
    """Rooms being loaded for an initial sync are loaded once: a send to one of them
    meanwhile waits for that load, and its event is in this sync or the next."""
    alice = await user(server, "alice")
    bob = await user(server, "bob")
    rooms = [await create_room(alice, preset="public_chat") for _ in range(6)]
    for room_id in rooms:
        assert (await join(bob, room_id)).code == 200
        await send(bob, room_id, "before")
    await server.restart()
    repoint(server, alice, bob)
    sends = [defer.ensureDeferred(send(bob, room_id, "during")) for room_id in rooms]
    first = await sync(alice, filter=ELEMENT)
    sent = list(await defer.gatherResults(sends))
    seen = {
        e["event_id"]
        for section in first["rooms"]["join"].values()
        for e in section["timeline"]["events"]
    }
    later = await sync(alice, first["next_batch"], filter=ELEMENT, timeout=0)
    seen |= {
        e["event_id"]
        for section in later["rooms"]["join"].values()
        for e in section["timeline"]["events"]
    }
    assert set(sent) <= seen
    # And each room's state in memory is whole: a further send works, seen live.
    since = later["next_batch"]
    last = await send(bob, rooms[0], "after")
    body = await sync(alice, since, filter=ELEMENT, timeout=0)
    assert [e["event_id"] for e in body["rooms"]["join"][rooms[0]]["timeline"]["events"]] == [last]


@pytest_twisted.ensureDeferred
async def test_initial_sync_keeps_a_short_room_timeline_whole(server: RunningServer) -> None:
    """A room read from the database with fewer events than the timeline limit (10 by
    default) comes whole: its first events were once cut as if it had more."""
    alice = await user(server, "alice")
    rooms = []
    for _ in range(2):
        room_id = await create_room(alice)
        await put_state(alice, room_id, "m.room.test", {})
        rooms.append(room_id)
        body = await sync(alice)
    for room_id in rooms:
        tl = body["rooms"]["join"][room_id]["timeline"]
        types = [e["type"] for e in tl["events"]]
        assert types[0] == "m.room.create" and types[-1] == "m.room.test", types
        assert tl["limited"] is False
