"""Synapse's media admin API (``/_synapse/admin/v1/media/...``, room and user media
quarantine, ``purge_media_cache``, ``statistics/users/media``), server admins only."""

from __future__ import annotations

from typing import Any

from twisted.web.server import Request

from homeserver.errors import Codes, MatrixError
from homeserver.handlers.auth import AuthHandler
from homeserver.http.server import JsonResource
from homeserver.http.servlet import parse_boolean, parse_integer, parse_string
from homeserver.media.admin import MediaAdmin
from storage.media_admin import MEDIA_STATISTICS_ORDER
from synapse_compat.admin_common import ADMIN_V1, require_admin
from synapse_compat.admin_rooms import parse_direction

# Timestamps below this are seconds or a mistake (Dec 1970 in ms; as Synapse).
_YEAR_1970_MS = 30_000_000_000


def _before_ts(request: Request) -> int:
    before_ts = parse_integer(request, "before_ts", required=True)
    assert before_ts is not None
    if before_ts < 0:
        raise MatrixError(
            400, Codes.INVALID_PARAM, "Query parameter before_ts must be a positive integer."
        )
    if before_ts < _YEAR_1970_MS:
        raise MatrixError(
            400,
            Codes.INVALID_PARAM,
            "Query parameter before_ts you provided is from the year 1970. "
            "Double check that you are providing a timestamp in milliseconds.",
        )
    return before_ts


