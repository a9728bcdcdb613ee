"""Which events and ephemeral data an application service is "interested" in.

A service is interested in an event when its sender, or (for a membership) its target,
is one of the service's users; when the room id matches its ``rooms`` namespaces; when
one of the room's local directory aliases (as Synapse), its canonical alias or one of
its alt aliases matches its ``aliases`` namespaces; or when one of its users is joined
to the room.

Invariants:
- Room-level answers are cached per room and dropped whenever a membership or
  ``m.room.canonical_alias`` event of that room is persisted (``invalidate``), so the
  cache never outlives the state it was computed from by more than that event.
- Membership is the room's current state (as Synapse does), read from the room cache.
- The directory aliases in the service's namespaces are held in memory: loaded at start
  (``load_aliases``), then kept by ``alias_changed`` after every committed change.
"""

from __future__ import annotations

from typing import Any

from homeserver.appservice.registration import ApplicationService
from homeserver.events.event import Event
from homeserver.rooms.memberships import MembershipCache
from homeserver.rooms.room_cache import LiveRoom, RoomCache

MAX_CACHED_ROOMS = 50_000
_INVALIDATING_TYPES = ("m.room.member", "m.room.canonical_alias")


class ServiceInterest:
    def __init__(self, service: ApplicationService, rooms: RoomCache) -> None:
        self.service = service
        self._rooms = rooms
        self._room_cache: dict[str, bool] = {}
        # Directory aliases in the service's namespaces -> their room; their rooms.
        self._aliases: dict[str, str] = {}
        self._alias_rooms: frozenset[str] = frozenset()

    def load_aliases(self, mappings: list[tuple[str, str]]) -> None:
        for alias, room_id in mappings:
            if self.service.is_interested_in_alias(alias):
                self._aliases[alias] = room_id
        self._alias_rooms = frozenset(self._aliases.values())
        self._room_cache.clear()

    def alias_changed(self, alias: str, room_id: str | None) -> None:
        """A local alias now maps to ``room_id`` (None: it was deleted)."""
        if not self.service.is_interested_in_alias(alias):
            return
        before = self._aliases.pop(alias, None)
        if room_id is not None:
            self._aliases[alias] = room_id
        self._alias_rooms = frozenset(self._aliases.values())
        for changed in (before, room_id):
            if changed is not None:
                self._room_cache.pop(changed, None)

    # Rooms ---------------------------------------------------------------------------

    def loaded_room(self, room_id: str) -> LiveRoom | None:
        return self._rooms.get_if_loaded(room_id)

    def room_aliases(self, room: LiveRoom) -> list[str]:
        content = room.state_content("m.room.canonical_alias")
        aliases = [content.get("alias")]
        alt = content.get("alt_aliases")
        if isinstance(alt, list):
            aliases.extend(alt)
        return [a for a in aliases if isinstance(a, str)]

    def has_member_interest(self, room: LiveRoom) -> bool:
        """One of the service's users is joined to the room."""
        return any(self.service.is_interested_in_user(u) for u in room.joined_members())

    def room_interest(self, room: LiveRoom) -> bool:
        cached = self._room_cache.get(room.room_id)
        if cached is None:
            service = self.service
            cached = (
                service.is_interested_in_room_id(room.room_id)
                or room.room_id in self._alias_rooms
                or any(service.is_interested_in_alias(a) for a in self.room_aliases(room))
                or self.has_member_interest(room)
            )
            if len(self._room_cache) >= MAX_CACHED_ROOMS:
                self._room_cache.clear()
            self._room_cache[room.room_id] = cached
        return cached

    async def room_interest_by_id(self, room_id: str) -> bool:
        if self.service.is_interested_in_room_id(room_id):
            return True
        room = await self._rooms.get(room_id)
        return room is not None and self.room_interest(room)

    def invalidate(self, event: Event) -> None:
        if event.type in _INVALIDATING_TYPES and event.is_state():
            self._room_cache.pop(event.room_id, None)

    # Events --------------------------------------------------------------------------

    def event_interest(self, event: Event, room: LiveRoom | None) -> bool | None:
        """True or False, or None when it depends on a room that is not in memory."""
        if event.rejected_reason is not None or event.outlier:
            return False
        service = self.service
        if service.is_interested_in_user(event.sender):
            return True
        target = event.state_key
        if event.type == "m.room.member" and target and service.is_interested_in_user(target):
            return True
        if service.is_interested_in_room_id(event.room_id):
            return True
        if room is None:
            return None
        return self.room_interest(room)

    async def event_interest_async(self, event: Event) -> bool:
        decided = self.event_interest(event, self._rooms.get_if_loaded(event.room_id))
        if decided is not None:
            return decided
        room = await self._rooms.get(event.room_id)
        return room is not None and self.room_interest(room)

    # Ephemeral data --------------------------------------------------------------------

    async def presence_interest(self, user_id: str, memberships: MembershipCache) -> bool:
        """The user is one of ours, or shares a room with one of ours."""
        if self.service.is_interested_in_user(user_id):
            return True
        rooms = await memberships.rooms_for_user(user_id)
        for room_id, row in list(rooms.items()):
            if row.membership != "join":
                continue
            room = await self._rooms.get(room_id)
            if room is not None and self.has_member_interest(room):
                return True
        return False

    def filter_receipt(self, content: dict[str, Any]) -> dict[str, Any]:
        """Drop private read receipts of users outside the service's namespaces."""
        out: dict[str, Any] = {}
        for event_id, by_type in content.items():
            if not isinstance(by_type, dict):
                continue
            kept: dict[str, Any] = {}
            for receipt_type, by_user in by_type.items():
                if receipt_type == "m.read.private" and isinstance(by_user, dict):
                    by_user = {
                        u: v for u, v in by_user.items() if self.service.is_interested_in_user(u)
                    }
                    if not by_user:
                        continue
                kept[receipt_type] = by_user
            if kept:
                out[event_id] = kept
        return out
