"""Server-server key endpoints: ``POST /user/keys/query`` and ``/user/keys/claim``
(``GET /user/devices`` is served by ``FederationQueryServlets`` through its
``device_list_provider``). Parse, authenticate, call ``FederationE2ee``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from twisted.web.server import Request

from federation.e2ee import FederationE2ee
from homeserver.api.client.e2e_keys import string_lists, string_maps
from homeserver.http.server import JsonResource
from homeserver.http.servlet import field, parse_json_body

Authenticator = Callable[[Request], Awaitable[str]]


class FederationE2eeServlets:
    def __init__(self, authenticate: Authenticator, e2ee: FederationE2ee) -> None:
        self._authenticate = authenticate
        self._e2ee = e2ee

    def register(self, r: JsonResource) -> None:
        p = "/_matrix/federation/v1/user/keys"
        r.register("POST", f"{p}/query", self.on_query)
        r.register("POST", f"{p}/claim", self.on_claim)

    async def on_query(self, request: Request) -> tuple[int, Any]:
        await self._authenticate(request)
        body = parse_json_body(request)
        wanted = string_lists(field(body, "device_keys", dict, required=True), "device_keys")
        return 200, await self._e2ee.query_local(wanted)

    async def on_claim(self, request: Request) -> tuple[int, Any]:
        await self._authenticate(request)
        body = parse_json_body(request)
        wanted = string_maps(field(body, "one_time_keys", dict, required=True), "one_time_keys")
        return 200, await self._e2ee.claim_local(wanted)
