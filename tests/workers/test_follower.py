"""A reader's positions follow the writer's, but never past what its memory holds."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest_twisted
from twisted.internet import reactor, task

from homeserver.replication.follower import POLL_INTERVAL_S, StreamFollower
from storage.database import Database, make_engine
from storage.storage import Storage


@pytest_twisted.async_yield_fixture
async def storage(database: dict[str, Any]) -> AsyncIterator[Storage]:
    db = Database(make_engine(database), reactor, cp_min=1, cp_max=2)
    try:
        yield await Storage.open(db)
    finally:
        db.close()


class Writer:
    """Stands in for the main process's ``ping`` answer (the network boundary)."""

    def __init__(self) -> None:
        self.positions = {"events": 0, "receipts": 0, "presence": 0, "to_device": 0}
        self.calls = 0

    async def call(self, instance: str, endpoint: Any, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        return {"instance_name": "master", "positions": dict(self.positions)}


def _follower(storage: Storage, writer: Writer, clock: task.Clock) -> tuple[StreamFollower, list]:
    woken: list[list[str]] = []
    follower = StreamFollower(clock, storage, writer, lambda users: woken.append(sorted(users)))  # type: ignore[arg-type]
    return follower, woken


@pytest_twisted.ensureDeferred
async def test_positions_follow_the_writer_but_events_only_as_far_as_applied(
    storage: Storage,
) -> None:
    writer, clock = Writer(), task.Clock()
    follower, woken = _follower(storage, writer, clock)
    await follower.catch_up()
    writer.positions.update(events=10, receipts=7, presence=3, to_device=4)
    follower.events_applied = 5  # messages up to event 5 applied here
    follower.notify_users(["@a:test"])
    assert woken == [["@a:test"]]
    assert storage.events.stream.current_position == 5
    assert storage.receipts.stream.current_position == 7
    assert storage.e2ee.to_device.current_position == 4
    # Presence moves with its messages only (PresenceHandler.mirror).
    assert storage.presence.stream.current_position == 0
    follower.events_applied = 10
    follower.notify_users(["@b:test"])
    assert storage.events.stream.current_position == 10
    await follower.stop()


@pytest_twisted.ensureDeferred
async def test_event_messages_missing_for_a_poll_interval_count_as_lost(storage: Storage) -> None:
    writer, clock = Writer(), task.Clock()
    follower, _ = _follower(storage, writer, clock)
    lost: list[int] = []
    follower.on_events_lost = lambda: lost.append(follower.events_applied)
    await follower.catch_up()
    writer.positions["events"] = 10
    clock.advance(POLL_INTERVAL_S)  # ahead of the messages: maybe they are on the way
    assert lost == [] and storage.events.stream.current_position == 0
    follower.events_applied = 6  # some arrived meanwhile, not all
    clock.advance(POLL_INTERVAL_S)  # still short of where the writer was a poll ago
    assert lost == [6]
    assert storage.events.stream.current_position == 10
    await follower.stop()


@pytest_twisted.ensureDeferred
async def test_messages_that_arrive_between_polls_are_not_a_loss(storage: Storage) -> None:
    writer, clock = Writer(), task.Clock()
    follower, woken = _follower(storage, writer, clock)
    lost: list[int] = []
    follower.on_events_lost = lambda: lost.append(1)
    await follower.catch_up()
    for position in (10, 20, 30):  # a steady stream: the writer always a little ahead
        writer.positions["events"] = position
        clock.advance(POLL_INTERVAL_S)
        follower.events_applied = position
    clock.advance(POLL_INTERVAL_S)
    assert lost == []
    assert storage.events.stream.current_position == 30
    await follower.stop()
