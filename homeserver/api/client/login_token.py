"""``POST /_matrix/client/v1/login/get_token`` (MSC3882): a one-time ``m.login.token``
for signing in a new device, served only with ``login_via_existing_session.enabled``."""

from __future__ import annotations

from typing import Any

from twisted.web.server import Request

from homeserver.api.client.paths import client_v1_paths
from homeserver.handlers.auth import AuthHandler
from homeserver.handlers.login_token import LoginTokenHandler
from homeserver.handlers.ui_auth import PASSWORD, UiAuthHandler
from homeserver.http.server import JsonResource
from homeserver.http.servlet import parse_json_body


class LoginTokenServlets:
    def __init__(
        self,
        auth: AuthHandler,
        ui_auth: UiAuthHandler,
        tokens: LoginTokenHandler,
        require_ui_auth: bool,
    ) -> None:
        self._auth = auth
        self._ui_auth = ui_auth
        self._tokens = tokens
        self._require_ui_auth = require_ui_auth

    def register(self, r: JsonResource) -> None:
        r.register_many("POST", client_v1_paths("/login/get_token"), self.on_get_token)

    async def on_get_token(self, request: Request) -> tuple[int, Any]:
        requester = await self._auth.get_user_by_req(request)
        body = parse_json_body(request, allow_empty=True)
        session_id = None
        if self._require_ui_auth:
            _, _, session_id = await self._ui_auth.check(
                body,
                [[PASSWORD]],
                uri=request.path.decode(),
                method="POST",
                description="issue a new access token for your account",
                requester=requester,
            )
        token = await self._tokens.issue(requester.user_id)
        if session_id is not None:
            await self._ui_auth.finish(session_id)
        return 200, {"login_token": token, "expires_in_ms": self._tokens.timeout_ms}
