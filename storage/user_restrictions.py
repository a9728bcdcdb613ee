"""Admin restrictions on local accounts: suspended, locked and shadow-banned
(``user_restrictions``), and per-user rate limit overrides (``ratelimit_override``)."""

from __future__ import annotations

from storage.database import Database, Transaction

FLAGS = ("suspended", "locked", "shadow_banned")


class UserRestrictionsStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def get_restricted(self, flag: str) -> set[str]:
        """Every user with ``flag`` (suspended, locked or shadow_banned) set."""
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

    # Rate limit overrides ----------------------------------------------------------

    async def get_ratelimit_overrides(self) -> dict[str, tuple[int, int]]:
        """user id -> (messages per second, burst count), for every override."""

        def _txn(txn: Transaction) -> dict[str, tuple[int, int]]:
            rows = txn.select_all(
                "SELECT user_id, messages_per_second, burst_count FROM ratelimit_override"
            )
            return {str(r[0]): (int(r[1]), int(r[2])) for r in rows}  # type: ignore[call-overload]

        return await self._db.run_interaction("get_ratelimit_overrides", _txn)

    async def set_ratelimit_override(
        self, user_id: str, messages_per_second: int, burst_count: int
    ) -> None:
        def _txn(txn: Transaction) -> None:
            txn.execute("DELETE FROM ratelimit_override WHERE user_id = ?", (user_id,))
            txn.execute(
                "INSERT INTO ratelimit_override (user_id, messages_per_second, burst_count)"
                " VALUES (?, ?, ?)",
                (user_id, messages_per_second, burst_count),
            )

        await self._db.run_interaction("set_ratelimit_override", _txn)

    async def delete_ratelimit_override(self, user_id: str) -> None:
        await self._db.run_interaction(
            "delete_ratelimit_override",
            lambda txn: txn.execute("DELETE FROM ratelimit_override WHERE user_id = ?", (user_id,)),
        )
