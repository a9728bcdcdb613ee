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

    def to_json(self) -> dict[str, str | int]:
        """As the client (``GET /account/3pid``) and admin APIs show it."""
        return {
            "medium": self.medium,
            "address": self.address,
            "validated_at": self.validated_at,
            "added_at": self.added_at,
        }


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


@dataclass(frozen=True, slots=True)
class ValidationSession:
    session_id: str
    medium: str
    address: str
    client_secret: str
    last_send_attempt: int
    token_hash: str
    token_expires: int
    next_link: str | None
    validated_at: int | None


_SESSION_COLUMNS = (
    "session_id, medium, address, client_secret, last_send_attempt, token_hash,"
    " token_expires, next_link, validated_at"
)


def _session(row: tuple[object, ...]) -> ValidationSession:
    return ValidationSession(
        str(row[0]),
        str(row[1]),
        str(row[2]),
        str(row[3]),
        int(row[4]),  # type: ignore[call-overload]
        str(row[5]),
        int(row[6]),  # type: ignore[call-overload]
        None if row[7] is None else str(row[7]),
        None if row[8] is None else int(row[8]),  # type: ignore[call-overload]
    )


class ValidationSessionStore:
    """Email validation sessions. A session is found by (client_secret, medium,
    address) for resends and by session id plus client secret everywhere else."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def find(self, client_secret: str, medium: str, address: str) -> ValidationSession | None:
        def _txn(txn: Transaction) -> ValidationSession | None:
            row = txn.select_one(
                f"SELECT {_SESSION_COLUMNS} FROM threepid_validation_sessions"
                " WHERE client_secret = ? AND medium = ? AND address = ?"
                " ORDER BY created_at DESC",
                (client_secret, medium, address),
            )
            return None if row is None else _session(row)

        return await self._db.run_interaction("find_validation_session", _txn)

    async def get(self, session_id: str, client_secret: str) -> ValidationSession | None:
        def _txn(txn: Transaction) -> ValidationSession | None:
            row = txn.select_one(
                f"SELECT {_SESSION_COLUMNS} FROM threepid_validation_sessions"
                " WHERE session_id = ? AND client_secret = ?",
                (session_id, client_secret),
            )
            return None if row is None else _session(row)

        return await self._db.run_interaction("get_validation_session", _txn)

    async def upsert(self, session: ValidationSession, now: int) -> None:
        """Create the session, or give it a new token and send attempt."""

        def _txn(txn: Transaction) -> None:
            txn.execute(
                "DELETE FROM threepid_validation_sessions WHERE session_id = ?",
                (session.session_id,),
            )
            txn.execute(
                f"INSERT INTO threepid_validation_sessions ({_SESSION_COLUMNS}, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    session.session_id,
                    session.medium,
                    session.address,
                    session.client_secret,
                    session.last_send_attempt,
                    session.token_hash,
                    session.token_expires,
                    session.next_link,
                    session.validated_at,
                    now,
                ),
            )

        await self._db.run_interaction("upsert_validation_session", _txn)

    async def validate(
        self, session_id: str, client_secret: str, token_hash: str, now: int
    ) -> ValidationSession | None:
        """Mark the session validated if the token is right and unexpired."""

        def _txn(txn: Transaction) -> ValidationSession | None:
            row = txn.select_one(
                f"SELECT {_SESSION_COLUMNS} FROM threepid_validation_sessions"
                " WHERE session_id = ? AND client_secret = ? AND token_hash = ?",
                (session_id, client_secret, token_hash),
            )
            if row is None:
                return None
            found = _session(row)
            if found.validated_at is None:
                if found.token_expires <= now:
                    return None
                txn.execute(
                    "UPDATE threepid_validation_sessions SET validated_at = ? WHERE session_id = ?",
                    (now, session_id),
                )
                return _session(row[:8] + (now,))
            return found

        return await self._db.run_interaction("validate_session", _txn)

    async def delete(self, session_id: str) -> None:
        def _txn(txn: Transaction) -> None:
            txn.execute(
                "DELETE FROM threepid_validation_sessions WHERE session_id = ?", (session_id,)
            )

        await self._db.run_interaction("delete_validation_session", _txn)
