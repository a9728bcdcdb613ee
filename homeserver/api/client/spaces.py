"""Space hierarchy (``/rooms/{roomId}/hierarchy``) and room summaries (``/room_summary``)."""

from __future__ import annotations

from typing import Any

from twisted.web.server import Request

from homeserver.api.client.paths import client_v1_paths
from homeserver.handlers.auth import AuthHandler, get_access_token_from_request
from homeserver.http.server import JsonResource
from homeserver.http.servlet import parse_boolean, parse_integer, parse_string
from homeserver.rooms.handler import RoomHandler
from homeserver.rooms.summary import RoomSummaryHandler


class SpaceServlets:
    def __init__(
        self, auth: AuthHandler, rooms: RoomHandler, summaries: RoomSummaryHandler
    ) -> None:
        self._auth = auth
        self._rooms = rooms
        self._summaries = summaries

    def register(self, r: JsonResource) -> None:
        r.register_many("GET", client_v1_paths("/rooms/{roomId}/hierarchy"), self.on_hierarchy)
        r.register_many(
            "GET", client_v1_paths("/room_summary/{roomIdOrAlias}"), self.on_room_summary
        )

    async def on_hierarchy(self, request: Request, roomId: str) -> tuple[int, Any]:
        requester = await self._auth.get_user_by_req(request, allow_guest=True)
        return 200, await self._summaries.hierarchy(
            requester.user_id,
            roomId,
            suggested_only=parse_boolean(request, "suggested_only"),
            max_depth=parse_integer(request, "max_depth", minimum=0),
            limit=parse_integer(request, "limit", minimum=1),
            from_token=parse_string(request, "from"),
        )

    async def on_room_summary(self, request: Request, roomIdOrAlias: str) -> tuple[int, Any]:
        # Authentication is optional: anonymous callers see only open rooms.
        user_id = None
        if get_access_token_from_request(request) is not None:
            user_id = (await self._auth.get_user_by_req(request, allow_guest=True)).user_id
        via = [v.decode() for v in (request.args or {}).get(b"via", [])]
        room_id, alias_servers = await self._rooms.resolve_room(roomIdOrAlias)
        return 200, await self._summaries.room_summary(user_id, room_id, via or alias_servers)
