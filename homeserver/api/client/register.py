"""/register, /register/available and the registration token validity check."""

from __future__ import annotations

from typing import Any

from twisted.web.server import Request

from homeserver.api.client.paths import client_paths, client_v1_paths
from homeserver.appservice.handler import AppServiceHandler
from homeserver.config import HomeserverConfig
from homeserver.errors import Codes, MatrixError
from homeserver.handlers.auth import AuthHandler
from homeserver.handlers.password_policy import check_new_password
from homeserver.handlers.register import SESSION_PASSWORD_HASH, RegistrationHandler
from homeserver.handlers.ui_auth import (
    DUMMY,
    EMAIL_IDENTITY,
    OUTCOME,
    REGISTRATION_TOKEN,
    UiAuthHandler,
)
from homeserver.http.ratelimit import Ratelimiter
from homeserver.http.server import JsonResource, MatrixRequest
from homeserver.http.servlet import field, parse_json_body, parse_string
from storage.storage import Storage

APPSERVICE_LOGIN_TYPE = "m.login.application_service"


class RegisterServlets:
    def __init__(
        self,
        config: HomeserverConfig,
        storage: Storage,
        auth: AuthHandler,
        ui_auth: UiAuthHandler,
        registration: RegistrationHandler,
        registration_limiter: Ratelimiter,
        appservices: AppServiceHandler,
    ) -> None:
        self._config = config
        self._storage = storage
        self._auth = auth
        self._ui_auth = ui_auth
        self._registration = registration
        self._limiter = registration_limiter
        self._appservices = appservices

    def register(self, resource: JsonResource) -> None:
        resource.register_many("POST", client_paths("/register"), self.on_register)
        resource.register_many("GET", client_paths("/register/available"), self.on_available)
        resource.register_many(
            "GET",
            client_v1_paths("/register/m.login.registration_token/validity"),
            self.on_token_validity,
        )

    def _flows(self) -> list[list[str]]:
        if self._config.registration_requires_token:
            return [[REGISTRATION_TOKEN]]
        if self._ui_auth.has_stage(EMAIL_IDENTITY):
            # With email validation on, an address can come with the account (as Synapse).
            return [[DUMMY], [EMAIL_IDENTITY]]
        return [[DUMMY]]

    async def on_available(self, request: Request) -> tuple[int, Any]:
        assert isinstance(request, MatrixRequest)
        self._limiter.ratelimit(request.client_ip())
        username = parse_string(request, "username", required=True)
        assert username is not None
        await self._check_username(username)
        return 200, {"available": True}

    async def _check_username(self, localpart: str, guest_access_token: str | None = None) -> None:
        """Grammar, then application service namespaces (``M_EXCLUSIVE``), then taken
        (unless ``guest_access_token`` is the token of the guest account of that name)."""
        user_id = self._registration.check_localpart(
            localpart, allow_numeric=guest_access_token is not None
        )
        self._appservices.registry.check_user_not_reserved(user_id)
        await self._registration.check_available(localpart, guest_access_token)

    async def on_token_validity(self, request: Request) -> tuple[int, Any]:
        assert isinstance(request, MatrixRequest)
        if not self._config.registration_requires_token:
            raise MatrixError(403, Codes.FORBIDDEN, "Registration tokens are not in use")
        self._limiter.ratelimit(request.client_ip())
        token = parse_string(request, "token", required=True)
        assert token is not None
        valid = await self._storage.registration.registration_token_is_valid(
            token, self._auth.now_ms()
        )
        return 200, {"valid": valid}

    async def on_register(self, request: Request) -> tuple[int, Any]:
        assert isinstance(request, MatrixRequest)
        body = parse_json_body(request)
        if body.get("type") == APPSERVICE_LOGIN_TYPE:
            return await self._register_appservice_user(request, body)
        kind = parse_string(request, "kind", default="user")
        if kind == "guest":
            if not self._config.allow_guest_access:
                raise MatrixError(403, Codes.FORBIDDEN, "Guest access is disabled")
            return await self._register_guest(request, body)
        if kind != "user":
            raise MatrixError(400, Codes.INVALID_PARAM, f"Invalid kind {kind!r}")
        if not (
            self._config.enable_registration
            and (
                self._config.enable_registration_without_verification
                or self._config.registration_requires_token
            )
        ):
            raise MatrixError(403, Codes.FORBIDDEN, "Registration has been disabled")

        # Validate what can be validated before any auth stage, as Synapse does.
        username = field(body, "username", str)
        password = field(body, "password", str)
        field(body, "device_id", str)
        field(body, "initial_device_display_name", str)
        field(body, "inhibit_login", bool)
        field(body, "refresh_token", bool)
        # A guest upgrading its account to a full user keeps its id (as Synapse).
        guest_access_token = field(body, "guest_access_token", str)
        if username is not None:
            registered = await self._ui_auth.outcome_of(body)
            if registered != f"@{username.lower()}:{self._config.server_name}":
                # Synapse lowercases the requested name rather than refusing capitals.
                # (A retry of a session that registered this very name is not refused.)
                await self._check_username(username.lower(), guest_access_token)

        # Checked on every step, counted only when an account is created (as Synapse):
        # the UIA round trips of one registration must not use up the limit.
        self._limiter.ratelimit(request.client_ip(), update=False)
        # The UIA session keeps the request's parameters until the flow ends: it gets the
        # password's hash, never the password (a client-sent hash key is dropped).
        body = {k: v for k, v in body.items() if k not in ("password", SESSION_PASSWORD_HASH)}
        if password is not None:
            check_new_password(password, self._config.password_config.policy)
            body[SESSION_PASSWORD_HASH] = await self._auth.hash_password(password)
        completed, params, session_id = await self._ui_auth.check(
            body,
            self._flows(),
            uri=request.path.decode(),
            method="POST",
            description="register a new account",
        )
        registered = completed.get(OUTCOME)
        if isinstance(registered, str):
            # The session registered its account already: a retry (as Synapse) logs
            # that account in again rather than failing or making a second one.
            return 200, await self._login_response(registered, params)
        username = field(params, "username", str)
        password_hash = field(params, SESSION_PASSWORD_HASH, str)
        if password_hash is None:
            raise MatrixError(400, Codes.MISSING_PARAM, "Missing password")
        if REGISTRATION_TOKEN in completed and not (
            await self._storage.registration.use_registration_token(
                completed[REGISTRATION_TOKEN], self._auth.now_ms()
            )
        ):
            raise MatrixError(401, Codes.FORBIDDEN, "Registration token is no longer valid")
        email = completed.get(EMAIL_IDENTITY)
        if isinstance(email, dict) and await self._storage.threepids.get_user_by_threepid(
            email["medium"], email["address"]
        ):
            raise MatrixError(400, Codes.THREEPID_IN_USE, "This email is already in use")
        guest_access_token = field(params, "guest_access_token", str)
        if guest_access_token is not None:
            if username is None:
                raise MatrixError(400, Codes.MISSING_PARAM, "Upgrading a guest needs its username")
            user_id = await self._registration.upgrade_guest(
                username.lower(), guest_access_token, password_hash
            )
        else:
            user_id = await self._registration.register_user(
                username.lower() if username else None, None, password_hash=password_hash
            )
        if isinstance(email, dict):
            await self._storage.threepids.add_threepid(
                user_id,
                email["medium"],
                email["address"],
                int(email["validated_at"]),
                self._auth.now_ms(),
            )
        self._limiter.record(request.client_ip())
        await self._ui_auth.record_outcome(session_id, user_id)
        return 200, await self._login_response(user_id, params)

    async def _register_appservice_user(
        self, request: MatrixRequest, body: dict[str, Any]
    ) -> tuple[int, Any]:
        """An application service creating a user of its namespace: no UIA, no limit."""
        service = self._auth.get_appservice_by_req(request)
        username = field(body, "username", str, required=True)
        field(body, "device_id", str)
        field(body, "initial_device_display_name", str)
        field(body, "inhibit_login", bool)
        field(body, "refresh_token", bool)
        user_id = await self._appservices.register_user(service, username)
        return 200, await self._login_response(user_id, body)

    async def _register_guest(
        self, request: MatrixRequest, body: dict[str, Any]
    ) -> tuple[int, Any]:
        self._limiter.ratelimit(request.client_ip())
        user_id = await self._registration.register_user(None, None, is_guest=True)
        return 200, await self._login_response(user_id, body)

    async def _login_response(self, user_id: str, params: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = {"user_id": user_id, "home_server": self._config.server_name}
        if params.get("inhibit_login"):
            return result
        session = await self._registration.login_new_user(
            user_id,
            field(params, "device_id", str),
            field(params, "initial_device_display_name", str),
            with_refresh_token=bool(field(params, "refresh_token", bool)),
        )
        result["access_token"] = session.access_token
        result["device_id"] = session.device_id
        if session.refresh_token is not None:
            result["refresh_token"] = session.refresh_token
        if session.expires_in_ms is not None:
            result["expires_in_ms"] = session.expires_in_ms
        return result
