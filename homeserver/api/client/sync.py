"""/sync and the filter endpoints."""

from __future__ import annotations

import dataclasses
import json
from collections import OrderedDict, deque
from collections.abc import Callable, Coroutine
from functools import lru_cache
from typing import Any

from twisted.internet import defer
from twisted.web.server import Request

from homeserver.api.client.paths import client_paths
from homeserver.errors import Codes, MatrixError
from homeserver.events.filtering import FilterCollection, FilterError, validate_filter
from homeserver.handlers.auth import AuthHandler
from homeserver.http.server import (
    EncodedJson,
    JsonResource,
    MatrixRequest,
    PendingResponse,
    respond_error,
    respond_json,
)
from homeserver.http.servlet import parse_boolean, parse_integer, parse_json_body, parse_string
from homeserver.logging_context import current_request_id
from homeserver.sync.encoding import encode_sync_body
from homeserver.sync.handler import SyncHandler, SyncRequest, SyncToken
from homeserver.sync.notifier import Parking
from homeserver.untrusted import decode_json, int64_or_none
from storage.storage import Storage

JsonDict = dict[str, Any]

MAX_TIMEOUT_MS = 5 * 60 * 1000
FILTER_CACHE_SIZE = 10_000
# Long-polls whose first build may run at once; later arrivals wait in line, parked. A
# build waiting on the database holds several KiB (coroutines, rows, the response), so a
# burst of long-polls (clients reconnecting after a restart) would otherwise raise the
# process's memory for good by that much per poll (freed memory stays with the process).
# The database runs 1 (SQLite) to 10 queries at a time: a line longer than that gains
# no throughput.
FIRST_BUILDS_AT_ONCE = 32


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
    return _parse_filter(decode_json(raw, forbid_nul=True))


_EMPTY_FILTER = FilterCollection.from_json({})


class SyncServlets:
    def __init__(self, storage: Storage, auth: AuthHandler, sync: SyncHandler) -> None:
        self._storage = storage
        self._auth = auth
        self._sync = sync
        # (user id, filter id) -> parsed filter, least recently used first
        self._filter_cache: OrderedDict[tuple[str, int], FilterCollection] = OrderedDict()
        self._first_builds = _Admission(FIRST_BUILDS_AT_ONCE)

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
        filter_id = int64_or_none(raw)
        if filter_id is None:
            raise MatrixError(400, Codes.INVALID_PARAM, "filter must be an id or JSON")
        key = (user_id, filter_id)
        cached = self._filter_cache.get(key)
        if cached is not None:
            self._filter_cache.move_to_end(key)
            return cached
        data = await self._storage.filters.get(user_id, filter_id)
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
        req = SyncRequest(
            user_id=requester.user_id,
            device_id=requester.device_id,
            since=since,
            timeout_ms=timeout,
            filters=filters,
            full_state=full_state,
            set_presence=set_presence,
        )
        if not timeout or since is None or full_state or not isinstance(request, MatrixRequest):
            # Answered at once, never waits.
            return 200, EncodedJson(encode_sync_body(await self._sync.sync(req)))
        request.release_input()  # all parsed: a long-poll need not hold it while waiting
        return 200, _LongPoll(self._sync, self._first_builds, req)

    async def on_post_filter(self, request: Request, userId: str) -> tuple[int, Any]:
        requester = await self._auth.get_user_by_req(request, allow_guest=True)
        if requester.user_id != userId:
            raise MatrixError(403, Codes.FORBIDDEN, "Cannot create filters for other users")
        body = parse_json_body(request)
        _parse_filter(body)
        filter_id = await self._storage.filters.add(userId, body)
        return 200, {"filter_id": str(filter_id)}

    async def on_get_filter(self, request: Request, userId: str, filterId: str) -> tuple[int, Any]:
        requester = await self._auth.get_user_by_req(request, allow_guest=True)
        if requester.user_id != userId:
            raise MatrixError(403, Codes.FORBIDDEN, "Cannot get filters for other users")
        filter_id = int64_or_none(filterId)
        data = None if filter_id is None else await self._storage.filters.get(userId, filter_id)
        if data is None:
            raise MatrixError(404, Codes.NOT_FOUND, "No such filter")
        return 200, data


def _end_all(ends: tuple[Callable[[], None], ...]) -> None:
    for end in ends:
        end()


class _Admission:
    """At most ``limit`` long-polls in their first build; the others wait in line."""

    __slots__ = ("_limit", "_running", "_line", "_draining")

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._running = 0
        self._line: deque[_LongPoll] = deque()
        self._draining = False

    def enter(self, poll: _LongPoll) -> None:
        """``poll.first_build()`` now or when its turn comes; it calls ``leave`` after."""
        self._line.append(poll)
        self._drain()

    def leave(self) -> None:
        self._running -= 1
        self._drain()

    def _drain(self) -> None:
        # A build that finishes at once leaves from inside first_build(): the loop here
        # starts the next one, instead of a recursion as deep as the line.
        if self._draining:
            return
        self._draining = True
        try:
            while self._line and self._running < self._limit:
                poll = self._line.popleft()
                if poll.cancelled:
                    continue
                self._running += 1
                poll.first_build()
        finally:
            self._draining = False


