"""Global and per-room account data."""

from __future__ import annotations

from typing import Any

from twisted.web.server import Request

from homeserver.api.client.paths import client_paths
from homeserver.errors import Codes, MatrixError
from homeserver.events.format import is_valid_room_id
from homeserver.handlers.auth import AuthHandler, Requester
from homeserver.http.server import JsonResource
from homeserver.http.servlet import parse_json_body
from storage.account_data import GLOBAL
from storage.storage import Storage


class AccountDataServlets:
    def __init__(self, storage: Storage, auth: AuthHandler) -> None:
        self._storage = storage
        self._auth = auth

    def register(self, resource: JsonResource) -> None:
        user = "/user/{userId}/account_data/{type}"
        room = "/user/{userId}/rooms/{roomId}/account_data/{type}"
        resource.register_many("PUT", client_paths(user), self.on_put_global)
        resource.register_many("GET", client_paths(user), self.on_get_global)
        resource.register_many("PUT", client_paths(room), self.on_put_room)
        resource.register_many("GET", client_paths(room), self.on_get_room)

    async def _requester_for(self, request: Request, user_id: str) -> Requester:
        requester = await self._auth.get_user_by_req(request, allow_guest=True)
        if requester.user_id != user_id:
            raise MatrixError(403, Codes.FORBIDDEN, "Cannot access account data for other users.")
        return requester

    @staticmethod
    def _check_room(room_id: str) -> None:
        if not is_valid_room_id(room_id):
            raise MatrixError(400, Codes.INVALID_PARAM, f"{room_id} is not a valid room ID")

    async def on_put_global(self, request: Request, userId: str, type: str) -> tuple[int, Any]:
        await self._requester_for(request, userId)
        body = parse_json_body(request)
        if type == "m.fully_read":
            raise MatrixError(
                400, Codes.BAD_JSON, "m.fully_read is set through /read_markers, not account data"
            )
        await self._storage.account_data.put(userId, GLOBAL, type, body)
        return 200, {}

    async def on_get_global(self, request: Request, userId: str, type: str) -> tuple[int, Any]:
        await self._requester_for(request, userId)
        content = await self._storage.account_data.get(userId, GLOBAL, type)
        if content is None:
            raise MatrixError(404, Codes.NOT_FOUND, "Account data not found")
        return 200, content

    async def on_put_room(
        self, request: Request, userId: str, roomId: str, type: str
    ) -> tuple[int, Any]:
        await self._requester_for(request, userId)
        self._check_room(roomId)
        body = parse_json_body(request)
        if type == "m.fully_read":
            raise MatrixError(
                405, Codes.BAD_JSON, "Cannot set m.fully_read through this API; use /read_markers"
            )
        await self._storage.account_data.put(userId, roomId, type, body)
        return 200, {}

    async def on_get_room(
        self, request: Request, userId: str, roomId: str, type: str
    ) -> tuple[int, Any]:
        await self._requester_for(request, userId)
        self._check_room(roomId)
        content = await self._storage.account_data.get(userId, roomId, type)
        if content is None:
            raise MatrixError(404, Codes.NOT_FOUND, "Room account data not found")
        return 200, content
