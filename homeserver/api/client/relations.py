"""``/relations`` and ``/threads`` (client-server API v1)."""

from __future__ import annotations

from typing import Any

from twisted.web.server import Request

from homeserver.api.client.paths import client_v1_paths
from homeserver.api.client.rooms import serialize
from homeserver.handlers.auth import AuthHandler
from homeserver.http.server import JsonResource
from homeserver.http.servlet import parse_boolean, parse_integer, parse_string
from homeserver.relations.bundles import with_relations
from homeserver.relations.handler import RelationsHandler
from homeserver.requester import Requester

JsonDict = dict[str, Any]
DEFAULT_LIMIT = 5


class RelationServlets:
    def __init__(self, auth: AuthHandler, relations: RelationsHandler) -> None:
        self._auth = auth
        self._relations = relations

    def register(self, r: JsonResource) -> None:
        base = "/rooms/{roomId}/relations/{eventId}"
        r.register_many("GET", client_v1_paths(base), self.on_relations)
        r.register_many("GET", client_v1_paths(base + "/{relType}"), self.on_relations)
        r.register_many("GET", client_v1_paths(base + "/{relType}/{eventType}"), self.on_relations)
        r.register_many("GET", client_v1_paths("/rooms/{roomId}/threads"), self.on_threads)

    async def _serialize(self, events: list[Any], requester: Requester) -> list[JsonDict]:
        bundles = await self._relations.bundles_for_user(events, requester.user_id)
        return [with_relations(serialize(ev, requester), bundles.get(ev.event_id)) for ev in events]

    async def on_relations(
        self,
        request: Request,
        roomId: str,
        eventId: str,
        relType: str | None = None,
        eventType: str | None = None,
    ) -> tuple[int, Any]:
        requester = await self._auth.get_user_by_req(request, allow_guest=True)
        direction = parse_string(request, "dir", default="b", allowed=("b", "f"))
        limit = parse_integer(request, "limit", default=DEFAULT_LIMIT, minimum=0)
        recurse: bool | None = None
        if (request.args or {}).get(b"recurse"):
            recurse = parse_boolean(request, "recurse")
        assert direction is not None and limit is not None
        page = await self._relations.relations(
            requester.user_id,
            roomId,
            eventId,
            rel_type=relType,
            event_type=eventType,
            from_token=parse_string(request, "from"),
            to_token=parse_string(request, "to"),
            direction=direction,
            limit=limit,
            recurse=recurse,
        )
        body: JsonDict = {"chunk": await self._serialize(page.events, requester)}
        if page.next_batch is not None:
            body["next_batch"] = page.next_batch
        if page.prev_batch is not None:
            body["prev_batch"] = page.prev_batch
        if page.recursion_depth is not None:
            body["recursion_depth"] = page.recursion_depth
        return 200, body

    async def on_threads(self, request: Request, roomId: str) -> tuple[int, Any]:
        requester = await self._auth.get_user_by_req(request, allow_guest=True)
        include = parse_string(request, "include", default="all", allowed=("all", "participated"))
        limit = parse_integer(request, "limit", default=DEFAULT_LIMIT, minimum=1)
        assert include is not None and limit is not None
        page = await self._relations.threads(
            requester.user_id,
            roomId,
            include=include,
            from_token=parse_string(request, "from"),
            limit=limit,
        )
        body: JsonDict = {"chunk": await self._serialize(page.roots, requester)}
        if page.next_batch is not None:
            body["next_batch"] = page.next_batch
        return 200, body
