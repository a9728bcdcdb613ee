"""Room tags: ``/user/{userId}/rooms/{roomId}/tags``."""

from __future__ import annotations

from typing import Any

from twisted.web.server import Request

from homeserver.api.client.paths import client_paths
from homeserver.ephemeral.tags import TagsHandler
from homeserver.errors import Codes, MatrixError
from homeserver.events.format import is_valid_room_id
from homeserver.handlers.auth import AuthHandler
from homeserver.http.server import JsonResource
from homeserver.http.servlet import parse_json_body


class TagServlets:
    def __init__(self, auth: AuthHandler, tags: TagsHandler) -> None:
        self._auth = auth
        self._tags = tags

    def register(self, r: JsonResource) -> None:
        base = "/user/{userId}/rooms/{roomId}/tags"
        r.register_many("GET", client_paths(base), self.on_get)
        r.register_many("PUT", client_paths(base + "/{tag}"), self.on_put)
        r.register_many("DELETE", client_paths(base + "/{tag}"), self.on_delete)

    async def _check(self, request: Request, user_id: str, room_id: str) -> None:
        requester = await self._auth.get_user_by_req(request)
        if requester.user_id != user_id:
            raise MatrixError(403, Codes.FORBIDDEN, "Cannot access tags of other users")
        if not is_valid_room_id(room_id):
            raise MatrixError(400, Codes.INVALID_PARAM, f"{room_id} is not a valid room ID")

    async def on_get(self, request: Request, userId: str, roomId: str) -> tuple[int, Any]:
        await self._check(request, userId, roomId)
        return 200, {"tags": await self._tags.get_tags(userId, roomId)}

    async def on_put(self, request: Request, userId: str, roomId: str, tag: str) -> tuple[int, Any]:
        await self._check(request, userId, roomId)
        body = parse_json_body(request)
        await self._tags.add_tag(userId, roomId, tag, body)
        return 200, {}

    async def on_delete(
        self, request: Request, userId: str, roomId: str, tag: str
    ) -> tuple[int, Any]:
        await self._check(request, userId, roomId)
        await self._tags.remove_tag(userId, roomId, tag)
        return 200, {}
