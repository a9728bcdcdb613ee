"""/account/whoami, /account/password, /account/deactivate and /account/3pid."""

from __future__ import annotations

from typing import Any

from twisted.web.server import Request

from homeserver.api.client.paths import client_paths
from homeserver.config import HomeserverConfig
from homeserver.errors import Codes, MatrixError
from homeserver.handlers.auth import AuthHandler
from homeserver.handlers.password_policy import check_new_password
from homeserver.handlers.ui_auth import PASSWORD, UiAuthHandler
from homeserver.http.server import JsonResource
from homeserver.http.servlet import field, parse_json_body
from storage.storage import Storage

NEW_PASSWORD_HASH = "org.homeserver.new_password_hash"


class AccountServlets:
    def __init__(
        self, config: HomeserverConfig, storage: Storage, auth: AuthHandler, ui_auth: UiAuthHandler
    ) -> None:
        self._config = config
        self._storage = storage
        self._auth = auth
        self._ui_auth = ui_auth

    def register(self, resource: JsonResource) -> None:
        resource.register_many("GET", client_paths("/account/whoami"), self.on_whoami)
        resource.register_many("POST", client_paths("/account/password"), self.on_password)
        resource.register_many("POST", client_paths("/account/deactivate"), self.on_deactivate)
        resource.register_many("GET", client_paths("/account/3pid"), self.on_get_3pids)

    async def on_whoami(self, request: Request) -> tuple[int, Any]:
        requester = await self._auth.get_user_by_req(request, allow_guest=True)
        result: dict[str, Any] = {"user_id": requester.user_id, "is_guest": requester.is_guest}
        if requester.device_id is not None:
            result["device_id"] = requester.device_id
        return 200, result

    async def on_password(self, request: Request) -> tuple[int, Any]:
        if not self._config.password_config.reauth_enabled:
            raise MatrixError(403, Codes.FORBIDDEN, "Password changes are disabled")
        requester = await self._auth.get_user_by_req(request)
        body = parse_json_body(request)
        new_password = field(body, "new_password", str)
        field(body, "logout_devices", bool)
        # The UIA session (stored) keeps the new password's hash, never the password; a
        # client-sent hash key is dropped. Checked before the round trips, as Synapse.
        body = {k: v for k, v in body.items() if k not in ("new_password", NEW_PASSWORD_HASH)}
        if new_password is not None:
            check_new_password(new_password, self._config.password_config.policy)
            body[NEW_PASSWORD_HASH] = await self._auth.hash_password(new_password)
        _, params, session_id = await self._ui_auth.check(
            body,
            [[PASSWORD]],
            uri=request.path.decode(),
            method="POST",
            description="change your password",
            requester=requester,
        )
        password_hash = field(params, NEW_PASSWORD_HASH, str)
        if password_hash is None:
            raise MatrixError(400, Codes.MISSING_PARAM, "Missing new_password")
        await self._storage.users.set_password_hash(requester.user_id, password_hash)
        if params.get("logout_devices", True):
            # Every other device is signed out; this session stays.
            devices = await self._storage.users.get_devices(requester.user_id)
            others = [d.device_id for d in devices if d.device_id != requester.device_id]
            removed = await self._storage.users.delete_devices(requester.user_id, others)
            tokens = await self._storage.users.delete_access_tokens_for_user(
                requester.user_id, except_token_id=requester.access_token_id
            )
            self._auth.invalidate_token_ids(removed + [t for t, _ in tokens])
        await self._ui_auth.finish(session_id)
        return 200, {}

    async def on_deactivate(self, request: Request) -> tuple[int, Any]:
        requester = await self._auth.get_user_by_req(request)
        body = parse_json_body(request, allow_empty=True)
        erase = field(body, "erase", bool)
        _, _, session_id = await self._ui_auth.check(
            body,
            [[PASSWORD]],
            uri=request.path.decode(),
            method="POST",
            description="deactivate your account",
            requester=requester,
        )
        if erase:
            await self._storage.users.mark_erased(requester.user_id)
        await self._storage.users.deactivate_user(requester.user_id)
        self._auth.invalidate_user(requester.user_id)
        await self._ui_auth.finish(session_id)
        return 200, {"id_server_unbind_result": "no-support"}

    async def on_get_3pids(self, request: Request) -> tuple[int, Any]:
        await self._auth.get_user_by_req(request)
        return 200, {"threepids": []}
