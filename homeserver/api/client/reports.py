"""Reporting content: ``POST /rooms/{roomId}/report/{eventId}``, ``/rooms/{roomId}/report``
and ``/users/{userId}/report``."""

from __future__ import annotations

from typing import Any

from twisted.web.server import Request

from homeserver.api.client.paths import client_paths
from homeserver.handlers.auth import AuthHandler
from homeserver.handlers.reports import ReportsHandler
from homeserver.http.server import JsonResource
from homeserver.http.servlet import field, parse_json_body


class ReportServlets:
    def __init__(self, auth: AuthHandler, reports: ReportsHandler) -> None:
        self._auth = auth
        self._reports = reports

    def register(self, r: JsonResource) -> None:
        r.register_many(
            "POST", client_paths("/rooms/{roomId}/report/{eventId}"), self.on_report_event
        )
        r.register_many("POST", client_paths("/rooms/{roomId}/report"), self.on_report_room)
        r.register_many("POST", client_paths("/users/{userId}/report"), self.on_report_user)

    async def on_report_event(self, request: Request, roomId: str, eventId: str) -> tuple[int, Any]:
        requester = await self._auth.get_user_by_req(request)
        body = parse_json_body(request)
        reason = field(body, "reason", str)
        field(body, "score", int)  # deprecated, but typed when sent
        await self._reports.report_event(requester, roomId, eventId, reason, body)
        return 200, {}

    async def on_report_room(self, request: Request, roomId: str) -> tuple[int, Any]:
        requester = await self._auth.get_user_by_req(request)
        reason = field(parse_json_body(request), "reason", str, required=True)
        await self._reports.report_room(requester, roomId, reason)
        return 200, {}

    async def on_report_user(self, request: Request, userId: str) -> tuple[int, Any]:
        requester = await self._auth.get_user_by_req(request)
        reason = field(parse_json_body(request), "reason", str, required=True)
        await self._reports.report_user(requester, userId, reason)
        return 200, {}
