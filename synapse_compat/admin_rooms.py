"""Synapse's room admin API, ``/_synapse/admin/v1/rooms...``, for server admins only.

``DELETE /_synapse/admin/v1/rooms/{roomId}``: a server admin shuts a room down, as
Synapse's admin API documents it (``new_room_user_id``, ``room_name``, ``message``,
``block``, and ``purge``, true by default: the room is then deleted from the database,
refused while local users are still joined unless ``force_purge``).

The rest (``AdminRoomApiServlets``): list and inspect rooms, read any room's history as
the client ``/messages`` and ``/context`` do but with no membership needed, forward
extremities, blocking, ``make_room_admin`` and joining a local user to a room."""

from __future__ import annotations

from typing import Any

from twisted.web.server import Request

from homeserver.api.client.rooms import parse_event_filter, serialize
from homeserver.errors import Codes, MatrixError
from homeserver.events.format import is_valid_room_id
from homeserver.handlers.auth import AuthHandler
from homeserver.http.server import JsonResource
from homeserver.http.servlet import (
    field,
    parse_boolean,
    parse_integer,
    parse_json_body,
    parse_string,
    parse_strings,
)
from homeserver.rooms.admin import ROOM_ORDERS, RoomAdmin
from homeserver.rooms.history import RoomHistory
from homeserver.rooms.purge import RoomPurger
from homeserver.rooms.shutdown import DEFAULT_MESSAGE, DEFAULT_ROOM_NAME, RoomShutdown
from homeserver.rooms.summary import RoomSummaryHandler
from synapse_compat.admin_common import require_admin

JsonDict = dict[str, Any]


class AdminRoomServlets:
    PATH = "/_synapse/admin/v1/rooms/{roomId}"

    def __init__(self, auth: AuthHandler, shutdown: RoomShutdown, purger: RoomPurger) -> None:
        self._auth = auth
        self._shutdown = shutdown
        self._purger = purger

    def register(self, resource: JsonResource) -> None:
        resource.register("DELETE", self.PATH, self.on_delete)

    async def on_delete(self, request: Request, roomId: str) -> tuple[int, Any]:
        requester = await self._auth.get_user_by_req(request)
        if not requester.is_admin:
            raise MatrixError(403, Codes.FORBIDDEN, "You are not a server admin")
        if not is_valid_room_id(roomId):
            raise MatrixError(400, Codes.INVALID_PARAM, f"{roomId} is not a legal room ID")
        body = parse_json_body(request, allow_empty=True)
        purge = field(body, "purge", bool, default=True)
        force_purge = field(body, "force_purge", bool, default=False)
        result = await self._shutdown.shutdown(
            requester,
            roomId,
            new_room_user_id=field(body, "new_room_user_id", str),
            room_name=field(body, "room_name", str, default=DEFAULT_ROOM_NAME),
            message=field(body, "message", str, default=DEFAULT_MESSAGE),
            block=field(body, "block", bool, default=False),
        )
        if purge:
            await self._purger.purge_room(roomId, force=force_purge)
        return 200, result


def parse_optional_boolean(request: Request, name: str) -> bool | None:
    if not parse_strings(request, name):
        return None
    return parse_boolean(request, name)


def parse_direction(request: Request, default: str) -> str:
    direction = parse_string(request, "dir", default=default, allowed=("f", "b"))
    assert direction is not None
    return direction


def paging_links(start: int, limit: int, total: int) -> JsonDict:
    """``next_batch`` / ``prev_batch`` of the room list, as Synapse computes them."""
    out: JsonDict = {}
    if start + limit < total:
        out["next_batch"] = start + limit
    if start > 0:
        out["prev_batch"] = start - limit if start > limit else 0
    return out


