"""Presence status: ``/presence/{userId}/status``."""

from __future__ import annotations

from typing import Any

from twisted.web.server import Request

from homeserver.api.client.paths import client_paths
from homeserver.ephemeral.presence import PRESENCE_STATES, PresenceHandler
from homeserver.errors import Codes, MatrixError
from homeserver.handlers.auth import AuthHandler
from homeserver.http.server import JsonResource
from homeserver.http.servlet import field, parse_json_body

MAX_STATUS_MSG_LENGTH = 1024


class PresenceServlets:
    def __init__(self, auth: AuthHandler, presence: PresenceHandler) -> None:
        self._auth = auth
        self._presence = presence

    def register(self, r: JsonResource) -> None:
        paths = client_paths("/presence/{userId}/status")
        r.register_many("PUT", paths, self.on_put)
        r.register_many("GET", paths, self.on_get)

    async def on_put(self, request: Request, userId: str) -> tuple[int, Any]:
        requester = await self._auth.get_user_by_req(request)
        if requester.user_id != userId:
            raise MatrixError(403, Codes.FORBIDDEN, "Can only set your own presence state")
        body = parse_json_body(request)
        presence = field(body, "presence", str, required=True)
        if presence not in PRESENCE_STATES:
            raise MatrixError(
                400, Codes.INVALID_PARAM, f"presence must be one of {', '.join(PRESENCE_STATES)}"
            )
        status_msg = field(body, "status_msg", str)
        if status_msg is not None and len(status_msg) > MAX_STATUS_MSG_LENGTH:
            raise MatrixError(400, Codes.TOO_LARGE, "status_msg is too long")
        await self._presence.set_state(userId, presence, status_msg)
        return 200, {}

    async def on_get(self, request: Request, userId: str) -> tuple[int, Any]:
        requester = await self._auth.get_user_by_req(request)
        return 200, await self._presence.get_presence(requester.user_id, userId)
