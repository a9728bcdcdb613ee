"""The event persister: batches accepted events into as few commits as possible.

Invariants:
- Items are committed in the order they were enqueued (FIFO), one batch at a time, so
  stream positions become visible in order and ``events_stream.advance_to`` after a
  batch commits never exposes a gap that is still being written.
- A caller's Deferred fires only after its event's transaction has committed.
- When a batch fails, every event of the batch fails, and so does every queued event
  of the rooms in it (they were built on top of the failed ones); those rooms are
  reloaded from the database by the caller's ``on_failure``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from twisted.internet import defer

from homeserver.events.event import Event
from storage.events import EventsStore, PersistItem

logger = logging.getLogger(__name__)

MAX_BATCH = 200


@dataclass
class _Queued:
    item: PersistItem
    done: defer.Deferred[None]


class EventPersister:
    def __init__(
        self,
        store: EventsStore,
        on_persisted: Callable[[list[Event]], None],
        on_failure: Callable[[set[str]], None],
    ) -> None:
        self._store = store
        self._on_persisted = on_persisted
        self._on_failure = on_failure
        self._queue: list[_Queued] = []
        self._running = False
        self._idle: list[defer.Deferred[None]] = []
        # Accepted events not yet committed, by id: readers that must see every
        # accepted event (state resolution) look here before the database.
        self.pending: dict[str, Event] = {}
        # Run on each item as it is queued, to add what must commit with the event (the
        # federation sender fills ``PersistItem.outbound``); synchronous, reactor thread.
        self.preparers: list[Callable[[PersistItem], None]] = []

    def enqueue(self, item: PersistItem) -> defer.Deferred[None]:
        for prepare in self.preparers:
            try:
                prepare(item)
            except Exception:
                # The event is already applied in memory: it must still be persisted.
                logger.exception("Preparing %s for persistence failed", item.event.event_id)
        done: defer.Deferred[None] = defer.Deferred()
        self._queue.append(_Queued(item, done))
        self.pending[item.event.event_id] = item.event
        if not self._running:
            self._running = True
            defer.ensureDeferred(self._run())
        return done

    async def wait_idle(self) -> None:
        if self._running:
            d: defer.Deferred[None] = defer.Deferred()
            self._idle.append(d)
            await d

    async def _run(self) -> None:
        try:
            while self._queue:
                batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
                try:
                    await self._store.persist_batch([q.item for q in batch])
                except Exception as e:
                    logger.exception("Persisting %d events failed", len(batch))
                    self._fail(batch, e)
                    continue
                events = [q.item.event for q in batch]
                for ev in events:
                    # Only this copy: an outlier's timeline copy may be queued after it.
                    if self.pending.get(ev.event_id) is ev:
                        del self.pending[ev.event_id]
                self._store.stream.advance_to(max(ev.stream_ordering for ev in events))
                try:
                    self._on_persisted(events)
                except Exception:
                    logger.exception("Notifying about persisted events failed")
                for q in batch:
                    q.done.callback(None)
        finally:
            self._running = False
            idle, self._idle = self._idle, []
            for d in idle:
                d.callback(None)

    def _fail(self, batch: list[_Queued], error: Exception) -> None:
        rooms = {q.item.event.room_id for q in batch}
        dependent = [q for q in self._queue if q.item.event.room_id in rooms]
        self._queue = [q for q in self._queue if q.item.event.room_id not in rooms]
        self._on_failure(rooms)
        for q in batch + dependent:
            if self.pending.get(q.item.event.event_id) is q.item.event:
                del self.pending[q.item.event.event_id]
            q.done.errback(error)
