"""GET /_matrix/key/v2/server: our signing key, self-signed, with its validity."""

from __future__ import annotations

from typing import Any

from signedjson.types import SigningKey
from twisted.web.server import Request

from crypto.json_signing import sign_json
from crypto.signing_key import key_id, verify_key_base64
from homeserver.clock import Clock
from homeserver.http.server import JsonResource


class KeyServlets:
    def __init__(
        self, server_name: str, signing_key: SigningKey, clock: Clock, valid_for_ms: int
    ) -> None:
        self._server_name = server_name
        self._signing_key = signing_key
        self._clock = clock
        self._valid_for_ms = valid_for_ms

    def register(self, resource: JsonResource) -> None:
        resource.register("GET", "/_matrix/key/v2/server", self.on_server_key)
        resource.register("GET", "/_matrix/key/v2/server/{keyId}", self.on_server_key_legacy)

    def server_key_response(self) -> dict[str, Any]:
        now_ms = int(self._clock.seconds() * 1000)
        body = {
            "server_name": self._server_name,
            "valid_until_ts": now_ms + self._valid_for_ms,
            "verify_keys": {
                key_id(self._signing_key): {"key": verify_key_base64(self._signing_key)}
            },
            "old_verify_keys": {},
        }
        return sign_json(body, self._server_name, self._signing_key)

    async def on_server_key(self, request: Request) -> tuple[int, Any]:
        return 200, self.server_key_response()

    async def on_server_key_legacy(self, request: Request, keyId: str) -> tuple[int, Any]:
        return 200, self.server_key_response()
