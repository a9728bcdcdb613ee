"""Client-server endpoints for and about application services.

- ``POST /_matrix/client/v1/appservice/{appserviceId}/ping`` (the service's own
  ``as_token`` only);
- ``PUT``/``DELETE /directory/list/appservice/{networkId}/{roomId}``: a service's
  published room list per network (``as_token`` only);
- ``GET /thirdparty/protocols``, ``/thirdparty/protocol/{protocol}``,
  ``/thirdparty/{location,user}[/{protocol}]``: proxied to the services.
"""

from __future__ import annotations

from typing import Any

from twisted.web.server import Request

from homeserver.api.client.paths import client_paths, client_v1_paths
from homeserver.appservice.handler import AppServiceHandler
from homeserver.appservice.registration import ApplicationService
from homeserver.errors import Codes, MatrixError
from homeserver.handlers.auth import AuthHandler
from homeserver.http.server import JsonResource
from homeserver.http.servlet import field, parse_json_body
from homeserver.requester import Requester

# Query parameters that are ours, not search fields for the services.
_NOT_FIELDS = (b"access_token", b"server")


class AppServiceServlets:
    def __init__(self, auth: AuthHandler, appservices: AppServiceHandler) -> None:
        self._auth = auth
        self._appservices = appservices

    def register(self, r: JsonResource) -> None:
        r.register_many("POST", client_v1_paths("/appservice/{appserviceId}/ping"), self.on_ping)
        room_list = "/directory/list/appservice/{networkId}/{roomId}"
        r.register_many("PUT", client_paths(room_list), self.on_put_room_list)
        r.register_many("DELETE", client_paths(room_list), self.on_delete_room_list)
        r.register_many("GET", client_paths("/thirdparty/protocols"), self.on_protocols)
        r.register_many("GET", client_paths("/thirdparty/protocol/{protocol}"), self.on_protocol)
        for kind in ("location", "user"):
            handler = self._lookup(kind)
            r.register_many("GET", client_paths(f"/thirdparty/{kind}"), handler)
            r.register_many("GET", client_paths(f"/thirdparty/{kind}/{{protocol}}"), handler)

    def _service_of(self, requester: Requester, what: str) -> ApplicationService:
        service = self._appservices.registry.by_id(requester.app_service_id)
        if service is None:
            raise MatrixError(403, Codes.FORBIDDEN, f"Only application services can use {what}")
        return service

    # Ping ------------------------------------------------------------------------------

    async def on_ping(self, request: Request, appserviceId: str) -> tuple[int, Any]:
        requester = await self._auth.get_user_by_req(request)
        service = self._service_of(requester, "the /appservice/ping endpoint")
        if service.id != appserviceId:
            raise MatrixError(
                403, Codes.FORBIDDEN, "Provided access token is not the appservice's as_token"
            )
        body = parse_json_body(request, allow_empty=True)
        transaction_id = field(body, "transaction_id", str)
        duration_ms = await self._appservices.ping(service, transaction_id)
        return 200, {"duration_ms": duration_ms}

    # Published room lists ----------------------------------------------------------------

    async def on_put_room_list(
        self, request: Request, networkId: str, roomId: str
    ) -> tuple[int, Any]:
        requester = await self._auth.get_user_by_req(request)
        service = self._service_of(requester, "the appservice published room list")
        body = parse_json_body(request)
        visibility = field(body, "visibility", str, required=True)
        await self._appservices.set_room_published(service, networkId, roomId, visibility)
        return 200, {}

    async def on_delete_room_list(
        self, request: Request, networkId: str, roomId: str
    ) -> tuple[int, Any]:
        requester = await self._auth.get_user_by_req(request)
        service = self._service_of(requester, "the appservice published room list")
        await self._appservices.set_room_published(service, networkId, roomId, "private")
        return 200, {}

    # Third-party networks ------------------------------------------------------------------

    async def on_protocols(self, request: Request) -> tuple[int, Any]:
        await self._auth.get_user_by_req(request, allow_guest=True)
        return 200, await self._appservices.get_protocols()

    async def on_protocol(self, request: Request, protocol: str) -> tuple[int, Any]:
        await self._auth.get_user_by_req(request, allow_guest=True)
        protocols = await self._appservices.get_protocols(only=protocol)
        if protocol not in protocols:
            raise MatrixError(404, Codes.NOT_FOUND, "The protocol is unknown")
        return 200, protocols[protocol]

    def _lookup(self, kind: str) -> Any:
        async def handler(request: Request, protocol: str | None = None) -> tuple[int, Any]:
            await self._auth.get_user_by_req(request, allow_guest=True)
            fields = {
                k.decode("utf-8", "replace"): [v.decode("utf-8", "replace") for v in values]
                for k, values in (request.args or {}).items()
                if k not in _NOT_FIELDS
            }
            return 200, await self._appservices.query_3pe(kind, protocol, fields)

        return handler
