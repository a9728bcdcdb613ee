"""``PushActionGenerator.caught_up``: a /sync woken by the fanout (which happens before
the fanout's listeners run) still waits until the new events are counted."""

from __future__ import annotations

from typing import Any

from twisted.internet import defer, task

from homeserver.events.event import Event
from homeserver.events.room_versions import get_room_version
from homeserver.push.actions import CAUGHT_UP_TIMEOUT_S, PushActionGenerator
from storage.id_generator import IdGenerator


class _NoRooms:
    def get_if_loaded(self, room_id: str) -> None:
        return None

    async def get(self, room_id: str) -> None:
        return None


class _Counts:
    def record(self, rows: Any, position: int | None = None) -> None:
        return None


class _Store:
    """The stored position is the stream's: nothing to catch up on."""

    def __init__(self, position: int) -> None:
        self.position = position

    async def get_push_actions_position(self) -> int:
        return self.position

    async def get_push_catch_up(self, after: int, up_to: int, limit: int) -> Any:
        return [], set()


def _generator(stream: IdGenerator, clock: task.Clock) -> PushActionGenerator:
    generator = PushActionGenerator(
        "test.local",
        clock,
        _NoRooms(),
        None,
        None,
        _Counts(),
        stream,  # type: ignore[arg-type]
        _Store(stream.current_position),  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]
    )
    started = defer.ensureDeferred(generator.start())
    assert started.called  # the fake store answers at once
    return generator


def _event(stream_ordering: int) -> Event:
    version = get_room_version("12")
    assert version is not None
    pdu = {"type": "m.room.message", "room_id": "!r:test.local", "sender": "@a:test.local"}
    return Event(f"$e{stream_ordering}", pdu, version, stream_ordering=stream_ordering)


def test_events_at_or_below_the_stored_position_are_already_counted() -> None:
    stream = IdGenerator(41)
    generator = _generator(stream, task.Clock())
    assert generator.caught_up().called


def test_not_caught_up_before_start() -> None:
    stream = IdGenerator(41)
    generator = PushActionGenerator(
        "test.local",
        task.Clock(),
        _NoRooms(),  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]
        _Counts(),  # type: ignore[arg-type]
        stream,
        _Store(41),  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]
    )
    assert not generator.caught_up().called  # the stored position is not read yet


def test_waits_for_the_listener_when_the_stream_moved_first() -> None:
    stream, clock = IdGenerator(10), task.Clock()
    generator = _generator(stream, clock)
    position = stream.allocate()
    stream.advance_to(position)  # the persister advances, then calls the fanout
    waiting = generator.caught_up()
    assert not waiting.called  # a sync woken by the fanout's notify gets here first
    generator.on_persisted([_event(position)])
    assert waiting.called
    assert generator.caught_up().called


def test_gives_up_after_a_timeout() -> None:
    stream, clock = IdGenerator(10), task.Clock()
    generator = _generator(stream, clock)
    stream.advance_to(stream.allocate())
    waiting = generator.caught_up()
    clock.advance(CAUGHT_UP_TIMEOUT_S - 0.1)
    assert not waiting.called
    clock.advance(0.2)
    assert waiting.called
