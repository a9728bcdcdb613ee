"""The public room directory: a room's listing (``rooms.is_public``)."""

from __future__ import annotations

from storage.aliases import AliasStore, move_aliases_txn
from storage.database import Database, Transaction


class RoomDirectoryStore:
    def __init__(self, db: Database, aliases: AliasStore) -> None:
        self._db = db
        # A room upgrade moves the aliases with the listing, in one transaction.
        self._aliases = aliases

    async def move_room(
        self, old_room_id: str, new_room_id: str, *, move_listing: bool = True
    ) -> None:
        """A room upgrade: the old room's local aliases and its listing in the public room
        directory go to the new room, in one transaction. Without ``move_listing`` (a
        shut down room) the old room leaves the directory and the new one is not listed."""

        def _txn(txn: Transaction) -> list[str]:
            moved = move_aliases_txn(txn, old_room_id, new_room_id)
            row = txn.select_one("SELECT is_public FROM rooms WHERE room_id = ?", (old_room_id,))
            if row and row[0]:
                txn.execute("UPDATE rooms SET is_public = 0 WHERE room_id = ?", (old_room_id,))
                if move_listing:
                    txn.execute("UPDATE rooms SET is_public = 1 WHERE room_id = ?", (new_room_id,))
            return moved

        moved = await self._db.run_interaction("move_room_directory", _txn)
        self._aliases.changed((alias, new_room_id) for alias in moved)

    async def set_public(self, room_id: str, public: bool) -> None:
        await self._db.run_interaction(
            "set_room_public",
            lambda txn: txn.execute(
                "UPDATE rooms SET is_public = ? WHERE room_id = ?", (int(public), room_id)
            ),
        )

    async def is_public(self, room_id: str) -> bool | None:
        def _txn(txn: Transaction) -> bool | None:
            row = txn.select_one("SELECT is_public FROM rooms WHERE room_id = ?", (room_id,))
            return bool(row[0]) if row else None

        return await self._db.run_interaction("is_room_public", _txn)

    async def get_public_room_ids(self) -> list[str]:
        def _txn(txn: Transaction) -> list[str]:
            return [
                str(r[0]) for r in txn.select_all("SELECT room_id FROM rooms WHERE is_public = 1")
            ]

        return await self._db.run_interaction("public_rooms", _txn)