class AdminMediaServlets:
    def __init__(self, auth: AuthHandler, media: MediaAdmin) -> None:
        self._auth = auth
        self._media = media

    def register(self, r: JsonResource) -> None:
        # Literal segments first: routes are tried in this order.
        r.register("POST", f"{ADMIN_V1}/media/delete", self.on_delete_old)
        r.register("GET", f"{ADMIN_V1}/media/quarantine_changes", self.on_quarantine_changes)
        r.register(
            "POST", f"{ADMIN_V1}/media/quarantine/{{serverName}}/{{mediaId}}", self.on_quarantine
        )
        r.register(
            "POST",
            f"{ADMIN_V1}/media/unquarantine/{{serverName}}/{{mediaId}}",
            self.on_unquarantine,
        )
        r.register("POST", f"{ADMIN_V1}/media/protect/{{mediaId}}", self.on_protect)
        r.register("POST", f"{ADMIN_V1}/media/unprotect/{{mediaId}}", self.on_unprotect)
        r.register("POST", f"{ADMIN_V1}/media/{{serverName}}/delete", self.on_delete_old)
        r.register("GET", f"{ADMIN_V1}/media/{{serverName}}/{{mediaId}}", self.on_info)
        r.register("DELETE", f"{ADMIN_V1}/media/{{serverName}}/{{mediaId}}", self.on_delete)
        r.register("POST", f"{ADMIN_V1}/room/{{roomId}}/media/quarantine", self.on_quarantine_room)
        r.register("POST", f"{ADMIN_V1}/quarantine_media/{{roomId}}", self.on_quarantine_room)
        r.register("GET", f"{ADMIN_V1}/room/{{roomId}}/media", self.on_room_media)
        r.register("POST", f"{ADMIN_V1}/user/{{userId}}/media/quarantine", self.on_quarantine_user)
        r.register("POST", f"{ADMIN_V1}/purge_media_cache", self.on_purge_cache)
        r.register("GET", f"{ADMIN_V1}/statistics/users/media", self.on_statistics)

    async def on_info(self, request: Request, serverName: str, mediaId: str) -> tuple[int, Any]:
        await require_admin(self._auth, request)
        return 200, {"media_info": await self._media.media_info(serverName, mediaId)}

    async def on_quarantine_changes(self, request: Request) -> tuple[int, Any]:
        await require_admin(self._auth, request)
        after = parse_integer(request, "from", default=0, minimum=0)
        assert after is not None
        # As Synapse: pages of at most 100, oldest first; `from` is a `next_batch`.
        changes, next_batch = await self._media.quarantine_changes(after, 100)
        return 200, {"next_batch": next_batch, "changes": changes}

    async def on_quarantine(
        self, request: Request, serverName: str, mediaId: str
    ) -> tuple[int, Any]:
        requester = await require_admin(self._auth, request)
        await self._media.set_quarantined(serverName, mediaId, requester.user_id)
        return 200, {}

    async def on_unquarantine(
        self, request: Request, serverName: str, mediaId: str
    ) -> tuple[int, Any]:
        await require_admin(self._auth, request)
        await self._media.set_quarantined(serverName, mediaId, None)
        return 200, {}

    async def on_quarantine_room(self, request: Request, roomId: str) -> tuple[int, Any]:
        requester = await require_admin(self._auth, request)
        count = await self._media.quarantine_room(roomId, requester.user_id)
        return 200, {"num_quarantined": count}

    async def on_quarantine_user(self, request: Request, userId: str) -> tuple[int, Any]:
        requester = await require_admin(self._auth, request)
        count = await self._media.quarantine_user(userId, requester.user_id)
        return 200, {"num_quarantined": count}

    async def on_protect(self, request: Request, mediaId: str) -> tuple[int, Any]:
        await require_admin(self._auth, request)
        await self._media.set_protected(mediaId, True)
        return 200, {}

    async def on_unprotect(self, request: Request, mediaId: str) -> tuple[int, Any]:
        await require_admin(self._auth, request)
        await self._media.set_protected(mediaId, False)
        return 200, {}

    async def on_room_media(self, request: Request, roomId: str) -> tuple[int, Any]:
        await require_admin(self._auth, request)
        return 200, await self._media.room_media(roomId)

    async def on_delete(self, request: Request, serverName: str, mediaId: str) -> tuple[int, Any]:
        await require_admin(self._auth, request)
        if not self._media.is_mine(serverName):
            raise MatrixError(400, Codes.UNKNOWN, "Can only delete local media")
        deleted, total = await self._media.delete_local(mediaId)
        return 200, {"deleted_media": deleted, "total": total}

    async def on_delete_old(
        self, request: Request, serverName: str | None = None
    ) -> tuple[int, Any]:
        await require_admin(self._auth, request)
        before_ts = _before_ts(request)
        size_gt = parse_integer(request, "size_gt", default=0, minimum=0)
        assert size_gt is not None
        keep_profiles = parse_boolean(request, "keep_profiles", default=True)
        if serverName is not None and not self._media.is_mine(serverName):
            raise MatrixError(400, Codes.UNKNOWN, "Can only delete local media")
        deleted, total = await self._media.delete_old_local(before_ts, size_gt, keep_profiles)
        return 200, {"deleted_media": deleted, "total": total}

    async def on_purge_cache(self, request: Request) -> tuple[int, Any]:
        await require_admin(self._auth, request)
        return 200, {"deleted": await self._media.purge_remote_cache(_before_ts(request))}

    async def on_statistics(self, request: Request) -> tuple[int, Any]:
        await require_admin(self._auth, request)
        order_by = parse_string(
            request, "order_by", default="user_id", allowed=tuple(MEDIA_STATISTICS_ORDER)
        )
        start = parse_integer(request, "from", default=0, minimum=0)
        limit = parse_integer(request, "limit", default=100, minimum=0)
        from_ts = parse_integer(request, "from_ts", default=0, minimum=0)
        until_ts = parse_integer(request, "until_ts", minimum=0)
        assert order_by is not None and start is not None and limit is not None
        assert from_ts is not None
        if until_ts is not None and until_ts <= from_ts:
            raise MatrixError(
                400, Codes.INVALID_PARAM, "Query parameter until_ts must be greater than from_ts."
            )
        search_term = parse_string(request, "search_term")
        if search_term == "":
            raise MatrixError(
                400, Codes.INVALID_PARAM, "Query parameter search_term cannot be an empty string."
            )
        users, total = await self._media.user_statistics(
            start=start,
            limit=limit,
            order_by=order_by,
            backwards=parse_direction(request, "f") == "b",
            from_ts=from_ts,
            until_ts=until_ts,
            search_term=search_term,
        )
        body: dict[str, Any] = {
            "users": [
                {
                    "user_id": u.user_id,
                    "displayname": u.displayname,
                    "media_count": u.media_count,
                    "media_length": u.media_length,
                }
                for u in users
            ],
            "total": total,
        }
        if start + limit < total:
            body["next_token"] = start + len(users)
        return 200, body
