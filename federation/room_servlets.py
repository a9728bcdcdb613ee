"""Room endpoints of the server-server API: membership handshakes and reading history.

Every handler first authenticates the request (X-Matrix) to learn the origin server,
then applies the room's server ACL (403 ``M_FORBIDDEN``), then, for reads, requires a
user of the origin joined to the room now (403, as Synapse), then history visibility
by the state at each event returned (``VisibilityFilter.filter_for_server``): events
the origin may not see are sent redacted by /backfill and /get_missing_events, and
are not found by /event and /timestamp_to_event.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from twisted.web.server import Request

from federation.acl import check_server_acl
from federation.membership import FederationMembership
from federation.room_events import FederationEventHandler
from homeserver.errors import Codes, MatrixError
from homeserver.events.event import Event, oldest_first
from homeserver.events.visibility import server_of_user
from homeserver.http.server import JsonResource
from homeserver.http.servlet import (
    field,
    parse_integer,
    parse_json_body,
    parse_string,
    parse_strings,
)
from homeserver.rooms.room_cache import LiveRoom, RoomCache
from homeserver.rooms.visibility import VisibilityFilter
from storage.events import EventsStore
from storage.state_groups import StateGroupStore

JsonDict = dict[str, Any]
Authenticator = Callable[[Request], Awaitable[str]]
PREFIX = "/_matrix/federation"
MAX_BACKFILL = 100


class FederationRoomServlets:
    def __init__(
        self,
        server_name: str,
        authenticate: Authenticator,
        rooms: RoomCache,
        events: EventsStore,
        state_groups: StateGroupStore,
        handler: FederationEventHandler,
        membership: FederationMembership,
        visibility: VisibilityFilter,
    ) -> None:
        self._server_name = server_name
        self._authenticate = authenticate
        self._rooms = rooms
        self._events = events
        self._state_groups = state_groups
        self._handler = handler
        self._membership = membership
        self._visibility = visibility

    def register(self, r: JsonResource) -> None:
        r.register("GET", f"{PREFIX}/v1/make_join/{{roomId}}/{{userId}}", self.on_make_join)
        r.register("GET", f"{PREFIX}/v1/make_leave/{{roomId}}/{{userId}}", self.on_make_leave)
        r.register("GET", f"{PREFIX}/v1/make_knock/{{roomId}}/{{userId}}", self.on_make_knock)
        r.register("PUT", f"{PREFIX}/v2/send_join/{{roomId}}/{{eventId}}", self.on_send_join_v2)
        r.register("PUT", f"{PREFIX}/v1/send_join/{{roomId}}/{{eventId}}", self.on_send_join_v1)
        r.register("PUT", f"{PREFIX}/v2/send_leave/{{roomId}}/{{eventId}}", self.on_send_leave_v2)
        r.register("PUT", f"{PREFIX}/v1/send_leave/{{roomId}}/{{eventId}}", self.on_send_leave_v1)
        r.register("PUT", f"{PREFIX}/v1/send_knock/{{roomId}}/{{eventId}}", self.on_send_knock)
        r.register("PUT", f"{PREFIX}/v2/invite/{{roomId}}/{{eventId}}", self.on_invite)
        r.register("PUT", f"{PREFIX}/v1/invite/{{roomId}}/{{eventId}}", self.on_invite_v1)
        r.register("GET", f"{PREFIX}/v1/backfill/{{roomId}}", self.on_backfill)
        r.register("GET", f"{PREFIX}/v1/event/{{eventId}}", self.on_event)
        r.register("GET", f"{PREFIX}/v1/state/{{roomId}}", self.on_state)
        r.register("GET", f"{PREFIX}/v1/state_ids/{{roomId}}", self.on_state_ids)
        r.register("GET", f"{PREFIX}/v1/event_auth/{{roomId}}/{{eventId}}", self.on_event_auth)
        r.register("POST", f"{PREFIX}/v1/get_missing_events/{{roomId}}", self.on_get_missing_events)
        r.register("GET", f"{PREFIX}/v1/timestamp_to_event/{{roomId}}", self.on_timestamp_to_event)

    # Helpers ----------------------------------------------------------------------

    async def _room_for(self, request: Request, room_id: str) -> tuple[str, LiveRoom]:
        origin = await self._authenticate(request)
        return origin, await self._room_of(origin, room_id)

    async def _room_of(self, origin: str, room_id: str) -> LiveRoom:
        room = await self._rooms.get(room_id)
        if room is None:
            raise MatrixError(404, Codes.NOT_FOUND, "Unknown room")
        check_server_acl(origin, room.state_content("m.room.server_acl"))
        return room

    async def _readable_room(self, request: Request, room_id: str) -> tuple[str, LiveRoom]:
        """The origin and the room, for a read: allowed by the ACL, and in the room."""
        origin, room = await self._room_for(request, room_id)
        self._require_in_room(origin, room)
        return origin, room

    def _require_in_room(self, origin: str, room: LiveRoom) -> None:
        if not any(server_of_user(u) == origin for u in room.joined_members()):
            raise MatrixError(403, Codes.FORBIDDEN, "Host not in room.")

    # Membership handshakes -------------------------------------------------------------

    async def _make(
        self, request: Request, room_id: str, user_id: str, membership: str
    ) -> JsonDict:
        origin, _ = await self._room_for(request, room_id)
        versions = parse_strings(request, "ver") or ["1"]
        return await self._membership.make_membership(
            origin, room_id, user_id, membership, versions
        )

    async def on_make_join(self, request: Request, roomId: str, userId: str) -> tuple[int, Any]:
        return 200, await self._make(request, roomId, userId, "join")

    async def on_make_leave(self, request: Request, roomId: str, userId: str) -> tuple[int, Any]:
        return 200, await self._make(request, roomId, userId, "leave")

    async def on_make_knock(self, request: Request, roomId: str, userId: str) -> tuple[int, Any]:
        return 200, await self._make(request, roomId, userId, "knock")

    async def _send(
        self, request: Request, room_id: str, event_id: str, membership: str
    ) -> JsonDict:
        origin, _ = await self._room_for(request, room_id)
        pdu = parse_json_body(request)
        return await self._membership.send_membership(origin, room_id, event_id, pdu, membership)

    async def on_send_join_v2(self, request: Request, roomId: str, eventId: str) -> tuple[int, Any]:
        return 200, await self._send(request, roomId, eventId, "join")

    async def on_send_join_v1(self, request: Request, roomId: str, eventId: str) -> tuple[int, Any]:
        return 200, [200, await self._send(request, roomId, eventId, "join")]

    async def on_send_leave_v2(
        self, request: Request, roomId: str, eventId: str
    ) -> tuple[int, Any]:
        await self._send(request, roomId, eventId, "leave")
        return 200, {}

    async def on_send_leave_v1(
        self, request: Request, roomId: str, eventId: str
    ) -> tuple[int, Any]:
        await self._send(request, roomId, eventId, "leave")
        return 200, [200, {}]

    async def on_send_knock(self, request: Request, roomId: str, eventId: str) -> tuple[int, Any]:
        origin, room = await self._room_for(request, roomId)
        pdu = parse_json_body(request)
        await self._membership.send_membership(origin, roomId, eventId, pdu, "knock")
        stripped = [
            {"type": ev.type, "state_key": ev.state_key, "content": ev.content, "sender": ev.sender}
            for t in (
                "m.room.create",
                "m.room.join_rules",
                "m.room.name",
                "m.room.avatar",
                "m.room.canonical_alias",
                "m.room.encryption",
                "m.room.topic",
            )
            if (ev := room.state.get((t, ""))) is not None
        ]
        return 200, {"knock_room_state": stripped}

    async def on_invite(self, request: Request, roomId: str, eventId: str) -> tuple[int, Any]:
        origin = await self._authenticate(request)
        room = await self._rooms.get(roomId)
        if room is not None:  # a room we are not in has no ACL we know of (as Synapse)
            check_server_acl(origin, room.state_content("m.room.server_acl"))
        body = parse_json_body(request)
        return 200, await self._membership.on_invite(origin, roomId, eventId, body)

    async def on_invite_v1(self, request: Request, roomId: str, eventId: str) -> tuple[int, Any]:
        """The v1 invite: the body is the event, with the stripped state in its
        ``unsigned``, and no room version: version 1 is assumed, as Synapse does (the
        event format of v1 and v2 is the same; the invite is not state-resolved)."""
        origin = await self._authenticate(request)
        room = await self._rooms.get(roomId)
        if room is not None:
            check_server_acl(origin, room.state_content("m.room.server_acl"))
        pdu = parse_json_body(request)
        unsigned = pdu.get("unsigned")
        stripped = unsigned.get("invite_room_state") if isinstance(unsigned, dict) else None
        body = {"event": pdu, "room_version": "1", "invite_room_state": stripped or []}
        return 200, [200, await self._membership.on_invite(origin, roomId, eventId, body)]

    # Reading ------------------------------------------------------------------------

    async def on_event(self, request: Request, eventId: str) -> tuple[int, Any]:
        origin = await self._authenticate(request)
        ev = await self._events.get_event(eventId)
        if ev is None:
            raise MatrixError(404, Codes.NOT_FOUND, "Event not found")
        room = await self._rooms.get(ev.room_id)
        if room is None:
            raise MatrixError(404, Codes.NOT_FOUND, "Event not found")
        check_server_acl(origin, room.state_content("m.room.server_acl"))
        self._require_in_room(origin, room)
        pdus = await self._visibility.filter_for_server(origin, [ev], redact=False)
        if not pdus:
            raise MatrixError(404, Codes.NOT_FOUND, "Event not found")
        return 200, {"origin": self._server_name, "origin_server_ts": _now_ms(), "pdus": pdus}

    async def _state_at(self, request: Request, room_id: str) -> tuple[list[Event], list[Event]]:
        origin = await self._authenticate(request)
        # The query first (400 M_MISSING_PARAM whatever the room), as Synapse.
        event_id = parse_string(request, "event_id", required=True)
        assert event_id is not None
        room = await self._room_of(origin, room_id)
        self._require_in_room(origin, room)
        ev = await self._events.get_event(event_id)
        if ev is None or ev.room_id != room_id:
            raise MatrixError(404, Codes.NOT_FOUND, "Event not found")
        state_ids = await self._state_groups.get_state_ids_at_event(event_id, before=True)
        if state_ids is None:
            raise MatrixError(404, Codes.NOT_FOUND, "No state for that event")
        state = await self._events.get_events(state_ids.values())
        chain_ids = await self._events.get_auth_chain_ids(state_ids.values())
        chain = await self._events.get_events(chain_ids)
        return oldest_first(state.values()), oldest_first(chain.values())

    async def on_state(self, request: Request, roomId: str) -> tuple[int, Any]:
        state, chain = await self._state_at(request, roomId)
        return 200, {"pdus": [e.pdu for e in state], "auth_chain": [e.pdu for e in chain]}

    async def on_state_ids(self, request: Request, roomId: str) -> tuple[int, Any]:
        state, chain = await self._state_at(request, roomId)
        return 200, {
            "pdu_ids": [e.event_id for e in state],
            "auth_chain_ids": [e.event_id for e in chain],
        }

    async def on_event_auth(self, request: Request, roomId: str, eventId: str) -> tuple[int, Any]:
        await self._readable_room(request, roomId)
        ev = await self._events.get_event(eventId)
        if ev is None or ev.room_id != roomId:
            raise MatrixError(404, Codes.NOT_FOUND, "Event not found")
        chain = await self._events.get_events(await self._events.get_auth_chain_ids([eventId]))
        return 200, {"auth_chain": [e.pdu for e in oldest_first(chain.values())]}

    async def on_backfill(self, request: Request, roomId: str) -> tuple[int, Any]:
        origin, _ = await self._readable_room(request, roomId)
        starts = parse_strings(request, "v")
        limit = parse_integer(request, "limit", default=10, minimum=0, maximum=MAX_BACKFILL)
        assert limit is not None
        found = {
            eid: ev
            for eid, ev in (await self._events.get_events(starts)).items()
            if ev.room_id == roomId  # never a walk from another room's event
        }
        if not found:
            return 200, {"origin": self._server_name, "origin_server_ts": _now_ms(), "pdus": []}
        # Walk prev_events breadth first from the given events, newest depth first.
        seen: dict[str, Event] = dict(found)
        frontier = list(found.values())
        while frontier and len(seen) < limit:
            prev_ids = {p for ev in frontier for p in ev.prev_event_ids if p not in seen}
            prevs = await self._events.get_events(prev_ids)
            frontier = [p for p in prevs.values() if p.room_id == roomId]
            for ev in frontier:
                seen[ev.event_id] = ev
        events = sorted(seen.values(), key=lambda e: -e.depth)[:limit]
        pdus = await self._visibility.filter_for_server(origin, events, redact=True)
        return 200, {"origin": self._server_name, "origin_server_ts": _now_ms(), "pdus": pdus}

    async def on_get_missing_events(self, request: Request, roomId: str) -> tuple[int, Any]:
        origin, _ = await self._readable_room(request, roomId)
        body = parse_json_body(request)
        earliest = {
            e for e in field(body, "earliest_events", list, default=[]) if isinstance(e, str)
        }
        latest = [e for e in field(body, "latest_events", list, default=[]) if isinstance(e, str)]
        limit = min(field(body, "limit", int, default=10), 20)
        min_depth = field(body, "min_depth", int, default=0)
        # Events reachable backwards from latest, stopping at earliest.
        result: list[Event] = []
        seen = set(latest) | earliest
        start = await self._events.get_events(latest)
        frontier = [
            p
            for ev in start.values()
            if ev.room_id == roomId
            for p in ev.prev_event_ids
            if p not in seen
        ]
        while frontier and len(result) < limit:
            seen.update(frontier)
            evs = await self._events.get_events(frontier)
            next_frontier: list[str] = []
            for ev in sorted(evs.values(), key=lambda e: -e.depth):
                if ev.room_id != roomId or ev.depth < min_depth or len(result) >= limit:
                    continue
                result.append(ev)
                next_frontier.extend(p for p in ev.prev_event_ids if p not in seen)
            frontier = next_frontier
        result.sort(key=lambda e: e.depth)
        return 200, {
            "events": await self._visibility.filter_for_server(origin, result, redact=True)
        }

    async def on_timestamp_to_event(self, request: Request, roomId: str) -> tuple[int, Any]:
        ts = parse_integer(request, "ts", required=True)
        direction = parse_string(request, "dir", required=True, allowed=("f", "b"))
        assert ts is not None
        origin, _ = await self._readable_room(request, roomId)
        found = await self._events.get_event_closest_to_ts(roomId, ts, direction == "f")
        ev = await self._events.get_event(found[0]) if found is not None else None
        if (
            found is None
            or ev is None
            or not await self._visibility.filter_for_server(origin, [ev], redact=False)
        ):
            raise MatrixError(404, Codes.NOT_FOUND, "No event found")
        return 200, {"event_id": found[0], "origin_server_ts": found[1]}


def _now_ms() -> int:
    import time

    return int(time.time() * 1000)
