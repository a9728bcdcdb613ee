"""Synapse's ``POST /_synapse/admin/v1/send_server_notice`` and
``PUT .../send_server_notice/{txnId}``, server admins only."""

from __future__ import annotations

from typing import Any

from twisted.web.server import Request

from homeserver.e2ee.locality import Locality
from homeserver.errors import Codes, MatrixError
from homeserver.events.format import is_valid_user_id
from homeserver.handlers.auth import AuthHandler
from homeserver.handlers.server_notices import ServerNoticesHandler
from homeserver.http.server import JsonResource
from homeserver.http.servlet import parse_json_body
from homeserver.requester import Requester
from storage.users import UserStore
from synapse_compat.admin_common import ADMIN_V1, require_admin, require_existing


class AdminServerNoticeServlets:
    PATH = f"{ADMIN_V1}/send_server_notice"

    def __init__(
        self,
        auth: AuthHandler,
        locality: Locality,
        users: UserStore,
        notices: ServerNoticesHandler,
    ) -> None:
        self._auth = auth
        self._locality = locality
        self._users = users
        self._notices = notices

    def register(self, r: JsonResource) -> None:
        r.register("POST", self.PATH, self.on_post)
        r.register("PUT", self.PATH + "/{txnId}", self.on_put)

    async def on_post(self, request: Request) -> tuple[int, Any]:
        requester = await require_admin(self._auth, request)
        return await self._send(request, requester, None)

    async def on_put(self, request: Request, txnId: str) -> tuple[int, Any]:
        requester = await require_admin(self._auth, request)
        return await self._send(request, requester, txnId)

    async def _send(
        self, request: Request, requester: Requester, txn_id: str | None
    ) -> tuple[int, Any]:
        body = parse_json_body(request)
        missing = [k for k in ("user_id", "content") if k not in body]
        if missing:
            raise MatrixError(400, Codes.MISSING_PARAM, f"Missing params: {missing}")
        user_id, content = body["user_id"], body["content"]
        event_type = body.get("type", "m.room.message")
        state_key = body.get("state_key")
        if not isinstance(content, dict):
            raise MatrixError(400, Codes.BAD_JSON, "'content' must be an object")
        if not isinstance(event_type, str) or not event_type:
            raise MatrixError(400, Codes.BAD_JSON, "'type' must be a string")
        if state_key is not None and not isinstance(state_key, str):
            raise MatrixError(400, Codes.BAD_JSON, "'state_key' must be a string")
        if not self._notices.enabled:
            raise MatrixError(400, Codes.UNKNOWN, "Server notices are not enabled on this server")
        if not isinstance(user_id, str) or not is_valid_user_id(user_id):
            raise MatrixError(400, Codes.INVALID_PARAM, "'user_id' must be a valid user ID")
        if not self._locality.is_mine(user_id):
            raise MatrixError(400, Codes.UNKNOWN, "Server notices can only be sent to local users")
        await require_existing(self._users, user_id)
        # Retries are recognised per sending admin's session, as Synapse's transaction
        # cache keys them by the requester.
        txn = None
        if txn_id is not None:
            txn = (f"{requester.user_id}/{requester.device_id or ''}", txn_id)
        event = await self._notices.send_notice(user_id, content, event_type, state_key, txn=txn)
        return 200, {"event_id": event.event_id}
