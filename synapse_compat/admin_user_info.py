"""More of Synapse's user admin API: a user's room memberships, account data and
uploaded media, the user holding a 3PID, and Synapse's own suspension path (``/_synapse/admin/v1/suspend``,
the same flag as MSC4323's ``/_matrix/client/v1/admin/suspend``)."""

from __future__ import annotations

from typing import Any

from twisted.web.server import Request

from homeserver.e2ee.locality import Locality
from homeserver.errors import Codes, MatrixError
from homeserver.handlers.auth import AuthHandler
from homeserver.handlers.restrictions import UserRestrictions
from homeserver.http.server import JsonResource
from homeserver.http.servlet import field, parse_integer, parse_json_body, parse_string
from homeserver.media.admin import MediaAdmin
from homeserver.rooms.memberships import MembershipCache
from storage.account_data import AccountDataStore
from storage.media import USER_MEDIA_ORDER, MediaRecord, MediaStore
from storage.threepids import ThreePidStore
from storage.users import UserStore
from synapse_compat.admin_common import ADMIN_V1, require_admin, require_existing, require_local


def _media_json(m: MediaRecord) -> dict[str, Any]:
    return {
        "media_id": m.media_id,
        "media_type": m.content_type,
        "media_length": m.size,
        "upload_name": m.upload_name,
        "created_ts": m.created_ts,
        "last_access_ts": None,
        "url_cache": None,
        "quarantined_by": m.quarantined_by,
        "safe_from_quarantine": m.safe_from_quarantine,
        "user_id": m.user_id,
        "authenticated": m.authenticated,
        "sha256": m.sha256,
    }


class AdminUserInfoServlets:
    def __init__(
        self,
        auth: AuthHandler,
        locality: Locality,
        users: UserStore,
        memberships: MembershipCache,
        account_data: AccountDataStore,
        threepids: ThreePidStore,
        restrictions: UserRestrictions,
        media: MediaStore,
        media_admin: MediaAdmin,
    ) -> None:
        self._media_admin = media_admin
        self._media = media
        self._auth = auth
        self._locality = locality
        self._users = users
        self._memberships = memberships
        self._account_data = account_data
        self._threepids = threepids
        self._restrictions = restrictions

    def register(self, r: JsonResource) -> None:
        r.register("GET", f"{ADMIN_V1}/users/{{userId}}/memberships", self.on_memberships)
        r.register("GET", f"{ADMIN_V1}/users/{{userId}}/accountdata", self.on_account_data)
        r.register("GET", f"{ADMIN_V1}/threepid/{{medium}}/users/{{address}}", self.on_threepid)
        r.register("PUT", f"{ADMIN_V1}/suspend/{{userId}}", self.on_suspend)
        r.register("GET", f"{ADMIN_V1}/users/{{userId}}/media", self.on_media)
        r.register("DELETE", f"{ADMIN_V1}/users/{{userId}}/media", self.on_delete_media)

    async def on_memberships(self, request: Request, userId: str) -> tuple[int, Any]:
        await require_admin(self._auth, request)
        rooms = await self._memberships.rooms_for_user(userId)
        return 200, {"memberships": {room: row.membership for room, row in rooms.items()}}

    async def on_account_data(self, request: Request, userId: str) -> tuple[int, Any]:
        await require_admin(self._auth, request)
        require_local(self._locality, userId, "Can only look up local users")
        await require_existing(self._users, userId)
        changes = await self._account_data.get_changes(
            userId, 0, self._account_data.stream.current_position
        )
        global_data: dict[str, Any] = {}
        rooms: dict[str, dict[str, Any]] = {}
        for change in changes:
            if change.room_id:
                rooms.setdefault(change.room_id, {})[change.data_type] = change.content
            else:
                global_data[change.data_type] = change.content
        return 200, {"account_data": {"global": global_data, "rooms": rooms}}

    async def on_threepid(self, request: Request, medium: str, address: str) -> tuple[int, Any]:
        await require_admin(self._auth, request)
        user_id = await self._threepids.get_user_by_threepid(medium, address)
        if user_id is None:
            raise MatrixError(404, Codes.NOT_FOUND, "User not found")
        return 200, {"user_id": user_id}

    async def on_suspend(self, request: Request, userId: str) -> tuple[int, Any]:
        await require_admin(self._auth, request)
        require_local(self._locality, userId, "Can only suspend local users")
        await require_existing(self._users, userId)
        suspend = field(parse_json_body(request), "suspend", bool, required=True)
        await self._restrictions.set_suspended(userId, suspend)
        return 200, {f"user_{userId}_suspended": suspend}

    async def _user_media_page(
        self, request: Request, userId: str
    ) -> tuple[list[MediaRecord], int, int, int]:
        """The page of the user's media the query names: (media, total, from, limit)."""
        await require_admin(self._auth, request)
        require_local(self._locality, userId, "Can only look up local users")
        await require_existing(self._users, userId, "Unknown user")
        start = parse_integer(request, "from", default=0, minimum=0)
        limit = parse_integer(request, "limit", default=100, minimum=0)
        assert start is not None and limit is not None
        args = request.args or {}
        order_by: str | None
        direction: str | None
        if b"order_by" not in args and b"dir" not in args:
            # As Synapse: with neither given, the newest first.
            order_by, direction = "created_ts", "b"
        else:
            order_by = parse_string(
                request, "order_by", default="created_ts", allowed=tuple(USER_MEDIA_ORDER)
            )
            direction = parse_string(request, "dir", default="f", allowed=("f", "b"))
        assert order_by is not None
        media, total = await self._media.list_user_media(
            userId, start=start, limit=limit, order_by=order_by, backwards=direction == "b"
        )
        return media, total, start, limit

    async def on_media(self, request: Request, userId: str) -> tuple[int, Any]:
        media, total, start, limit = await self._user_media_page(request, userId)
        result: dict[str, Any] = {"media": [_media_json(m) for m in media], "total": total}
        if start + limit < total:
            result["next_token"] = start + len(media)
        return 200, result

    async def on_delete_media(self, request: Request, userId: str) -> tuple[int, Any]:
        # Synapse's paging parameters pick what goes; no `next_token` (the rest moved).
        media, _, _, _ = await self._user_media_page(request, userId)
        deleted, total = await self._media_admin.delete_many_local([m.media_id for m in media])
        return 200, {"deleted_media": deleted, "total": total}
