"""The rest of Synapse's user admin API: what a user did (invites sent, rooms joined),
finding users (``search_users``, by external id), letting a user replace their master
cross-signing key without UIA, and redacting a user's events in bulk (a background job,
``homeserver/handlers/admin_redact.py``). Server admins only."""

from __future__ import annotations

from typing import Any

from twisted.web.server import Request

from homeserver.e2ee.cross_signing import CrossSigningHandler
from homeserver.e2ee.locality import Locality
from homeserver.errors import Codes, MatrixError
from homeserver.events.format import is_valid_room_id, is_valid_user_id
from homeserver.handlers.admin_redact import UserRedactor
from homeserver.handlers.auth import AuthHandler
from homeserver.http.server import JsonResource
from homeserver.http.servlet import parse_integer, parse_json_body, parse_string
from storage.admin_jobs import ACTIVE, COMPLETE, FAILED, SCHEDULED
from storage.user_admin import UserAdminStore
from synapse_compat.admin_common import ADMIN_V1, require_admin, require_local

# How long `_allow_cross_signing_replacement_without_uia` opens the window (Synapse's).
REPLACEMENT_PERIOD_MS = 10 * 60 * 1000


def _from_ts(request: Request) -> int:
    from_ts = parse_integer(request, "from_ts", required=True, minimum=0)
    assert from_ts is not None
    return from_ts


def _optional_int(body: dict[str, Any], name: str) -> int | None:
    value = body.get(name)
    if value is not None and (type(value) is not int or value < 0):
        raise MatrixError(400, Codes.INVALID_PARAM, f"'{name}' must be a non-negative integer")
    return value


class AdminUserActivityServlets:
    def __init__(
        self,
        auth: AuthHandler,
        locality: Locality,
        users: UserAdminStore,
        cross_signing: CrossSigningHandler,
        redactor: UserRedactor,
    ) -> None:
        self._auth = auth
        self._locality = locality
        self._users = users
        self._cross_signing = cross_signing
        self._redactor = redactor

    def register(self, r: JsonResource) -> None:
        u = f"{ADMIN_V1}/users/{{userId}}"
        r.register("GET", f"{u}/sent_invite_count", self.on_sent_invite_count)
        r.register("GET", f"{u}/cumulative_joined_room_count", self.on_joined_room_count)
        r.register(
            "POST",
            f"{u}/_allow_cross_signing_replacement_without_uia",
            self.on_allow_cross_signing_replacement,
        )
        r.register("GET", f"{ADMIN_V1}/search_users/{{userId}}", self.on_search_users)
        r.register(
            "GET",
            f"{ADMIN_V1}/auth_providers/{{provider}}/users/{{externalId}}",
            self.on_user_by_external_id,
        )
        r.register("POST", f"{ADMIN_V1}/user/{{userId}}/redact", self.on_redact)
        r.register("GET", f"{ADMIN_V1}/user/redact_status/{{redactId}}", self.on_redact_status)

    async def on_sent_invite_count(self, request: Request, userId: str) -> tuple[int, Any]:
        await require_admin(self._auth, request)
        count = await self._users.sent_invite_count(userId, _from_ts(request))
        return 200, {"invite_count": count}

    async def on_joined_room_count(self, request: Request, userId: str) -> tuple[int, Any]:
        await require_admin(self._auth, request)
        count = await self._users.cumulative_joined_room_count(userId, _from_ts(request))
        return 200, {"cumulative_joined_room_count": count}

    async def on_allow_cross_signing_replacement(
        self, request: Request, userId: str
    ) -> tuple[int, Any]:
        await require_admin(self._auth, request)
        until = await self._cross_signing.allow_replacement_without_uia(
            userId, REPLACEMENT_PERIOD_MS
        )
        if until is None:
            raise MatrixError(404, Codes.NOT_FOUND, "User has no master cross-signing key")
        return 200, {"updatable_without_uia_before_ms": until}

    async def on_search_users(self, request: Request, userId: str) -> tuple[int, Any]:
        await require_admin(self._auth, request)
        # As Synapse: the path's user only has to be local; it does not narrow the search.
        require_local(self._locality, userId, "Can only users a local user")
        term = parse_string(request, "term", required=True)
        assert term is not None
        found = await self._users.search_users(term)
        return 200, [
            {
                "name": name,
                "password_hash": password_hash,
                "is_guest": is_guest,
                "admin": admin,
                "user_type": user_type,
            }
            for name, password_hash, is_guest, admin, user_type in found
        ]

    async def on_user_by_external_id(
        self, request: Request, provider: str, externalId: str
    ) -> tuple[int, Any]:
        await require_admin(self._auth, request)
        user_id = await self._users.user_by_external_id(provider, externalId)
        if user_id is None:
            raise MatrixError(404, Codes.NOT_FOUND, "User not found")
        return 200, {"user_id": user_id}

    async def on_redact(self, request: Request, userId: str) -> tuple[int, Any]:
        requester = await require_admin(self._auth, request)
        if not is_valid_user_id(userId):
            raise MatrixError(400, Codes.INVALID_PARAM, f"Invalid user id {userId!r}")
        body = parse_json_body(request)
        rooms = body.get("rooms")
        if not isinstance(rooms, list) or not all(
            isinstance(r, str) and is_valid_room_id(r) for r in rooms
        ):
            raise MatrixError(400, Codes.BAD_JSON, "rooms must be a list of room ids")
        reason = body.get("reason")
        if reason is not None and not isinstance(reason, str):
            raise MatrixError(400, Codes.BAD_JSON, "If a reason is provided it must be a string.")
        limit = body.get("limit")
        if limit is not None and (type(limit) is not int or limit <= 0):
            raise MatrixError(
                400,
                Codes.BAD_JSON,
                "If limit is provided it must be a non-negative integer greater than 0.",
            )
        use_admin = body.get("use_admin", False)
        if not isinstance(use_admin, bool):
            raise MatrixError(400, Codes.BAD_JSON, "use_admin must be a boolean")
        redact_id = await self._redactor.start(
            requester,
            userId,
            list(dict.fromkeys(rooms)),
            reason=reason,
            limit=limit,
            use_admin=use_admin,
            after_ts=_optional_int(body, "after_ts"),
            before_ts=_optional_int(body, "before_ts"),
        )
        return 200, {"redact_id": redact_id}

    async def on_redact_status(self, request: Request, redactId: str) -> tuple[int, Any]:
        await require_admin(self._auth, request)
        job = await self._redactor.get_job(redactId)
        if job is None:
            raise MatrixError(404, Codes.NOT_FOUND, f"redact id '{redactId}' not found")
        assert job.status in (SCHEDULED, ACTIVE, COMPLETE, FAILED)
        result = job.result or {}
        body: dict[str, Any] = {
            "status": job.status,
            "failed_redactions": result.get("failed_redactions", {}),
        }
        if job.error:
            body["error"] = job.error
        return 200, body
