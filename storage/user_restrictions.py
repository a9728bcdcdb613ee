"""Suspended and locked accounts (``user_restrictions``)."""

from __future__ import annotations

from storage.database import Database, Transaction

FLAGS = ("suspended", "locked")


class UserRestrictionsStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def get_restricted(self, flag: str) -> set[str]:
        """Every user with ``flag`` (suspended or locked) set."""
        if flag not in FLAGS:
            raise ValueError(flag)

        def _txn(txn: Transaction) -> set[str]:
            rows = txn.select_all(f"SELECT user_id FROM user_restrictions WHERE {flag} = 1")
            return {str(r[0]) for r in rows}

        return await self._db.run_interaction(f"get_{flag}_users", _txn)

    async def set_flag(self, user_id: str, flag: str, value: bool) -> None:
        if flag not in FLAGS:
            raise ValueError(flag)

        def _txn(txn: Transaction) -> None:
            txn.execute(
                "INSERT INTO user_restrictions (user_id) VALUES (?) ON CONFLICT DO NOTHING",
                (user_id,),
            )
            txn.execute(
                f"UPDATE user_restrictions SET {flag} = ? WHERE user_id = ?",
                (1 if value else 0, user_id),
            )

        await self._db.run_interaction(f"set_{flag}", _txn)