class _LongPoll(PendingResponse):
    """A /sync long-poll (``since`` given, a timeout, not ``full_state``), which waits
    without a coroutine of its own.

    Between builds it is this object and its request (stripped by ``release_input``):
    first in the ``_Admission`` line, then, after a build with nothing to answer, parked
    on the notifier, whose deadline wheel times it out. A notification (``wake``) or
    the deadline (``expire``) builds again in a new coroutine, which answers or parks
    again, as ``SyncHandler``'s own waiting loop would: answer at once if anything is
    new; at the deadline answer the last empty response if nothing moved since, else a
    fresh one. The sync hooks (presence: the user is syncing) are held from the first
    build until the answer or the disconnect.
    """

    __slots__ = (
        "_handler",
        "_admission",
        "_req",
        "_deadline",
        "_now",
        "_held",
        "_ends",
        "_parking",
        "_request",
        "_building",
        "cancelled",
    )

    def __init__(self, handler: SyncHandler, admission: _Admission, req: SyncRequest) -> None:
        self._handler = handler
        self._admission = admission
        self._deadline = handler.notifier.clock.seconds() + req.timeout_ms / 1000.0
        self._req = dataclasses.replace(req, timeout_ms=0)  # each build: no waiting inside
        self._now: SyncToken | None = None  # the token of the empty response held
        self._held: bytes | None = None  # that response, encoded (None: not built yet)
        self._ends: tuple[Callable[[], None], ...] = ()
        self._parking = Parking(handler.notifier, req.user_id)
        self._request: MatrixRequest | None = None
        self._building: defer.Deferred[None] | None = None
        self.cancelled = False

    def start(self, request: MatrixRequest) -> None:
        self._request = request
        self._admission.enter(self)

    def first_build(self) -> None:
        """Its turn in the admission line: start the sync hooks, then build."""
        self._run(self._first_build())

    async def _first_build(self) -> None:
        handler = self._handler
        req = self._req
        try:
            try:
                self._ends = await handler.hold(req.user_id, req.device_id, req.set_presence)
                clock = handler.notifier.clock
                if (
                    req.since is not None
                    and not req.full_state
                    and self._deadline > clock.seconds() + 1
                ):
                    current = handler.current_token()
                    if req.since == current:
                        # Nothing can be new (a client back right after its last answer):
                        # park at once; the empty answer is built only if it is needed.
                        self._now = current
                        self._park()
                        return
                response, has_updates, now = await handler.sync_held(req)
            finally:
                self._building = None
                self._admission.leave()
            self._answer_or_park(response, has_updates, now)
        except Exception as e:  # CancelledError included: the client went away
            self._answer_error(e)

    def _park(self) -> None:
        if self._handler.current_token() != self._now:
            self._resume()  # something arrived since that build
            return
        self._parking.park(self, self._deadline)

    def wake(self) -> None:
        """The notifier: something happened for the user."""
        self._parking.unpark(self)
        self._resume()

    def expire(self) -> None:
        """The notifier: the deadline passed."""
        self._parking.unpark(self)
        self._resume()

    def cancel(self) -> None:
        """The client went away."""
        self.cancelled = True  # if still in the admission line, skipped there
        self._parking.unpark(self)
        building, self._building = self._building, None
        if building is not None:
            building.cancel()  # its CancelledError ends the hooks and answers nothing
        _end_all(self._take_ends())

    def _take_ends(self) -> tuple[Callable[[], None], ...]:
        ends, self._ends = self._ends, ()
        return ends

    def _resume(self) -> None:
        handler = self._handler
        if (
            handler.notifier.clock.seconds() >= self._deadline
            and handler.current_token() == self._now
            and self._held is not None
        ):
            self._answer(self._held)
            return
        self._run(self._build())

    def _run(self, coroutine: Coroutine[Any, Any, None]) -> None:
        assert self._request is not None
        token = current_request_id.set(self._request.request_id)
        try:
            building = defer.ensureDeferred(coroutine)
        finally:
            current_request_id.reset(token)
        if not building.called:
            self._building = building

    async def _build(self) -> None:
        try:
            try:
                response, has_updates, now = await self._handler.sync_held(self._req)
            finally:
                self._building = None
            self._answer_or_park(response, has_updates, now)
        except Exception as e:  # CancelledError included: the client went away
            self._answer_error(e)

    def _answer_or_park(self, response: JsonDict, has_updates: bool, now: SyncToken) -> None:
        if has_updates or self._handler.notifier.clock.seconds() >= self._deadline:
            self._answer(encode_sync_body(response))
            return
        # The build saw the token unchanged right before returning (synchronously): what
        # comes next notifies us once parked.
        self._now = now
        self._held = encode_sync_body(response)
        self._park()

    def _answer(self, body: bytes) -> None:
        # Called from the notifier's wake-up and deadline loops too: nothing may escape.
        request = self._request
        assert request is not None
        request.handling = None
        try:
            _end_all(self._take_ends())
            respond_json(request, 200, EncodedJson(body))
        except Exception as e:
            respond_error(request, e)

    def _answer_error(self, exc: BaseException) -> None:
        request = self._request
        assert request is not None
        request.handling = None
        try:
            _end_all(self._take_ends())
        finally:
            respond_error(request, exc)
