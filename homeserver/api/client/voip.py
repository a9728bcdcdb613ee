"""``GET /voip/turnServer``: TURN credentials for calls."""

from __future__ import annotations

from typing import Any

from twisted.web.server import Request

from homeserver.api.client.paths import client_paths
from homeserver.clock import Clock, now_ms
from homeserver.handlers.auth import AuthHandler
from homeserver.handlers.voip import TurnConfig, turn_credentials
from homeserver.http.server import JsonResource


class VoipServlets:
    def __init__(
        self, auth: AuthHandler, config: TurnConfig, allow_guests: bool, clock: Clock
    ) -> None:
        self._auth = auth
        self._config = config
        self._allow_guests = allow_guests
        self._clock = clock

    def register(self, r: JsonResource) -> None:
        r.register_many("GET", client_paths("/voip/turnServer"), self.on_turn_server)

    async def on_turn_server(self, request: Request) -> tuple[int, Any]:
        requester = await self._auth.get_user_by_req(request, allow_guest=self._allow_guests)
        return 200, turn_credentials(self._config, requester.user_id, now_ms(self._clock))
