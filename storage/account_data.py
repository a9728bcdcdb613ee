"""Global and per-room account data, each change at a position of the account data stream."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from homeserver.bus import AccountDataChanged, Bus
from storage.database import Database, Transaction
from storage.id_generator import IdGenerator

GLOBAL = ""


@dataclass(frozen=True, slots=True)
class AccountDataChange:
    room_id: str  # "" for global
    data_type: str
    content: dict[str, Any]
    stream_id: int


class AccountDataStore:
    def __init__(self, db: Database, stream: IdGenerator, bus: Bus) -> None:
        self._db = db
        self.stream = stream
        self._bus = bus

    async def put(self, user_id: str, room_id: str, data_type: str, content: dict[str, Any]) -> int:
        encoded = json.dumps(content, ensure_ascii=False, separators=(",", ":"))
        with self.stream.reserve() as stream_id:

            def _txn(txn: Transaction) -> None:
                txn.execute(
                    "DELETE FROM account_data WHERE user_id = ? AND room_id = ?"
                    " AND account_data_type = ?",
                    (user_id, room_id, data_type),
                )
                txn.execute(
                    "INSERT INTO account_data (user_id, room_id, account_data_type, content,"
                    " stream_id) VALUES (?, ?, ?, ?, ?)",
                    (user_id, room_id, data_type, encoded, stream_id),
                )

            await self._db.run_interaction("put_account_data", _txn)
        # After the block: the position is visible before anyone is woken.
        self._bus.publish(AccountDataChanged(user_id, stream_id))
        return stream_id

    async def get(self, user_id: str, room_id: str, data_type: str) -> dict[str, Any] | None:
        def _txn(txn: Transaction) -> dict[str, Any] | None:
            row = txn.select_one(
                "SELECT content FROM account_data WHERE user_id = ? AND room_id = ?"
                " AND account_data_type = ?",
                (user_id, room_id, data_type),
            )
            return json.loads(row[0]) if row else None  # type: ignore[no-any-return]

        return await self._db.run_interaction("get_account_data", _txn)

    async def get_changes(
        self, user_id: str, from_stream: int, to_stream: int
    ) -> list[AccountDataChange]:
        """Latest value of each item changed in (from_stream, to_stream]."""

        def _txn(txn: Transaction) -> list[AccountDataChange]:
            rows = txn.select_all(
                "SELECT room_id, account_data_type, content, stream_id FROM account_data"
                " WHERE user_id = ? AND stream_id > ? AND stream_id <= ? ORDER BY stream_id",
                (user_id, from_stream, to_stream),
            )
            return [AccountDataChange(r[0], r[1], json.loads(r[2]), int(r[3])) for r in rows]

        return await self._db.run_interaction("get_account_data_changes", _txn)
