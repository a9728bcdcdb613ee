"""Synapse's admin API about the server itself: ``server_version``, the background
updates and the federation destinations (``/_synapse/admin/v1/federation/destinations...``).

Background updates: our schema migrations run whole at start-up, so none is ever
pending. The switch (``enabled``) is kept, in memory as Synapse keeps it. Of the jobs
Synapse's ``start_job`` accepts, ``populate_stats_process_rooms`` and
``regenerate_directory`` rebuild tables we do not have: room statistics and the user
directory are read from current state at each request, already up to date, so both are
accepted and have nothing to do; ``event_resign`` is refused (we never re-sign events)."""

from __future__ import annotations

from typing import Any

from twisted.web.server import Request

from federation.query_servlets import SERVER_VERSION
from homeserver.errors import Codes, MatrixError
from homeserver.handlers.admin_federation import DestinationsAdmin
from homeserver.handlers.auth import AuthHandler
from homeserver.http.server import JsonResource
from homeserver.http.servlet import parse_integer, parse_json_body, parse_string
from storage.federation import DESTINATION_ORDERS
from synapse_compat.admin_common import require_admin
from synapse_compat.admin_rooms import parse_direction


def _paging(request: Request) -> tuple[int, int]:
    start = parse_integer(request, "from", default=0, minimum=0)
    limit = parse_integer(request, "limit", default=100, minimum=0)
    assert start is not None and limit is not None
    return start, limit


class AdminServerServlets:
    DESTINATIONS = "/_synapse/admin/v1/federation/destinations"

    def __init__(self, auth: AuthHandler, destinations: DestinationsAdmin) -> None:
        self._auth = auth
        self._destinations = destinations
        self._updates_enabled = True

    def register(self, r: JsonResource) -> None:
        r.register("GET", "/_synapse/admin/v1/server_version", self.on_server_version)
        r.register("GET", "/_synapse/admin/v1/background_updates/status", self.on_updates)
        r.register("GET", "/_synapse/admin/v1/background_updates/enabled", self.on_get_enabled)
        r.register("POST", "/_synapse/admin/v1/background_updates/enabled", self.on_set_enabled)
        r.register("POST", "/_synapse/admin/v1/background_updates/start_job", self.on_start_job)
        r.register("GET", self.DESTINATIONS, self.on_list)
        r.register("GET", self.DESTINATIONS + "/{destination}", self.on_get)
        r.register("GET", self.DESTINATIONS + "/{destination}/rooms", self.on_rooms)
        r.register("POST", self.DESTINATIONS + "/{destination}/reset_connection", self.on_reset)

    async def on_server_version(self, request: Request) -> tuple[int, Any]:
        # As Synapse: no authentication.
        return 200, {"server_version": SERVER_VERSION}

    async def on_updates(self, request: Request) -> tuple[int, Any]:
        await require_admin(self._auth, request)
        return 200, {"enabled": self._updates_enabled, "current_updates": {}}

    async def on_get_enabled(self, request: Request) -> tuple[int, Any]:
        await require_admin(self._auth, request)
        return 200, {"enabled": self._updates_enabled}

    async def on_set_enabled(self, request: Request) -> tuple[int, Any]:
        await require_admin(self._auth, request)
        enabled = parse_json_body(request).get("enabled", True)
        if not isinstance(enabled, bool):
            raise MatrixError(400, Codes.UNKNOWN, "'enabled' parameter must be a boolean")
        self._updates_enabled = enabled
        return 200, {"enabled": enabled}

    async def on_start_job(self, request: Request) -> tuple[int, Any]:
        await require_admin(self._auth, request)
        body = parse_json_body(request)
        if "job_name" not in body:
            raise MatrixError(400, Codes.MISSING_PARAM, "Missing params: ['job_name']")
        job_name = body["job_name"]
        if job_name == "event_resign":
            raise MatrixError(400, Codes.UNKNOWN, "Job event_resign is not supported")
        if job_name not in ("populate_stats_process_rooms", "regenerate_directory"):
            raise MatrixError(400, Codes.UNKNOWN, "Invalid job_name")
        return 200, {}

    async def on_list(self, request: Request) -> tuple[int, Any]:
        await require_admin(self._auth, request)
        start, limit = _paging(request)
        order_by = parse_string(
            request, "order_by", default="destination", allowed=tuple(DESTINATION_ORDERS)
        )
        assert order_by is not None
        found, total = await self._destinations.page(
            start,
            limit,
            parse_string(request, "destination"),
            order_by,
            parse_direction(request, "f") == "b",
        )
        body: dict[str, Any] = {"destinations": found, "total": total}
        if start + limit < total:
            body["next_token"] = str(start + len(found))
        return 200, body

    async def on_get(self, request: Request, destination: str) -> tuple[int, Any]:
        await require_admin(self._auth, request)
        return 200, await self._destinations.get(destination)

    async def on_rooms(self, request: Request, destination: str) -> tuple[int, Any]:
        await require_admin(self._auth, request)
        start, limit = _paging(request)
        rooms, total = await self._destinations.rooms(
            destination, start, limit, parse_direction(request, "f") == "b"
        )
        body: dict[str, Any] = {"rooms": rooms, "total": total}
        if start + limit < total:
            body["next_token"] = str(start + len(rooms))
        return 200, body

    async def on_reset(self, request: Request, destination: str) -> tuple[int, Any]:
        await require_admin(self._auth, request)
        await self._destinations.reset_connection(destination)
        return 200, {}
