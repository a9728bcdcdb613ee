"""Read receipts: the latest receipt per (room, receipt type, user, thread).

Invariants:
- A receipt only moves forward: a new one replaces the stored one only when its event
  is later in the events stream; otherwise it is ignored and takes no stream position
  that anyone sees.
- A receipt (from another server) for an event we do not hold is stored all the same,
  as Synapse does, with ``UNKNOWN_EVENT`` as its event's position: it replaces the
  stored receipt whatever that is, and any receipt for an event we hold replaces it
  unless its event has arrived since and is the later one.
- Every stored change gets a position of the receipts stream (``stream``); the
  position becomes visible (``current_position``) only once the change is committed,
  and ``RoomChangeCache`` records the room before that, so a reader that sees
  position N can tell from memory which rooms changed up to N.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from homeserver.bus import Bus, ReceiptStored
from storage.database import Database, Transaction
from storage.id_generator import IdGenerator

UNTHREADED = ""  # thread_id column value of an unthreaded receipt
# event_stream_ordering of a receipt whose event we did not hold when it came: below
# every real position (backfilled events count down from 0).
UNKNOWN_EVENT = -(2**62)
PRIVATE_READ = "m.read.private"


@dataclass(frozen=True, slots=True)
class Receipt:
    room_id: str
    receipt_type: str
    user_id: str
    thread_id: str | None  # None: unthreaded
    event_id: str
    data: dict[str, Any]
    stream_id: int


class RoomChangeCache:
    """The last stream position at which each room changed, from ``earliest`` on.

    ``may_have_changed(room, since)`` is exact for ``since >= earliest``; for older
    positions (a token from before this process started) it answers True.
    """

    def __init__(self, earliest: int) -> None:
        self.earliest = earliest
        self._last_change: dict[str, int] = {}

    def record(self, room_id: str, position: int) -> None:
        if position > self._last_change.get(room_id, 0):
            self._last_change[room_id] = position

    def may_have_changed(self, room_id: str, since: int) -> bool:
        if since < self.earliest:
            return True
        return self._last_change.get(room_id, 0) > since


def _chunks(items: Sequence[str], size: int = 500) -> Iterable[Sequence[str]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _row_to_receipt(row: Sequence[Any]) -> Receipt:
    return Receipt(
        room_id=row[0],
        receipt_type=row[1],
        user_id=row[2],
        thread_id=row[3] or None,
        event_id=row[4],
        data=json.loads(row[5]),
        stream_id=int(row[6]),
    )


_COLUMNS = "room_id, receipt_type, user_id, thread_id, event_id, data, stream_id"


class ReceiptsStore:
    def __init__(self, db: Database, stream: IdGenerator, bus: Bus) -> None:
        self._db = db
        self.stream = stream
        self.changes = RoomChangeCache(stream.current_position)
        self._bus = bus

    async def insert_receipt(
        self,
        room_id: str,
        receipt_type: str,
        user_id: str,
        thread_id: str | None,
        event_id: str,
        event_stream_ordering: int | None,
        data: dict[str, Any],
    ) -> Receipt | None:
        """Store the receipt unless one for a later event is kept; None if ignored.

        ``event_stream_ordering`` None: the event is not held here (a remote receipt);
        the receipt is stored unconditionally (see the module docstring).
        """
        encoded = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
        if event_stream_ordering is None:
            event_stream_ordering = UNKNOWN_EVENT
            condition = ""
        else:
            # A stored receipt's event that was unknown may have arrived since: compare
            # with its real position then.
            condition = (
                " WHERE (CASE WHEN receipts.event_stream_ordering = ? THEN COALESCE("
                "(SELECT e.stream_ordering FROM events AS e WHERE e.event_id = receipts.event_id"
                " AND e.room_id = receipts.room_id AND e.outlier = 0), ?)"
                " ELSE receipts.event_stream_ordering END) < excluded.event_stream_ordering"
            )
        with self.stream.reserve() as stream_id:

            def _txn(txn: Transaction) -> bool:
                txn.execute(
                    "INSERT INTO receipts (room_id, receipt_type, user_id, thread_id, event_id,"
                    " event_stream_ordering, data, stream_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
                    " ON CONFLICT (room_id, receipt_type, user_id, thread_id) DO UPDATE SET"
                    " event_id = excluded.event_id,"
                    " event_stream_ordering = excluded.event_stream_ordering,"
                    " data = excluded.data, stream_id = excluded.stream_id" + condition,
                    (
                        room_id,
                        receipt_type,
                        user_id,
                        thread_id or UNTHREADED,
                        event_id,
                        event_stream_ordering,
                        encoded,
                        stream_id,
                        *((UNKNOWN_EVENT, UNKNOWN_EVENT) if condition else ()),
                    ),
                )
                return txn.rowcount > 0

            stored = await self._db.run_interaction("insert_receipt", _txn)
            if stored:
                self.changes.record(room_id, stream_id)
        if not stored:
            return None
        receipt = Receipt(room_id, receipt_type, user_id, thread_id, event_id, data, stream_id)
        # After the block: the position is visible before anyone is told.
        self._bus.publish(ReceiptStored(receipt))
        return receipt

    async def get_receipts_for_rooms(
        self,
        room_ids: Iterable[str],
        from_stream: int,
        to_stream: int,
        *,
        viewer: str,
    ) -> list[Receipt]:
        """Receipts of these rooms stored in (from_stream, to_stream], oldest first.

        Other users' private receipts are left out: only ``viewer``'s own are returned.
        """
        rooms = sorted(set(room_ids))
        if not rooms or from_stream >= to_stream:
            return []

        def _txn(txn: Transaction) -> list[Receipt]:
            out: list[Receipt] = []
            for chunk in _chunks(rooms):
                marks = ", ".join("?" for _ in chunk)
                rows = txn.select_all(
                    f"SELECT {_COLUMNS} FROM receipts WHERE room_id IN ({marks})"
                    " AND stream_id > ? AND stream_id <= ?"
                    " AND (receipt_type != ? OR user_id = ?)",
                    (*chunk, from_stream, to_stream, PRIVATE_READ, viewer),
                )
                out.extend(_row_to_receipt(r) for r in rows)
            out.sort(key=lambda r: r.stream_id)
            return out

        return await self._db.run_interaction("get_receipts_for_rooms", _txn)

    async def get_user_receipts(self, room_id: str, user_id: str) -> list[Receipt]:
        """All of one user's current receipts in a room."""

        def _txn(txn: Transaction) -> list[Receipt]:
            rows = txn.select_all(
                f"SELECT {_COLUMNS} FROM receipts WHERE room_id = ? AND user_id = ?"
                " ORDER BY stream_id",
                (room_id, user_id),
            )
            return [_row_to_receipt(r) for r in rows]

        return await self._db.run_interaction("get_user_receipts", _txn)
