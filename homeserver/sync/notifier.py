"""Wakes waiting /sync requests from memory when something they care about happens.

Invariants:
- ``notify_users`` is called only after the change is committed and its stream
  position is visible, so a woken sync always finds what woke it.
- Waking costs one dict lookup per affected local user: the notifier keeps no per-event
  queues and runs no query; the woken sync computes its own response.
- Which local users a room event concerns comes from ``members_of_room`` (the in-memory
  room state), so fan-out to a 500-member room is 500 Deferred callbacks, nothing more.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from twisted.internet import defer

from homeserver.clock import Clock


class Notifier:
    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._waiters: dict[str, set[defer.Deferred[None]]] = {}
        # Called with every change; extra listeners (workers over Redis, WebSockets).
        self.listeners: list[Callable[[Iterable[str]], None]] = []

    def notify_users(self, user_ids: Iterable[str]) -> None:
        users = list(user_ids)
        for user_id in users:
            waiters = self._waiters.pop(user_id, None)
            if waiters:
                for d in waiters:
                    if not d.called:
                        d.callback(None)
        for listener in self.listeners:
            listener(users)

    async def wait(self, user_id: str, timeout_s: float) -> bool:
        """Wait until ``user_id`` is notified or the timeout passes; True if notified."""
        if timeout_s <= 0:
            return False
        d: defer.Deferred[None] = defer.Deferred()
        self._waiters.setdefault(user_id, set()).add(d)
        timed_out = False

        def _timeout() -> None:
            nonlocal timed_out
            timed_out = True
            if not d.called:
                d.callback(None)

        timer = self._clock.callLater(timeout_s, _timeout)
        try:
            await d
        finally:
            if timer.active():
                timer.cancel()
            waiters = self._waiters.get(user_id)
            if waiters is not None:
                waiters.discard(d)
                if not waiters:
                    del self._waiters[user_id]
        return not timed_out

    def waiting_count(self) -> int:
        return sum(len(w) for w in self._waiters.values())
