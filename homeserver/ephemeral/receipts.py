"""Read receipts, the fully-read marker, and the ``receipts`` /sync source.

Invariants:
- Only a joined member may send a receipt or move a marker, and only for an event of
  that room. Receipts and the fully-read marker only move forward (a receipt by
  events-stream order, the marker by topological order, as Synapse does).
- ``m.read.private`` receipts reach nobody but their owner: the store filters them by
  viewer and a private receipt wakes only its owner's syncs.
- A threaded receipt's ``thread_id`` is ``main`` or the root of the thread the event
  is in (following at most ``MAX_RELATION_HOPS`` relations), as Synapse checks.
- Receipts from other servers (``store_remote_receipt``) are stored like local ones;
  their thread id is taken as given, as Synapse does. So is a receipt for an event we
  do not hold (or hold only as an outlier), as Synapse does: /sync shows it at once,
  and clients match it to the event once that arrives. One for an event of another
  room, or a rejected one, is dropped.
- ``m.fully_read`` is room account data (``storage.account_data``), so it reaches
  /sync through the account data stream, not as a receipt.
"""

from __future__ import annotations

from typing import Any

from homeserver.clock import Clock, now_ms
from homeserver.ephemeral.locks import KeyedLock
from homeserver.errors import Codes, MatrixError
from homeserver.events.event import Event
from homeserver.rooms.room_cache import LiveRoom, RoomCache
from homeserver.sync.notifier import Notifier
from homeserver.sync.sources import SyncContext, SyncFragment
from storage.receipts import PRIVATE_READ, Receipt
from storage.storage import Storage

JsonDict = dict[str, Any]

READ = "m.read"
FULLY_READ = "m.fully_read"
RECEIPT_TYPES = (READ, PRIVATE_READ, FULLY_READ)
MAIN_TIMELINE = "main"
MAX_RELATION_HOPS = 3


class ReceiptsHandler:
    def __init__(
        self, storage: Storage, rooms: RoomCache, notifier: Notifier, clock: Clock
    ) -> None:
        self._storage = storage
        self._rooms = rooms
        self._notifier = notifier
        self._clock = clock
        self._marker_lock = KeyedLock()

    # Checks -------------------------------------------------------------------------

    async def _joined_room(self, user_id: str, room_id: str) -> LiveRoom:
        if not room_id.startswith("!"):
            raise MatrixError(400, Codes.INVALID_PARAM, f"{room_id} is not a valid room ID")
        room = await self._rooms.get(room_id)
        if room is None:
            raise MatrixError(404, Codes.NOT_FOUND, "Unknown room")
        if room.membership_of(user_id) != "join":
            raise MatrixError(403, Codes.FORBIDDEN, f"User {user_id} not in room {room_id}")
        return room

    async def _event_in_room(self, room_id: str, event_id: str) -> Event:
        if not event_id.startswith("$"):
            raise MatrixError(400, Codes.INVALID_PARAM, f"{event_id} is not a valid event ID")
        event = await self._storage.events.get_event(event_id)
        if (
            event is None
            or event.room_id != room_id
            or event.outlier
            or event.rejected_reason is not None
        ):
            raise MatrixError(404, Codes.NOT_FOUND, f"Event {event_id} not found in {room_id}")
        return event

    async def _relation_chain(self, event: Event) -> tuple[str, list[str]]:
        """The thread ``event`` is in (``main`` or a root id) and the events walked."""
        chain = [event.event_id]
        current = event
        for _ in range(MAX_RELATION_HOPS):
            relation = current.content.get("m.relates_to")
            if not isinstance(relation, dict) or not isinstance(relation.get("event_id"), str):
                break
            parent_id = relation["event_id"]
            if relation.get("rel_type") == "m.thread":
                return parent_id, chain
            parent = await self._storage.events.get_event(parent_id)
            if parent is None or parent.room_id != event.room_id:
                break
            chain.append(parent.event_id)
            current = parent
        return MAIN_TIMELINE, chain

    async def _check_thread(self, event: Event, thread_id: str) -> None:
        thread, chain = await self._relation_chain(event)
        if thread_id == MAIN_TIMELINE:
            ok = thread == MAIN_TIMELINE
        else:
            # In the thread, or the root itself (or related to it outside threads).
            ok = thread == thread_id or (thread == MAIN_TIMELINE and thread_id in chain)
        if not ok:
            raise MatrixError(
                400,
                Codes.INVALID_PARAM,
                f"event_id {event.event_id} is not related to thread {thread_id}",
            )

    # Receipts -----------------------------------------------------------------------

    async def send_receipt(
        self,
        user_id: str,
        room_id: str,
        receipt_type: str,
        event_id: str,
        thread_id: str | None,
    ) -> None:
        if receipt_type not in RECEIPT_TYPES:
            raise MatrixError(
                400, Codes.INVALID_PARAM, f"Receipt type must be one of {', '.join(RECEIPT_TYPES)}"
            )
        if receipt_type == FULLY_READ and thread_id is not None:
            raise MatrixError(
                400, Codes.INVALID_PARAM, "thread_id is not compatible with m.fully_read"
            )
        await self._joined_room(user_id, room_id)
        event = await self._event_in_room(room_id, event_id)
        if receipt_type == FULLY_READ:
            await self._set_fully_read(user_id, room_id, event)
            return
        if thread_id is not None:
            await self._check_thread(event, thread_id)
        await self._store_receipt(user_id, room_id, receipt_type, event, thread_id)

    async def set_read_markers(
        self,
        user_id: str,
        room_id: str,
        fully_read: str | None,
        read: str | None,
        read_private: str | None,
    ) -> None:
        """``/read_markers``: every event is checked before anything is stored."""
        await self._joined_room(user_id, room_id)
        events: dict[str, Event] = {}
        for event_id in (fully_read, read, read_private):
            if event_id is not None and event_id not in events:
                events[event_id] = await self._event_in_room(room_id, event_id)
        if fully_read is not None:
            await self._set_fully_read(user_id, room_id, events[fully_read])
        if read is not None:
            await self._store_receipt(user_id, room_id, READ, events[read], None)
        if read_private is not None:
            await self._store_receipt(user_id, room_id, PRIVATE_READ, events[read_private], None)

    async def store_remote_receipt(
        self, user_id: str, room_id: str, event_id: str, thread_id: str | None, ts: int
    ) -> Receipt | None:
        """An ``m.read`` receipt from federation (the caller checked who may send it)."""
        if not event_id.startswith("$"):
            return None
        event = await self._storage.events.get_event(event_id)
        ordering: int | None = None  # not held (in the timeline): position unknown
        if event is not None:
            if event.room_id != room_id or event.rejected_reason is not None:
                return None
            if not event.outlier:
                ordering = event.stream_ordering
        return await self._storage.receipts.insert_receipt(
            room_id, READ, user_id, thread_id, event_id, ordering, {"ts": ts}
        )

    async def _store_receipt(
        self, user_id: str, room_id: str, receipt_type: str, event: Event, thread_id: str | None
    ) -> None:
        await self._storage.receipts.insert_receipt(
            room_id,
            receipt_type,
            user_id,
            thread_id,
            event.event_id,
            event.stream_ordering,
            {"ts": now_ms(self._clock)},
        )

    async def _set_fully_read(self, user_id: str, room_id: str, event: Event) -> None:
        async with self._marker_lock((user_id, room_id)):
            current = await self._storage.account_data.get(user_id, room_id, FULLY_READ)
            current_id = current.get("event_id") if current else None
            if current_id == event.event_id:
                return
            previous = (
                await self._storage.events.get_event(current_id)
                if isinstance(current_id, str)
                else None
            )
            if (
                previous is not None
                and previous.room_id == room_id
                and (previous.depth, previous.stream_ordering)
                >= (event.depth, event.stream_ordering)
            ):
                return  # the marker never moves backwards
            await self._storage.account_data.put(
                user_id, room_id, FULLY_READ, {"event_id": event.event_id}
            )

    def on_receipt(self, receipt: Receipt) -> None:
        """A stored receipt (told by the bus): wake whoever may see it."""
        if receipt.receipt_type == PRIVATE_READ:
            self._notifier.notify_users([receipt.user_id])
            return
        room = self._rooms.get_if_loaded(receipt.room_id)
        members = room.joined_members() if room is not None else {receipt.user_id}
        self._notifier.notify_users(members)


