"""``/_synapse/admin/v1/users/{userId}/shadow_ban`` and ``.../override_ratelimit``:
an admin shadow-bans a local user (their sends look successful and go nowhere) or
overrides their rate limits (zero messages per second: not limited at all)."""

from __future__ import annotations

from typing import Any

from twisted.web.server import Request

from homeserver.e2ee.locality import Locality
from homeserver.errors import Codes, MatrixError
from homeserver.handlers.auth import AuthHandler
from homeserver.handlers.restrictions import UserRestrictions
from homeserver.http.server import JsonResource
from homeserver.http.servlet import parse_json_body
from storage.users import UserStore
from synapse_compat.admin_common import ADMIN_V1, require_admin, require_existing, require_local


def _non_negative_int(body: dict[str, Any], name: str) -> int:
    value = body.get(name, 0)
    if type(value) is not int or value < 0:
        raise MatrixError(400, Codes.INVALID_PARAM, f"{value!r} parameter must be a positive int")
    return value


class AdminUserLimitServlets:
    def __init__(
        self,
        auth: AuthHandler,
        locality: Locality,
        users: UserStore,
        restrictions: UserRestrictions,
    ) -> None:
        self._auth = auth
        self._locality = locality
        self._users = users
        self._restrictions = restrictions

    def register(self, r: JsonResource) -> None:
        shadow_ban = f"{ADMIN_V1}/users/{{userId}}/shadow_ban"
        r.register("POST", shadow_ban, self.on_shadow_ban)
        r.register("DELETE", shadow_ban, self.on_unshadow_ban)
        ratelimit = f"{ADMIN_V1}/users/{{userId}}/override_ratelimit"
        r.register("GET", ratelimit, self.on_get_ratelimit)
        r.register("POST", ratelimit, self.on_set_ratelimit)
        r.register("DELETE", ratelimit, self.on_delete_ratelimit)

    async def _shadow_ban(self, request: Request, user_id: str, banned: bool) -> tuple[int, Any]:
        await require_admin(self._auth, request)
        require_local(self._locality, user_id, "Only local users can be shadow-banned")
        await require_existing(self._users, user_id)
        await self._restrictions.set_shadow_banned(user_id, banned)
        return 200, {}

    async def on_shadow_ban(self, request: Request, userId: str) -> tuple[int, Any]:
        return await self._shadow_ban(request, userId, True)

    async def on_unshadow_ban(self, request: Request, userId: str) -> tuple[int, Any]:
        return await self._shadow_ban(request, userId, False)

    async def on_get_ratelimit(self, request: Request, userId: str) -> tuple[int, Any]:
        await require_admin(self._auth, request)
        require_local(self._locality, userId, "Can only look up local users")
        await require_existing(self._users, userId)
        override = self._restrictions.ratelimit_override(userId)
        if override is None:
            return 200, {}
        return 200, {"messages_per_second": override[0], "burst_count": override[1]}

    async def on_set_ratelimit(self, request: Request, userId: str) -> tuple[int, Any]:
        await require_admin(self._auth, request)
        require_local(self._locality, userId, "Only local users can be ratelimited")
        await require_existing(self._users, userId)
        body = parse_json_body(request, allow_empty=True)
        messages_per_second = _non_negative_int(body, "messages_per_second")
        burst_count = _non_negative_int(body, "burst_count")
        await self._restrictions.set_ratelimit_override(userId, messages_per_second, burst_count)
        return 200, {"messages_per_second": messages_per_second, "burst_count": burst_count}

    async def on_delete_ratelimit(self, request: Request, userId: str) -> tuple[int, Any]:
        await require_admin(self._auth, request)
        require_local(self._locality, userId, "Only local users can be ratelimited")
        await require_existing(self._users, userId)
        await self._restrictions.delete_ratelimit_override(userId)
        return 200, {}
