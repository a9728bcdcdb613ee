"""Abuse reports about events, rooms and users (``event_reports``, ``room_reports``,
``user_reports``). Clients add rows; the admin API reads them and deletes event reports.

Invariants: each table's ids come from its own in-process counter (one writer process),
so ids only grow and list reports in the order they arrived.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from storage.database import Database, Transaction, like_escape
from storage.id_generator import IdGenerator

JsonDict = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Report:
    """A room or user report: ``target`` is the room id or the reported user id."""

    id: int
    received_ts: int
    target: str
    user_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class EventReport:
    id: int
    received_ts: int
    room_id: str
    event_id: str
    user_id: str
    reason: str | None
    content: JsonDict


class ReportsStore:
    def __init__(
        self, db: Database, event_ids: IdGenerator, room_ids: IdGenerator, user_ids: IdGenerator
    ) -> None:
        self._db = db
        self._event_ids = event_ids
        self._room_ids = room_ids
        self._user_ids = user_ids

    @classmethod
    async def open(cls, db: Database) -> ReportsStore:
        return cls(
            db,
            await IdGenerator.load(db, "event_reports", "id"),
            await IdGenerator.load(db, "room_reports", "id"),
            await IdGenerator.load(db, "user_reports", "id"),
        )

    async def add_event_report(
        self,
        room_id: str,
        event_id: str,
        user_id: str,
        reason: str | None,
        content: JsonDict,
        received_ts: int,
    ) -> int:
        report_id = self._event_ids.next_id()
        encoded = json.dumps(content, ensure_ascii=False, separators=(",", ":"))
        await self._insert(
            "add_event_report",
            "INSERT INTO event_reports (id, received_ts, room_id, event_id, user_id, reason,"
            " content) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (report_id, received_ts, room_id, event_id, user_id, reason, encoded),
        )
        return report_id

    async def add_room_report(
        self, room_id: str, user_id: str, reason: str, received_ts: int
    ) -> int:
        report_id = self._room_ids.next_id()
        await self._insert(
            "add_room_report",
            "INSERT INTO room_reports (id, received_ts, room_id, user_id, reason)"
            " VALUES (?, ?, ?, ?, ?)",
            (report_id, received_ts, room_id, user_id, reason),
        )
        return report_id

    async def add_user_report(
        self, target_user_id: str, user_id: str, reason: str, received_ts: int
    ) -> int:
        report_id = self._user_ids.next_id()
        await self._insert(
            "add_user_report",
            "INSERT INTO user_reports (id, received_ts, target_user_id, user_id, reason)"
            " VALUES (?, ?, ?, ?, ?)",
            (report_id, received_ts, target_user_id, user_id, reason),
        )
        return report_id

    async def _insert(self, desc: str, sql: str, args: tuple[Any, ...]) -> None:
        def _txn(txn: Transaction) -> None:
            txn.execute(sql, args)

        await self._db.run_interaction(desc, _txn)

    async def get_event_reports(self, room_id: str | None = None) -> list[EventReport]:
        """Event reports, oldest first (all, or about one room)."""

        def _txn(txn: Transaction) -> list[tuple[Any, ...]]:
            sql = (
                "SELECT id, received_ts, room_id, event_id, user_id, reason, content"
                " FROM event_reports"
            )
            if room_id is None:
                return txn.select_all(sql + " ORDER BY id")
            return txn.select_all(sql + " WHERE room_id = ? ORDER BY id", (room_id,))

        rows = await self._db.run_interaction("get_event_reports", _txn)
        return [_event_report(r) for r in rows]

    async def get_room_reports(self) -> list[Report]:
        return await self._reports("room_reports", "room_id")

    async def get_user_reports(self) -> list[Report]:
        return await self._reports("user_reports", "target_user_id")

    async def _reports(self, table: str, target: str) -> list[Report]:
        def _txn(txn: Transaction) -> list[tuple[Any, ...]]:
            return txn.select_all(
                f"SELECT id, received_ts, {target}, user_id, reason FROM {table} ORDER BY id"
            )

        rows = await self._db.run_interaction(f"get_{table}", _txn)
        return [Report(int(r[0]), int(r[1]), r[2], r[3], r[4]) for r in rows]

    # Admin API -----------------------------------------------------------------------

    async def page_event_reports(
        self,
        start: int,
        limit: int,
        *,
        backwards: bool,
        user_id: str | None = None,
        room_id: str | None = None,
        event_sender: str | None = None,
    ) -> tuple[list[tuple[EventReport, str | None]], int]:
        """A page of event reports, newest first when ``backwards``, each with the
        reported event's sender (None if we do not hold it), and how many match.
        ``user_id`` and ``room_id`` match any part of the reporter and room ids."""

        def _txn(txn: Transaction) -> tuple[list[tuple[Any, ...]], int]:
            filters: list[str] = []
            args: list[Any] = []
            for column, value in (("r.user_id", user_id), ("r.room_id", room_id)):
                if value:
                    filters.append(f"{column} LIKE ? ESCAPE '\\'")
                    args.append("%" + like_escape(value) + "%")
            if event_sender:
                filters.append("e.sender = ?")
                args.append(event_sender)
            where = " WHERE " + " AND ".join(filters) if filters else ""
            joins = " FROM event_reports r LEFT JOIN events e ON e.event_id = r.event_id"
            count = txn.select_one("SELECT COUNT(*)" + joins + where, args)
            order = "DESC" if backwards else "ASC"
            rows = txn.select_all(
                "SELECT r.id, r.received_ts, r.room_id, r.event_id, r.user_id, r.reason,"
                " r.content, e.sender"
                + joins
                + where
                + f" ORDER BY r.received_ts {order}, r.id {order} LIMIT ? OFFSET ?",
                [*args, limit, start],
            )
            return rows, int(count[0]) if count else 0

        rows, total = await self._db.run_interaction("page_event_reports", _txn)
        return [(_event_report(r), r[7]) for r in rows], total

    async def get_event_report(self, report_id: int) -> EventReport | None:
        def _txn(txn: Transaction) -> tuple[Any, ...] | None:
            return txn.select_one(
                "SELECT id, received_ts, room_id, event_id, user_id, reason, content"
                " FROM event_reports WHERE id = ?",
                (report_id,),
            )

        row = await self._db.run_interaction("get_event_report", _txn)
        return _event_report(row) if row is not None else None

    async def delete_event_report(self, report_id: int) -> bool:
        def _txn(txn: Transaction) -> bool:
            txn.execute("DELETE FROM event_reports WHERE id = ?", (report_id,))
            return txn.rowcount > 0

        return await self._db.run_interaction("delete_event_report", _txn)


def _event_report(r: tuple[Any, ...]) -> EventReport:
    return EventReport(
        int(r[0]), int(r[1]), r[2], r[3], r[4], r[5], json.loads(r[6]) if r[6] else {}
    )
