"""Login tokens (``m.login.token``): hash, owner, expiry.

Invariants: a token logs in at most once; consuming deletes its row in the transaction
that reads it, so two concurrent logins with one token cannot both succeed. Expired rows
are deleted when new tokens are written.
"""

from __future__ import annotations

from storage.database import Database, Transaction


class LoginTokenStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def add_token(self, token_hash: str, user_id: str, expiry_ts: int, now: int) -> None:
        def _txn(txn: Transaction) -> None:
            txn.execute("DELETE FROM login_tokens WHERE expiry_ts <= ?", (now,))
            txn.execute(
                "INSERT INTO login_tokens (token_hash, user_id, expiry_ts) VALUES (?, ?, ?)",
                (token_hash, user_id, expiry_ts),
            )

        await self._db.run_interaction("add_login_token", _txn)

    async def consume_token(self, token_hash: str, now: int) -> str | None:
        """The owner of an unexpired token, which is used up; None otherwise."""

        def _txn(txn: Transaction) -> str | None:
            row = txn.select_one(
                "SELECT user_id, expiry_ts FROM login_tokens WHERE token_hash = ?", (token_hash,)
            )
            if row is None:
                return None
            txn.execute("DELETE FROM login_tokens WHERE token_hash = ?", (token_hash,))
            if txn.rowcount != 1 or int(row[1]) <= now:
                return None
            return str(row[0])

        return await self._db.run_interaction("consume_login_token", _txn)
