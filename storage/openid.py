"""OpenID tokens: the hash of each token, its owner and the end of its validity.

Invariants: a token is only ever looked up by its hash and is valid strictly before
``ts_valid_until_ms``; expired rows are deleted when new tokens are written.
"""

from __future__ import annotations

from storage.database import Database, Transaction


class OpenIdStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def insert_token(
        self, token_hash: str, user_id: str, valid_until_ms: int, now: int
    ) -> None:
        def _txn(txn: Transaction) -> None:
            txn.execute("DELETE FROM open_id_tokens WHERE ts_valid_until_ms <= ?", (now,))
            txn.execute(
                "INSERT INTO open_id_tokens (token_hash, ts_valid_until_ms, user_id)"
                " VALUES (?, ?, ?)",
                (token_hash, valid_until_ms, user_id),
            )

        await self._db.run_interaction("insert_open_id_token", _txn)

    async def get_user_for_token(self, token_hash: str, now: int) -> str | None:
        """The owner of a token still valid at ``now``, else None."""

        def _txn(txn: Transaction) -> str | None:
            row = txn.select_one(
                "SELECT user_id FROM open_id_tokens WHERE token_hash = ? AND ts_valid_until_ms > ?",
                (token_hash, now),
            )
            return str(row[0]) if row else None

        return await self._db.run_interaction("get_user_for_open_id_token", _txn)
