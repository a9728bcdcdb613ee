"""``/_synapse/admin/v1/event_reports``: list, read and delete the event reports clients
sent (``POST /rooms/{roomId}/report/{eventId}``), server admins only, as Synapse."""

from __future__ import annotations

from typing import Any

from twisted.web.server import Request

from homeserver.errors import Codes, MatrixError
from homeserver.handlers.admin_reports import EventReportsAdmin
from homeserver.handlers.auth import AuthHandler
from homeserver.http.server import JsonResource
from homeserver.http.servlet import parse_integer, parse_string
from synapse_compat.admin_common import require_admin
from synapse_compat.admin_rooms import parse_direction


def parse_report_id(report_id: str) -> int:
    message = "The report_id parameter must be a string representing a positive integer."
    if not report_id.isdigit() or len(report_id) > 18:
        raise MatrixError(400, Codes.INVALID_PARAM, message)
    return int(report_id)


class AdminEventReportServlets:
    PATH = "/_synapse/admin/v1/event_reports"

    def __init__(self, auth: AuthHandler, reports: EventReportsAdmin) -> None:
        self._auth = auth
        self._reports = reports

    def register(self, r: JsonResource) -> None:
        r.register("GET", self.PATH, self.on_list)
        r.register("GET", self.PATH + "/{reportId}", self.on_get)
        r.register("DELETE", self.PATH + "/{reportId}", self.on_delete)

    async def on_list(self, request: Request) -> tuple[int, Any]:
        await require_admin(self._auth, request)
        start = parse_integer(request, "from", default=0, minimum=0)
        limit = parse_integer(request, "limit", default=100, minimum=0)
        assert start is not None and limit is not None
        reports, total = await self._reports.page(
            start,
            limit,
            backwards=parse_direction(request, "b") == "b",
            user_id=parse_string(request, "user_id"),
            room_id=parse_string(request, "room_id"),
            event_sender=parse_string(request, "event_sender_user_id"),
        )
        body: dict[str, Any] = {"event_reports": reports, "total": total}
        if start + limit < total:
            body["next_token"] = start + len(reports)
        return 200, body

    async def on_get(self, request: Request, reportId: str) -> tuple[int, Any]:
        await require_admin(self._auth, request)
        return 200, await self._reports.get(parse_report_id(reportId))

    async def on_delete(self, request: Request, reportId: str) -> tuple[int, Any]:
        await require_admin(self._auth, request)
        await self._reports.delete(parse_report_id(reportId))
        return 200, {}
