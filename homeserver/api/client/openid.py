"""OpenID: ``POST /user/{userId}/openid/request_token`` (client) and
``GET /_matrix/federation/v1/openid/userinfo`` (asked by third parties, unsigned)."""

from __future__ import annotations

from typing import Any

from twisted.web.server import Request

from homeserver.api.client.paths import client_paths
from homeserver.handlers.auth import AuthHandler
from homeserver.handlers.openid import OpenIdHandler
from homeserver.http.server import JsonResource
from homeserver.http.servlet import parse_json_body, parse_string

USERINFO_PATH = "/_matrix/federation/v1/openid/userinfo"


class OpenIdServlets:
    def __init__(self, auth: AuthHandler, openid: OpenIdHandler) -> None:
        self._auth = auth
        self._openid = openid

    def register(self, r: JsonResource) -> None:
        r.register_many(
            "POST", client_paths("/user/{userId}/openid/request_token"), self.on_request_token
        )
        r.register("GET", USERINFO_PATH, self.on_userinfo)

    async def on_request_token(self, request: Request, userId: str) -> tuple[int, Any]:
        requester = await self._auth.get_user_by_req(request)
        parse_json_body(request, allow_empty=True)
        return 200, await self._openid.request_token(requester, userId)

    async def on_userinfo(self, request: Request) -> tuple[int, Any]:
        # As Synapse: errors in the body, without going through MatrixError's logging.
        token = parse_string(request, "access_token")
        if token is None:
            return 401, {"errcode": "M_MISSING_TOKEN", "error": "Access Token required"}
        user_id = await self._openid.user_for_token(token)
        if user_id is None:
            return 401, {"errcode": "M_UNKNOWN_TOKEN", "error": "Access Token unknown or expired"}
        return 200, {"sub": user_id}
