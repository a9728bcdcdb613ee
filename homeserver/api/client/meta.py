"""Discovery: /versions, .well-known and /capabilities."""

from __future__ import annotations

from typing import Any

from twisted.web.server import Request

from homeserver.api.client.paths import WEBSOCKET_FEATURE, client_paths
from homeserver.api.client.sliding_sync import SLIDING_SYNC_FEATURE
from homeserver.config import HomeserverConfig
from homeserver.events.room_versions import DEFAULT_ROOM_VERSION, ROOM_VERSIONS
from homeserver.handlers.auth import AuthHandler
from homeserver.http.server import JsonResource

# Only versions whose required endpoints we serve honestly.
# Clients gate features on these: authenticated media (v1.11) is used only where v1.11
# is listed, and the unauthenticated fallback refuses new media, so an image would break.
SUPPORTED_VERSIONS = ["r0.6.1", *(f"v1.{minor}" for minor in range(1, 13))]


class MetaServlets:
    def __init__(self, config: HomeserverConfig, auth: AuthHandler) -> None:
        self._config = config
        self._auth = auth

    def register(self, resource: JsonResource) -> None:
        resource.register("GET", "/_matrix/client/versions", self.on_versions)
        resource.register("GET", "/.well-known/matrix/client", self.on_wellknown_client)
        resource.register("GET", "/.well-known/matrix/server", self.on_wellknown_server)
        resource.register("GET", "/.well-known/matrix/support", self.on_wellknown_support)
        resource.register_many("GET", client_paths("/capabilities"), self.on_capabilities)

    async def on_versions(self, request: Request) -> tuple[int, Any]:
        unstable: dict[str, bool] = {SLIDING_SYNC_FEATURE: True}  # docs/sliding_sync.md
        if self._config.websocket.enabled:
            unstable[WEBSOCKET_FEATURE] = True  # docs/websocket.md
        return 200, {"versions": SUPPORTED_VERSIONS, "unstable_features": unstable}

    async def on_wellknown_client(self, request: Request) -> tuple[int, Any]:
        return 200, {"m.homeserver": {"base_url": self._config.client_baseurl}}

    async def on_wellknown_server(self, request: Request) -> tuple[int, Any]:
        from homeserver.errors import Codes, MatrixError

        if not self._config.serve_server_wellknown:
            raise MatrixError(404, Codes.NOT_FOUND, ".well-known not available")
        name = self._config.server_name
        host = name if ":" in name.rsplit("]", 1)[-1] else f"{name}:443"
        return 200, {"m.server": host}

    async def on_wellknown_support(self, request: Request) -> tuple[int, Any]:
        """Served from our ``well_known_support`` section (Synapse serves none)."""
        from homeserver.errors import Codes, MatrixError

        support = self._config.well_known_support
        if support is None:
            raise MatrixError(404, Codes.NOT_FOUND, "No support information is configured")
        return 200, support

    async def on_capabilities(self, request: Request) -> tuple[int, Any]:
        await self._auth.get_user_by_req(request, allow_guest=True)
        password_enabled = self._config.password_config.reauth_enabled
        return 200, {
            "capabilities": {
                "m.room_versions": {
                    "default": DEFAULT_ROOM_VERSION,
                    "available": {v: "stable" for v in ROOM_VERSIONS},
                },
                "m.change_password": {"enabled": password_enabled},
                "m.set_displayname": {"enabled": True},
                "m.set_avatar_url": {"enabled": True},
                "m.3pid_changes": {"enabled": True},
                "m.get_login_token": {"enabled": self._config.login_via_existing_session.enabled},
                "m.profile_fields": {"enabled": True},
            }
        }
