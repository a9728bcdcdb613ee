"""/profile/{userId} and /profile/{userId}/{keyName}."""

from __future__ import annotations

from typing import Any

from twisted.web.server import Request

from homeserver.api.client.paths import client_paths
from homeserver.errors import Codes, MatrixError
from homeserver.handlers.auth import AuthHandler
from homeserver.handlers.profile import ProfileHandler
from homeserver.http.server import JsonResource
from homeserver.http.servlet import parse_json_body


class ProfileServlets:
    def __init__(
        self,
        auth: AuthHandler,
        profiles: ProfileHandler,
        *,
        require_auth: bool = False,
        limit_to_shared_rooms: bool = False,
    ) -> None:
        self._auth = auth
        self._profiles = profiles
        self._require_auth = require_auth
        self._limit_to_shared_rooms = limit_to_shared_rooms

    def register(self, resource: JsonResource) -> None:
        resource.register_many("GET", client_paths("/profile/{userId}"), self.on_get_profile)
        resource.register_many(
            "GET", client_paths("/profile/{userId}/{keyName}"), self.on_get_field
        )
        resource.register_many(
            "PUT", client_paths("/profile/{userId}/{keyName}"), self.on_put_field
        )
        resource.register_many(
            "DELETE", client_paths("/profile/{userId}/{keyName}"), self.on_delete_field
        )

    async def on_get_profile(self, request: Request, userId: str) -> tuple[int, Any]:
        await self._check_may_read(request, userId)
        return 200, await self._profiles.lookup_profile(userId)

    async def on_get_field(self, request: Request, userId: str, keyName: str) -> tuple[int, Any]:
        await self._check_may_read(request, userId)
        return 200, {keyName: await self._profiles.lookup_field(userId, keyName)}

    async def _check_may_read(self, request: Request, user_id: str) -> None:
        """``require_auth_for_profile_requests`` and, for an authenticated reader,
        ``limit_profile_requests_to_users_who_share_rooms`` (as Synapse)."""
        if not self._require_auth:
            return
        requester = await self._auth.get_user_by_req(request, allow_guest=True)
        if self._limit_to_shared_rooms:
            await self._profiles.check_profile_query_allowed(user_id, requester.user_id)

    async def on_put_field(self, request: Request, userId: str, keyName: str) -> tuple[int, Any]:
        requester = await self._auth.get_user_by_req(request, allow_guest=True)
        body = parse_json_body(request)
        if keyName not in body:
            raise MatrixError(400, Codes.MISSING_PARAM, f"Missing key {keyName!r} in body")
        await self._profiles.set_field(requester, userId, keyName, body[keyName])
        return 200, {}

    async def on_delete_field(self, request: Request, userId: str, keyName: str) -> tuple[int, Any]:
        requester = await self._auth.get_user_by_req(request, allow_guest=True)
        await self._profiles.delete_field(requester, userId, keyName)
        return 200, {}
