"""The ``rooms`` table (a room's version and creator) and blocked rooms.

A room's row is written with its first event in the persist transaction
(``storage/events.py``, ``PersistItem.room_is_new``) or, for a room learnt of over
federation before any of its events is stored, by ``ensure``.
"""

from __future__ import annotations

from homeserver.events.room_versions import RoomVersion, get_room_version
from storage.database import Database, Transaction


class RoomsStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def ensure(self, room_id: str, room_version: str, creator: str | None) -> None:
        """Record a room we learn about over federation (no-op if known)."""

        def _txn(txn: Transaction) -> None:
            if txn.select_one("SELECT 1 FROM rooms WHERE room_id = ?", (room_id,)):
                return
            txn.execute(
                "INSERT INTO rooms (room_id, room_version, creator, is_public, created_ts)"
                " VALUES (?, ?, ?, 0, 0)",
                (room_id, room_version, creator),
            )

        await self._db.run_interaction("ensure_room", _txn)

    async def get_version(self, room_id: str) -> RoomVersion | None:
        def _txn(txn: Transaction) -> str | None:
            row = txn.select_one("SELECT room_version FROM rooms WHERE room_id = ?", (room_id,))
            return str(row[0]) if row else None

        ident = await self._db.run_interaction("get_room_version", _txn)
        return get_room_version(ident) if ident else None

    async def block(self, room_id: str, user_id: str) -> None:
        await self._db.run_interaction(
            "block_room",
            lambda txn: txn.execute(
                "INSERT INTO blocked_rooms (room_id, user_id) VALUES (?, ?)"
                " ON CONFLICT (room_id) DO NOTHING",
                (room_id, user_id),
            ),
        )

    async def is_blocked(self, room_id: str) -> bool:
        row = await self._db.run_interaction(
            "is_room_blocked",
            lambda txn: txn.select_one("SELECT 1 FROM blocked_rooms WHERE room_id = ?", (room_id,)),
        )
        return row is not None

    async def unblock(self, room_id: str) -> None:
        await self._db.run_interaction(
            "unblock_room",
            lambda txn: txn.execute("DELETE FROM blocked_rooms WHERE room_id = ?", (room_id,)),
        )

    async def blocked_by(self, room_id: str) -> str | None:
        """Who blocked the room, or None when it is not blocked."""
        row = await self._db.run_interaction(
            "room_blocked_by",
            lambda txn: txn.select_one(
                "SELECT user_id FROM blocked_rooms WHERE room_id = ?", (room_id,)
            ),
        )
        return str(row[0]) if row is not None else None
