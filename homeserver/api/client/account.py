"""/account/whoami, /account/password, /account/deactivate and /account/3pid."""

from __future__ import annotations

from typing import Any

from twisted.web.server import Request

from homeserver.api.client.paths import client_paths
from homeserver.config import HomeserverConfig
from homeserver.errors import Codes, MatrixError
from homeserver.handlers.auth import AuthHandler, get_access_token_from_request
from homeserver.handlers.deactivate import DeactivationHandler
from homeserver.handlers.password_policy import check_new_password
from homeserver.handlers.threepid import ThreePidHandler
from homeserver.handlers.ui_auth import EMAIL_IDENTITY, PASSWORD, UiAuthHandler
from homeserver.http.server import JsonResource
from homeserver.http.servlet import field, parse_json_body
from storage.storage import Storage

NEW_PASSWORD_HASH = "org.homeserver.new_password_hash"


class AccountServlets:
    def __init__(
        self,
        config: HomeserverConfig,
        storage: Storage,
        auth: AuthHandler,
        ui_auth: UiAuthHandler,
        deactivation: DeactivationHandler,
    ) -> None:
        self._config = config
        self._deactivation = deactivation
        self._storage = storage
        self._auth = auth
        self._ui_auth = ui_auth
        # Set by the composition root.
        self.threepids: ThreePidHandler | None = None

    def _threepids(self) -> ThreePidHandler:
        if self.threepids is None:
            raise MatrixError(400, Codes.UNRECOGNIZED, "3PIDs are not supported")
        return self.threepids

    def register(self, resource: JsonResource) -> None:
        resource.register_many("GET", client_paths("/account/whoami"), self.on_whoami)
        resource.register_many("POST", client_paths("/account/password"), self.on_password)
        resource.register_many("POST", client_paths("/account/deactivate"), self.on_deactivate)
        resource.register_many("GET", client_paths("/account/3pid"), self.on_get_3pids)
        versions = ("v3", "r0", "unstable")
        for path, handler in (
            ("/account/3pid/bind", self.on_bind_3pid),
            ("/account/3pid/unbind", self.on_unbind_3pid),
            ("/account/3pid/delete", self.on_delete_3pid),
        ):
            resource.register_many("POST", client_paths(path, versions=versions), handler)

    async def on_whoami(self, request: Request) -> tuple[int, Any]:
        requester = await self._auth.get_user_by_req(request, allow_guest=True)
        result: dict[str, Any] = {"user_id": requester.user_id, "is_guest": requester.is_guest}
        if requester.device_id is not None:
            result["device_id"] = requester.device_id
        return 200, result

    async def on_password(self, request: Request) -> tuple[int, Any]:
        if not self._config.password_config.reauth_enabled:
            raise MatrixError(403, Codes.FORBIDDEN, "Password changes are disabled")
        requester = None
        if get_access_token_from_request(request) is not None or not self._ui_auth.has_stage(
            EMAIL_IDENTITY
        ):
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
        completed, params, session_id = await self._ui_auth.check(
            body,
            [[PASSWORD]] if requester is not None else [[EMAIL_IDENTITY]],
            uri=request.path.decode(),
            method="POST",
            description="change your password",
            requester=requester,
        )
        password_hash = field(params, NEW_PASSWORD_HASH, str)
        if password_hash is None:
            raise MatrixError(400, Codes.MISSING_PARAM, "Missing new_password")
        if requester is not None:
            user_id, keep_device, keep_token = (
                requester.user_id,
                requester.device_id,
                requester.access_token_id,
            )
        else:
            # A password reset: the validated email names the account (as Synapse).
            proof = completed.get(EMAIL_IDENTITY)
            owner = None
            if isinstance(proof, dict):
                owner = await self._storage.threepids.get_user_by_threepid(
                    proof["medium"], proof["address"]
                )
            if owner is None:
                raise MatrixError(400, Codes.THREEPID_NOT_FOUND, "No user has that email")
            user_id, keep_device, keep_token = owner, None, None
        # Every other device is signed out (unless asked not to); this session stays.
        await self._auth.set_password(
            user_id,
            password_hash,
            logout_devices=bool(params.get("logout_devices", True)),
            keep_device=keep_device,
            keep_token=keep_token,
        )
        await self._ui_auth.finish(session_id)
        return 200, {}

    async def on_deactivate(self, request: Request) -> tuple[int, Any]:
        requester = await self._auth.get_user_by_req(request)
        body = parse_json_body(request, allow_empty=True)
        erase = field(body, "erase", bool)
        session_id: str | None = None
        # An application service deactivates its users without UIA (it has no password
        # to give; its token is the authority over its namespace), as in Synapse.
        if requester.app_service_id is None:
            _, _, session_id = await self._ui_auth.check(
                body,
                [[PASSWORD]],
                uri=request.path.decode(),
                method="POST",
                description="deactivate your account",
                requester=requester,
            )
        unbind_result = await self._deactivation.deactivate(
            requester.user_id, erase=bool(erase), id_server=field(body, "id_server", str)
        )
        if session_id is not None:
            await self._ui_auth.finish(session_id)
        return 200, {"id_server_unbind_result": unbind_result}

    async def on_get_3pids(self, request: Request) -> tuple[int, Any]:
        requester = await self._auth.get_user_by_req(request)
        threepids = await self.threepids.get_threepids(requester.user_id) if self.threepids else []
        return 200, {"threepids": [t.to_json() for t in threepids]}

    async def on_bind_3pid(self, request: Request) -> tuple[int, Any]:
        requester = await self._auth.get_user_by_req(request)
        body = parse_json_body(request)
        values = [
            field(body, key, str, required=True)
            for key in ("id_server", "id_access_token", "sid", "client_secret")
        ]
        await self._threepids().bind(requester.user_id, *values)
        return 200, {}

    def _threepid_fields(self, body: dict[str, Any]) -> tuple[str, str, str | None]:
        medium = field(body, "medium", str, required=True)
        address = field(body, "address", str, required=True)
        return medium, address, field(body, "id_server", str)

    async def on_unbind_3pid(self, request: Request) -> tuple[int, Any]:
        requester = await self._auth.get_user_by_req(request)
        medium, address, id_server = self._threepid_fields(parse_json_body(request))
        result = await self._threepids().unbind(requester.user_id, medium, address, id_server)
        return 200, {"id_server_unbind_result": result}

    async def on_delete_3pid(self, request: Request) -> tuple[int, Any]:
        requester = await self._auth.get_user_by_req(request)
        medium, address, id_server = self._threepid_fields(parse_json_body(request))
        result = await self._threepids().delete(requester.user_id, medium, address, id_server)
        return 200, {"id_server_unbind_result": result}
