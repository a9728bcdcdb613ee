"""``POST /search``: parse and validate the request, call the search handler, shape the reply.

Categories other than ``room_events`` are ignored (answered with nothing), as Synapse
does; a request without ``room_events`` gets ``{"search_categories": {}}``.
"""

from __future__ import annotations

from typing import Any

from twisted.web.server import Request

from homeserver.api.client.paths import client_paths
from homeserver.api.client.rooms import serialize
from homeserver.errors import Codes, MatrixError
from homeserver.events.filtering import EventFilter, FilterError
from homeserver.handlers.auth import AuthHandler
from homeserver.handlers.search import (
    GROUP_KEYS,
    MAX_CONTEXT,
    ORDERS,
    ContextRequest,
    SearchHandler,
    SearchRequest,
    SearchResponse,
)
from homeserver.http.server import JsonResource
from homeserver.http.servlet import field, parse_json_body, parse_string
from homeserver.requester import Requester
from storage.search import SEARCH_KEYS

JsonDict = dict[str, Any]


def _limit(body: JsonDict, name: str) -> int:
    value = field(body, name, int, default=5)
    if value < 0:
        raise MatrixError(400, Codes.INVALID_PARAM, f"{name} must not be negative")
    return int(min(value, MAX_CONTEXT))


def parse_search_request(room_events: JsonDict) -> SearchRequest:
    search_term = field(room_events, "search_term", str, required=True)
    keys = field(room_events, "keys", list, default=list(SEARCH_KEYS))
    for key in keys:
        if key not in SEARCH_KEYS:
            raise MatrixError(
                400, Codes.INVALID_PARAM, f"keys must be among {', '.join(SEARCH_KEYS)}"
            )
    filter_json = field(room_events, "filter", dict, default={})
    try:
        event_filter = EventFilter.from_json(filter_json)
    except FilterError as e:
        raise MatrixError(400, Codes.BAD_JSON, f"Invalid filter: {e}") from None
    order_by = field(room_events, "order_by", str, default="rank")
    if order_by not in ORDERS:
        raise MatrixError(400, Codes.INVALID_PARAM, "order_by must be 'rank' or 'recent'")
    context = None
    context_json = field(room_events, "event_context", dict)
    if context_json is not None:
        context = ContextRequest(
            before_limit=_limit(context_json, "before_limit"),
            after_limit=_limit(context_json, "after_limit"),
            include_profile=field(context_json, "include_profile", bool, default=False),
        )
    group_by: list[str] = []
    groupings = field(room_events, "groupings", dict)
    if groupings is not None:
        for group in field(groupings, "group_by", list, default=[]):
            key = group.get("key") if isinstance(group, dict) else None
            if key not in GROUP_KEYS:
                raise MatrixError(
                    400, Codes.INVALID_PARAM, "group_by keys must be 'room_id' or 'sender'"
                )
            if key not in group_by:
                group_by.append(key)
    return SearchRequest(
        search_term=search_term,
        keys=tuple(keys),
        event_filter=event_filter,
        order_by=order_by,
        event_context=context,
        include_state=field(room_events, "include_state", bool, default=False),
        group_by=tuple(group_by),
    )


def response_json(res: SearchResponse, requester: Requester) -> JsonDict:
    results = []
    for item in res.results:
        entry: JsonDict = {"rank": item.rank, "result": serialize(item.event, requester)}
        ctx = item.context
        if ctx is not None:
            context: JsonDict = {
                "events_before": [serialize(e, requester) for e in ctx.events_before],
                "events_after": [serialize(e, requester) for e in ctx.events_after],
                "start": ctx.start,
                "end": ctx.end,
            }
            if ctx.profile_info is not None:
                context["profile_info"] = ctx.profile_info
            entry["context"] = context
        results.append(entry)
    out: JsonDict = {"results": results, "count": res.count, "highlights": res.highlights}
    if res.next_batch is not None:
        out["next_batch"] = res.next_batch
    if res.groups is not None:
        groups: JsonDict = {}
        for key, by_value in res.groups.items():
            groups[key] = {}
            for value, group in by_value.items():
                g: JsonDict = {"results": group.results, "order": group.order}
                if group.next_batch is not None:
                    g["next_batch"] = group.next_batch
                groups[key][value] = g
        out["groups"] = groups
    if res.state is not None:
        out["state"] = {
            room_id: [serialize(e) for e in events] for room_id, events in res.state.items()
        }
    return out


class SearchServlets:
    def __init__(self, auth: AuthHandler, search: SearchHandler) -> None:
        self._auth = auth
        self._search = search

    def register(self, r: JsonResource) -> None:
        r.register_many("POST", client_paths("/search"), self.on_search)

    async def on_search(self, request: Request) -> tuple[int, Any]:
        requester = await self._auth.get_user_by_req(request)
        next_batch = parse_string(request, "next_batch")
        body = parse_json_body(request)
        categories = field(body, "search_categories", dict, required=True)
        room_events = field(categories, "room_events", dict)
        if room_events is None:
            return 200, {"search_categories": {}}
        search = parse_search_request(room_events)
        res = await self._search.search(requester.user_id, search, next_batch)
        return 200, {"search_categories": {"room_events": response_json(res, requester)}}
