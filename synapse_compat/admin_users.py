"""Synapse's user admin API (``docs/admin_api/user_admin_api.md``): listing, reading,
creating and modifying local accounts, deactivation, password resets, the admin flag,
joined rooms, pushers, username availability and logging in as a user.

Paths, bodies, defaults and errors are Synapse's; every endpoint is for server admins
only (403 ``M_FORBIDDEN`` "You are not a server admin").
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from twisted.web.server import Request

from homeserver.e2ee.locality import Locality
from homeserver.errors import Codes, MatrixError
from homeserver.handlers.admin_users import (
    MAX_PASSWORD_LENGTH,
    USER_TYPES,
    AdminUsersHandler,
    UserChanges,
)
from homeserver.handlers.auth import AuthHandler
from homeserver.handlers.deactivate import DeactivationHandler
from homeserver.handlers.register import RegistrationHandler
from homeserver.http.server import JsonResource
from homeserver.http.servlet import (
    field,
    parse_boolean,
    parse_integer,
    parse_json_body,
    parse_string,
    parse_strings,
)
from storage.push import PusherRecord
from storage.user_admin import ORDER_COLUMNS, UserAdminStore, UserListEntry, UserListFilter
from storage.users import UserStore
from synapse_compat.admin_common import (
    ADMIN_V1,
    ADMIN_V2,
    ADMIN_V3,
    parse_optional_boolean,
    require_admin,
    require_existing,
    require_local,
)

JsonDict = dict[str, Any]


def _entry_json(u: UserListEntry) -> JsonDict:
    return {
        "name": u.name,
        "user_type": u.user_type,
        "is_guest": u.is_guest,
        "admin": u.admin,
        "deactivated": u.deactivated,
        "shadow_banned": u.shadow_banned,
        "displayname": u.displayname,
        "avatar_url": u.avatar_url,
        "creation_ts": u.creation_ts,
        "erased": u.erased,
        "last_seen_ts": u.last_seen_ts,
        "locked": u.locked,
    }


def _parse_changes(body: JsonDict) -> UserChanges:
    threepids = field(body, "threepids", list)
    parsed_threepids = None
    if threepids is not None:
        pairs = set()
        for threepid in threepids:
            if not isinstance(threepid, dict):
                raise MatrixError(400, Codes.BAD_JSON, "threepids must be a list of objects")
            medium = field(threepid, "medium", str, required=True)
            address = field(threepid, "address", str, required=True)
            pairs.add((medium, address))
        parsed_threepids = frozenset(pairs)
    external_ids = field(body, "external_ids", list)
    parsed_external_ids = None
    if external_ids is not None:
        parsed_external_ids = []
        for external_id in external_ids:
            if not isinstance(external_id, dict):
                raise MatrixError(400, Codes.BAD_JSON, "external_ids must be a list of objects")
            missing = [k for k in ("auth_provider", "external_id") if k not in external_id]
            if missing:
                raise MatrixError(400, Codes.MISSING_PARAM, f"Missing params: {missing}")
            parsed_external_ids.append(
                (
                    field(external_id, "auth_provider", str, required=True),
                    field(external_id, "external_id", str, required=True),
                )
            )
    user_type = body.get("user_type")
    if user_type is not None and user_type not in USER_TYPES:
        raise MatrixError(400, Codes.UNKNOWN, "Invalid user type")
    admin = body.get("admin", False)
    if not isinstance(admin, bool):
        raise MatrixError(400, Codes.BAD_JSON, "Param 'admin' must be a boolean, if given")
    password = body.get("password")
    if password is not None and (
        not isinstance(password, str) or len(password) > MAX_PASSWORD_LENGTH
    ):
        raise MatrixError(400, Codes.UNKNOWN, "Invalid password")
    flags: dict[str, bool] = {}
    for name in ("logout_devices", "deactivated", "locked"):
        value = body.get(name, name == "logout_devices")
        if not isinstance(value, bool):
            raise MatrixError(400, Codes.UNKNOWN, f"'{name}' parameter is not of type boolean")
        flags[name] = value
    displayname = body.get("displayname")
    if displayname is not None and not isinstance(displayname, str):
        raise MatrixError(400, Codes.BAD_JSON, "displayname must be a string")
    avatar_url = body.get("avatar_url")
    if avatar_url is not None and not isinstance(avatar_url, str):
        raise MatrixError(400, Codes.BAD_JSON, "avatar_url must be a string")
    return UserChanges(
        password=password,
        logout_devices=flags["logout_devices"],
        displayname=displayname,
        displayname_set="displayname" in body,
        avatar_url=avatar_url,
        avatar_url_set="avatar_url" in body,
        threepids=parsed_threepids,
        external_ids=None if parsed_external_ids is None else tuple(parsed_external_ids),
        admin=admin if "admin" in body else None,
        deactivated=flags["deactivated"] if "deactivated" in body else None,
        locked=flags["locked"] if "locked" in body else None,
        user_type=user_type,
        user_type_set="user_type" in body,
    )


class AdminUserServlets:
    def __init__(
        self,
        auth: AuthHandler,
        locality: Locality,
        users: UserStore,
        user_list: UserAdminStore,
        handler: AdminUsersHandler,
        deactivation: DeactivationHandler,
        registration: RegistrationHandler,
        joined_rooms: Callable[[str], Awaitable[list[str]]],
        pushers_of: Callable[[str], list[PusherRecord]],
    ) -> None:
        self._auth = auth
        self._locality = locality
        self._users = users
        self._user_list = user_list
        self._handler = handler
        self._deactivation = deactivation
        self._registration = registration
        self._joined_rooms = joined_rooms
        self._pushers_of = pushers_of

    def register(self, r: JsonResource) -> None:
        r.register("GET", f"{ADMIN_V2}/users", self._on_list(tri_state_deactivated=False))
        r.register("GET", f"{ADMIN_V3}/users", self._on_list(tri_state_deactivated=True))
        r.register("GET", f"{ADMIN_V2}/users/{{userId}}", self.on_get_user)
        r.register("PUT", f"{ADMIN_V2}/users/{{userId}}", self.on_put_user)
        r.register("POST", f"{ADMIN_V1}/deactivate/{{userId}}", self.on_deactivate)
        r.register("POST", f"{ADMIN_V1}/reset_password/{{userId}}", self.on_reset_password)
        r.register("GET", f"{ADMIN_V1}/users/{{userId}}/admin", self.on_get_admin)
        r.register("PUT", f"{ADMIN_V1}/users/{{userId}}/admin", self.on_put_admin)
        r.register("GET", f"{ADMIN_V1}/users/{{userId}}/joined_rooms", self.on_joined_rooms)
        r.register("GET", f"{ADMIN_V1}/users/{{userId}}/pushers", self.on_pushers)
        r.register("POST", f"{ADMIN_V1}/users/{{userId}}/login", self.on_login)
        r.register("GET", f"{ADMIN_V1}/username_available", self.on_username_available)

    def _on_list(
        self, *, tri_state_deactivated: bool
    ) -> Callable[[Request], Awaitable[tuple[int, Any]]]:
        async def on_list(request: Request) -> tuple[int, Any]:
            await require_admin(self._auth, request)
            start = parse_integer(request, "from", default=0, minimum=0)
            limit = parse_integer(request, "limit", default=100, minimum=0)
            assert start is not None and limit is not None
            deactivated = parse_optional_boolean(request, "deactivated")
            if not tri_state_deactivated:
                # v2: `deactivated=true` includes them, anything else leaves them out.
                deactivated = None if deactivated else False
            filters = UserListFilter(
                name=parse_string(request, "name"),
                user_id=parse_string(request, "user_id"),
                guests=parse_boolean(request, "guests", default=True),
                deactivated=deactivated,
                admins=parse_optional_boolean(request, "admins"),
                locked=parse_boolean(request, "locked", default=False),
                not_user_types=tuple(parse_strings(request, "not_user_type")),
            )
            order_by = parse_string(
                request, "order_by", default="name", allowed=tuple(ORDER_COLUMNS)
            )
            direction = parse_string(request, "dir", default="f", allowed=("f", "b"))
            assert order_by is not None
            users, total = await self._user_list.list_users(
                filters, start=start, limit=limit, order_by=order_by, backwards=direction == "b"
            )
            result: JsonDict = {"users": [_entry_json(u) for u in users], "total": total}
            if start + limit < total:
                result["next_token"] = str(start + len(users))
            return 200, result

        return on_list

    async def on_get_user(self, request: Request, userId: str) -> tuple[int, Any]:
        await require_admin(self._auth, request)
        require_local(self._locality, userId, "Can only look up local users")
        user = await self._handler.get_user(userId)
        if user is None:
            raise MatrixError(404, Codes.NOT_FOUND, "User not found")
        return 200, user

    async def on_put_user(self, request: Request, userId: str) -> tuple[int, Any]:
        requester = await require_admin(self._auth, request)
        body = parse_json_body(request)
        require_local(self._locality, userId, "This endpoint can only be used with local users")
        changes = _parse_changes(body)
        localpart = userId[1:].split(":", 1)[0]
        created, user = await self._handler.create_or_modify(requester, userId, localpart, changes)
        return (201 if created else 200), user

    async def on_deactivate(self, request: Request, userId: str) -> tuple[int, Any]:
        await require_admin(self._auth, request)
        require_local(self._locality, userId, "Can only deactivate local users")
        await require_existing(self._users, userId)
        body = parse_json_body(request, allow_empty=True)
        erase = body.get("erase", False)
        if not isinstance(erase, bool):
            raise MatrixError(400, Codes.BAD_JSON, "Param 'erase' must be a boolean, if given")
        result = await self._deactivation.deactivate(userId, erase=erase)
        return 200, {"id_server_unbind_result": result}

    async def on_reset_password(self, request: Request, userId: str) -> tuple[int, Any]:
        requester = await require_admin(self._auth, request)
        self._locality.server_of(userId)  # a well-formed id
        body = parse_json_body(request)
        new_password = field(body, "new_password", str, required=True)
        if len(new_password) > MAX_PASSWORD_LENGTH:
            raise MatrixError(400, Codes.UNKNOWN, "Invalid password")
        logout_devices = field(body, "logout_devices", bool, default=True)
        require_local(self._locality, userId, "Can only change the password of local users")
        await require_existing(self._users, userId)
        await self._handler.set_password(requester, userId, new_password, logout_devices)
        return 200, {}

    async def on_get_admin(self, request: Request, userId: str) -> tuple[int, Any]:
        await require_admin(self._auth, request)
        require_local(self._locality, userId, "Only local users can be admins of this homeserver")
        user = await self._users.get_user(userId)
        return 200, {"admin": user is not None and user.admin}

    async def on_put_admin(self, request: Request, userId: str) -> tuple[int, Any]:
        requester = await require_admin(self._auth, request)
        body = parse_json_body(request)
        if "admin" not in body:
            raise MatrixError(400, Codes.MISSING_PARAM, "Missing params: ['admin']")
        require_local(self._locality, userId, "Only local users can be admins of this homeserver")
        await self._handler.set_admin(requester, userId, bool(body["admin"]))
        return 200, {}

    async def on_joined_rooms(self, request: Request, userId: str) -> tuple[int, Any]:
        await require_admin(self._auth, request)
        rooms = await self._joined_rooms(userId)
        return 200, {"joined_rooms": rooms, "total": len(rooms)}

    async def on_pushers(self, request: Request, userId: str) -> tuple[int, Any]:
        await require_admin(self._auth, request)
        require_local(self._locality, userId, "Can only look up local users")
        await require_existing(self._users, userId)
        pushers = [p.to_client_json() for p in self._pushers_of(userId)]
        return 200, {"pushers": pushers, "total": len(pushers)}

    async def on_login(self, request: Request, userId: str) -> tuple[int, Any]:
        requester = await require_admin(self._auth, request)
        require_local(self._locality, userId, "Only local users can be logged in as")
        await require_existing(self._users, userId)
        body = parse_json_body(request, allow_empty=True)
        valid_until_ms = body.get("valid_until_ms")
        if valid_until_ms is not None and (
            not isinstance(valid_until_ms, int) or isinstance(valid_until_ms, bool)
        ):
            raise MatrixError(400, Codes.UNKNOWN, "'valid_until_ms' parameter must be an int")
        token = await self._handler.login_as(requester, userId, valid_until_ms)
        return 200, {"access_token": token}

    async def on_username_available(self, request: Request) -> tuple[int, Any]:
        await require_admin(self._auth, request)
        username = parse_string(request, "username", required=True)
        assert username is not None
        await self._registration.check_available(username)
        return 200, {"available": True}
