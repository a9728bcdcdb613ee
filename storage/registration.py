"""Registration tokens and user-interactive auth sessions (kept across restarts)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from storage.database import Database, Transaction


@dataclass(frozen=True, slots=True)
class UiAuthSession:
    session_id: str
    creation_ts: int
    uri: str
    method: str
    description: str
    clientdict: dict[str, Any]
    completed: dict[str, Any]  # stage type -> result
    user_id: str | None


@dataclass(frozen=True, slots=True)
class RegistrationToken:
    token: str
    uses_allowed: int | None
    pending: int
    completed: int
    expiry_time: int | None


_TOKEN_COLUMNS = "token, uses_allowed, pending, completed, expiry_time"


def _token(row: tuple[Any, ...]) -> RegistrationToken:
    return RegistrationToken(
        str(row[0]),
        int(row[1]) if row[1] is not None else None,
        int(row[2]),
        int(row[3]),
        int(row[4]) if row[4] is not None else None,
    )


class RegistrationStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    # Registration tokens -------------------------------------------------

    async def create_registration_token(
        self, token: str, uses_allowed: int | None, expiry_time: int | None
    ) -> None:
        await self._db.run_interaction(
            "create_registration_token",
            lambda txn: txn.execute(
                "INSERT INTO registration_tokens (token, uses_allowed, expiry_time)"
                " VALUES (?, ?, ?)",
                (token, uses_allowed, expiry_time),
            ),
        )

    async def registration_token_is_valid(self, token: str, now_ms: int) -> bool:
        def _txn(txn: Transaction) -> bool:
            row = txn.select_one(
                "SELECT uses_allowed, pending, completed, expiry_time FROM registration_tokens"
                " WHERE token = ?",
                (token,),
            )
            if row is None:
                return False
            uses_allowed, pending, completed, expiry = row
            if expiry is not None and expiry < now_ms:
                return False
            return uses_allowed is None or pending + completed < uses_allowed

        return await self._db.run_interaction("registration_token_valid", _txn)

    async def use_registration_token(self, token: str, now_ms: int) -> bool:
        """Count one completed use, atomically; False if the token is no longer valid."""

        def _txn(txn: Transaction) -> bool:
            txn.execute(
                "UPDATE registration_tokens SET completed = completed + 1 WHERE token = ?"
                " AND (expiry_time IS NULL OR expiry_time >= ?)"
                " AND (uses_allowed IS NULL OR pending + completed < uses_allowed)",
                (token, now_ms),
            )
            return txn.rowcount == 1

        return await self._db.run_interaction("use_registration_token", _txn)

    async def add_registration_token(
        self, token: str, uses_allowed: int | None, expiry_time: int | None
    ) -> bool:
        """False if the token exists already."""

        def _txn(txn: Transaction) -> bool:
            txn.execute(
                "INSERT INTO registration_tokens (token, uses_allowed, expiry_time)"
                " VALUES (?, ?, ?) ON CONFLICT (token) DO NOTHING",
                (token, uses_allowed, expiry_time),
            )
            return txn.rowcount == 1

        return await self._db.run_interaction("add_registration_token", _txn)

    async def list_registration_tokens(
        self, valid: bool | None, now_ms: int
    ) -> list[RegistrationToken]:
        """Every token, or only those still usable (``valid``), or only those used up or
        expired (``valid`` false), as Synapse tells them apart."""
        where = ""
        args: tuple[Any, ...] = ()
        if valid is True:
            where = (
                " WHERE (uses_allowed IS NULL OR uses_allowed > pending + completed)"
                " AND (expiry_time IS NULL OR expiry_time > ?)"
            )
            args = (now_ms,)
        elif valid is False:
            where = " WHERE uses_allowed <= pending + completed OR expiry_time <= ?"
            args = (now_ms,)

        def _txn(txn: Transaction) -> list[RegistrationToken]:
            rows = txn.select_all(
                f"SELECT {_TOKEN_COLUMNS} FROM registration_tokens{where} ORDER BY token", args
            )
            return [_token(r) for r in rows]

        return await self._db.run_interaction("list_registration_tokens", _txn)

    async def get_registration_token(self, token: str) -> RegistrationToken | None:
        def _txn(txn: Transaction) -> RegistrationToken | None:
            row = txn.select_one(
                f"SELECT {_TOKEN_COLUMNS} FROM registration_tokens WHERE token = ?", (token,)
            )
            return _token(row) if row is not None else None

        return await self._db.run_interaction("get_registration_token", _txn)

    async def update_registration_token(
        self, token: str, changes: dict[str, int | None]
    ) -> RegistrationToken | None:
        """Set ``uses_allowed`` and/or ``expiry_time``; the token after, None if unknown."""
        columns = [c for c in ("uses_allowed", "expiry_time") if c in changes]

        def _txn(txn: Transaction) -> RegistrationToken | None:
            if columns:
                txn.execute(
                    "UPDATE registration_tokens SET "
                    + ", ".join(f"{c} = ?" for c in columns)
                    + " WHERE token = ?",
                    (*(changes[c] for c in columns), token),
                )
            row = txn.select_one(
                f"SELECT {_TOKEN_COLUMNS} FROM registration_tokens WHERE token = ?", (token,)
            )
            return _token(row) if row is not None else None

        return await self._db.run_interaction("update_registration_token", _txn)

    async def delete_registration_token(self, token: str) -> bool:
        def _txn(txn: Transaction) -> bool:
            txn.execute("DELETE FROM registration_tokens WHERE token = ?", (token,))
            return txn.rowcount > 0

        return await self._db.run_interaction("delete_registration_token", _txn)

    # UI auth sessions ----------------------------------------------------

    async def create_ui_auth_session(self, session: UiAuthSession) -> None:
        await self._db.run_interaction(
            "create_ui_auth_session",
            lambda txn: txn.execute(
                "INSERT INTO ui_auth_sessions (session_id, creation_ts, uri, method, description,"
                " clientdict, completed, user_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    session.session_id,
                    session.creation_ts,
                    session.uri,
                    session.method,
                    session.description,
                    json.dumps(session.clientdict),
                    json.dumps(session.completed),
                    session.user_id,
                ),
            ),
        )

    async def get_ui_auth_session(self, session_id: str) -> UiAuthSession | None:
        def _txn(txn: Transaction) -> UiAuthSession | None:
            row = txn.select_one(
                "SELECT session_id, creation_ts, uri, method, description, clientdict, completed,"
                " user_id FROM ui_auth_sessions WHERE session_id = ?",
                (session_id,),
            )
            if row is None:
                return None
            return UiAuthSession(
                row[0],
                int(row[1]),
                row[2],
                row[3],
                row[4],
                json.loads(row[5]),
                json.loads(row[6]),
                row[7],
            )

        return await self._db.run_interaction("get_ui_auth_session", _txn)

    async def mark_ui_auth_stage_complete(
        self, session_id: str, stage: str, result: Any
    ) -> dict[str, Any]:
        def _txn(txn: Transaction) -> dict[str, Any]:
            row = txn.select_one(
                "SELECT completed FROM ui_auth_sessions WHERE session_id = ?", (session_id,)
            )
            completed: dict[str, Any] = json.loads(row[0]) if row else {}
            completed[stage] = result
            txn.execute(
                "UPDATE ui_auth_sessions SET completed = ? WHERE session_id = ?",
                (json.dumps(completed), session_id),
            )
            return completed

        return await self._db.run_interaction("ui_auth_stage_complete", _txn)

    async def delete_ui_auth_session(self, session_id: str) -> None:
        await self._db.run_interaction(
            "delete_ui_auth_session",
            lambda txn: txn.execute(
                "DELETE FROM ui_auth_sessions WHERE session_id = ?", (session_id,)
            ),
        )

    async def expire_ui_auth_sessions(self, older_than_ms: int) -> None:
        await self._db.run_interaction(
            "expire_ui_auth_sessions",
            lambda txn: txn.execute(
                "DELETE FROM ui_auth_sessions WHERE creation_ts < ?", (older_than_ms,)
            ),
        )
