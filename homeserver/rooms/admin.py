"""What a server admin may see and do to any room (Synapse's ``/_synapse/admin/v1/rooms``
API): list and inspect rooms, block them, make a user room admin, join a local user.

The room list is computed from current state on each request, then filtered, sorted and
paged here (Synapse reads its stats tables); sort order and ``None`` placement follow
Synapse on PostgreSQL: ties by room id, ``None`` last ascending and first descending.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from homeserver.errors import Codes, MatrixError
from homeserver.events.event import Event
from homeserver.requester import Requester
from homeserver.rooms.handler import RoomHandler
from homeserver.rooms.room_cache import RoomCache
from homeserver.rooms.writer import RoomWriter
from storage.room_stats import ForwardExtremity, RoomStats
from storage.storage import Storage

JsonDict = dict[str, Any]

# order_by -> (column of a room entry, ascending by default), as Synapse's RoomSortOrder.
ROOM_ORDERS: dict[str, tuple[str, bool]] = {
    "name": ("name", True),
    "alphabetical": ("name", True),
    "canonical_alias": ("canonical_alias", True),
    "joined_members": ("joined_members", False),
    "size": ("joined_members", False),
    "joined_local_members": ("joined_local_members", False),
    "version": ("version", False),
    "creator": ("creator", True),
    "encryption": ("encryption", True),
    "federatable": ("federatable", True),
    "public": ("public", True),
    "join_rules": ("join_rules", True),
    "guest_access": ("guest_access", True),
    "history_visibility": ("history_visibility", True),
    "state_events": ("state_events", False),
}


def room_entry(stats: RoomStats, is_mine: Callable[[str], bool]) -> JsonDict:
    """One room as the room list shows it."""
    federate = stats.state.get("m.room.create", {}).get("m.federate", True)
    return {
        "room_id": stats.room_id,
        "name": stats.text("m.room.name", "name"),
        "canonical_alias": stats.text("m.room.canonical_alias", "alias"),
        "joined_members": len(stats.joined),
        "joined_local_members": sum(1 for u in stats.joined if is_mine(u)),
        "version": stats.version,
        "creator": stats.creator,
        "encryption": stats.text("m.room.encryption", "algorithm"),
        "federatable": federate is not False,
        "public": stats.public,
        "join_rules": stats.text("m.room.join_rules", "join_rule"),
        "guest_access": stats.text("m.room.guest_access", "guest_access"),
        "history_visibility": stats.text("m.room.history_visibility", "history_visibility"),
        "state_events": stats.state_events,
        "room_type": stats.text("m.room.create", "type"),
    }


def _matches(entry: JsonDict, term: str) -> bool:
    """Synapse's search: a substring of the name (any case), of the canonical alias
    before its last colon (``LIKE '#%term%:%'``), or the exact room id."""
    lowered = term.lower()
    name = entry["name"]
    if name is not None and lowered in name.lower():
        return True
    alias = entry["canonical_alias"]
    if (
        alias is not None
        and alias.startswith("#")
        and ":" in alias
        and lowered in alias.lower()[1 : alias.rindex(":")]
    ):
        return True
    return bool(entry["room_id"] == term)


def sort_rooms(entries: list[JsonDict], order_by: str, backwards: bool) -> list[JsonDict]:
    column, ascending = ROOM_ORDERS[order_by]
    if backwards:
        ascending = not ascending
    present = [e for e in entries if e[column] is not None]
    missing = [e for e in entries if e[column] is None]
    present.sort(key=lambda e: (e[column], e["room_id"]), reverse=not ascending)
    missing.sort(key=lambda e: str(e["room_id"]), reverse=not ascending)
    return present + missing if ascending else missing + present


class RoomAdmin:
    def __init__(
        self, storage: Storage, rooms: RoomCache, handler: RoomHandler, writer: RoomWriter
    ) -> None:
        self._storage = storage
        self._rooms = rooms
        self._handler = handler
        self._writer = writer

    async def list_rooms(
        self,
        start: int,
        limit: int,
        order_by: str,
        backwards: bool,
        search_term: str | None,
        public_rooms: bool | None,
        empty_rooms: bool | None,
    ) -> tuple[list[JsonDict], int]:
        """A page of rooms and how many match in all."""
        stats = await self._storage.room_stats.get_room_stats()
        entries = [room_entry(s, self._handler.is_mine) for s in stats]
        if search_term is not None:
            entries = [e for e in entries if _matches(e, search_term)]
        if public_rooms is not None:
            entries = [e for e in entries if e["public"] == public_rooms]
        if empty_rooms is not None:
            entries = [e for e in entries if (e["joined_members"] == 0) == empty_rooms]
        ordered = sort_rooms(entries, order_by, backwards)
        return ordered[start : start + limit], len(ordered)

    async def _stats(self, room_id: str) -> RoomStats:
        found = await self._storage.room_stats.get_room_stats([room_id])
        if not found:
            raise MatrixError(404, Codes.NOT_FOUND, "Room not found")
        return found[0]

    async def room_details(self, room_id: str) -> JsonDict:
        stats = await self._stats(room_id)
        result = room_entry(stats, self._handler.is_mine)
        result["topic"] = stats.text("m.room.topic", "topic")
        result["avatar"] = stats.text("m.room.avatar", "url")
        result["joined_local_devices"] = await self._storage.room_stats.count_devices(
            [u for u in stats.joined if self._handler.is_mine(u)]
        )
        result["forgotten"] = await self._storage.room_stats.local_memberships_forgotten(
            room_id, self._handler.server_name
        )
        tombstone = stats.state.get("m.room.tombstone")
        result["tombstoned"] = tombstone is not None
        result["replacement_room"] = tombstone.get("replacement_room") if tombstone else None
        return result

    async def members(self, room_id: str) -> list[str]:
        return list((await self._stats(room_id)).joined)

    async def state(self, room_id: str, event_type: str | None) -> list[Event]:
        await self._stats(room_id)
        ids = await self._storage.state_groups.get_current_state_ids(room_id)
        wanted = [eid for (t, _), eid in ids.items() if event_type is None or t == event_type]
        return list((await self._storage.events.get_events(wanted)).values())

    # Forward extremities ------------------------------------------------------------

    async def forward_extremities(self, room_id_or_alias: str) -> list[ForwardExtremity]:
        room_id = await self._handler.resolve_room_id_or_alias(room_id_or_alias)
        return await self._storage.room_stats.get_forward_extremities(room_id)

    async def delete_forward_extremities(self, room_id_or_alias: str) -> int:
        room_id = await self._handler.resolve_room_id_or_alias(room_id_or_alias)
        return await self._writer.delete_extra_forward_extremities(room_id)

    # Blocking -----------------------------------------------------------------------

    async def blocked_by(self, room_id: str) -> str | None:
        return await self._storage.rooms.blocked_by(room_id)

    async def set_blocked(self, admin: Requester, room_id: str, block: bool) -> None:
        if block:
            await self._storage.rooms.block(room_id, admin.user_id)
        else:
            await self._storage.rooms.unblock(room_id)

    # Membership ---------------------------------------------------------------------

    async def join_user(self, admin: Requester, room_id_or_alias: str, user_id: str) -> str:
        """Join a local user to a room we are in, inviting them first (as the admin) when
        the room is not public, as Synapse does."""
        if not self._handler.is_mine(user_id):
            raise MatrixError(400, Codes.UNKNOWN, "This endpoint can only be used with local users")
        record = await self._storage.users.get_user(user_id)
        if record is None:
            raise MatrixError(404, Codes.NOT_FOUND, "User not found")
        room_id = await self._handler.resolve_room_id_or_alias(room_id_or_alias)
        room = await self._rooms.get(room_id)
        if room is None:
            raise MatrixError(404, Codes.NOT_FOUND, "Room not found")
        target = Requester(user_id, None, None, ratelimited=False)
        join_rule = room.state_content("m.room.join_rules").get("join_rule")
        if ("m.room.join_rules", "") in room.state and join_rule != "public":
            await self._handler.update_membership(admin, room_id, user_id, "invite")
        await self._handler.update_membership(target, room_id, user_id, "join")
        return room_id

    async def make_room_admin(
        self, admin: Requester, room_id_or_alias: str, user_id: str | None
    ) -> None:
        """Give ``user_id`` (default: the admin) the power level of the local member with
        the most power, sending the change as that member; invite them to a non-public
        room they are not in (nor invited to)."""
        room_id = await self._handler.resolve_room_id_or_alias(room_id_or_alias)
        user_to_add = user_id or admin.user_id
        room = await self._rooms.get(room_id)
        create = room.create_event if room is not None else None
        if room is None or create is None:
            raise MatrixError(400, Codes.UNKNOWN, "Server not in room")
        is_mine = self._handler.is_mine
        pl_event = room.state.get(("m.room.power_levels", ""))
        if pl_event is not None:
            powers = pl_event.content.get("users", {})
            candidates = sorted(
                (u for u in powers if is_mine(u) and isinstance(powers[u], int)),
                key=lambda u: int(powers[u]),
            )
            if room.room_version.room_id_is_create_event_hash:
                extra = create.content.get("additional_creators", [])
                creators = [*(extra if isinstance(extra, list) else []), create.sender]
                candidates += [c for c in creators if isinstance(c, str) and is_mine(c)]
            granter = next(
                (u for u in reversed(candidates) if room.membership_of(u) == "join"), None
            )
            if granter is None:
                raise MatrixError(400, Codes.UNKNOWN, "No local admin user in room")
            content: JsonDict = dict(pl_event.content)
        else:
            granter = create.sender
            if not is_mine(granter):
                raise MatrixError(400, Codes.UNKNOWN, "No local admin user in room")
            content = {}
        users = dict(content.get("users", {}))
        users[user_to_add] = users.get(granter, 100)
        content["users"] = users
        acting = Requester(granter, None, None, ratelimited=False)
        try:
            await self._handler.send_state(acting, room_id, "m.room.power_levels", "", content)
        except MatrixError as e:
            if e.status != 403:
                raise
            raise MatrixError(
                400,
                Codes.UNKNOWN,
                "No local admin user in room with power to update power levels.",
            ) from None
        if room.membership_of(user_to_add) in ("join", "invite"):
            return
        if room.state_content("m.room.join_rules").get("join_rule") == "public":
            return
        await self._handler.update_membership(acting, room_id, user_to_add, "invite")
