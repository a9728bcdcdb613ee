"""Client sync filters (``user_filters``): ids count up per user from 0."""

from __future__ import annotations

import json
from typing import Any

from storage.database import Database, Transaction


class FilterStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def add(self, user_id: str, filter_json: dict[str, Any]) -> int:
        def _txn(txn: Transaction) -> int:
            row = txn.select_one(
                "SELECT MAX(filter_id) FROM user_filters WHERE user_id = ?", (user_id,)
            )
            filter_id = int(row[0]) + 1 if row and row[0] is not None else 0
            txn.execute(
                "INSERT INTO user_filters (user_id, filter_id, filter_json) VALUES (?, ?, ?)",
                (user_id, filter_id, json.dumps(filter_json)),
            )
            return filter_id

        return await self._db.run_interaction("add_filter", _txn)

    async def get(self, user_id: str, filter_id: int) -> dict[str, Any] | None:
        def _txn(txn: Transaction) -> dict[str, Any] | None:
            row = txn.select_one(
                "SELECT filter_json FROM user_filters WHERE user_id = ? AND filter_id = ?",
                (user_id, filter_id),
            )
            return json.loads(row[0]) if row else None  # type: ignore[no-any-return]

        return await self._db.run_interaction("get_filter", _txn)
