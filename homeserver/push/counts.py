"""Unread notification counts per (user, room, thread), in memory over ``storage.push``.

Invariants:
- ``record`` applies new push actions to the loaded counts at once (synchronously, so
  a /sync that sees an event sees its count) and queues their insert; inserts and
  loads share one FIFO lock, so a load's snapshot holds exactly the rows recorded
  before it was requested. Rows recorded while a load is pending go to that load's
  buffer and are applied when it installs: nothing is counted twice or lost.
- Inserts carry the push actions position (``storage.push``): it is stored with the
  rows it covers, in the same transaction.
- A row counts only if it is after the user's read position for its thread: the later
  of their unthreaded and that thread's own ``m.read`` / ``m.read.private`` receipt.
- When a read receipt of a loaded user moves, their counts for the room are reloaded
  from the database (which applies the receipt); ``get`` waits for pending loads, so
  a /sync after a receipt sees the cleared counts. After a restart everything is
  loaded from the database on first use.
- ``version`` increases with every change (the position of the /sync source).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from twisted.internet import defer

from homeserver.async_utils import observe
from homeserver.sync.sources import SyncContext, SyncFragment
from storage.push import READ_RECEIPT_TYPES, UNTHREADED, PushActionRow, PushStore, UnreadState
from storage.receipts import Receipt
from storage.relations import MAIN_THREAD

logger = logging.getLogger(__name__)

JsonDict = dict[str, Any]
MAX_USERS = 20_000


@dataclass(frozen=True, slots=True)
class Increment:
    room_id: str
    thread_id: str
    stream_ordering: int
    highlight: bool


@dataclass(slots=True)
class RoomUnread:
    # '' (unthreaded) or a thread id -> event stream position of the latest read receipt
    receipts: dict[str, int] = field(default_factory=dict)
    # thread id ('main' for the main timeline) -> [notifications, highlights]
    counts: dict[str, list[int]] = field(default_factory=dict)

    def read_position(self, thread_id: str) -> int:
        return max(self.receipts.get(UNTHREADED, 0), self.receipts.get(thread_id, 0))

    def add(self, thread_id: str, stream_ordering: int, highlight: bool) -> None:
        if stream_ordering <= self.read_position(thread_id):
            return
        counts = self.counts.setdefault(thread_id, [0, 0])
        counts[0] += 1
        counts[1] += int(highlight)

    def totals(self) -> tuple[int, int]:
        return sum(c[0] for c in self.counts.values()), sum(c[1] for c in self.counts.values())


@dataclass(slots=True)
class _PendingWrite:
    rows: list[PushActionRow] = field(default_factory=list)
    position: int | None = None
    done: defer.Deferred[None] = field(default_factory=defer.Deferred)


def _counts_json(notifications: int, highlights: int) -> JsonDict:
    return {"notification_count": notifications, "highlight_count": highlights}


class UnreadCounts:
    def __init__(self, store: PushStore, *, max_users: int = MAX_USERS) -> None:
        self._store = store
        self._lock = defer.DeferredLock()
        self._by_user: OrderedDict[str, dict[str, RoomUnread]] = OrderedDict()
        self._max_users = max_users
        self._buffers: dict[tuple[str, str], list[list[Increment]]] = {}
        self._pending: dict[tuple[str, str], defer.Deferred[None]] = {}
        self.version = 0
        # The write queued behind the lock that ``record`` still adds rows to.
        self._open_write: _PendingWrite | None = None
        # Told (user id) after a receipt changed a loaded user's counts.
        self.receipt_listeners: list[Callable[[str], None]] = []

    # Writing ---------------------------------------------------------------------------

    def record(
        self, rows: Sequence[PushActionRow], position: int | None = None
    ) -> defer.Deferred[None]:
        """Count ``rows`` now; their insert (with ``push_actions_position`` moved to
        ``position``, if given) runs after every earlier insert and load."""
        for row in rows:
            inc = Increment(row.room_id, row.thread_id, row.stream_ordering, row.highlight)
            key = (row.user_id, row.room_id)
            for buffer in self._buffers.get(key, ()):
                buffer.append(inc)
            rooms = self._by_user.get(row.user_id)
            entry = rooms.get(row.room_id) if rooms is not None else None
            if entry is not None:
                entry.add(inc.thread_id, inc.stream_ordering, inc.highlight)
        if not rows and position is None:
            return defer.succeed(None)
        if rows:
            self.version += 1
        write = self._open_write
        queue = write is None
        if write is None:
            write = self._open_write = _PendingWrite()
        write.rows.extend(rows)
        if position is not None:
            write.position = max(write.position or 0, position)
        done = observe(write.done)
        if queue:  # last: with the lock free, the write starts right here
            self._lock.run(lambda: defer.ensureDeferred(self._write(write)))
        return done

    async def _write(self, write: _PendingWrite) -> None:
        """One transaction for every row recorded since the last write started (a busy
        room's events share their pages' writes instead of dirtying them once each)."""
        if self._open_write is write:
            self._open_write = None
        try:
            await self._store.add_push_actions(write.rows, write.position)
        except Exception as e:
            # Logged, not raised: the counts in memory stand, and catch-up after a
            # restart recomputes what the stored position says is missing.
            logger.error("Storing push actions failed: %s", e)
        write.done.callback(None)

    async def flush(self) -> None:
        """Wait for every queued insert and load."""
        await self._lock.run(lambda: None)

    def on_receipt(self, receipt: Receipt) -> None:
        if receipt.receipt_type not in READ_RECEIPT_TYPES:
            return
        key = (receipt.user_id, receipt.room_id)
        rooms = self._by_user.get(receipt.user_id)
        if key not in self._pending and (rooms is None or receipt.room_id not in rooms):
            return  # not loaded: the database applies the receipt when it is
        d = self._start_load(receipt.user_id, [receipt.room_id])
        d.addCallback(lambda _: self._receipt_applied(receipt.user_id))

    def on_membership(self, user_id: str, room_id: str) -> None:
        """A local user's membership changed: with no read receipt in the room, their
        membership event is their read position (``get_unread_state``): reload it."""
        key = (user_id, room_id)
        rooms = self._by_user.get(user_id)
        if key not in self._pending and (rooms is None or room_id not in rooms):
            return  # not loaded: the database applies it when it is
        d = self._start_load(user_id, [room_id])
        d.addCallback(lambda _: self._bump())

    async def reload_room(self, room_id: str) -> None:
        """The room's push actions changed under us (a purge deleted some): every
        loaded user's counts for it are read again."""
        users = [user_id for user_id, rooms in self._by_user.items() if room_id in rooms]
        users += [u for (u, r) in self._pending if r == room_id and u not in users]
        loads = [self._start_load(user_id, [room_id]) for user_id in users]
        if loads:
            await defer.gatherResults(loads, consumeErrors=True)
            self._bump()

    def _bump(self) -> None:
        self.version += 1

    def _receipt_applied(self, user_id: str) -> None:
        self.version += 1
        for listener in self.receipt_listeners:
            try:
                listener(user_id)
            except Exception:
                logger.exception("A receipt listener failed")

    # Loading ---------------------------------------------------------------------------

    def _start_load(self, user_id: str, room_ids: Sequence[str]) -> defer.Deferred[None]:
        # Rows recorded from now on go to this load's buffers: they must not join a
        # write queued before the load, or the load's snapshot would count them twice.
        self._open_write = None
        buffers: dict[str, list[Increment]] = {}
        for room_id in room_ids:
            buffer: list[Increment] = []
            self._buffers.setdefault((user_id, room_id), []).append(buffer)
            buffers[room_id] = buffer
        loading: defer.Deferred[UnreadState] = self._lock.run(
            lambda: defer.ensureDeferred(self._store.get_unread_state(user_id, room_ids))
        )
        done: defer.Deferred[None] = defer.Deferred()

        def _installed(state: UnreadState) -> None:
            self._install(user_id, state, buffers)
            done.callback(None)

        def _failed(failure: Any) -> None:
            done.errback(failure)

        def _cleanup(result: Any) -> Any:
            for room_id, buffer in buffers.items():
                key = (user_id, room_id)
                remaining = [b for b in self._buffers.get(key, []) if b is not buffer]
                if remaining:
                    self._buffers[key] = remaining
                else:
                    self._buffers.pop(key, None)
                if self._pending.get(key) is done:
                    del self._pending[key]
            return result

        loading.addBoth(_cleanup)
        loading.addCallbacks(_installed, _failed)
        for room_id in room_ids:
            self._pending[(user_id, room_id)] = done
        return done

    def _install(
        self, user_id: str, state: UnreadState, buffers: dict[str, list[Increment]]
    ) -> None:
        rooms = self._by_user.get(user_id)
        if rooms is None:
            rooms = self._by_user[user_id] = {}
            while len(self._by_user) > self._max_users:
                self._by_user.popitem(last=False)
        entries = {
            room_id: RoomUnread(receipts=dict(state.receipts.get(room_id, {})))
            for room_id in buffers
        }
        for row in state.rows:
            entries[row.room_id].add(row.thread_id, row.stream_ordering, row.highlight)
        for room_id, buffer in buffers.items():
            for inc in buffer:
                entries[room_id].add(inc.thread_id, inc.stream_ordering, inc.highlight)
        rooms.update(entries)

    async def get(self, user_id: str, room_ids: Iterable[str]) -> dict[str, RoomUnread]:
        """Counts of these rooms, loading what is not in memory (one query)."""
        wanted = list(room_ids)
        rooms = self._by_user.get(user_id)
        if rooms is not None:
            self._by_user.move_to_end(user_id)
        waits: list[defer.Deferred[None]] = []
        missing: list[str] = []
        for room_id in wanted:
            pending = self._pending.get((user_id, room_id))
            if pending is not None:
                if pending not in waits:
                    waits.append(pending)
            elif rooms is None or room_id not in rooms:
                missing.append(room_id)
        if missing:
            waits.append(self._start_load(user_id, missing))
        for d in waits:
            try:
                await observe(d)
            except Exception:
                logger.exception("Loading unread counts of %s failed", user_id)
        rooms = self._by_user.get(user_id, {})
        return {room_id: rooms[room_id] for room_id in wanted if room_id in rooms}

    async def badge(self, user_id: str, room_ids: Iterable[str]) -> int:
        """Rooms with unread notifications (Synapse's default badge, grouped by room)."""
        counts = await self.get(user_id, room_ids)
        return sum(1 for entry in counts.values() if entry.totals()[0] > 0)