class AdminRoomApiServlets:
    """Reading and managing any room: ``/_synapse/admin/v1/rooms...`` and ``/join``."""

    ROOM = "/_synapse/admin/v1/rooms/{roomId}"

    def __init__(self, auth: AuthHandler, admin: RoomAdmin, history: RoomHistory) -> None:
        self._auth = auth
        self._admin = admin
        self._history = history

    def register(self, r: JsonResource) -> None:
        r.register("GET", "/_synapse/admin/v1/rooms", self.on_list)
        r.register("GET", self.ROOM, self.on_get)
        r.register("GET", self.ROOM + "/members", self.on_members)
        r.register("GET", self.ROOM + "/state", self.on_state)
        r.register("GET", self.ROOM + "/messages", self.on_messages)
        r.register("GET", self.ROOM + "/context/{eventId}", self.on_context)
        r.register("GET", self.ROOM + "/timestamp_to_event", self.on_timestamp)
        r.register("GET", self.ROOM + "/forward_extremities", self.on_get_extremities)
        r.register("DELETE", self.ROOM + "/forward_extremities", self.on_delete_extremities)
        r.register("POST", self.ROOM + "/make_room_admin", self.on_make_room_admin)
        r.register("GET", self.ROOM + "/block", self.on_get_block)
        r.register("PUT", self.ROOM + "/block", self.on_put_block)
        r.register("POST", "/_synapse/admin/v1/join/{roomIdOrAlias}", self.on_join)

    async def on_list(self, request: Request) -> tuple[int, Any]:
        await require_admin(self._auth, request)
        start = parse_integer(request, "from", default=0, minimum=0)
        limit = parse_integer(request, "limit", default=100, minimum=0)
        order_by = parse_string(request, "order_by", default="name", allowed=tuple(ROOM_ORDERS))
        search_term = parse_string(request, "search_term")
        if search_term == "":
            raise MatrixError(400, Codes.INVALID_PARAM, "search_term cannot be an empty string")
        assert start is not None and limit is not None and order_by is not None
        rooms, total = await self._admin.list_rooms(
            start,
            limit,
            order_by,
            parse_direction(request, "f") == "b",
            search_term,
            parse_optional_boolean(request, "public_rooms"),
            parse_optional_boolean(request, "empty_rooms"),
        )
        body = {"offset": start, "rooms": rooms, "total_rooms": total}
        return 200, {**body, **paging_links(start, limit, total)}

    async def on_get(self, request: Request, roomId: str) -> tuple[int, Any]:
        await require_admin(self._auth, request)
        return 200, await self._admin.room_details(roomId)

    async def on_members(self, request: Request, roomId: str) -> tuple[int, Any]:
        await require_admin(self._auth, request)
        members = await self._admin.members(roomId)
        return 200, {"members": members, "total": len(members)}

    async def on_state(self, request: Request, roomId: str) -> tuple[int, Any]:
        await require_admin(self._auth, request)
        events = await self._admin.state(roomId, parse_string(request, "type"))
        return 200, {"state": [serialize(ev) for ev in events]}

    async def on_messages(self, request: Request, roomId: str) -> tuple[int, Any]:
        requester = await require_admin(self._auth, request)
        direction = parse_direction(request, "b")
        limit = parse_integer(request, "limit", default=10, minimum=0)
        assert limit is not None
        event_filter = parse_event_filter(request)
        if event_filter is not None and event_filter.limit is not None:
            limit = min(limit, event_filter.limit)
        chunk, start, end, lazy_state = await self._history.messages(
            requester.user_id,
            roomId,
            parse_string(request, "from"),
            parse_string(request, "to"),
            direction,
            limit,
            event_filter,
            as_admin=True,
        )
        result: JsonDict = {"chunk": [serialize(ev) for ev in chunk], "start": start}
        if end is not None:
            result["end"] = end
        if lazy_state:
            result["state"] = [serialize(ev) for ev in lazy_state]
        return 200, result

    async def on_context(self, request: Request, roomId: str, eventId: str) -> tuple[int, Any]:
        requester = await require_admin(self._auth, request)
        limit = parse_integer(request, "limit", default=10, minimum=0, maximum=100)
        assert limit is not None
        ctx = await self._history.context(
            requester.user_id, roomId, eventId, limit, parse_event_filter(request), as_admin=True
        )
        return 200, {
            "event": serialize(ctx["event"]),
            "events_before": [serialize(ev) for ev in ctx["events_before"]],
            "events_after": [serialize(ev) for ev in ctx["events_after"]],
            "state": [serialize(ev) for ev in ctx["state"]],
            "start": ctx["start"],
            "end": ctx["end"],
        }

    async def on_timestamp(self, request: Request, roomId: str) -> tuple[int, Any]:
        requester = await require_admin(self._auth, request)
        ts = parse_integer(request, "ts", required=True)
        assert ts is not None
        event_id, origin_ts = await self._history.timestamp_to_event(
            requester.user_id, roomId, ts, parse_direction(request, "f"), as_admin=True
        )
        return 200, {"event_id": event_id, "origin_server_ts": origin_ts}

    async def on_get_extremities(self, request: Request, roomId: str) -> tuple[int, Any]:
        await require_admin(self._auth, request)
        extremities = await self._admin.forward_extremities(roomId)
        results = [
            {
                "event_id": e.event_id,
                "state_group": e.state_group,
                "depth": e.depth,
                "received_ts": e.received_ts,
            }
            for e in extremities
        ]
        return 200, {"count": len(results), "results": results}

    async def on_delete_extremities(self, request: Request, roomId: str) -> tuple[int, Any]:
        await require_admin(self._auth, request)
        return 200, {"deleted": await self._admin.delete_forward_extremities(roomId)}

    async def on_make_room_admin(self, request: Request, roomId: str) -> tuple[int, Any]:
        requester = await require_admin(self._auth, request)
        body = parse_json_body(request, allow_empty=True)
        user_id = field(body, "user_id", str)
        await self._admin.make_room_admin(requester, roomId, user_id)
        return 200, {}

    async def on_get_block(self, request: Request, roomId: str) -> tuple[int, Any]:
        await require_admin(self._auth, request)
        _check_room_id(roomId)
        blocked_by = await self._admin.blocked_by(roomId)
        if blocked_by is None:
            return 200, {"block": False}
        return 200, {"block": True, "user_id": blocked_by}

    async def on_put_block(self, request: Request, roomId: str) -> tuple[int, Any]:
        requester = await require_admin(self._auth, request)
        body = parse_json_body(request)
        _check_room_id(roomId)
        if "block" not in body:
            raise MatrixError(400, Codes.MISSING_PARAM, "Missing params: ['block']")
        block = body["block"]
        if not isinstance(block, bool):
            raise MatrixError(400, Codes.BAD_JSON, "Param 'block' must be a boolean.")
        await self._admin.set_blocked(requester, roomId, block)
        return 200, {"block": block}

    async def on_join(self, request: Request, roomIdOrAlias: str) -> tuple[int, Any]:
        requester = await require_admin(self._auth, request)
        body = parse_json_body(request)
        user_id = field(body, "user_id", str, required=True)
        assert user_id is not None
        room_id = await self._admin.join_user(requester, roomIdOrAlias, user_id)
        return 200, {"room_id": room_id}


