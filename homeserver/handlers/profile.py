"""Profiles: reading and changing fields, with the spec's size limits.

Other parts of the server subscribe to ``on_change`` (the rooms layer writes new
membership events when a display name or avatar changes).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from homeserver.appservice.handler import AppServiceHandler
from homeserver.errors import Codes, MatrixError
from homeserver.handlers.auth import Requester
from homeserver.handlers.restrictions import UserRestrictions
from storage.storage import Storage

MAX_PROFILE_BYTES = 64 * 1024
MAX_KEY_BYTES = 255
MAX_DISPLAYNAME_LEN = 256
MAX_AVATAR_URL_LEN = 1000

ProfileListener = Callable[[str, str, Any], Awaitable[None]]


class ProfileHandler:
    def __init__(
        self,
        storage: Storage,
        server_name: str,
        appservices: AppServiceHandler | None = None,
        restrictions: UserRestrictions | None = None,
    ) -> None:
        self._storage = storage
        self._restrictions = restrictions
        self._server_name = server_name
        self._appservices = appservices
        self.listeners: list[ProfileListener] = []

    def is_mine(self, user_id: str) -> bool:
        return user_id.endswith(f":{self._server_name}")

    async def get_profile(self, user_id: str) -> dict[str, Any]:
        if not self.is_mine(user_id):
            raise MatrixError(404, Codes.NOT_FOUND, "Profile not found")
        user = await self._storage.users.get_user(user_id)
        # A bridge may create a user of its namespace when asked.
        if user is None and self._appservices and await self._appservices.query_user(user_id):
            user = await self._storage.users.get_user(user_id)
        profile = await self._storage.profiles.get_profile(user_id)
        if user is None or profile is None:
            raise MatrixError(404, Codes.NOT_FOUND, "Profile not found")
        return profile.as_dict()

    async def get_field(self, user_id: str, name: str) -> Any:
        profile = await self.get_profile(user_id)
        if name not in profile:
            raise MatrixError(404, Codes.NOT_FOUND, f"Profile field {name} not set")
        return profile[name]

    async def set_field(self, requester: Requester, user_id: str, name: str, value: Any) -> None:
        self._check_may_edit(requester, user_id)
        if len(name.encode("utf-8")) > MAX_KEY_BYTES:
            raise MatrixError(400, "M_KEY_TOO_LARGE", "Profile key exceeds 255 bytes")
        if name == "displayname":
            if not isinstance(value, str):
                raise MatrixError(400, Codes.BAD_JSON, "displayname must be a string")
            if len(value) > MAX_DISPLAYNAME_LEN:
                raise MatrixError(
                    400,
                    Codes.BAD_JSON,
                    f"displayname is longer than {MAX_DISPLAYNAME_LEN} characters",
                )
            value = value or None  # an empty name clears it, as Synapse does
        elif name == "avatar_url":
            if not isinstance(value, str):
                raise MatrixError(400, Codes.BAD_JSON, "avatar_url must be a string")
            if len(value) > MAX_AVATAR_URL_LEN:
                raise MatrixError(400, Codes.BAD_JSON, "avatar_url is too long")
            value = value or None
        elif name == "m.tz" and not isinstance(value, str):
            raise MatrixError(400, Codes.BAD_JSON, "m.tz must be a string")
        profile = await self.get_profile(user_id)
        profile[name] = value
        if len(json.dumps(profile).encode("utf-8")) > MAX_PROFILE_BYTES:
            raise MatrixError(400, "M_PROFILE_TOO_LARGE", "The profile would exceed 64 KiB")
        await self._storage.profiles.set_field(user_id, name, value)
        for listener in self.listeners:
            await listener(user_id, name, value)

    async def delete_field(self, requester: Requester, user_id: str, name: str) -> None:
        self._check_may_edit(requester, user_id)
        await self.get_profile(user_id)
        await self._storage.profiles.set_field(user_id, name, None)
        for listener in self.listeners:
            await listener(user_id, name, None)

    def _check_may_edit(self, requester: Requester, user_id: str) -> None:
        if requester.user_id != user_id and not requester.is_admin:
            raise MatrixError(403, Codes.FORBIDDEN, "You cannot change another user's profile")
        if self._restrictions is not None:
            self._restrictions.check_not_suspended(requester.user_id)
