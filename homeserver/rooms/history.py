"""Reading a room's history: /messages, /context, /event, /members, timestamp lookup.

Every path that returns events runs them through ``VisibilityFilter`` first, and a
user who has left only sees history up to the point they left, unless the room is
``world_readable`` now: then they read it as anyone may (a peeker). Only members (and
former members) may read a room's history, or anyone when it is ``world_readable``;
an invitee has to join first, as in Synapse.

Pagination tokens are positions *between* events, as in Synapse: ``t<depth>-<stream>``
is the point just after the event at (depth, stream) in history order, ``s<stream>``
the point just after everything up to that stream position. Paginating backwards from
a token returns the events before it, forwards the events after it, so any token may
be used in either direction without skipping or repeating an event. Backfilled events
have negative stream orderings, so ``<stream>`` may be negative (``t5--3``).

A backwards page that comes up short while the room has gaps in what we hold (backward
extremities at or below the page's depth) asks the ``Backfiller`` (federation) for older
history first, then reads the page again.
"""

from __future__ import annotations

import re
from typing import Any, Protocol

from homeserver.errors import Codes, MatrixError
from homeserver.events.event import Event
from homeserver.events.filtering import EventFilter
from homeserver.rooms.room_cache import LiveRoom, RoomCache
from homeserver.rooms.visibility import VisibilityFilter
from homeserver.untrusted import parse_int64
from storage.storage import Storage

JsonDict = dict[str, Any]

_TOPO_RE = re.compile(r"^t(-?\d+)-(-?\d+)$")
_STREAM_RE = re.compile(r"^s(\d+)(?:_\d+)*$")

MAX_LIMIT = 1000


class Backfiller(Protocol):
    async def backfill(self, room_id: str, extremities: list[str], limit: int) -> bool:
        """Fetch history before ``extremities`` from other servers; whether any was stored."""
        ...


