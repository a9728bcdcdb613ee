"""Server-side search (``POST /search``, category ``room_events``).

Invariants:
- A user searches the rooms they are joined to, and the rooms they left or were
  banned from (unless forgotten) up to the moment they left; every candidate then
  goes through ``VisibilityFilter`` with the user's membership in its room, so a
  result is never an event the user could not read through ``/messages``. The same
  holds for the events of ``event_context``.
- Pages are filled after filtering: candidates are fetched in batches (each twice the
  last, up to ``MAX_FETCH``) until the page is full, the matches run out, or
  ``MAX_ROUNDS`` batches were examined; then the page may be short (even empty) and
  ``next_batch`` resumes after the last examined candidate.
- ``next_batch`` is opaque: the order, an optional group scope (``room_id`` or
  ``sender`` and its value) and a cursor (``storage.search.SearchCursor``). Resuming
  from it never repeats a result and skips none, as long as the matches do not
  change in between (SQLite's bm25 rank depends on the whole index, so new messages
  can shift ranks there).
- ``count`` is the number of matching events in the searchable rooms before
  visibility checks: an approximation, as the spec allows.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any

from homeserver.errors import Codes, MatrixError
from homeserver.events.event import Event
from homeserver.events.filtering import EventFilter, event_json
from homeserver.rooms.history import RoomHistory
from homeserver.rooms.memberships import MembershipCache
from homeserver.rooms.room_cache import RoomCache
from homeserver.rooms.visibility import VisibilityFilter
from homeserver.untrusted import INT64_MAX, INT64_MIN, decode_json
from storage.memberships import MembershipRow
from storage.search import (
    SEARCH_KEYS,
    RoomScope,
    SearchCursor,
    SearchHit,
    SearchScope,
    searchable_text,
)
from storage.search_query import SearchQuery, parse_search_term
from storage.storage import Storage

JsonDict = dict[str, Any]

MAX_PAGE = 500  # cap on filter.limit
MAX_CONTEXT = 100  # cap on before_limit / after_limit
MAX_ROUNDS = 5
MAX_FETCH = 1000
GROUP_KEYS = ("room_id", "sender")
ORDERS = ("rank", "recent")


@dataclass(frozen=True)
class ContextRequest:
    before_limit: int = 5
    after_limit: int = 5
    include_profile: bool = False


@dataclass(frozen=True)
class SearchRequest:
    search_term: str
    keys: tuple[str, ...] = tuple(SEARCH_KEYS)
    event_filter: EventFilter = EventFilter()
    order_by: str = "rank"
    event_context: ContextRequest | None = None
    include_state: bool = False
    group_by: tuple[str, ...] = ()


@dataclass(frozen=True)
class ResultContext:
    events_before: list[Event]
    events_after: list[Event]
    start: str
    end: str
    profile_info: dict[str, JsonDict] | None


@dataclass(frozen=True)
class SearchResult:
    rank: float
    event: Event
    context: ResultContext | None


@dataclass(frozen=True)
class GroupEntry:
    results: list[str]
    order: int
    next_batch: str | None


@dataclass(frozen=True)
class SearchResponse:
    results: list[SearchResult]
    count: int
    highlights: list[str]
    next_batch: str | None
    groups: dict[str, dict[str, GroupEntry]] | None
    state: dict[str, list[Event]] | None


@dataclass(frozen=True)
class BatchToken:
    order_by: str
    cursor: SearchCursor
    group: str | None = None
    group_value: str | None = None

    def encode(self) -> str:
        data: JsonDict = {"o": self.order_by, "s": self.cursor.stream_ordering}
        if self.cursor.rank is not None:
            data["r"] = self.cursor.rank
        if self.group is not None:
            data["g"] = self.group
            data["k"] = self.group_value
        raw = json.dumps(data, separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, token: str) -> BatchToken:
        bad = MatrixError(400, Codes.INVALID_PARAM, "Invalid next_batch token")
        try:  # the client's to forge: as strict as any JSON input (depth, Unicode, NaN)
            data = decode_json(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        except (binascii.Error, ValueError, MatrixError):
            raise bad from None
        if not isinstance(data, dict):
            raise bad
        order, stream, rank = data.get("o"), data.get("s"), data.get("r")
        group, value = data.get("g"), data.get("k")
        if (
            order not in ORDERS
            or not isinstance(stream, int)
            or isinstance(stream, bool)
            or not INT64_MIN <= stream <= INT64_MAX
        ):
            raise bad
        cursor = SearchCursor(stream)
        if order == "rank":
            if not isinstance(rank, int | float) or isinstance(rank, bool):
                raise bad
            cursor = SearchCursor(stream, float(rank))
        if group is not None and (group not in GROUP_KEYS or not isinstance(value, str)):
            raise bad
        return cls(order, cursor, group, value if group is not None else None)


def _empty(groups: tuple[str, ...], include_state: bool) -> SearchResponse:
    return SearchResponse(
        results=[],
        count=0,
        highlights=[],
        next_batch=None,
        groups={g: {} for g in groups} if groups else None,
        state={} if include_state else None,
    )


class SearchHandler:
    def __init__(
        self,
        storage: Storage,
        rooms: RoomCache,
        memberships: MembershipCache,
        visibility: VisibilityFilter,
    ) -> None:
        self._storage = storage
        self._rooms = rooms
        self._memberships = memberships
        self._visibility = visibility

    async def search(
        self, user_id: str, request: SearchRequest, next_batch: str | None
    ) -> SearchResponse:
        token = BatchToken.decode(next_batch) if next_batch is not None else None
        if token is not None and token.order_by != request.order_by:
            raise MatrixError(
                400, Codes.INVALID_PARAM, "next_batch was issued for another order_by"
            )
        query = parse_search_term(request.search_term)
        flt = request.event_filter
        memberships = {
            room_id: row
            for room_id, row in (await self._memberships.rooms_for_user(user_id)).items()
            if row.membership in ("join", "leave", "ban") and flt.room_allowed(room_id)
        }
        senders = flt.senders
        if token is not None and token.group == "room_id":
            memberships = {k: v for k, v in memberships.items() if k == token.group_value}
        if token is not None and token.group == "sender":
            assert token.group_value is not None
            wanted = senders if senders is not None else (token.group_value,)
            senders = tuple(s for s in wanted if s == token.group_value)
        keys = tuple(k for k in dict.fromkeys(request.keys) if flt.type_allowed(SEARCH_KEYS[k]))
        scope = SearchScope(
            rooms=tuple(
                RoomScope(room_id, None if row.membership == "join" else row.stream_ordering)
                for room_id, row in sorted(memberships.items())
            ),
            keys=keys,
            senders=senders,
            not_senders=flt.not_senders,
        )
        if query.is_empty or not scope.rooms or not scope.keys or senders == ():
            return _empty(request.group_by, request.include_state)

        by_rank = request.order_by == "rank"
        limit = max(1, min(flt.limit, MAX_PAGE))
        page, next_cursor = await self._collect(
            user_id, query, scope, memberships, flt, by_rank, token, limit
        )
        count = await self._storage.search.count(query, scope)

        texts = []
        for hit, ev in page:
            found = searchable_text(ev)
            if found is not None:
                texts.append((hit.stream_ordering, found[1]))
        matched = await self._storage.search.highlights(query, texts)
        highlights = sorted(matched | set(query.positive_words()))

        results = []
        for hit, ev in page:
            context = None
            if request.event_context is not None:
                context = await self._context(
                    user_id, ev, memberships[ev.room_id], request.event_context
                )
            results.append(SearchResult(hit.rank, ev, context))

        def batch(group: str | None, value: str | None) -> str | None:
            if next_cursor is None:
                return None
            if group is None and token is not None:
                group, value = token.group, token.group_value  # stay in the group
            return BatchToken(request.order_by, next_cursor, group, value).encode()

        groups: dict[str, dict[str, GroupEntry]] | None = None
        if request.group_by:
            groups = {}
            for key in request.group_by:
                by_value: dict[str, list[str]] = {}
                for _, ev in page:
                    value = ev.room_id if key == "room_id" else ev.sender
                    by_value.setdefault(value, []).append(ev.event_id)
                groups[key] = {
                    value: GroupEntry(ids, order, batch(key, value))
                    for order, (value, ids) in enumerate(by_value.items(), start=1)
                }

        state = None
        if request.include_state:
            state = {}
            for room_id in dict.fromkeys(ev.room_id for _, ev in page):
                state[room_id] = await self._room_state(memberships[room_id])

        return SearchResponse(
            results=results,
            count=count,
            highlights=highlights,
            next_batch=batch(None, None),
            groups=groups,
            state=state,
        )

    async def _collect(
        self,
        user_id: str,
        query: SearchQuery,
        scope: SearchScope,
        memberships: dict[str, MembershipRow],
        flt: EventFilter,
        by_rank: bool,
        token: BatchToken | None,
        limit: int,
    ) -> tuple[list[tuple[SearchHit, Event]], SearchCursor | None]:
        """A page of visible results, and the cursor to resume after it (None: done)."""
        cursor = token.cursor if token is not None else None
        fetch = limit * 2 + 1
        visible: list[tuple[SearchHit, Event]] = []
        exhausted = False
        for _ in range(MAX_ROUNDS):
            hits = await self._storage.search.search(
                query, scope, by_rank=by_rank, after=cursor, limit=fetch
            )
            if hits:
                cursor = hits[-1].cursor(by_rank)
            exhausted = len(hits) < fetch
            fetch = min(fetch * 2, MAX_FETCH)
            visible += await self._visible(user_id, hits, memberships, flt)
            if len(visible) > limit or exhausted:
                break
        page = visible[:limit]
        if len(visible) > limit:
            return page, page[-1][0].cursor(by_rank)
        return page, None if exhausted else cursor

    async def _visible(
        self,
        user_id: str,
        hits: list[SearchHit],
        memberships: dict[str, MembershipRow],
        flt: EventFilter,
    ) -> list[tuple[SearchHit, Event]]:
        events = await self._storage.events.get_events(h.event_id for h in hits)
        # The visibility check reads the state at each event; only the user's current
        # membership is per room, so one call per membership value covers all rooms.
        by_membership: dict[str, list[Event]] = {}
        for hit in hits:
            ev = events.get(hit.event_id)
            if ev is None or ev.redacted_by or ev.rejected_reason is not None:
                continue
            if not flt.matches(event_json(ev), ev.room_id):
                continue
            by_membership.setdefault(memberships[ev.room_id].membership, []).append(ev)
        allowed: set[str] = set()
        for membership, candidates in by_membership.items():
            for ev in await self._visibility.filter_for_user(
                user_id, candidates, current_membership=membership
            ):
                allowed.add(ev.event_id)
        return [(h, events[h.event_id]) for h in hits if h.event_id in allowed]

    async def _leave_position(self, row: MembershipRow) -> tuple[int, int] | None:
        """Where a departed user's history ends (their leave), None if still joined."""
        if row.membership == "join":
            return None
        leave = await self._storage.events.get_event(row.event_id)
        return (leave.depth, leave.stream_ordering) if leave is not None else (0, 0)

    async def _context(
        self, user_id: str, ev: Event, row: MembershipRow, wanted: ContextRequest
    ) -> ResultContext:
        events = self._storage.events
        pos = (ev.depth, ev.stream_ordering)
        before: list[Event] = []
        after: list[Event] = []
        if wanted.before_limit > 0:
            before = await events.paginate_room(ev.room_id, pos, None, True, wanted.before_limit)
        if wanted.after_limit > 0:
            bound = await self._leave_position(row)
            after = await events.paginate_room(ev.room_id, pos, bound, False, wanted.after_limit)
        before = await self._visibility.filter_for_user(
            user_id, before, current_membership=row.membership
        )
        after = await self._visibility.filter_for_user(
            user_id, after, current_membership=row.membership
        )
        start_ev = before[-1] if before else ev
        end_ev = after[-1] if after else ev
        profile_info = None
        if wanted.include_profile:
            profile_info = await self._profiles(end_ev, [*before, ev, *after])
        return ResultContext(
            events_before=before,
            events_after=after,
            start=RoomHistory.token_before(start_ev),
            end=RoomHistory.token_after(end_ev),
            profile_info=profile_info,
        )

    async def _profiles(self, last: Event, shown: list[Event]) -> dict[str, JsonDict]:
        """Senders' display names and avatars as of ``last`` (historic, as Synapse)."""
        senders = sorted({e.sender for e in shown})
        keys = [("m.room.member", s) for s in senders]
        at = await self._storage.state_groups.get_state_keys_at_events(
            [last.event_id], keys, before=False
        )
        ids = at.get(last.event_id, {})
        members = await self._storage.events.get_events(ids.values())
        out: dict[str, JsonDict] = {}
        for (_, user), event_id in ids.items():
            member = members.get(event_id)
            if member is None:
                continue
            profile: JsonDict = {}
            for field_name in ("displayname", "avatar_url"):
                value = member.content.get(field_name)
                if isinstance(value, str) and not member.redacted_by:
                    profile[field_name] = value
            out[user] = profile
        return out

    async def _room_state(self, row: MembershipRow) -> list[Event]:
        """Current state for a joined room; the state at their leave otherwise."""
        if row.membership == "join":
            room = await self._rooms.get(row.room_id)
            if room is not None:
                return sorted(room.state.values(), key=lambda e: e.stream_ordering)
            return []
        ids = await self._storage.state_groups.get_state_ids_at_event(row.event_id) or {}
        events = await self._storage.events.get_events(ids.values())
        return sorted(events.values(), key=lambda e: e.stream_ordering)
