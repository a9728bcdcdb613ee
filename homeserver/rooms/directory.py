"""Alias resolution, room visibility in the directory, and the public room list."""

from __future__ import annotations

import re
from typing import Any

from homeserver.appservice.handler import AppServiceHandler
from homeserver.errors import Codes, MatrixError
from homeserver.events.auth_rules import get_user_power_level
from homeserver.handlers.auth import Requester
from homeserver.rooms.room_cache import LiveRoom, RoomCache, pdu_with_id
from homeserver.untrusted import parse_int64
from storage.storage import Storage

JsonDict = dict[str, Any]
_SINCE_RE = re.compile(r"^([np])(\d+)$")


class RoomDirectory:
    def __init__(
        self,
        storage: Storage,
        rooms: RoomCache,
        server_name: str,
        appservices: AppServiceHandler | None = None,
    ) -> None:
        self._storage = storage
        self._rooms = rooms
        self._server_name = server_name
        self._appservices = appservices

    async def resolve_alias(self, alias: str) -> JsonDict:
        if not alias.startswith("#") or ":" not in alias:
            raise MatrixError(400, Codes.INVALID_PARAM, "Invalid room alias")
        mapping = await self._storage.events.get_alias(alias)
        if mapping is None and self._appservices is not None:
            mapping = await self._appservices.query_alias(alias)
        if mapping is None:
            raise MatrixError(404, Codes.NOT_FOUND, f"Room alias {alias} not found")
        return {"room_id": mapping.room_id, "servers": mapping.servers or [self._server_name]}

    async def room_aliases(self, user_id: str, room_id: str) -> list[str]:
        room = await self._rooms.get(room_id)
        if room is None:
            raise MatrixError(404, Codes.NOT_FOUND, "Unknown room")
        hv = room.state_content("m.room.history_visibility").get("history_visibility")
        if room.membership_of(user_id) != "join" and hv != "world_readable":
            raise MatrixError(403, Codes.FORBIDDEN, "You are not in this room")
        return await self._storage.events.get_aliases_for_room(room_id)

    async def get_visibility(self, room_id: str) -> str:
        public = await self._storage.events.is_room_public(room_id)
        if public is None:
            raise MatrixError(404, Codes.NOT_FOUND, "Unknown room")
        return "public" if public else "private"

    async def set_visibility(self, requester: Requester, room_id: str, visibility: str) -> None:
        room = await self._rooms.get(room_id)
        if room is None:
            raise MatrixError(404, Codes.NOT_FOUND, "Unknown room")
        if not requester.is_admin and not _may_edit_directory(room, requester.user_id):
            raise MatrixError(
                403, Codes.FORBIDDEN, "You don't have permission to change the room's visibility"
            )
        await self._storage.events.set_room_public(room_id, visibility == "public")

    async def public_rooms(
        self,
        limit: int | None,
        since: str | None,
        search_term: str | None,
        include_all: bool,
        network: tuple[str, str] | None = None,
    ) -> JsonDict:
        """The published rooms: the server's own list, one application service network's
        list (``network``: service id and network id) or, with ``include_all``, both."""
        offset = 0
        if since:
            m = _SINCE_RE.match(since)
            if m is None:
                raise MatrixError(400, Codes.INVALID_PARAM, "Invalid since token")
            offset = parse_int64(m.group(2), "since")
        entries = []
        if network is not None:
            room_ids = await self._storage.appservice.get_published_room_ids(*network)
        else:
            room_ids = await self._storage.events.get_public_room_ids()
            if include_all:
                extra = await self._storage.appservice.get_published_room_ids(None, None)
                room_ids = list(dict.fromkeys(room_ids + extra))
        for room_id in room_ids:
            room = await self._rooms.get(room_id)
            if room is None:
                continue
            entry = room_summary_entry(room)
            if search_term:
                term = search_term.lower()
                haystack = " ".join(
                    str(entry.get(k, "")) for k in ("name", "topic", "canonical_alias")
                ).lower()
                if term not in haystack:
                    continue
            entries.append(entry)
        entries.sort(key=lambda e: (-e["num_joined_members"], e["room_id"]))
        total = len(entries)
        page = entries[offset:] if limit is None else entries[offset : offset + limit]
        result: JsonDict = {"chunk": page, "total_room_count_estimate": total}
        if limit is not None and offset + limit < total:
            result["next_batch"] = f"n{offset + limit}"
        if offset > 0:
            result["prev_batch"] = f"p{max(0, offset - (limit or offset))}"
        return result


def _may_edit_directory(room: LiveRoom, user_id: str) -> bool:
    if room.membership_of(user_id) != "join":
        return False
    create = room.create_event
    level = get_user_power_level(
        user_id,
        room.auth_state(),
        room.room_version,
        create_event=pdu_with_id(create) if create else None,
    )
    pl = room.state_content("m.room.power_levels")
    events = pl.get("events") if isinstance(pl.get("events"), dict) else {}
    assert isinstance(events, dict)
    needed = events.get("m.room.canonical_alias", pl.get("state_default", 50) if pl else 0)
    return isinstance(needed, int) and level >= needed


def room_summary_entry(room: LiveRoom) -> JsonDict:
    entry: JsonDict = {
        "room_id": room.room_id,
        "num_joined_members": len(room.joined_members()),
        "world_readable": room.state_content("m.room.history_visibility").get("history_visibility")
        == "world_readable",
        "guest_can_join": room.state_content("m.room.guest_access").get("guest_access")
        == "can_join",
        "join_rule": room.state_content("m.room.join_rules").get("join_rule", "invite"),
    }
    for key, (etype, field) in {
        "name": ("m.room.name", "name"),
        "topic": ("m.room.topic", "topic"),
        "canonical_alias": ("m.room.canonical_alias", "alias"),
        "avatar_url": ("m.room.avatar", "url"),
    }.items():
        value = room.state_content(etype).get(field)
        if isinstance(value, str) and value:
            entry[key] = value
    room_type = room.state_content("m.room.create").get("type")
    if isinstance(room_type, str):
        entry["room_type"] = room_type
    return entry