def receipt_content(receipts: list[Receipt]) -> JsonDict:
    """``m.receipt`` content: event id -> receipt type -> user id -> {ts, thread_id}."""
    content: JsonDict = {}
    for r in receipts:  # oldest first: a later receipt of the same key wins
        entry = dict(r.data)
        if r.thread_id is not None:
            entry["thread_id"] = r.thread_id
        content.setdefault(r.event_id, {}).setdefault(r.receipt_type, {})[r.user_id] = entry
    return content


class ReceiptsSource:
    """Per-room ``m.receipt`` ephemeral events: whole for new rooms, deltas otherwise."""

    name = "receipts"
    quiet_when_still = True

    def __init__(self, storage: Storage) -> None:
        self._store = storage.receipts

    def current_position(self) -> int:
        return self._store.stream.current_position

    async def get_updates(self, ctx: SyncContext, since: int, now: int) -> SyncFragment:
        fragment = SyncFragment()
        if ctx.filters.blocks_all_room_ephemeral():
            return fragment
        whole = ctx.joined_room_ids if ctx.initial else ctx.newly_joined_room_ids
        receipts = await self._store.get_receipts_for_rooms(whole, 0, now, viewer=ctx.user_id)
        if since < now:
            changed = [
                room_id
                for room_id in ctx.joined_room_ids
                if room_id not in whole and self._store.changes.may_have_changed(room_id, since)
            ]
            receipts += await self._store.get_receipts_for_rooms(
                changed, since, now, viewer=ctx.user_id
            )
        by_room: dict[str, list[Receipt]] = {}
        for r in receipts:
            by_room.setdefault(r.room_id, []).append(r)
        for room_id, room_receipts in by_room.items():
            event = {"type": "m.receipt", "content": receipt_content(room_receipts)}
            events = ctx.filters.filter_ephemeral([event], room_id)
            if events:
                fragment.ephemeral[room_id] = events
                fragment.has_updates = True
        return fragment