class RoomHistory:
    def __init__(self, storage: Storage, rooms: RoomCache, visibility: VisibilityFilter) -> None:
        self._storage = storage
        self._rooms = rooms
        self._visibility = visibility
        # Set by the federation layer; None: only what we hold is served.
        self.backfiller: Backfiller | None = None

    async def _room_and_membership(self, user_id: str, room_id: str) -> tuple[LiveRoom, str | None]:
        room = await self._rooms.get(room_id)
        if room is None:
            raise MatrixError(403, Codes.FORBIDDEN, f"User {user_id} not in room {room_id}")
        membership = room.membership_of(user_id)
        hv = room.state_content("m.room.history_visibility").get("history_visibility")
        if membership not in ("join", "leave", "ban") and hv != "world_readable":
            raise MatrixError(403, Codes.FORBIDDEN, f"User {user_id} not in room {room_id}")
        if membership != "join" and hv == "world_readable":
            # Peeking into a world-readable room: anyone may, so a user who left (or was
            # banned) too, past the point they left; each event's own visibility decides.
            return room, None
        if membership not in ("join", "leave", "ban"):
            membership = None
        return room, membership

    async def _access(
        self, user_id: str, room_id: str, as_admin: bool
    ) -> tuple[LiveRoom, str | None]:
        """As ``_room_and_membership``; a server admin (the admin API) reads any room we
        hold, whole, whatever their membership."""
        if not as_admin:
            return await self._room_and_membership(user_id, room_id)
        room = await self._rooms.get(room_id)
        if room is None:
            raise MatrixError(404, Codes.NOT_FOUND, "Room not found")
        return room, None

    async def _filter(
        self, user_id: str, events: list[Event], membership: str | None, as_admin: bool
    ) -> list[Event]:
        if as_admin:
            return events
        return await self._visibility.filter_for_user(
            user_id, events, current_membership=membership
        )

    async def _upper_bound(
        self, user_id: str, room: LiveRoom, membership: str | None
    ) -> tuple[int, int] | None:
        """For a user who left: the position of their leave event; history stops there."""
        if membership in ("leave", "ban"):
            ev = room.state.get(("m.room.member", user_id))
            if ev is not None:
                return (ev.depth, ev.stream_ordering)
        return None

    async def parse_token(self, room_id: str, token: str) -> tuple[int, int]:
        """The (depth, stream) point a token stands for: just after that event."""
        m = _TOPO_RE.match(token)
        if m:
            return parse_int64(m.group(1), "from"), parse_int64(m.group(2), "from")
        m = _STREAM_RE.match(token)
        if m:
            stream = parse_int64(m.group(1), "from")
            topo = await self._storage.events.get_max_topological_before_stream(room_id, stream)
            return topo, stream
        raise MatrixError(400, Codes.INVALID_PARAM, f"Invalid pagination token {token!r}")

    @staticmethod
    def token_before(ev: Event) -> str:
        """The point just before ``ev`` (the end of a backwards page ending at it)."""
        return f"t{ev.depth}-{ev.stream_ordering - 1}"

    @staticmethod
    def token_after(ev: Event) -> str:
        """The point just after ``ev`` (the end of a forwards page ending at it)."""
        return f"t{ev.depth}-{ev.stream_ordering}"

    def _after_leave(self, ev: Event, bound: tuple[int, int] | None) -> bool:
        return bound is not None and ev.stream_ordering > bound[1]

    async def messages(
        self,
        user_id: str,
        room_id: str,
        from_token: str | None,
        to_token: str | None,
        direction: str,
        limit: int,
        event_filter: EventFilter | None,
        *,
        as_admin: bool = False,
    ) -> tuple[list[Event], str, str | None, list[Event]]:
        """(chunk, start, end, state for lazy-loaded members)."""
        room, membership = await self._access(user_id, room_id, as_admin)
        backwards = direction == "b"
        limit = max(0, min(limit, MAX_LIMIT))
        # `pos` is exclusive (the store returns events strictly beyond it); `to_pos` is
        # inclusive. Tokens name the point after an event, hence the +1 going backwards.
        if from_token is None:
            if backwards:
                pos = (room.max_depth + 1, self._storage.events.stream.current_position + 1)
                from_token = f"s{self._storage.events.stream.current_position}"
            else:
                pos = (0, 0)
                from_token = "t0-0"
        else:
            point = await self.parse_token(room_id, from_token)
            pos = (point[0], point[1] + 1) if backwards else point
        to_pos = None
        if to_token:
            to_point = await self.parse_token(room_id, to_token)
            to_pos = (to_point[0], to_point[1] + 1) if backwards else to_point
        bound = await self._upper_bound(user_id, room, membership)
        if bound is not None:
            if backwards and (pos[0], pos[1]) > (bound[0], bound[1] + 1):
                pos = (bound[0], bound[1] + 1)
            if not backwards:
                to_pos = bound if to_pos is None or to_pos > bound else to_pos
        fetch = limit * 2 + 10 if event_filter else limit
        raw = await self._storage.events.paginate_room(room_id, pos, to_pos, backwards, fetch)
        if backwards and len(raw) < fetch and await self._backfill(room_id, pos, to_pos, limit):
            raw = await self._storage.events.paginate_room(room_id, pos, to_pos, backwards, fetch)
        kept = event_filter.filter(raw, room_id) if event_filter is not None else raw
        if len(kept) > limit:
            events = kept[:limit]
            last = events[-1] if events else None
        else:
            # Every fetched event was looked at: continue after the last one, even when
            # the filter dropped them all (so the client does not stop early).
            events = kept
            last = raw[-1] if raw else None
        visible = await self._filter(user_id, events, membership, as_admin)
        end = None
        if last is not None:
            end = self.token_before(last) if backwards else self.token_after(last)
        lazy_state: list[Event] = []
        if event_filter is not None and event_filter.lazy_load_members and visible:
            senders = sorted({ev.sender for ev in visible})
            if bound is None:
                members = {s: room.state.get(("m.room.member", s)) for s in senders}
            else:
                # A departed user gets the members as they were when they left.
                own = room.state[("m.room.member", user_id)]
                at_leave = await self._storage.state_groups.get_state_ids_at_event(own.event_id)
                ids = [(at_leave or {}).get(("m.room.member", s)) for s in senders]
                found = await self._storage.events.get_events(i for i in ids if i)
                members = {s: found.get(i or "") for s, i in zip(senders, ids, strict=True)}
            lazy_state = [ev for ev in members.values() if ev is not None]
        return visible, from_token, end, lazy_state

    async def _backfill(
        self, room_id: str, pos: tuple[int, int], to_pos: tuple[int, int] | None, limit: int
    ) -> bool:
        """Ask the backfiller for history older than we hold, between the page's bounds."""
        if self.backfiller is None:
            return False
        gaps = await self._storage.events.get_backward_extremities(
            room_id, pos[0], 5, min_depth=to_pos[0] if to_pos is not None else None
        )
        if not gaps:
            return False
        return await self.backfiller.backfill(room_id, gaps, limit)

    async def get_event(
        self, user_id: str, room_id: str, event_id: str, *, as_admin: bool = False
    ) -> Event:
        room, membership = await self._access(user_id, room_id, as_admin)
        ev = await self._storage.events.get_event(event_id)
        if ev is None or ev.room_id != room_id or ev.rejected_reason is not None:
            raise MatrixError(404, Codes.NOT_FOUND, "Event not found.")
        if not as_admin:
            await self._check_visible(user_id, room, membership, ev)
        return ev

    async def _check_visible(
        self, user_id: str, room: LiveRoom, membership: str | None, ev: Event
    ) -> None:
        """404 unless ``user_id`` may see ``ev`` (history visibility, and not after a leave)."""
        bound = await self._upper_bound(user_id, room, membership)
        if self._after_leave(ev, bound) or not await self._visibility.filter_for_user(
            user_id, [ev], current_membership=membership
        ):
            raise MatrixError(404, Codes.NOT_FOUND, "Event not found.")

    async def context(
        self,
        user_id: str,
        room_id: str,
        event_id: str,
        limit: int,
        event_filter: EventFilter | None,
        *,
        as_admin: bool = False,
    ) -> JsonDict:
        ev = await self.get_event(user_id, room_id, event_id, as_admin=as_admin)
        room, membership = await self._access(user_id, room_id, as_admin)
        before_n = limit // 2
        after_n = limit - before_n
        pos = (ev.depth, ev.stream_ordering)
        before = (
            await self._storage.events.paginate_room(room_id, pos, None, True, before_n)
            if before_n
            else []
        )
        bound = await self._upper_bound(user_id, room, membership)
        after = (
            await self._storage.events.paginate_room(room_id, pos, bound, False, after_n)
            if after_n
            else []
        )
        if event_filter is not None:
            before = event_filter.filter(before, room_id)
            after = event_filter.filter(after, room_id)
        before = await self._filter(user_id, before, membership, as_admin)
        after = await self._filter(user_id, after, membership, as_admin)
        # The spec: "the state of the room at the last event returned".
        last_id = after[-1].event_id if after else event_id
        state_ids = await self._storage.state_groups.get_state_ids_at_event(last_id) or {}
        state_events = await self._storage.events.get_events(state_ids.values())
        state = list(state_events.values())
        if event_filter is not None and event_filter.lazy_load_members:
            senders = {e.sender for e in [*before, ev, *after]}
            state = [s for s in state if s.type != "m.room.member" or s.state_key in senders]
        start_ev = before[-1] if before else ev
        end_ev = after[-1] if after else ev
        return {
            "event": ev,
            "events_before": before,
            "events_after": after,
            "state": state,
            "start": self.token_before(start_ev),
            "end": self.token_after(end_ev),
        }

    async def members(
        self,
        user_id: str,
        room_id: str,
        at: str | None,
        membership: str | None,
        not_membership: str | None,
    ) -> list[Event]:
        room, my_membership = await self._room_and_membership(user_id, room_id)
        if at is not None or my_membership in ("leave", "ban"):
            if at is not None:
                _, stream = await self.parse_token(room_id, at)
                bound = await self._upper_bound(user_id, room, my_membership)
                if bound is not None:
                    stream = min(stream, bound[1])
            else:
                own = room.state[("m.room.member", user_id)]
                stream = own.stream_ordering
            ids = await self._storage.state_groups.get_state_ids_at_stream(room_id, stream)
            member_ids = [eid for (t, _), eid in ids.items() if t == "m.room.member"]
            events = list((await self._storage.events.get_events(member_ids)).values())
        else:
            events = [ev for (t, _), ev in room.state.items() if t == "m.room.member"]
        if membership is not None:
            events = [e for e in events if e.membership == membership]
        if not_membership is not None:
            events = [e for e in events if e.membership != not_membership]
        return sorted(events, key=lambda e: e.state_key or "")

    async def joined_members(self, user_id: str, room_id: str) -> JsonDict:
        room = await self._rooms.get(room_id)
        if room is None or room.membership_of(user_id) != "join":
            raise MatrixError(403, Codes.FORBIDDEN, f"User {user_id} not in room {room_id}")
        joined: JsonDict = {}
        for member in sorted(room.joined_members()):
            content = room.state[("m.room.member", member)].content
            joined[member] = {
                "display_name": content.get("displayname"),
                "avatar_url": content.get("avatar_url"),
            }
        return joined

    async def timestamp_to_event(
        self, user_id: str, room_id: str, ts: int, direction: str, *, as_admin: bool = False
    ) -> tuple[str, int]:
        room, membership = await self._access(user_id, room_id, as_admin)
        not_found = MatrixError(
            404, Codes.NOT_FOUND, f"Unable to find event from {ts} in direction {direction}"
        )
        found = await self._storage.events.get_event_closest_to_ts(room_id, ts, direction == "f")
        if found is None:
            raise not_found
        ev = await self._storage.events.get_event(found[0])
        if ev is None:
            raise not_found
        if as_admin:
            return found
        try:
            await self._check_visible(user_id, room, membership, ev)
        except MatrixError:
            raise not_found from None
        return found
