"""Long admin jobs (``admin_jobs``): purges of history and room deletions.

Invariants: a job row is committed before its id is handed to the admin, and its
status only moves forward (scheduled -> active -> complete | failed); a job found
``scheduled`` or ``active`` at start-up was cut short by a restart and is resumed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from storage.database import Database, Transaction

JsonDict = dict[str, Any]

SCHEDULED = "scheduled"
ACTIVE = "active"
COMPLETE = "complete"
FAILED = "failed"

_COLUMNS = "job_id, action, room_id, status, params, result, error, created_ts, updated_ts"


@dataclass(frozen=True, slots=True)
class AdminJob:
    job_id: str
    action: str
    room_id: str
    status: str
    params: JsonDict
    result: JsonDict | None
    error: str | None
    created_ts: int
    updated_ts: int


def _row_to_job(row: tuple[Any, ...]) -> AdminJob:
    return AdminJob(
        job_id=str(row[0]),
        action=str(row[1]),
        room_id=str(row[2]),
        status=str(row[3]),
        params=json.loads(row[4]),
        result=json.loads(row[5]) if row[5] is not None else None,
        error=row[6],
        created_ts=int(row[7]),
        updated_ts=int(row[8]),
    )


class AdminJobsStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def create(
        self, job_id: str, action: str, room_id: str, params: JsonDict, now_ms: int
    ) -> None:
        await self._db.run_interaction(
            "create_admin_job",
            lambda txn: txn.execute(
                f"INSERT INTO admin_jobs ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, NULL, NULL, ?, ?)",
                (job_id, action, room_id, SCHEDULED, json.dumps(params), now_ms, now_ms),
            ),
        )

    async def update(
        self,
        job_id: str,
        now_ms: int,
        *,
        status: str | None = None,
        result: JsonDict | None = None,
        error: str | None = None,
    ) -> None:
        """Set what is given (``status``, ``result``, ``error``); the rest stays."""

        def _txn(txn: Transaction) -> None:
            sets = ["updated_ts = ?"]
            args: list[Any] = [now_ms]
            if status is not None:
                sets.append("status = ?")
                args.append(status)
            if result is not None:
                sets.append("result = ?")
                args.append(json.dumps(result))
            if error is not None:
                sets.append("error = ?")
                args.append(error)
            txn.execute(
                f"UPDATE admin_jobs SET {', '.join(sets)} WHERE job_id = ?", [*args, job_id]
            )

        await self._db.run_interaction("update_admin_job", _txn)

    async def get(self, job_id: str) -> AdminJob | None:
        def _txn(txn: Transaction) -> AdminJob | None:
            row = txn.select_one(f"SELECT {_COLUMNS} FROM admin_jobs WHERE job_id = ?", (job_id,))
            return _row_to_job(row) if row else None

        return await self._db.run_interaction("get_admin_job", _txn)

    async def for_room(
        self, room_id: str, actions: tuple[str, ...], statuses: tuple[str, ...]
    ) -> list[AdminJob]:
        """The room's jobs of these actions and statuses, oldest first."""

        def _txn(txn: Transaction) -> list[AdminJob]:
            rows = txn.select_all(
                f"SELECT {_COLUMNS} FROM admin_jobs WHERE room_id = ?"
                f" AND action IN ({','.join('?' * len(actions))})"
                f" AND status IN ({','.join('?' * len(statuses))})"
                " ORDER BY created_ts, job_id",
                (room_id, *actions, *statuses),
            )
            return [_row_to_job(r) for r in rows]

        return await self._db.run_interaction("admin_jobs_for_room", _txn)

    async def unfinished(self) -> list[AdminJob]:
        """Jobs scheduled or running when the server last stopped, oldest first."""

        def _txn(txn: Transaction) -> list[AdminJob]:
            rows = txn.select_all(
                f"SELECT {_COLUMNS} FROM admin_jobs WHERE status IN (?, ?)"
                " ORDER BY created_ts, job_id",
                (SCHEDULED, ACTIVE),
            )
            return [_row_to_job(r) for r in rows]

        return await self._db.run_interaction("unfinished_admin_jobs", _txn)
