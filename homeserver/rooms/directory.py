"""Alias resolution, room visibility in the directory, and the public room list.

Aliases and room lists of other servers are asked of them (``remote_aliases``,
``remote_rooms``, set when federation is built); nothing of theirs is stored here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Protocol

from homeserver.appservice.handler import parse_third_party_instance_id
from homeserver.errors import Codes, MatrixError
from homeserver.events.auth_rules import get_user_power_level
from homeserver.events.format import is_valid_server_name
from homeserver.requester import Requester
from homeserver.rooms.room_cache import LiveRoom, RoomCache, pdu_with_id
from homeserver.untrusted import parse_int64
from storage.aliases import RoomAlias
from storage.storage import Storage

JsonDict = dict[str, Any]
_SINCE_RE = re.compile(r"^([np])(\d+)$")


@dataclass(frozen=True, slots=True)
class PublicRoomsQuery:
    """One page of a public room list, as ``/publicRooms`` asks for it."""

    limit: int | None = None
    since: str | None = None
    search_term: str | None = None
    # Room types to keep (None in the list: rooms without a type); None keeps all.
    room_types: tuple[str | None, ...] | None = None
    include_all_networks: bool = False
    third_party_instance_id: str | None = None

    @property
    def has_filter(self) -> bool:
        return bool(self.search_term) or self.room_types is not None


def entry_matches(entry: JsonDict, query: PublicRoomsQuery) -> bool:
    """Whether a public room list entry passes the query's ``filter``."""
    if query.room_types is not None and entry.get("room_type") not in query.room_types:
        return False
    if query.search_term:
        haystack = " ".join(
            str(entry.get(k, "")) for k in ("name", "topic", "canonical_alias")
        ).lower()
        if query.search_term.lower() not in haystack:
            return False
    return True


def paginate(entries: list[JsonDict], limit: int | None, since: str | None) -> JsonDict:
    """A page of sorted entries, with ``n<offset>``/``p<offset>`` batch tokens."""
    offset = 0
    if since:
        m = _SINCE_RE.match(since)
        if m is None:
            raise MatrixError(400, Codes.INVALID_PARAM, "Invalid since token")
        offset = parse_int64(m.group(2), "since")
    total = len(entries)
    page = entries[offset:] if limit is None else entries[offset : offset + limit]
    result: JsonDict = {"chunk": page, "total_room_count_estimate": total}
    if limit is not None and offset + limit < total:
        result["next_batch"] = f"n{offset + limit}"
    if offset > 0:
        result["prev_batch"] = f"p{max(0, offset - (limit or offset))}"
    return result


class RemoteAliases(Protocol):
    async def query_alias(self, alias: str) -> tuple[str, list[str]]:
        """The room id and resident servers of another server's alias."""
        ...


class RemoteRoomLists(Protocol):
    async def public_rooms(self, server: str, query: PublicRoomsQuery) -> JsonDict:
        """A page of another server's public room list, checked."""
        ...


class AliasQueries(Protocol):
    """Unknown local aliases asked of application services (``AppServiceHandler``)."""

    async def query_alias(self, alias: str) -> RoomAlias | None: ...


class RoomDirectory:
    def __init__(
        self,
        storage: Storage,
        rooms: RoomCache,
        server_name: str,
        appservices: AliasQueries | None = None,
    ) -> None:
        self._storage = storage
        self._rooms = rooms
        self._server_name = server_name
        self._appservices = appservices
        self.remote_aliases: RemoteAliases | None = None
        self.remote_rooms: RemoteRoomLists | None = None

    async def resolve_alias(self, alias: str) -> JsonDict:
        if not alias.startswith("#") or ":" not in alias:
            raise MatrixError(400, Codes.INVALID_PARAM, "Invalid room alias")
        if alias.split(":", 1)[1] != self._server_name and self.remote_aliases is not None:
            room_id, servers = await self.remote_aliases.query_alias(alias)
            return {"room_id": room_id, "servers": servers}
        mapping = await self._storage.aliases.get(alias)
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
        return await self._storage.aliases.get_for_room(room_id)

    async def get_visibility(self, room_id: str) -> str:
        public = await self._storage.room_directory.is_public(room_id)
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
        await self._storage.room_directory.set_public(room_id, visibility == "public")

    async def public_rooms(self, query: PublicRoomsQuery) -> JsonDict:
        """Our published rooms: the server's own list, one application service
        network's list (``third_party_instance_id``) or, with ``include_all_networks``,
        both."""
        network = _network(query.include_all_networks, query.third_party_instance_id)
        if network is not None:
            room_ids = await self._storage.appservice.get_published_room_ids(*network)
        else:
            room_ids = await self._storage.room_directory.get_public_room_ids()
            if query.include_all_networks:
                extra = await self._storage.appservice.get_published_room_ids(None, None)
                room_ids = list(dict.fromkeys(room_ids + extra))
        entries = []
        for room_id in room_ids:
            room = await self._rooms.get(room_id)
            if room is None:
                continue
            entry = room_summary_entry(room)
            if entry_matches(entry, query):
                entries.append(entry)
        entries.sort(key=lambda e: (-e["num_joined_members"], e["room_id"]))
        return paginate(entries, query.limit, query.since)

    async def server_public_rooms(self, server: str | None, query: PublicRoomsQuery) -> JsonDict:
        """``server``'s public rooms: ours, or asked of it over federation."""
        if server is None or server == self._server_name:
            return await self.public_rooms(query)
        if not is_valid_server_name(server):
            raise MatrixError(400, Codes.INVALID_PARAM, f"Invalid server name: {server}")
        if self.remote_rooms is None:
            raise MatrixError(404, Codes.NOT_FOUND, "Remote room directories need federation")
        return await self.remote_rooms.public_rooms(server, query)


def _network(include_all: bool, instance_id: str | None) -> tuple[str, str] | None:
    """The application service network asked for (``third_party_instance_id``)."""
    if instance_id is None:
        return None
    if include_all:
        raise MatrixError(
            400, Codes.INVALID_PARAM, "Can't use include_all_networks with an explicit network"
        )
    return parse_third_party_instance_id(instance_id)


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
