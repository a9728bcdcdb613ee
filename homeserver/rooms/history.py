"""Reading a room's history: /messages, /context, /event, /members, timestamp lookup.

Every path that returns events runs them through ``VisibilityFilter`` first, and a
user who has left only sees history up to the point they left.
"""

from __future__ import annotations

import re
from typing import Any

from homeserver.errors import Codes, MatrixError
from homeserver.events.event import Event
from homeserver.events.filtering import EventFilter
from homeserver.rooms.room_cache import LiveRoom, RoomCache
from homeserver.rooms.visibility import VisibilityFilter
from storage.storage import Storage

JsonDict = dict[str, Any]

_TOPO_RE = re.compile(r"^t(-?\d+)-(\d+)$")
_STREAM_RE = re.compile(r"^s(\d+)(?:_\d+)*$")

MAX_LIMIT = 1000


class RoomHistory:
    def __init__(self, storage: Storage, rooms: RoomCache, visibility: VisibilityFilter) -> None:
        self._storage = storage
        self._rooms = rooms
        self._visibility = visibility

    async def _room_and_membership(self, user_id: str, room_id: str) -> tuple[LiveRoom, str | None]:
        room = await self._rooms.get(room_id)
        if room is None:
            raise MatrixError(403, Codes.FORBIDDEN, f"User {user_id} not in room {room_id}")
        membership = room.membership_of(user_id)
        hv = room.state_content("m.room.history_visibility").get("history_visibility")
        if membership not in ("join", "leave", "ban", "invite") and hv != "world_readable":
            raise MatrixError(403, Codes.FORBIDDEN, f"User {user_id} not in room {room_id}")
        return room, membership

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
        m = _TOPO_RE.match(token)
        if m:
            return int(m.group(1)), int(m.group(2))
        m = _STREAM_RE.match(token)
        if m:
            stream = int(m.group(1))
            topo = await self._storage.events.get_max_topological_before_stream(room_id, stream)
            # Exclusive bound: everything at or before `stream` is "before" this token.
            return topo, stream + 1
        raise MatrixError(400, Codes.INVALID_PARAM, f"Invalid pagination token {token!r}")

    async def messages(
        self,
        user_id: str,
        room_id: str,
        from_token: str | None,
        to_token: str | None,
        direction: str,
        limit: int,
        event_filter: EventFilter | None,
    ) -> tuple[list[Event], str, str | None, list[Event]]:
        """(chunk, start, end, state for lazy-loaded members)."""
        room, membership = await self._room_and_membership(user_id, room_id)
        backwards = direction == "b"
        limit = max(0, min(limit, MAX_LIMIT))
        if from_token is None:
            if backwards:
                pos = (room.max_depth + 1, self._storage.events.stream.current_position + 1)
                from_token = f"s{self._storage.events.stream.current_position}"
            else:
                pos = (0, 0)
                from_token = "t0-0"
        else:
            pos = await self.parse_token(room_id, from_token)
        to_pos = await self.parse_token(room_id, to_token) if to_token else None
        bound = await self._upper_bound(user_id, room, membership)
        if bound is not None:
            if backwards and (pos[0], pos[1]) > (bound[0], bound[1] + 1):
                pos = (bound[0], bound[1] + 1)
            if not backwards:
                to_pos = bound if to_pos is None or to_pos > bound else to_pos
        fetch = limit * 2 + 10 if event_filter else limit
        events = await self._storage.events.paginate_room(room_id, pos, to_pos, backwards, fetch)
        if event_filter is not None:
            events = event_filter.filter(events, room_id)
        events = events[:limit]
        visible = await self._visibility.filter_for_user(
            user_id, events, current_membership=membership
        )
        end = None
        if events:
            last = events[-1]
            end = f"t{last.depth}-{last.stream_ordering}"
        lazy_state: list[Event] = []
        if event_filter is not None and event_filter.lazy_load_members:
            senders = {ev.sender for ev in visible}
            lazy_state = [
                room.state[("m.room.member", s)]
                for s in sorted(senders)
                if ("m.room.member", s) in room.state
            ]
        return visible, from_token, end, lazy_state

    async def get_event(self, user_id: str, room_id: str, event_id: str) -> Event:
        room, membership = await self._room_and_membership(user_id, room_id)
        ev = await self._storage.events.get_event(event_id)
        if ev is None or ev.room_id != room_id or ev.rejected_reason is not None:
            raise MatrixError(404, Codes.NOT_FOUND, "Event not found.")
        if not await self._visibility.filter_for_user(user_id, [ev], current_membership=membership):
            raise MatrixError(404, Codes.NOT_FOUND, "Event not found.")
        return ev

    async def context(
        self,
        user_id: str,
        room_id: str,
        event_id: str,
        limit: int,
        event_filter: EventFilter | None,
    ) -> JsonDict:
        ev = await self.get_event(user_id, room_id, event_id)
        room, membership = await self._room_and_membership(user_id, room_id)
        before_n = limit // 2
        after_n = limit - before_n
        pos = (ev.depth, ev.stream_ordering)
        before = await self._storage.events.paginate_room(room_id, pos, None, True, before_n)
        bound = await self._upper_bound(user_id, room, membership)
        after = await self._storage.events.paginate_room(room_id, pos, bound, False, after_n)
        if event_filter is not None:
            before = event_filter.filter(before, room_id)
            after = event_filter.filter(after, room_id)
        before = await self._visibility.filter_for_user(
            user_id, before, current_membership=membership
        )
        after = await self._visibility.filter_for_user(
            user_id, after, current_membership=membership
        )
        state_ids = await self._storage.events.get_state_ids_at_event(event_id) or {}
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
            "start": f"t{start_ev.depth}-{start_ev.stream_ordering}",
            "end": f"t{end_ev.depth}-{end_ev.stream_ordering}",
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
                topo, stream = await self.parse_token(room_id, at)
                stream = stream - 1 if _STREAM_RE.match(at) is None else stream - 1
            else:
                own = room.state[("m.room.member", user_id)]
                stream = own.stream_ordering
            ids = await self._storage.events.get_state_ids_at_stream(room_id, stream)
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
        self, user_id: str, room_id: str, ts: int, direction: str
    ) -> tuple[str, int]:
        await self._room_and_membership(user_id, room_id)
        found = await self._storage.events.get_event_closest_to_ts(room_id, ts, direction == "f")
        if found is None:
            raise MatrixError(
                404, Codes.NOT_FOUND, f"Unable to find event from {ts} in direction {direction}"
            )
        ev = await self._storage.events.get_event(found[0])
        room, membership = await self._room_and_membership(user_id, room_id)
        if ev is None or not await self._visibility.filter_for_user(
            user_id, [ev], current_membership=membership
        ):
            raise MatrixError(
                404, Codes.NOT_FOUND, f"Unable to find event from {ts} in direction {direction}"
            )
        return found