class UnreadCountsSource:
    """``unread_notifications`` (and ``unread_thread_notifications``) of joined rooms."""

    name = "unread_counts"

    def __init__(self, counts: UnreadCounts, caught_up: Callable[[], defer.Deferred[None]]) -> None:
        self._counts = counts
        self._caught_up = caught_up

    def current_position(self) -> int:
        return self._counts.version

    async def get_updates(self, ctx: SyncContext, since: int, now: int) -> SyncFragment:
        fragment = SyncFragment()
        if not ctx.joined_room_ids:
            return fragment
        await self._caught_up()  # events this sync can see have been counted
        by_room = await self._counts.get(ctx.user_id, sorted(ctx.joined_room_ids))
        threaded = ctx.filters.unread_thread_notifications()
        for room_id in ctx.joined_room_ids:
            entry = by_room.get(room_id)
            fields: JsonDict = {}
            if entry is None:
                fields["unread_notifications"] = _counts_json(0, 0)
            elif threaded:
                main = entry.counts.get(MAIN_THREAD, [0, 0])
                fields["unread_notifications"] = _counts_json(main[0], main[1])
                fields["unread_thread_notifications"] = {
                    thread: _counts_json(c[0], c[1])
                    for thread, c in entry.counts.items()
                    if thread != MAIN_THREAD and (c[0] or c[1])
                }
            else:
                fields["unread_notifications"] = _counts_json(*entry.totals())
            fragment.room_fields[room_id] = fields
        return fragment
