"""Space hierarchies over federation: ``GET /_matrix/federation/v1/hierarchy/{roomId}``.

Outbound, ``FederationHierarchyClient`` asks the ``via`` servers of a child we are not
in, one after another, and keeps the first answer that is well formed (as Synapse
validates it) for a short while. Inbound, ``FederationHierarchyServlet`` answers with
what the requesting server may see (``RoomSummaryHandler.federation_hierarchy``: server
ACLs, then the visibility rules).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from twisted.web.server import Request

from federation.interfaces import FederationClient
from federation.room_events import quote
from homeserver.clock import Clock
from homeserver.http.server import JsonResource
from homeserver.http.servlet import parse_boolean
from homeserver.rooms.spaces import validate_remote_child
from homeserver.rooms.summary import RemoteSpace, RoomSummaryHandler

logger = logging.getLogger(__name__)

JsonDict = dict[str, Any]
Authenticator = Callable[[Request], Awaitable[str]]
PATH = "/_matrix/federation/v1/hierarchy/"
CACHE_SECONDS = 60.0
CACHE_SIZE = 1000
TIMEOUT_S = 10.0


def parse_remote_space(room_id: str, body: JsonDict) -> RemoteSpace:
    """Check another server's answer; ValueError when it is not usable."""
    room = body.get("room")
    if not isinstance(room, dict):
        raise ValueError("'room' must be an object")
    if room.get("room_id") != room_id:
        raise ValueError("wrong room returned in hierarchy response")
    room = dict(room)
    children_state = room.pop("children_state", [])
    if not isinstance(children_state, list):
        raise ValueError("'room.children_state' must be a list")
    for event in children_state:
        validate_remote_child(event)
    children = body.get("children", [])
    if not isinstance(children, list) or not all(isinstance(c, dict) for c in children):
        raise ValueError("'children' must be a list of objects")
    inaccessible = body.get("inaccessible_children", [])
    if not isinstance(inaccessible, list) or not all(isinstance(r, str) for r in inaccessible):
        raise ValueError("'inaccessible_children' must be a list of room IDs")
    return RemoteSpace(
        room=room,
        children_state=children_state,
        children={c["room_id"]: c for c in children if isinstance(c.get("room_id"), str)},
        inaccessible_children=frozenset(inaccessible),
    )


class FederationHierarchyClient:
    """``RemoteHierarchy`` over the federation client."""

    def __init__(self, clock: Clock, client: FederationClient) -> None:
        self._clock = clock
        self._client = client
        self._cache: OrderedDict[tuple[str, bool], tuple[float, RemoteSpace]] = OrderedDict()

    async def get_hierarchy(
        self, servers: Sequence[str], room_id: str, suggested_only: bool
    ) -> RemoteSpace | None:
        key = (room_id, suggested_only)
        cached = self._cache.get(key)
        if cached is not None and self._clock.seconds() - cached[0] < CACHE_SECONDS:
            return cached[1]
        for server in servers:
            try:
                body = await self._client.get_json(
                    server,
                    PATH + quote(room_id),
                    {"suggested_only": "true" if suggested_only else "false"},
                    timeout_s=TIMEOUT_S,
                )
                space = parse_remote_space(room_id, body)
            except Exception as e:  # as Synapse: any failure means "ask the next one"
                logger.info("No hierarchy of %s from %s: %s", room_id, server, e)
                continue
            self._cache[key] = (self._clock.seconds(), space)
            while len(self._cache) > CACHE_SIZE:
                self._cache.popitem(last=False)
            return space
        return None


class FederationHierarchyServlet:
    def __init__(self, authenticate: Authenticator, summaries: RoomSummaryHandler) -> None:
        self._authenticate = authenticate
        self._summaries = summaries

    def register(self, r: JsonResource) -> None:
        r.register("GET", PATH + "{roomId}", self.on_hierarchy)

    async def on_hierarchy(self, request: Request, roomId: str) -> tuple[int, Any]:
        origin = await self._authenticate(request)
        suggested_only = parse_boolean(request, "suggested_only")
        return 200, await self._summaries.federation_hierarchy(origin, roomId, suggested_only)
