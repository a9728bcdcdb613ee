"""Presence across servers over time, on a fake clock: a remote user whose server goes
quiet about them for 30 minutes goes offline; our users who are not offline are
re-sent to other servers every 25 minutes, so their side does not time them out."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest_twisted
from twisted.internet import reactor, task

from homeserver.bus import Bus, LocalBus, PresenceChanged, PresencePing
from homeserver.ephemeral.presence import (
    FEDERATION_PING_INTERVAL_MS,
    FEDERATION_TIMEOUT_MS,
    STARTUP_PING_DELAY_MS,
    PresenceHandler,
)
from homeserver.rooms.memberships import MembershipCache
from homeserver.rooms.room_cache import RoomCache
from homeserver.sync.notifier import Notifier
from storage.database import Database, make_engine
from storage.presence import PresenceState
from storage.storage import Storage

MINUTE = 60.0
REMOTE = "@bob:remote.example"
LOCAL = "@alice:here.example"


@pytest_twisted.async_yield_fixture
async def storage(database: dict[str, Any]) -> AsyncIterator[Storage]:
    db = Database(make_engine(database), reactor, cp_min=1, cp_max=2)
    try:
        yield await Storage.open(db)
    finally:
        db.close()


class Recorder:
    """What a handler built on ``self.bus`` publishes."""

    def __init__(self) -> None:
        self.bus = LocalBus()
        self.changes: list[PresenceState] = []
        self.pings: list[PresenceState] = []
        self.bus.subscribe(PresenceChanged, lambda m: self.changes.append(m.state))
        self.bus.subscribe(PresencePing, lambda m: self.pings.append(m.state))


def handler_on(storage: Storage, clock: task.Clock, bus: Bus | None = None) -> PresenceHandler:
    return PresenceHandler(
        storage.presence,
        RoomCache(storage.events, storage.state_groups),
        MembershipCache(storage.memberships),
        Notifier(clock),
        clock,
        bus if bus is not None else LocalBus(),
        server_name="here.example",
    )


def start_clock() -> task.Clock:
    clock = task.Clock()
    clock.advance(1_700_000_000)
    return clock


def tick(clock: task.Clock, seconds: float) -> None:
    """Advance second by second, so each timer fires at its own time."""
    for _ in range(int(seconds)):
        clock.advance(1)
    clock.advance(seconds - int(seconds))


async def state_of(handler: PresenceHandler, user_id: str) -> str:
    return (await handler.current_states([user_id]))[0].state


@pytest_twisted.ensureDeferred
async def test_remote_user_goes_offline_when_their_server_goes_quiet(storage: Storage) -> None:
    clock = start_clock()
    seen = Recorder()
    handler = handler_on(storage, clock, seen.bus)
    await handler.start()
    try:
        await handler.apply_remote(REMOTE, "online", 0, True, "here")
        clock.advance(29 * MINUTE)
        assert await state_of(handler, REMOTE) == "online"
        # Their server's ping (nothing changed) restarts the 30 minutes.
        await handler.apply_remote(REMOTE, "online", 0, True, "here")
        clock.advance(29 * MINUTE)
        assert await state_of(handler, REMOTE) == "online"
        clock.advance(1 * MINUTE + 1)
        assert await state_of(handler, REMOTE) == "offline"
        # A visible change: it takes a stream position, is published and persisted.
        assert [(s.user_id, s.state) for s in seen.changes] == [
            (REMOTE, "online"),
            (REMOTE, "offline"),
        ]
        assert seen.changes[-1].status_msg == "here"  # only the state changes
        assert seen.pings == []  # never ours to re-send
        await handler.flush()
        assert (await storage.presence.get_states([REMOTE]))[REMOTE].state == "offline"

        # Unavailable times out the same way; offline has nothing left to time out.
        await handler.apply_remote(REMOTE, "unavailable", 0, False, None)
        clock.advance(FEDERATION_TIMEOUT_MS / 1000 + 1)
        assert await state_of(handler, REMOTE) == "offline"
        before = len(seen.changes)
        clock.advance(10 * FEDERATION_TIMEOUT_MS / 1000)
        assert len(seen.changes) == before
    finally:
        await handler.stop()


@pytest_twisted.ensureDeferred
async def test_remote_states_loaded_at_start_up_get_the_full_timeout(storage: Storage) -> None:
    clock = start_clock()
    first = handler_on(storage, clock)
    await first.start()
    await first.apply_remote(REMOTE, "online", 0, True, None)
    await first.stop()

    clock.advance(2 * FEDERATION_TIMEOUT_MS / 1000)  # we were down a long time
    second = handler_on(storage, clock)
    await second.start()
    try:
        assert await state_of(second, REMOTE) == "online"
        clock.advance(FEDERATION_TIMEOUT_MS / 1000 - 1)
        assert await state_of(second, REMOTE) == "online"
        clock.advance(2)
        assert await state_of(second, REMOTE) == "offline"
    finally:
        await second.stop()


@pytest_twisted.ensureDeferred
async def test_our_users_are_re_sent_every_25_minutes_while_not_offline(
    storage: Storage,
) -> None:
    clock = start_clock()
    seen = Recorder()
    handler = handler_on(storage, clock, seen.bus)
    await handler.start()
    try:
        await handler.user_syncing(LOCAL, "DEV", None)  # a sync that stays open: online
        tick(clock, MINUTE + 1)  # currently_active ends: a visible change, sent by itself
        assert [(s.state, s.currently_active) for s in seen.changes] == [
            ("online", True),
            ("online", False),
        ]
        tick(clock, FEDERATION_PING_INTERVAL_MS / 1000 - 3)
        assert seen.pings == []
        tick(clock, 5)
        assert [(s.user_id, s.state) for s in seen.pings] == [(LOCAL, "online")]
        tick(clock, FEDERATION_PING_INTERVAL_MS / 1000 + 2)
        assert len(seen.pings) == 2
        assert len(seen.changes) == 2  # pings are not visible changes

        # A visible change goes out by itself, and the next ping counts from it.
        tick(clock, 10 * MINUTE)
        await handler.set_state(LOCAL, "unavailable", "busy")
        tick(clock, FEDERATION_PING_INTERVAL_MS / 1000 - 2)
        assert len(seen.pings) == 2
        tick(clock, 3)
        assert [(s.state, s.status_msg) for s in seen.pings[2:]] == [("unavailable", "busy")]

        # Offline users are not re-sent.
        await handler.set_state(LOCAL, "offline", None)
        tick(clock, 3 * FEDERATION_PING_INTERVAL_MS / 1000)
        assert len(seen.pings) == 3
    finally:
        await handler.stop()


@pytest_twisted.ensureDeferred
async def test_after_a_restart_our_users_are_re_sent_soon(storage: Storage) -> None:
    clock = start_clock()
    first = handler_on(storage, clock)
    await first.start()
    await first.set_state(LOCAL, "unavailable", "away")
    await first.stop()

    seen = Recorder()
    second = handler_on(storage, clock, seen.bus)
    await second.start()
    try:
        await second.user_syncing(LOCAL, "DEV", "unavailable")  # as before: nothing visible
        tick(clock, STARTUP_PING_DELAY_MS / 1000 - 2)
        assert seen.pings == [] and seen.changes == []
        tick(clock, 3)
        assert [(s.user_id, s.state, s.status_msg) for s in seen.pings] == [
            (LOCAL, "unavailable", "away")
        ]
    finally:
        await second.stop()


@pytest_twisted.ensureDeferred
async def test_without_federation_nothing_is_re_sent(storage: Storage) -> None:
    clock = start_clock()
    seen = Recorder()
    handler = PresenceHandler(
        storage.presence,
        RoomCache(storage.events, storage.state_groups),
        MembershipCache(storage.memberships),
        Notifier(clock),
        clock,
        seen.bus,
    )
    await handler.start()
    try:
        await handler.user_syncing(LOCAL, "DEV", None)
        clock.advance(3 * FEDERATION_PING_INTERVAL_MS / 1000)
        assert seen.pings == []
    finally:
        await handler.stop()
