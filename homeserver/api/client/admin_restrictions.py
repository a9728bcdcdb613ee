"""``GET``/``PUT /_matrix/client/v1/admin/suspend/{userId}`` and ``.../admin/lock/{userId}``
(MSC4323; Synapse also serves the unstable ``uk.timedout.msc4323`` paths): server admins
suspend or lock local accounts."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from twisted.web.server import Request

from homeserver.api.client.paths import CLIENT_PREFIX, client_v1_paths
from homeserver.api.client.whois import require_local_user
from homeserver.e2ee.locality import Locality
from homeserver.errors import Codes, MatrixError
from homeserver.handlers.auth import AuthHandler
from homeserver.handlers.restrictions import UserRestrictions
from homeserver.http.server import JsonResource
from homeserver.http.servlet import field, parse_json_body
from storage.users import UserStore

UNSTABLE = f"{CLIENT_PREFIX}/unstable/uk.timedout.msc4323"


class AdminRestrictionServlets:
    def __init__(
        self,
        auth: AuthHandler,
        restrictions: UserRestrictions,
        users: UserStore,
        locality: Locality,
    ) -> None:
        self._auth = auth
        self._restrictions = restrictions
        self._users = users
        self._locality = locality

    def register(self, r: JsonResource) -> None:
        for name, getter, setter in (
            ("suspend", self._restrictions.is_suspended, self._restrictions.set_suspended),
            ("lock", self._restrictions.is_locked, self._restrictions.set_locked),
        ):
            key = "suspended" if name == "suspend" else "locked"
            paths = [
                *client_v1_paths(f"/admin/{name}/{{userId}}"),
                f"{UNSTABLE}/admin/{name}/{{userId}}",
            ]
            r.register_many("GET", paths, self._on_get(key, getter))
            r.register_many("PUT", paths, self._on_put(key, setter))

    async def _target(self, request: Request, user_id: str) -> None:
        requester = await self._auth.get_user_by_req(request)
        if not requester.is_admin:
            raise MatrixError(403, Codes.FORBIDDEN, "You are not a server admin")
        await require_local_user(self._locality, self._users, user_id)

    def _on_get(
        self, key: str, getter: Callable[[str], bool]
    ) -> Callable[[Request, str], Awaitable[tuple[int, Any]]]:
        async def on_get(request: Request, userId: str) -> tuple[int, Any]:
            await self._target(request, userId)
            return 200, {key: getter(userId)}

        return on_get

    def _on_put(
        self, key: str, setter: Callable[[str, bool], Awaitable[None]]
    ) -> Callable[[Request, str], Awaitable[tuple[int, Any]]]:
        async def on_put(request: Request, userId: str) -> tuple[int, Any]:
            await self._target(request, userId)
            value = field(parse_json_body(request), key, bool, required=True)
            await setter(userId, value)
            return 200, {key: value}

        return on_put
