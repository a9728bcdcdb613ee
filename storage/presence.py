"""The last presence state of each user, kept so that a restart loses nothing visible.

Invariant: the presence handler is the only writer and hands states over in the order
it made them; ``upsert_states`` never lets an older state (smaller ``stream_id``)
overwrite a newer one, so a late write cannot roll a user back.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from storage.database import Database, Transaction
from storage.id_generator import IdGenerator


@dataclass(frozen=True, slots=True)
class PresenceState:
    user_id: str
    state: str  # online | unavailable | offline
    status_msg: str | None
    last_active_ts: int
    last_user_sync_ts: int
    currently_active: bool
    stream_id: int

    @classmethod
    def default(cls, user_id: str) -> PresenceState:
        return cls(user_id, "offline", None, 0, 0, False, 0)


_COLUMNS = (
    "user_id, state, status_msg, last_active_ts, last_user_sync_ts, currently_active, stream_id"
)


def _row(row: Sequence[Any]) -> PresenceState:
    return PresenceState(
        user_id=row[0],
        state=row[1],
        status_msg=row[2],
        last_active_ts=int(row[3]),
        last_user_sync_ts=int(row[4]),
        currently_active=bool(row[5]),
        stream_id=int(row[6]),
    )


class PresenceStore:
    def __init__(self, db: Database, stream: IdGenerator) -> None:
        self._db = db
        # Positions of the presence stream; the handler hands them out in memory.
        self.stream = stream

    async def upsert_states(self, states: Iterable[PresenceState]) -> None:
        rows = [
            (
                s.user_id,
                s.state,
                s.status_msg,
                s.last_active_ts,
                s.last_user_sync_ts,
                int(s.currently_active),
                s.stream_id,
            )
            for s in states
        ]
        if not rows:
            return

        def _txn(txn: Transaction) -> None:
            txn.execute_many(
                f"INSERT INTO presence ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (user_id) DO UPDATE SET state = excluded.state,"
                " status_msg = excluded.status_msg, last_active_ts = excluded.last_active_ts,"
                " last_user_sync_ts = excluded.last_user_sync_ts,"
                " currently_active = excluded.currently_active, stream_id = excluded.stream_id"
                " WHERE presence.stream_id <= excluded.stream_id",
                rows,
            )

        await self._db.run_interaction("upsert_presence", _txn)

    async def get_states(self, user_ids: Iterable[str]) -> dict[str, PresenceState]:
        users = sorted(set(user_ids))
        if not users:
            return {}

        def _txn(txn: Transaction) -> dict[str, PresenceState]:
            out: dict[str, PresenceState] = {}
            for i in range(0, len(users), 500):
                chunk = users[i : i + 500]
                marks = ", ".join("?" for _ in chunk)
                for r in txn.select_all(
                    f"SELECT {_COLUMNS} FROM presence WHERE user_id IN ({marks})", chunk
                ):
                    out[r[0]] = _row(r)
            return out

        return await self._db.run_interaction("get_presence_states", _txn)

    async def get_not_offline(self) -> list[PresenceState]:
        """Users not offline: their timers must run again after a restart."""

        def _txn(txn: Transaction) -> list[PresenceState]:
            rows = txn.select_all(f"SELECT {_COLUMNS} FROM presence WHERE state != 'offline'")
            return [_row(r) for r in rows]

        return await self._db.run_interaction("get_presence_not_offline", _txn)
