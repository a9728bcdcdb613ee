"""Deprecated sync endpoints Synapse still serves: ``GET /events`` (the event stream),
``GET /events/{eventId}``, ``GET /initialSync`` and ``GET /rooms/{roomId}/initialSync``."""

from __future__ import annotations

from typing import Any

from twisted.web.server import Request

from homeserver.api.client.paths import client_paths
from homeserver.api.client.rooms import serialize
from homeserver.api.client.sync import MAX_TIMEOUT_MS
from homeserver.errors import Codes, MatrixError
from homeserver.events.event import Event
from homeserver.handlers.auth import AuthHandler
from homeserver.http.server import JsonResource
from homeserver.http.servlet import parse_boolean, parse_integer, parse_string
from homeserver.requester import Requester
from homeserver.rooms.history import RoomHistory
from homeserver.sync.legacy import (
    EVENTS_PER_ROOM,
    MAX_EVENTS_PER_ROOM,
    LegacySyncHandler,
    RoomSnapshot,
    StreamItem,
)
from storage.events import EventsStore

JsonDict = dict[str, Any]

# Synapse's defaults: a 30 s long-poll, 10 messages per room.
DEFAULT_TIMEOUT_MS = 30_000
DEFAULT_LIMIT = 10


# Keys the v1 API showed at the top level of an event as well as in ``unsigned``.
_V1_COPIED_UNSIGNED = ("age", "redacted_because", "replaces_state", "prev_content")


def format_v1(event: JsonDict) -> JsonDict:
    """An event as the deprecated APIs show it (Synapse's v1 client format): the sender
    also as ``user_id``, some ``unsigned`` keys also at the top; a presence event's
    user also in ``content.user_id``."""
    out = dict(event)
    if "sender" in out:
        out["user_id"] = out["sender"]
    unsigned = out.get("unsigned") or {}
    for key in _V1_COPIED_UNSIGNED:
        if key in unsigned:
            out[key] = unsigned[key]
    if out.get("type") == "m.presence" and "sender" in out:
        out["content"] = {**out.get("content", {}), "user_id": out["sender"]}
    return out


def _item(item: StreamItem, requester: Requester | None = None) -> JsonDict:
    return format_v1(serialize(item, requester) if isinstance(item, Event) else item)


def snapshot_json(snap: RoomSnapshot, requester: Requester) -> JsonDict:
    return {
        "room_id": snap.room_id,
        "membership": snap.membership,
        "messages": {
            "chunk": [_item(ev, requester) for ev in snap.messages],
            "start": snap.start,
            "end": snap.end,
        },
        "state": [_item(ev) for ev in snap.state],
        "visibility": snap.visibility,
        "account_data": snap.account_data,
        "presence": [_item(p) for p in snap.presence],
        "receipts": snap.receipts,
    }


class LegacySyncServlets:
    def __init__(
        self,
        auth: AuthHandler,
        handler: LegacySyncHandler,
        history: RoomHistory,
        events: EventsStore,
    ) -> None:
        self._auth = auth
        self._handler = handler
        self._history = history
        self._events = events

    def register(self, r: JsonResource) -> None:
        r.register_many("GET", client_paths("/events"), self.on_events)
        r.register_many("GET", client_paths("/events/{eventId}"), self.on_event)
        r.register_many("GET", client_paths("/initialSync"), self.on_initial_sync)
        r.register_many("GET", client_paths("/rooms/{roomId}/initialSync"), self.on_room_initial)

    async def on_events(self, request: Request) -> tuple[int, Any]:
        requester = await self._auth.get_user_by_req(request, allow_guest=True)
        room_id = parse_string(request, "room_id")
        if requester.is_guest and room_id is None:
            # As Synapse: guests may only follow one (world-readable) room.
            raise MatrixError(400, Codes.MISSING_PARAM, "Guest users must specify room_id param")
        timeout = parse_integer(
            request, "timeout", default=DEFAULT_TIMEOUT_MS, minimum=0, maximum=MAX_TIMEOUT_MS
        )
        # Room events per room and chunk (the newest kept).
        limit = parse_integer(
            request, "limit", default=EVENTS_PER_ROOM, minimum=0, maximum=MAX_EVENTS_PER_ROOM
        )
        assert timeout is not None and limit is not None
        result = await self._handler.get_events(
            requester.user_id,
            requester.device_id,
            parse_string(request, "from"),
            timeout,
            room_id,
            limit,
        )
        return 200, {
            "chunk": [_item(item, requester) for item in result.chunk],
            "start": result.start,
            "end": result.end,
        }

    async def on_event(self, request: Request, eventId: str) -> tuple[int, Any]:
        requester = await self._auth.get_user_by_req(request)
        ev = await self._events.get_event(eventId)
        if ev is None:
            raise MatrixError(404, Codes.NOT_FOUND, "Event not found.")
        # Through the room history rules: 404 for an event the user may not see.
        try:
            ev = await self._history.get_event(requester.user_id, ev.room_id, eventId)
        except MatrixError as e:
            if e.status == 403:
                raise MatrixError(404, Codes.NOT_FOUND, "Event not found.") from None
            raise
        return 200, serialize(ev, requester)

    async def on_initial_sync(self, request: Request) -> tuple[int, Any]:
        requester = await self._auth.get_user_by_req(request)
        limit = parse_integer(request, "limit", default=DEFAULT_LIMIT, minimum=0)
        assert limit is not None
        result = await self._handler.initial_sync(
            requester.user_id, limit, parse_boolean(request, "archived")
        )
        rooms = []
        for room in result["rooms"]:
            if isinstance(room, RoomSnapshot):
                entry = snapshot_json(room, requester)
                del entry["presence"], entry["receipts"]
            else:
                entry = dict(room)
                if isinstance(entry.get("invite"), Event):
                    entry["invite"] = _item(entry["invite"])
            rooms.append(entry)
        presence = [_item(p) for p in result["presence"]]
        return 200, {**result, "rooms": rooms, "presence": presence}

    async def on_room_initial(self, request: Request, roomId: str) -> tuple[int, Any]:
        requester = await self._auth.get_user_by_req(request, allow_guest=True)
        limit = parse_integer(request, "limit", default=DEFAULT_LIMIT, minimum=0)
        assert limit is not None
        snap = await self._handler.room_initial_sync(requester.user_id, roomId, limit)
        return 200, snapshot_json(snap, requester)
