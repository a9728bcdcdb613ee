"""``POST /rooms/{roomId}/upgrade``."""

from __future__ import annotations

from typing import Any

from twisted.web.server import Request

from homeserver.api.client.paths import client_paths
from homeserver.handlers.auth import AuthHandler
from homeserver.http.server import JsonResource
from homeserver.http.servlet import field, parse_json_body
from homeserver.rooms.upgrade import RoomUpgrader


class RoomUpgradeServlets:
    def __init__(self, auth: AuthHandler, upgrader: RoomUpgrader) -> None:
        self._auth = auth
        self._upgrader = upgrader

    def register(self, r: JsonResource) -> None:
        r.register_many("POST", client_paths("/rooms/{roomId}/upgrade"), self.on_upgrade)

    async def on_upgrade(self, request: Request, roomId: str) -> tuple[int, Any]:
        requester = await self._auth.get_user_by_req(request)
        body = parse_json_body(request)
        new_version = field(body, "new_version", str, required=True)
        assert new_version is not None
        additional_creators = field(body, "additional_creators", list)
        room_id = await self._upgrader.upgrade(requester, roomId, new_version, additional_creators)
        return 200, {"replacement_room": room_id}