def _check_room_id(room_id: str) -> None:
    if not is_valid_room_id(room_id):
        raise MatrixError(400, Codes.INVALID_PARAM, f"{room_id} is not a legal room ID")


class AdminRoomHierarchyServlet:
    """``GET /_synapse/admin/v1/rooms/{roomId}/hierarchy``: a space's tree as the client
    ``/hierarchy`` pages it, but of every room we hold, whatever the admin may see, and
    no remote room (as Synapse's admin view)."""

    def __init__(self, auth: AuthHandler, summaries: RoomSummaryHandler) -> None:
        self._auth = auth
        self._summaries = summaries

    def register(self, r: JsonResource) -> None:
        r.register("GET", "/_synapse/admin/v1/rooms/{roomId}/hierarchy", self.on_hierarchy)

    async def on_hierarchy(self, request: Request, roomId: str) -> tuple[int, Any]:
        requester = await require_admin(self._auth, request)
        if not is_valid_room_id(roomId):
            raise MatrixError(400, Codes.INVALID_PARAM, f"{roomId} is not a legal room ID")
        return 200, await self._summaries.hierarchy(
            requester.user_id,
            roomId,
            suggested_only=parse_boolean(request, "suggested_only"),
            max_depth=parse_integer(request, "max_depth", minimum=0),
            limit=parse_integer(request, "limit", minimum=1),
            from_token=parse_string(request, "from"),
            admin=True,
        )
