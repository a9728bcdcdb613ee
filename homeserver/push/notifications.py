"""``GET /notifications``: the events a user was notified about, newest first.

A notification is ``read`` when the event is at or before the user's read position
for its thread (the later of the unthreaded and the thread's own read receipt).
Pagination tokens are stream positions: a page continues strictly before the last
event of the previous one. Waits for counting to catch up first, so an event the
user could already see in /sync is listed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.internet import defer

from homeserver.events.event import Event
from homeserver.untrusted import parse_int64
from storage.push import UNTHREADED, PushActionRow
from storage.storage import Storage

MAX_LIMIT = 1000


@dataclass(frozen=True, slots=True)
class Notification:
    row: PushActionRow
    event: Event
    read: bool


class NotificationsHandler:
    def __init__(
        self,
        storage: Storage,
        caught_up: Callable[[], defer.Deferred[None]],
        flush: Callable[[], Any],
    ) -> None:
        self._storage = storage
        self._caught_up = caught_up
        self._flush = flush

    async def get(
        self, user_id: str, from_token: str | None, limit: int, only_highlight: bool
    ) -> tuple[list[Notification], str | None]:
        before: int | None = None
        if from_token is not None:
            before = parse_int64(from_token, "from")
        limit = max(0, min(limit, MAX_LIMIT))
        await self._caught_up()
        await self._flush()
        rows, receipts = await self._storage.push.get_notifications(
            user_id, before=before, limit=limit, only_highlight=only_highlight
        )
        events = await self._storage.events.get_events(r.event_id for r in rows)
        out: list[Notification] = []
        for row in rows:
            event = events.get(row.event_id)
            if event is None:
                continue
            by_thread = receipts.get(row.room_id, {})
            position = max(by_thread.get(UNTHREADED, 0), by_thread.get(row.thread_id, 0))
            out.append(Notification(row, event, row.stream_ordering <= position))
        next_token = str(rows[-1].stream_ordering) if rows and len(rows) == limit else None
        return out, next_token
