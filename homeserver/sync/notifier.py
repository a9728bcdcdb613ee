"""Wakes waiting /sync requests from memory when something they care about happens.

Invariants:
- ``notify_users`` is called only after the change is committed and its stream
  position is visible, so a woken sync always finds what woke it.
- Waking costs one dict lookup per affected local user: the notifier keeps no per-event
  queues and runs no query; the woken sync computes its own response.
- Which local users a room event concerns comes from ``members_of_room`` (the in-memory
  room state), so fan-out to a 500-member room is 500 ``wake()`` calls, nothing more.
- A waiter costs its own small object and one set entry: long-poll timeouts share one
  timer (a wheel of deadline buckets), not a DelayedCall each, and an idle WebSocket
  registers itself (no Deferred, no timer).
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable
from typing import Any, Protocol

from twisted.internet import defer

from homeserver.clock import Clock

# Long-poll deadlines are rounded up to this (seconds): one bucket, one timer, per step.
TIMEOUT_GRANULARITY_S = 0.05


class Waiter(Protocol):
    def wake(self) -> None:
        """The user was notified (called at most once per registration)."""


class Expiring(Protocol):
    def expire(self) -> None:
        """Its deadline passed (called at most once per ``add_deadline``)."""


class Parkable(Waiter, Expiring, Protocol):
    """A long-poll object that waits on the notifier without a coroutine of its own."""


class Parking:
    """Where a ``Parkable`` long-poll (/sync's, sliding sync's) waits between builds:
    among its user's waiters and in a deadline bucket, until ``unpark``. Each of its
    ``wake`` and ``expire`` should ``unpark`` first (the other may still come)."""

    __slots__ = ("_notifier", "_user_id", "_bucket")

    _NOT_PARKED = -1

    def __init__(self, notifier: Notifier, user_id: str) -> None:
        self._notifier = notifier
        self._user_id = user_id
        self._bucket = self._NOT_PARKED

    def park(self, poll: Parkable, deadline: float) -> None:
        """Wake ``poll`` at the user's next notification, or expire it at ``deadline``
        (clock seconds; at once if past)."""
        notifier = self._notifier
        notifier.add_waiter(self._user_id, poll)
        remaining = max(0.0, deadline - notifier.clock.seconds())
        self._bucket = notifier.add_deadline(poll, remaining)

    def unpark(self, poll: Parkable) -> None:
        if self._bucket != self._NOT_PARKED:
            self._notifier.remove_waiter(self._user_id, poll)
            self._notifier.remove_deadline(self._bucket, poll)
            self._bucket = self._NOT_PARKED


class _PollWaiter(defer.Deferred[bool]):
    """A long-poll: fires True when notified, False at its deadline."""

    __slots__ = ()

    def wake(self) -> None:
        if not self.called:
            self.callback(True)

    def expire(self) -> None:
        if not self.called:
            self.callback(False)


class Notifier:
    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._waiters: dict[str, set[Waiter]] = {}
        # Long-poll deadlines: bucket number -> its waiters; a heap of the bucket numbers
        # and the one timer armed for the earliest.
        self._buckets: dict[int, set[Expiring]] = {}
        self._bucket_heap: list[int] = []
        self._timer: Any = None
        self._timer_bucket: int | None = None

    def notify_users(self, user_ids: Iterable[str]) -> None:
        users = list(user_ids)
        for user_id in users:
            waiters = self._waiters.pop(user_id, None)
            if waiters:
                for waiter in waiters:
                    waiter.wake()

    def add_waiter(self, user_id: str, waiter: Waiter) -> None:
        """Call ``waiter.wake()`` once, at the next notification of ``user_id``."""
        waiters = self._waiters.get(user_id)
        if waiters is None:
            self._waiters[user_id] = waiters = set()
        waiters.add(waiter)

    def waiter_count(self) -> int:
        """Waiters (parked /sync long-polls) now registered, for the metrics."""
        return sum(len(waiters) for waiters in self._waiters.values())

    def remove_waiter(self, user_id: str, waiter: Waiter) -> None:
        waiters = self._waiters.get(user_id)
        if waiters is not None:
            waiters.discard(waiter)
            if not waiters:
                del self._waiters[user_id]

    async def wait(self, user_id: str, timeout_s: float) -> bool:
        """Wait until ``user_id`` is notified or the timeout passes; True if notified."""
        if timeout_s <= 0:
            return False
        waiter = _PollWaiter()
        self.add_waiter(user_id, waiter)
        bucket = self.add_deadline(waiter, timeout_s)
        try:
            return await waiter
        finally:
            self.remove_waiter(user_id, waiter)
            self.remove_deadline(bucket, waiter)

    @property
    def clock(self) -> Clock:
        """The clock deadlines run on."""
        return self._clock

    def add_deadline(self, waiter: Expiring, timeout_s: float) -> int:
        """Call ``waiter.expire()`` once, ``timeout_s`` from now (rounded up to the wheel's
        step), unless ``remove_deadline`` comes first; returns the bucket to pass to it."""
        bucket = math.ceil((self._clock.seconds() + timeout_s) / TIMEOUT_GRANULARITY_S)
        members = self._buckets.get(bucket)
        if members is None:
            self._buckets[bucket] = members = set()
            heapq.heappush(self._bucket_heap, bucket)
        members.add(waiter)
        if self._timer_bucket is None or bucket < self._timer_bucket:
            self._arm(bucket)
        return bucket

    def remove_deadline(self, bucket: int, waiter: Expiring) -> None:
        members = self._buckets.get(bucket)
        if members is not None:
            members.discard(waiter)
            # An emptied bucket stays until its time comes (its heap entry with it).

    def _arm(self, bucket: int) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        delay = max(0.0, bucket * TIMEOUT_GRANULARITY_S - self._clock.seconds())
        self._timer_bucket = bucket
        self._timer = self._clock.callLater(delay, self._expire)

    def _expire(self) -> None:
        self._timer = None
        self._timer_bucket = None
        now = self._clock.seconds()
        heap = self._bucket_heap
        while heap and heap[0] * TIMEOUT_GRANULARITY_S <= now + 1e-9:
            members = self._buckets.pop(heapq.heappop(heap), None)
            for waiter in list(members or ()):
                waiter.expire()
        if heap:
            self._arm(heap[0])

    def waiting_count(self) -> int:
        return sum(len(w) for w in self._waiters.values())
