"""The room writer keeps a room's memory and its tables in agreement, on both databases:
after commits the reloaded room equals the one in memory, and a failed commit drops
the room from the cache so what it applied to memory does not outlive it."""

from __future__ import annotations

import pytest
import pytest_twisted
from signedjson.key import generate_signing_key
from twisted.internet import task

from homeserver.bus import EventsPersisted, LocalBus
from homeserver.events.event import Event
from homeserver.events.room_versions import DEFAULT_ROOM_VERSION, get_room_version
from homeserver.rooms.event_creation import EventCreator
from homeserver.rooms.room_cache import LiveRoom, RoomCache
from homeserver.rooms.writer import RoomWriter
from storage.storage import Storage
from tests.storage.conftest import db, postgres_pool, storage  # noqa: F401

ALICE = "@alice:test"


def _setup(store: Storage) -> tuple[RoomCache, RoomWriter, EventCreator, list[Event]]:
    rooms = RoomCache(store.events, store.state_groups)
    committed: list[Event] = []
    bus = LocalBus()
    bus.subscribe(EventsPersisted, lambda m: committed.extend(m.events))
    writer = RoomWriter(store.events, store.state_groups, rooms, bus)
    clock = task.Clock()
    clock.advance(1_700_000_000.0)
    creator = EventCreator(
        "test", generate_signing_key("0"), clock, rooms, store.events, writer, bus
    )
    return rooms, writer, creator, committed


def _state_ids(room: LiveRoom) -> dict[tuple[str, str], str]:
    return {key: ev.event_id for key, ev in room.state.items()}


async def _new_room(creator: EventCreator) -> LiveRoom:
    version = get_room_version(DEFAULT_ROOM_VERSION)
    assert version is not None
    create = creator.build_create_event(
        version, ALICE, {"room_version": version.identifier}, "!room:test"
    )
    room = await creator.persist_create_event(create, ALICE)
    member = {"type": "m.room.member", "state_key": ALICE, "sender": ALICE}
    await creator.send(room.room_id, {**member, "content": {"membership": "join"}})
    return room


@pytest_twisted.ensureDeferred
async def test_reloaded_room_equals_the_room_in_memory(storage: Storage) -> None:  # noqa: F811
    rooms, _writer, creator, committed = _setup(storage)
    room = await _new_room(creator)
    await creator.send(
        room.room_id, {"type": "m.room.name", "state_key": "", "sender": ALICE, "content": {}}
    )
    message = await creator.send(
        room.room_id, {"type": "m.room.message", "sender": ALICE, "content": {"body": "hi"}}
    )

    orderings = [ev.stream_ordering for ev in committed]
    assert orderings == sorted(orderings) and len(committed) == 4
    assert [ev.event_id for ev in room.recent] == [ev.event_id for ev in committed]
    snapshot = await storage.events.load_room(room.room_id)
    assert snapshot is not None
    assert snapshot.current_state == _state_ids(room)
    assert snapshot.forward_extremities == room.extremities == [message.event_id]
    assert snapshot.state_group == room.state_group
    stored = await storage.state_groups.get_state_group(room.state_group)
    assert stored == _state_ids(room)
    assert room.state_group_delta_depth == await storage.state_groups.get_state_group_delta_depth(
        room.state_group
    )


@pytest_twisted.ensureDeferred
async def test_failed_commit_drops_the_room_from_memory(storage: Storage) -> None:  # noqa: F811
    rooms, writer, creator, _committed = _setup(storage)
    room = await _new_room(creator)
    message = await creator.send(
        room.room_id, {"type": "m.room.message", "sender": ALICE, "content": {"body": "hi"}}
    )
    # The same event id again: its insert fails, after memory took it as the newest.
    again = Event(event_id=message.event_id, pdu=dict(message.pdu), room_version=room.room_version)
    with pytest.raises(Exception, match="UNIQUE|unique|duplicate"):
        await writer.persist_local(room, again)

    assert rooms.get_if_loaded(room.room_id) is None
    reloaded = await rooms.get(room.room_id)
    assert reloaded is not None and reloaded is not room
    assert reloaded.extremities == [message.event_id]
    assert _state_ids(reloaded) == _state_ids(room)
    # The writer goes on: the next event is built on what was committed.
    after = await creator.send(
        room.room_id, {"type": "m.room.message", "sender": ALICE, "content": {"body": "again"}}
    )
    assert after.prev_event_ids == [message.event_id]
