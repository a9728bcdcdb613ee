"""Event reports as a server admin sees them (Synapse's ``/_synapse/admin/v1/event_reports``):
each report with the reported event's sender and the room's name and canonical alias
as they are now."""

from __future__ import annotations

from typing import Any

from homeserver.errors import Codes, MatrixError
from storage.reports import EventReport
from storage.storage import Storage

JsonDict = dict[str, Any]


class EventReportsAdmin:
    def __init__(self, storage: Storage) -> None:
        self._storage = storage

    async def page(
        self,
        start: int,
        limit: int,
        *,
        backwards: bool,
        user_id: str | None,
        room_id: str | None,
        event_sender: str | None,
    ) -> tuple[list[JsonDict], int]:
        rows, total = await self._storage.reports.page_event_reports(
            start,
            limit,
            backwards=backwards,
            user_id=user_id,
            room_id=room_id,
            event_sender=event_sender,
        )
        rooms = await self._room_names({report.room_id for report, _ in rows})
        return [self._entry(report, sender, rooms) for report, sender in rows], total

    async def get(self, report_id: int) -> JsonDict:
        report = await self._storage.reports.get_event_report(report_id)
        if report is None:
            raise MatrixError(404, Codes.NOT_FOUND, "Event report not found")
        event = await self._storage.events.get_event(report.event_id)
        entry = self._entry(
            report,
            event.sender if event is not None else None,
            await self._room_names({report.room_id}),
        )
        entry["event_json"] = dict(event.pdu) if event is not None else None
        return entry

    async def delete(self, report_id: int) -> None:
        if not await self._storage.reports.delete_event_report(report_id):
            raise MatrixError(404, Codes.NOT_FOUND, "Event report not found")

    async def _room_names(self, room_ids: set[str]) -> dict[str, tuple[str | None, str | None]]:
        """room id -> (canonical alias, name)."""
        stats = await self._storage.room_stats.get_room_stats(sorted(room_ids))
        return {
            s.room_id: (s.text("m.room.canonical_alias", "alias"), s.text("m.room.name", "name"))
            for s in stats
        }

    @staticmethod
    def _entry(
        report: EventReport,
        sender: str | None,
        rooms: dict[str, tuple[str | None, str | None]],
    ) -> JsonDict:
        alias, name = rooms.get(report.room_id, (None, None))
        return {
            "id": report.id,
            "received_ts": report.received_ts,
            "room_id": report.room_id,
            "event_id": report.event_id,
            "user_id": report.user_id,
            "score": report.content.get("score"),
            "reason": report.content.get("reason"),
            "sender": sender,
            "canonical_alias": alias,
            "name": name,
        }
