"""Third-party identifiers of local users and the identity servers they are bound on.

Invariants: a (medium, address) belongs to at most one user (the primary key); the
bindings table only records what this server asked an identity server to bind, so an
unbind without ``id_server`` knows where to go.
"""

from __future__ import annotations

from dataclasses import dataclass

from storage.database import Database, Transaction


@dataclass(frozen=True, slots=True)
class ThreePid:
    user_id: str
    medium: str
    address: str
    validated_at: int
    added_at: int


class ThreePidStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    # Account 3PIDs ----------------------------------------------------------------

    async def add_threepid(
        self, user_id: str, medium: str, address: str, validated_at: int, added_at: int
    ) -> bool:
        """Add (or keep) the 3PID for ``user_id``; False if another user has it."""

        def _txn(txn: Transaction) -> bool:
            row = txn.select_one(
                "SELECT user_id FROM user_threepids WHERE medium = ? AND address = ?",
                (medium, address),
            )
            if row is not None:
                return str(row[0]) == user_id
            txn.execute(
                "INSERT INTO user_threepids (user_id, medium, address, validated_at, added_at)"
                " VALUES (?, ?, ?, ?, ?)",
                (user_id, medium, address, validated_at, added_at),
            )
            return True

        return await self._db.run_interaction("add_threepid", _txn)

    async def get_threepids(self, user_id: str) -> list[ThreePid]:
        def _txn(txn: Transaction) -> list[ThreePid]:
            rows = txn.select_all(
                "SELECT user_id, medium, address, validated_at, added_at FROM user_threepids"
                " WHERE user_id = ? ORDER BY added_at, medium, address",
                (user_id,),
            )
            return [ThreePid(str(r[0]), str(r[1]), str(r[2]), int(r[3]), int(r[4])) for r in rows]

        return await self._db.run_interaction("get_threepids", _txn)

    async def get_user_by_threepid(self, medium: str, address: str) -> str | None:
        def _txn(txn: Transaction) -> str | None:
            row = txn.select_one(
                "SELECT user_id FROM user_threepids WHERE medium = ? AND address = ?",
                (medium, address),
            )
            return None if row is None else str(row[0])

        return await self._db.run_interaction("get_user_by_threepid", _txn)

    async def delete_threepid(self, user_id: str, medium: str, address: str) -> bool:
        def _txn(txn: Transaction) -> bool:
            txn.execute(
                "DELETE FROM user_threepids WHERE user_id = ? AND medium = ? AND address = ?",
                (user_id, medium, address),
            )
            return txn.rowcount > 0

        return await self._db.run_interaction("delete_threepid", _txn)

    # Identity server bindings -------------------------------------------------------

    async def add_binding(self, user_id: str, medium: str, address: str, id_server: str) -> None:
        def _txn(txn: Transaction) -> None:
            row = txn.select_one(
                "SELECT 1 FROM user_threepid_id_server"
                " WHERE user_id = ? AND medium = ? AND address = ? AND id_server = ?",
                (user_id, medium, address, id_server),
            )
            if row is None:
                txn.execute(
                    "INSERT INTO user_threepid_id_server (user_id, medium, address, id_server)"
                    " VALUES (?, ?, ?, ?)",
                    (user_id, medium, address, id_server),
                )

        await self._db.run_interaction("add_threepid_binding", _txn)

    async def get_binding_servers(self, user_id: str, medium: str, address: str) -> list[str]:
        def _txn(txn: Transaction) -> list[str]:
            rows = txn.select_all(
                "SELECT id_server FROM user_threepid_id_server"
                " WHERE user_id = ? AND medium = ? AND address = ? ORDER BY id_server",
                (user_id, medium, address),
            )
            return [str(r[0]) for r in rows]

        return await self._db.run_interaction("get_threepid_binding_servers", _txn)

    async def get_bound_threepids(self, user_id: str) -> list[tuple[str, str]]:
        def _txn(txn: Transaction) -> list[tuple[str, str]]:
            rows = txn.select_all(
                "SELECT DISTINCT medium, address FROM user_threepid_id_server"
                " WHERE user_id = ? ORDER BY medium, address",
                (user_id,),
            )
            return [(str(r[0]), str(r[1])) for r in rows]

        return await self._db.run_interaction("get_bound_threepids", _txn)

    async def remove_binding(self, user_id: str, medium: str, address: str, id_server: str) -> None:
        def _txn(txn: Transaction) -> None:
            txn.execute(
                "DELETE FROM user_threepid_id_server"
                " WHERE user_id = ? AND medium = ? AND address = ? AND id_server = ?",
                (user_id, medium, address, id_server),
            )

        await self._db.run_interaction("remove_threepid_binding", _txn)
