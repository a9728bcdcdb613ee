"""Application service transactions and published room lists.

Invariants:
- A transaction row is written, together with the service's new ``last_txn_id`` and
  stream position, in one database transaction: either the events are in a recorded
  transaction and the position covers them, or neither happened.
- A service's stream position only moves forward.
- Transaction ids of a service increase by one and are never reused while the
  service's state row exists.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from storage.database import Database, Transaction

JsonDict = dict[str, Any]


@dataclass(frozen=True, slots=True)
class AppServiceState:
    last_txn_id: int
    stream_position: int


@dataclass(frozen=True, slots=True)
class AppServiceTxn:
    as_id: str
    txn_id: int
    body: JsonDict
    created_ts: int


class AppServiceStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    # State and transactions ---------------------------------------------------------

    async def get_or_create_state(self, as_id: str, initial_position: int) -> AppServiceState:
        """The service's state; a new service starts at ``initial_position`` (no history)."""

        def _txn(txn: Transaction) -> AppServiceState:
            row = txn.select_one(
                "SELECT last_txn_id, stream_position FROM appservice_state WHERE as_id = ?",
                (as_id,),
            )
            if row is not None:
                return AppServiceState(int(row[0]), int(row[1]))
            txn.execute(
                "INSERT INTO appservice_state (as_id, last_txn_id, stream_position)"
                " VALUES (?, 0, ?)",
                (as_id, initial_position),
            )
            return AppServiceState(0, initial_position)

        return await self._db.run_interaction("appservice_get_state", _txn)

    async def create_txn(
        self, as_id: str, body: JsonDict, stream_position: int, now_ms: int
    ) -> AppServiceTxn:
        """Record the next transaction of ``as_id`` and move its position forward."""
        encoded = json.dumps(body, ensure_ascii=False, separators=(",", ":"))

        def _txn(txn: Transaction) -> int:
            row = txn.select_one(
                "SELECT last_txn_id FROM appservice_state WHERE as_id = ?", (as_id,)
            )
            txn_id = (int(row[0]) if row else 0) + 1
            txn.execute(
                "INSERT INTO appservice_txns (as_id, txn_id, body, created_ts) VALUES (?, ?, ?, ?)",
                (as_id, txn_id, encoded, now_ms),
            )
            txn.execute(
                "UPDATE appservice_state SET last_txn_id = ?,"
                " stream_position = CASE WHEN stream_position > ? THEN stream_position ELSE ? END"
                " WHERE as_id = ?",
                (txn_id, stream_position, stream_position, as_id),
            )
            return txn_id

        txn_id = await self._db.run_interaction("appservice_create_txn", _txn)
        return AppServiceTxn(as_id, txn_id, body, now_ms)

    async def get_oldest_txn(self, as_id: str) -> AppServiceTxn | None:
        def _txn(txn: Transaction) -> AppServiceTxn | None:
            row = txn.select_one(
                "SELECT txn_id, body, created_ts FROM appservice_txns WHERE as_id = ?"
                " ORDER BY txn_id LIMIT 1",
                (as_id,),
            )
            if row is None:
                return None
            return AppServiceTxn(as_id, int(row[0]), json.loads(row[1]), int(row[2]))

        return await self._db.run_interaction("appservice_oldest_txn", _txn)

    async def count_txns(self, as_id: str) -> int:
        def _txn(txn: Transaction) -> int:
            row = txn.select_one("SELECT COUNT(*) FROM appservice_txns WHERE as_id = ?", (as_id,))
            return int(row[0]) if row else 0

        return await self._db.run_interaction("appservice_count_txns", _txn)

    async def complete_txn(self, as_id: str, txn_id: int) -> None:
        await self._db.run_interaction(
            "appservice_complete_txn",
            lambda txn: txn.execute(
                "DELETE FROM appservice_txns WHERE as_id = ? AND txn_id = ?", (as_id, txn_id)
            ),
        )

    async def set_stream_position(self, as_id: str, position: int) -> None:
        await self._db.run_interaction(
            "appservice_set_position",
            lambda txn: txn.execute(
                "UPDATE appservice_state SET stream_position = ?"
                " WHERE as_id = ? AND stream_position < ?",
                (position, as_id, position),
            ),
        )

    async def get_event_ids_in_range(
        self, after: int, up_to: int, limit: int
    ) -> list[tuple[int, str]]:
        """(stream ordering, event id) of the events in (after, up_to], oldest first.

        Reads the events table of ``storage.events`` (read-only), for the catch-up of a
        service after a restart.
        """

        def _txn(txn: Transaction) -> list[tuple[int, str]]:
            rows = txn.select_all(
                "SELECT stream_ordering, event_id FROM events"
                " WHERE stream_ordering > ? AND stream_ordering <= ? AND outlier = 0"
                " ORDER BY stream_ordering LIMIT ?",
                (after, up_to, limit),
            )
            return [(int(r[0]), str(r[1])) for r in rows]

        return await self._db.run_interaction("appservice_event_ids", _txn)

    # Published room lists ----------------------------------------------------------

    async def set_room_published(
        self, as_id: str, network_id: str, room_id: str, published: bool
    ) -> None:
        def _txn(txn: Transaction) -> None:
            txn.execute(
                "DELETE FROM appservice_room_list WHERE as_id = ? AND network_id = ?"
                " AND room_id = ?",
                (as_id, network_id, room_id),
            )
            if published:
                txn.execute(
                    "INSERT INTO appservice_room_list (as_id, network_id, room_id)"
                    " VALUES (?, ?, ?)",
                    (as_id, network_id, room_id),
                )

        await self._db.run_interaction("appservice_publish_room", _txn)

    async def get_published_room_ids(self, as_id: str | None, network_id: str | None) -> list[str]:
        """Rooms of one network (``as_id`` and ``network_id``), or of every network (None)."""

        def _txn(txn: Transaction) -> list[str]:
            if as_id is None:
                rows = txn.select_all("SELECT DISTINCT room_id FROM appservice_room_list")
            else:
                rows = txn.select_all(
                    "SELECT room_id FROM appservice_room_list WHERE as_id = ? AND network_id = ?",
                    (as_id, network_id),
                )
            return [str(r[0]) for r in rows]

        return await self._db.run_interaction("appservice_published_rooms", _txn)
