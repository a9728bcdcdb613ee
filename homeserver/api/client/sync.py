"""/sync and the filter endpoints."""

from __future__ import annotations

import json
from collections import OrderedDict
from functools import lru_cache
from typing import Any

from twisted.web.server import Request

from homeserver.api.client.paths import client_paths
from homeserver.errors import Codes, MatrixError
from homeserver.events.filtering import FilterCollection, FilterError, validate_filter
from homeserver.handlers.auth import AuthHandler
from homeserver.http.server import EncodedJson, JsonResource
from homeserver.http.servlet import parse_boolean, parse_integer, parse_json_body, parse_string
from homeserver.sync.encoding import encode_sync_body
from homeserver.sync.handler import SyncHandler, SyncRequest, SyncToken
from storage.storage import Storage

MAX_TIMEOUT_MS = 5 * 60 * 1000
FILTER_CACHE_SIZE = 10_000


# Parsed filters by their canonical JSON: users with the same filter (every user of
# one client) share one object, which /sync's shared room sections are keyed by.
_INTERNED: OrderedDict[str, FilterCollection] = OrderedDict()


def _parse_filter(data: Any) -> FilterCollection:
    try:
        validate_filter(data)
    except FilterError as e:
        raise MatrixError(400, Codes.BAD_JSON, f"Invalid filter: {e}") from None
    key = json.dumps(data, sort_keys=True, separators=(",", ":"))
    parsed = _INTERNED.get(key)
    if parsed is None:
        parsed = _INTERNED[key] = FilterCollection.from_json(data)
        if len(_INTERNED) > FILTER_CACHE_SIZE:
            _INTERNED.popitem(last=False)
    else:
        _INTERNED.move_to_end(key)
    return parsed


@lru_cache(maxsize=1024)
def _parse_inline_filter(raw: str) -> FilterCollection:
    try:
        data = json.loads(raw)
    except ValueError:
        raise MatrixError(400, Codes.NOT_JSON, "filter is not valid JSON") from None
    return _parse_filter(data)


_EMPTY_FILTER = FilterCollection.from_json({})


class SyncServlets:
    def __init__(self, storage: Storage, auth: AuthHandler, sync: SyncHandler) -> None:
        self._storage = storage
        self._auth = auth
        self._sync = sync
        # (user id, filter id) -> parsed filter, least recently used first
        self._filter_cache: OrderedDict[tuple[str, int], FilterCollection] = OrderedDict()

    def register(self, r: JsonResource) -> None:
        r.register_many("GET", client_paths("/sync"), self.on_sync)
        r.register_many("POST", client_paths("/user/{userId}/filter"), self.on_post_filter)
        r.register_many("GET", client_paths("/user/{userId}/filter/{filterId}"), self.on_get_filter)

    async def load_filter(self, user_id: str, raw: str | None) -> FilterCollection:
        """The parsed filter of a /sync request (an id or inline JSON); cached, since
        stored filters never change and clients repeat the same filter on every sync."""
        if raw is None:
            return _EMPTY_FILTER
        if raw.lstrip().startswith("{"):
            return _parse_inline_filter(raw)
        try:
            filter_id = int(raw)
        except ValueError:
            raise MatrixError(400, Codes.INVALID_PARAM, "filter must be an id or JSON") from None
        key = (user_id, filter_id)
        cached = self._filter_cache.get(key)
        if cached is not None:
            self._filter_cache.move_to_end(key)
            return cached
        data = await self._storage.events.get_filter(user_id, filter_id)
        if data is None:
            raise MatrixError(400, Codes.INVALID_PARAM, f"No filter with id {filter_id}")
        parsed = _parse_filter(data)
        self._filter_cache[key] = parsed
        if len(self._filter_cache) > FILTER_CACHE_SIZE:
            self._filter_cache.popitem(last=False)
        return parsed

    async def on_sync(self, request: Request) -> tuple[int, Any]:
        requester = await self._auth.get_user_by_req(request, allow_guest=True)
        since_raw = parse_string(request, "since")
        timeout = parse_integer(request, "timeout", default=0, minimum=0, maximum=MAX_TIMEOUT_MS)
        full_state = parse_boolean(request, "full_state", default=False)
        set_presence = parse_string(
            request, "set_presence", allowed=("offline", "online", "unavailable")
        )
        filters = await self.load_filter(requester.user_id, parse_string(request, "filter"))
        since = SyncToken.parse(since_raw) if since_raw else None
        assert timeout is not None
        response = await self._sync.sync(
            SyncRequest(
                user_id=requester.user_id,
                device_id=requester.device_id,
                since=since,
                timeout_ms=timeout,
                filters=filters,
                full_state=full_state,
                set_presence=set_presence,
            )
        )
        return 200, EncodedJson(encode_sync_body(response))

    async def on_post_filter(self, request: Request, userId: str) -> tuple[int, Any]:
        requester = await self._auth.get_user_by_req(request, allow_guest=True)
        if requester.user_id != userId:
            raise MatrixError(403, Codes.FORBIDDEN, "Cannot create filters for other users")
        body = parse_json_body(request)
        _parse_filter(body)
        filter_id = await self._storage.events.add_filter(userId, body)
        return 200, {"filter_id": str(filter_id)}

    async def on_get_filter(self, request: Request, userId: str, filterId: str) -> tuple[int, Any]:
        requester = await self._auth.get_user_by_req(request, allow_guest=True)
        if requester.user_id != userId:
            raise MatrixError(403, Codes.FORBIDDEN, "Cannot get filters for other users")
        try:
            filter_id = int(filterId)
        except ValueError:
            raise MatrixError(404, Codes.NOT_FOUND, "No such filter") from None
        data = await self._storage.events.get_filter(userId, filter_id)
        if data is None:
            raise MatrixError(404, Codes.NOT_FOUND, "No such filter")
        return 200, data
