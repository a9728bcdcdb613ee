"""Global and per-room account data."""

from __future__ import annotations

from typing import Any

from twisted.web.server import Request

from homeserver.api.client.paths import client_paths
from homeserver.errors import Codes, MatrixError
from homeserver.events.format import is_valid_room_id
from homeserver.handlers.auth import AuthHandler
from homeserver.http.server import JsonResource
from homeserver.http.servlet import parse_json_body
from homeserver.requester import Requester
from storage.account_data import GLOBAL
from storage.storage import Storage

# Types the server manages: clients may read them but never set them here (the spec
# requires a 405 for both global and room account data).
SERVER_MANAGED_TYPES = {"m.fully_read": "/read_markers", "m.push_rules": "/pushrules"}


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
    def _check_settable(data_type: str) -> None:
        if data_type in SERVER_MANAGED_TYPES:
            raise MatrixError(
                405,
                Codes.BAD_JSON,
                f"Cannot set {data_type} through this API; use {SERVER_MANAGED_TYPES[data_type]}",
            )

    @staticmethod
    def _check_room(room_id: str) -> None:
        if not is_valid_room_id(room_id):
            raise MatrixError(400, Codes.INVALID_PARAM, f"{room_id} is not a valid room ID")

    async def on_put_global(self, request: Request, userId: str, type: str) -> tuple[int, Any]:
        await self._requester_for(request, userId)
        body = parse_json_body(request)
        self._check_settable(type)
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
        self._check_settable(type)
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
