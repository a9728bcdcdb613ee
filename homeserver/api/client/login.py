"""/login, /refresh, /logout and /logout/all."""

from __future__ import annotations

from typing import Any

from twisted.web.server import Request

from homeserver.api.client.paths import client_paths, client_v1_paths
from homeserver.config import HomeserverConfig
from homeserver.errors import Codes, MatrixError
from homeserver.handlers.auth import AuthHandler
from homeserver.handlers.email_validation import canonical_email
from homeserver.handlers.login_token import LoginTokenHandler
from homeserver.handlers.ui_auth import resolve_identifier_user
from homeserver.http.ratelimit import Ratelimiter
from homeserver.http.server import JsonResource, MatrixRequest
from homeserver.http.servlet import field, parse_json_body
from storage.storage import Storage

APPSERVICE_LOGIN = "m.login.application_service"
TOKEN_LOGIN = "m.login.token"
SessionOptions = tuple[str | None, str | None, bool]


def _session_options(body: dict[str, Any]) -> SessionOptions:
    """The new session's device id, display name and refresh wish (checked up front)."""
    return (
        field(body, "device_id", str),
        field(body, "initial_device_display_name", str),
        bool(field(body, "refresh_token", bool)),
    )


class LoginServlets:
    def __init__(
        self,
        config: HomeserverConfig,
        storage: Storage,
        auth: AuthHandler,
        address_limiter: Ratelimiter,
        account_limiter: Ratelimiter,
        failed_limiter: Ratelimiter,
        login_tokens: LoginTokenHandler | None = None,
    ) -> None:
        self._config = config
        # Set when login_via_existing_session is enabled: m.login.token is accepted.
        self._login_tokens = login_tokens
        self._storage = storage
        self._auth = auth
        self._address_limiter = address_limiter
        self._account_limiter = account_limiter
        self._failed_limiter = failed_limiter

    def register(self, resource: JsonResource) -> None:
        resource.register_many("GET", client_paths("/login"), self.on_get_login)
        resource.register_many("POST", client_paths("/login"), self.on_login)
        resource.register_many(
            "POST", client_paths("/refresh") + client_v1_paths("/refresh"), self.on_refresh
        )
        resource.register_many("POST", client_paths("/logout"), self.on_logout)
        resource.register_many("POST", client_paths("/logout/all"), self.on_logout_all)

    def _password_enabled(self) -> bool:
        return bool(self._config.password_config.login_enabled)

    async def on_get_login(self, request: Request) -> tuple[int, Any]:
        flows: list[dict[str, Any]] = (
            [{"type": "m.login.password"}] if self._password_enabled() else []
        )
        if self._login_tokens is not None:
            flows.append({"type": TOKEN_LOGIN, "get_login_token": True})
        flows.append({"type": APPSERVICE_LOGIN})
        return 200, {"flows": flows}

    async def on_login(self, request: Request) -> tuple[int, Any]:
        assert isinstance(request, MatrixRequest)
        body = parse_json_body(request)
        login_type = field(body, "type", str, required=True)
        if login_type == APPSERVICE_LOGIN:
            return await self._appservice_login(request, body)
        if login_type == TOKEN_LOGIN and self._login_tokens is not None:
            return await self._token_login(request, body, self._login_tokens)
        if login_type != "m.login.password" or not self._password_enabled():
            raise MatrixError(400, Codes.UNKNOWN, f"Unknown login type {login_type}")
        self._address_limiter.ratelimit(request.client_ip())
        password = field(body, "password", str, required=True)
        options = _session_options(body)
        user_id = await self._user_of_threepid(body, password)
        if user_id is None:
            user_id = resolve_identifier_user(body, self._config.server_name)
        if user_id is None:
            raise MatrixError(400, Codes.MISSING_PARAM, "Missing user identifier")
        self._account_limiter.ratelimit(user_id.lower())
        # Refuse early while the account is locked out by failures; count only on failure.
        self._failed_limiter.ratelimit(user_id.lower(), update=False)
        matches = await self._storage.users.find_user_case_insensitive(user_id)
        canonical = user_id if user_id in matches else (matches[0] if len(matches) == 1 else None)
        # Checked even for an unknown user (against a dummy hash): same cost either way.
        password_ok = await self._auth.check_password(canonical or user_id, password)
        if canonical is None or not password_ok:
            self._failed_limiter.ratelimit(user_id.lower())
            raise MatrixError(403, Codes.FORBIDDEN, "Invalid username or password")
        # Only after the password: a wrong guess must not learn that the account is gone.
        user = await self._storage.users.get_user(canonical)
        if user is None or user.deactivated:
            raise MatrixError(403, Codes.USER_DEACTIVATED, "This account has been deactivated")
        return 200, await self._complete_login(canonical, options)

    async def _user_of_threepid(self, body: dict[str, Any], password: str) -> str | None:
        """The owner of the 3PID a login names (``m.id.thirdparty``, or the legacy
        top-level ``medium``/``address``); None when it names none. An unknown 3PID is
        403 after a password check against a dummy hash, as for an unknown user."""
        identifier = body.get("identifier")
        if isinstance(identifier, dict) and identifier.get("type") == "m.id.thirdparty":
            medium, address = identifier.get("medium"), identifier.get("address")
        elif identifier is None and "medium" in body and "address" in body:
            medium, address = body.get("medium"), body.get("address")
        else:
            return None
        if not isinstance(medium, str) or not isinstance(address, str):
            raise MatrixError(400, Codes.BAD_JSON, "medium and address must be strings")
        if medium == "email":
            try:
                address = canonical_email(address)
            except MatrixError:
                pass  # looked up as given: finds nothing
        owner = await self._storage.threepids.get_user_by_threepid(medium, address)
        if owner is None:
            await self._auth.check_password(f"@unknown:{self._config.server_name}", password)
            raise MatrixError(403, Codes.FORBIDDEN, "Invalid username or password")
        return owner

    async def _appservice_login(
        self, request: MatrixRequest, body: dict[str, Any]
    ) -> tuple[int, Any]:
        """``m.login.application_service``: the service's ``as_token`` vouches for the user."""
        service = self._auth.get_appservice_by_req(request)
        options = _session_options(body)
        if service.rate_limited:
            self._address_limiter.ratelimit(request.client_ip())
        user_id = resolve_identifier_user(body, self._config.server_name)
        if user_id is None:
            raise MatrixError(400, Codes.MISSING_PARAM, "Missing user identifier")
        if user_id != service.sender and not service.is_interested_in_user(user_id):
            raise MatrixError(403, Codes.FORBIDDEN, "Invalid user for this application service")
        user = await self._storage.users.get_user(user_id)
        if user is None:
            raise MatrixError(403, Codes.FORBIDDEN, "User not found")
        if user.deactivated:
            raise MatrixError(403, Codes.USER_DEACTIVATED, "This account has been deactivated")
        return 200, await self._complete_login(user_id, options)

    async def _token_login(
        self, request: MatrixRequest, body: dict[str, Any], tokens: LoginTokenHandler
    ) -> tuple[int, Any]:
        """``m.login.token``: a one-time token from ``/login/get_token`` names the user."""
        self._address_limiter.ratelimit(request.client_ip())
        token = field(body, "token", str, required=True)
        options = _session_options(body)
        user_id = await tokens.consume(token)
        user = await self._storage.users.get_user(user_id)
        if user is None or user.deactivated:
            raise MatrixError(403, Codes.USER_DEACTIVATED, "This account has been deactivated")
        return 200, await self._complete_login(user_id, options)

    async def _complete_login(self, user_id: str, options: SessionOptions) -> dict[str, Any]:
        device_id, display_name, want_refresh = options
        session = await self._auth.create_session(
            user_id, device_id, display_name, with_refresh_token=want_refresh
        )
        result: dict[str, Any] = {
            "user_id": session.user_id,
            "access_token": session.access_token,
            "device_id": session.device_id,
            "home_server": self._config.server_name,
            "well_known": {"m.homeserver": {"base_url": self._config.client_baseurl}},
        }
        if session.refresh_token is not None:
            result["refresh_token"] = session.refresh_token
        if session.expires_in_ms is not None:
            result["expires_in_ms"] = session.expires_in_ms
        return result

    async def on_refresh(self, request: Request) -> tuple[int, Any]:
        body = parse_json_body(request)
        refresh_token = field(body, "refresh_token", str, required=True)
        session = await self._auth.refresh(refresh_token)
        result: dict[str, Any] = {
            "access_token": session.access_token,
            "refresh_token": session.refresh_token,
        }
        if session.expires_in_ms is not None:
            result["expires_in_ms"] = session.expires_in_ms
        return 200, result

    async def on_logout(self, request: Request) -> tuple[int, Any]:
        requester = await self._auth.get_user_by_req(
            request, allow_guest=True, allow_expired=True, allow_locked=True
        )
        await self._auth.logout(requester)
        return 200, {}

    async def on_logout_all(self, request: Request) -> tuple[int, Any]:
        requester = await self._auth.get_user_by_req(
            request, allow_guest=True, allow_expired=True, allow_locked=True
        )
        await self._auth.logout_all(requester.user_id)
        return 200, {}
