"""A reader process keeping in step with the writer (the main process).

Bus messages from the main process say what changed and whom it concerns; they are
published once the writer's positions cover the change. A worker then asks the main
process for its stream positions (``ping``), ``advance_to``s its own generators (it
never allocates ids) and only then wakes the users concerned: a woken /sync computes
its token from positions the writer has committed, so it shows everything up to them
and nothing beyond. Messages that arrive while a fetch is in flight are served by the
next fetch (asked after they arrived, so it covers them); a burst costs one fetch per
round trip, not one per message.

Two streams are not simply taken from ``ping``: what a sync serves of them is in this
process's memory, filled by the messages themselves, so the position must not pass
what memory holds. Events: at most ``events_applied`` (the newest event whose
``events_persisted`` was applied here). Presence: advanced by the change itself
(``PresenceHandler.mirror``). If the writer's events position stays ahead of
``events_applied`` for a whole poll interval, the messages were lost: ``on_events_lost``
drops rooms and memberships from memory (read again from the database) and the position
moves on.

Redis pub/sub is not durable: a message published while this process was not
subscribed (a dropped connection, a restart of Redis) never arrives. So the follower
also asks every ``POLL_INTERVAL_S``; when a position moved without a message saying
so, every parked sync is woken (each finds what it did not hear about).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

from twisted.internet import defer, task

from homeserver.replication.client import InternalClient
from homeserver.replication.ping import PING, stream_generators
from homeserver.sync.notifier import Notifier
from homeserver.workers import MAIN_INSTANCE
from storage.storage import Storage

logger = logging.getLogger(__name__)

_RETRY_S = 1.0
POLL_INTERVAL_S = 1.0


class StreamFollower:
    def __init__(
        self,
        clock: Any,
        storage: Storage,
        client: InternalClient,
        notify_users: Callable[[Iterable[str]], None],
    ) -> None:
        self.clock = clock
        self._generators = stream_generators(storage)
        self._client = client
        self._notify_users = notify_users
        self._pending: set[str] = set()
        self._requested = False
        self._running = False
        self._stopped = False
        self._poll: task.LoopingCall | None = None
        # Everyone waiting, for a wake-up no message announced (set by FollowingNotifier).
        self.waiting_users: Callable[[], Iterable[str]] = lambda: ()
        # The newest event position whose message was applied here (set by the reader's
        # event subscriber) and what to do when messages were lost (see above).
        self.events_applied = 0
        self.on_events_lost: Callable[[], None] = lambda: None
        # The writer's events position at the last poll, if it was ahead of the messages.
        self._events_ahead: int | None = None

    def notify_users(self, user_ids: Iterable[str]) -> None:
        """Wake ``user_ids`` once this process's positions cover what the writer has
        committed now."""
        self._pending.update(user_ids)
        self._requested = True
        if not self._running and not self._stopped:
            defer.ensureDeferred(self._run())

    async def catch_up(self) -> None:
        """Advance every position to the writer's (start-up: before serving), then keep
        polling for changes no message announced."""
        answer = await self._client.call(MAIN_INSTANCE, PING)
        # Start-up: memory holds nothing yet, the database everything up to here.
        self.events_applied = max(self.events_applied, answer["positions"]["events"])
        self._advance(answer, polled=False)
        self._poll = task.LoopingCall(self._poll_once)
        self._poll.clock = self.clock
        self._poll.start(POLL_INTERVAL_S, now=False).addErrback(
            lambda f: logger.error("Position polling stopped", exc_info=f.value)
        )

    def _poll_once(self) -> None:
        if self._running:
            return  # a fetch is under way; its answer serves as well
        self._requested = True
        self._poll_pending = True
        defer.ensureDeferred(self._run())

    _poll_pending = False

    def _advance(self, answer: dict[str, Any], *, polled: bool) -> bool:
        """Whether any position moved."""
        positions = answer.get("positions") or {}
        moved = False
        for name, generator in self._generators.items():
            position = positions.get(name)
            if name == "presence" or not isinstance(position, int):
                continue
            if name == "events":
                position = self._events_position(position, polled)
            if position > generator.current_position:
                generator.advance_to(position)
                moved = True
        return moved

    def _events_position(self, writer_position: int, polled: bool) -> int:
        if writer_position <= self.events_applied:
            if polled:
                self._events_ahead = None
            return writer_position
        if polled:
            ahead = self._events_ahead
            if ahead is not None and ahead > self.events_applied:
                # A poll interval ago the writer was already there: messages were lost.
                self.on_events_lost()
                self.events_applied = ahead
            self._events_ahead = writer_position
        return self.events_applied

    async def _run(self) -> None:
        self._running = True
        try:
            while self._requested and not self._stopped:
                self._requested = False
                users, self._pending = self._pending, set()
                polled, self._poll_pending = self._poll_pending, False
                try:
                    answer = await self._client.call(MAIN_INSTANCE, PING)
                except Exception as e:
                    # The main process is away: keep the users, try again shortly.
                    logger.warning("Catching up with the main process failed: %s", e)
                    self._pending |= users
                    self._requested = not polled or bool(users)
                    d: defer.Deferred[None] = defer.Deferred()
                    self.clock.callLater(_RETRY_S, d.callback, None)
                    await d
                    continue
                if self._advance(answer, polled=polled) and polled:
                    # Moved with no message saying so (yet): wake every parked sync.
                    users |= set(self.waiting_users())
                self._notify_users(users)
        finally:
            self._running = False

    async def stop(self) -> None:
        self._stopped = True
        if self._poll is not None and self._poll.running:
            self._poll.stop()


class FollowingNotifier(Notifier):
    """A reader process's notifier: every wake-up waits for ``follower`` to bring the
    positions up to the writer's, so every handler built with it (fan-out, receipts,
    typing, to-device, account data) wakes syncs that then see the change."""

    follower: StreamFollower | None = None

    def notify_users(self, user_ids: Iterable[str]) -> None:
        if self.follower is None:
            super().notify_users(user_ids)
        else:
            self.follower.notify_users(user_ids)

    def notify_now(self, user_ids: Iterable[str]) -> None:
        super().notify_users(user_ids)

    def waiting_users(self) -> list[str]:
        return list(self._waiters)
