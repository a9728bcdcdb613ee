"""The deprecated event stream (``GET /events``) and snapshots (``GET /initialSync``,
``GET /rooms/{roomId}/initialSync``), built on the /sync machinery.

Invariants:
- /events tokens are /sync tokens. A chunk covers (from, end] and a client continuing
  from ``end`` sees nothing twice; room events are capped at ``EVENTS_PER_ROOM`` per
  room and window (``limit``, the oldest kept): a room with more moves ``end`` back to
  the last event returned, so paging from ``end`` catches up in order (as Synapse).
- Room events pass the history visibility rules like every other read; a departed
  user gets a room's events up to their leave only.
- Ephemeral events come from the /sync sources (receipts, typing, presence), so both
  APIs agree on what a user may see.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from homeserver.clock import Clock, now_ms
from homeserver.ephemeral.presence import PresenceHandler, format_presence
from homeserver.errors import Codes, MatrixError
from homeserver.events.event import Event
from homeserver.events.filtering import FilterCollection
from homeserver.push.rules_handler import PUSH_RULES_TYPE
from homeserver.rooms.handler import RoomHandler
from homeserver.rooms.history import RoomHistory
from homeserver.rooms.memberships import MembershipCache
from homeserver.rooms.room_cache import LiveRoom, RoomCache
from homeserver.rooms.visibility import VisibilityFilter
from homeserver.sync.handler import SyncHandler, SyncToken
from homeserver.sync.sources import SyncContext
from storage.account_data import GLOBAL
from storage.storage import Storage

JsonDict = dict[str, Any]
# A chunk entry: a room event (serialised per requester at the edge) or an ephemeral one.
StreamItem = Event | JsonDict

EVENTS_PER_ROOM = 100
MAX_EVENTS_PER_ROOM = 1000
EPHEMERAL_SOURCES = ("receipts", "typing", "presence")
DEFAULT_FILTERS = FilterCollection.from_json({})


@dataclass(frozen=True, slots=True)
class EventsChunk:
    chunk: list[StreamItem]
    start: str
    end: str


@dataclass(frozen=True, slots=True)
class RoomSnapshot:
    """One room of an initialSync; ``messages`` oldest first."""

    room_id: str
    membership: str
    messages: list[Event]
    start: str
    end: str
    state: list[Event]
    visibility: str
    account_data: list[JsonDict]
    presence: list[JsonDict]
    receipts: list[JsonDict]


def _ephemeral_items(fragment_ephemeral: dict[str, list[JsonDict]]) -> list[JsonDict]:
    return [{**ev, "room_id": rid} for rid, events in fragment_ephemeral.items() for ev in events]


class LegacySyncHandler:
    def __init__(
        self,
        storage: Storage,
        sync: SyncHandler,
        rooms: RoomCache,
        memberships: MembershipCache,
        room_handler: RoomHandler,
        history: RoomHistory,
        visibility: VisibilityFilter,
        presence: PresenceHandler,
        clock: Clock,
    ) -> None:
        self._storage = storage
        self._sync = sync
        self._rooms = rooms
        self._memberships = memberships
        self._room_handler = room_handler
        self._history = history
        self._visibility = visibility
        self._presence = presence
        self._clock = clock

    # GET /events ----------------------------------------------------------------

    async def get_events(
        self,
        user_id: str,
        device_id: str | None,
        from_token: str | None,
        timeout_ms: int,
        room_id: str | None = None,
        limit: int = EVENTS_PER_ROOM,
    ) -> EventsChunk:
        """What happened for the user after ``from_token`` (now if absent), waiting up to
        ``timeout_ms`` for something; ``room_id`` narrows to one room (a world-readable
        one may be read without joining, as Synapse lets guests)."""
        since = SyncToken.parse(from_token) if from_token else self._sync.current_token()
        start = str(since)
        peek = await self._peekable(user_id, room_id) if room_id is not None else False
        ends = await self._sync.hold(user_id, device_id, None)
        try:
            deadline = self._clock.seconds() + timeout_ms / 1000.0
            while True:
                now = self._sync.current_token()
                if since.events > now.events or since.account_data > now.account_data:
                    raise MatrixError(400, Codes.INVALID_PARAM, "Token is ahead of the server")
                chunk, reached = await self._chunk(
                    user_id, device_id, since, now, room_id, peek, limit
                )
                remaining = deadline - self._clock.seconds()
                if chunk or remaining <= 0:
                    return EventsChunk(chunk, start, str(reached))
                if reached != now:
                    since = reached  # a page of events the user may not see: read on
                    continue
                # Nothing for this user in (since, now]: wait for what comes after now.
                since = now
                if self._sync.current_token() == now:
                    await self._sync.notifier.wait(user_id, remaining)
        finally:
            for end in ends:
                end()

    async def _peekable(self, user_id: str, room_id: str) -> bool:
        """Whether ``user_id`` reads ``room_id`` without being in it (world-readable)."""
        room = await self._rooms.get(room_id)
        if room is not None and room.membership_of(user_id) in ("join", "leave", "ban"):
            return False
        if room is not None and _world_readable(room):
            return True
        raise MatrixError(403, Codes.FORBIDDEN, f"User {user_id} not in room {room_id}")

    async def _chunk(
        self,
        user_id: str,
        device_id: str | None,
        since: SyncToken,
        now: SyncToken,
        only_room: str | None,
        peek: bool,
        limit: int,
    ) -> tuple[list[StreamItem], SyncToken]:
        """The items in (since, now], and the token they reach (before ``now`` when a
        room had more events than ``limit``)."""
        rows = await self._memberships.rooms_for_user(user_id)
        joined = {r for r, row in rows.items() if row.membership == "join"}
        if only_room is not None:
            joined = {only_room} if peek or only_room in joined else set()
        events: list[Event] = []
        if since.events < now.events:
            windows: list[tuple[str, int, str | None]] = [(r, now.events, "join") for r in joined]
            if peek and only_room is not None:
                windows = [(only_room, now.events, None)]
            for rid, row in rows.items():
                if only_room is not None and rid != only_room:
                    continue
                if row.membership != "join" and since.events < row.stream_ordering <= now.events:
                    windows.append((rid, row.stream_ordering, row.membership))
            cap = now.events
            for rid, upto, membership in windows:
                window, cut_at = await self._room_window(
                    user_id, rid, since.events, upto, membership, limit
                )
                events += window
                if cut_at is not None:
                    cap = min(cap, cut_at)
            if cap < now.events:
                # A room had more: stop every room there, the rest comes from ``end``.
                events = [ev for ev in events if ev.stream_ordering <= cap]
                now = SyncToken((cap, *now.positions[1:]))
        events.sort(key=lambda ev: ev.stream_ordering)
        items: list[StreamItem] = list(events)
        ctx = SyncContext(
            user_id=user_id,
            device_id=device_id,
            joined_room_ids=frozenset(joined),
            filters=DEFAULT_FILTERS,
            initial=False,
        )
        for name in EPHEMERAL_SOURCES:
            fragment = await self._sync.source_updates(name, ctx, since, now)
            if fragment is None:
                continue
            items += _ephemeral_items(fragment.ephemeral)
            items += fragment.top_level.get("presence", {}).get("events", [])
        if since.account_data < now.account_data:
            for change in await self._storage.account_data.get_changes(
                user_id, since.account_data, now.account_data
            ):
                if only_room is not None and change.room_id != only_room:
                    continue
                item: JsonDict = {"type": change.data_type, "content": change.content}
                if change.room_id != GLOBAL:
                    item["room_id"] = change.room_id
                items.append(item)
        return items, now

    async def _room_window(
        self,
        user_id: str,
        room_id: str,
        after: int,
        upto: int,
        membership: str | None,
        limit: int,
    ) -> tuple[list[Event], int | None]:
        """The room's oldest ``limit`` events in (after, upto] the user may see, and
        where they stop when the room had more (None: all of them)."""
        if membership == "invite":
            row = (await self._memberships.rooms_for_user(user_id)).get(room_id)
            invite = await self._storage.events.get_event(row.event_id) if row else None
            return ([invite] if invite is not None else []), None
        events, more = await self._storage.events.get_room_events_from(room_id, after, upto, limit)
        cut_at = events[-1].stream_ordering if more and events else None
        visible = await self._visibility.filter_for_user(
            user_id, events, current_membership=membership
        )
        return visible, cut_at

    # GET /initialSync and /rooms/{roomId}/initialSync ------------------------------

    async def room_initial_sync(self, user_id: str, room_id: str, limit: int) -> RoomSnapshot:
        room = await self._rooms.get(room_id)
        membership = room.membership_of(user_id) if room is not None else None
        if room is None or (
            membership not in ("join", "leave", "ban") and not _world_readable(room)
        ):
            raise MatrixError(403, Codes.FORBIDDEN, f"User {user_id} not in room {room_id}")
        # As Synapse: a reader of a world-readable room is answered as a member.
        return await self._snapshot(user_id, room, membership or "join", limit, with_ephemeral=True)

    async def initial_sync(self, user_id: str, limit: int, archived: bool) -> JsonDict:
        """The global snapshot: every room (left ones with ``archived``), the presence of
        room mates, receipts and global account data. Invites carry the invite event."""
        now = self._sync.current_token()
        rows = await self._memberships.rooms_for_user(user_id)
        wanted = ("join", "invite", "leave", "ban") if archived else ("join", "invite")
        rooms: list[JsonDict | RoomSnapshot] = []
        for room_id, row in sorted(rows.items()):
            if row.membership not in wanted or row.stream_ordering > now.events:
                continue
            if row.membership == "invite":
                invite = await self._storage.events.get_event(row.event_id)
                entry: JsonDict = {"room_id": room_id, "membership": "invite"}
                entry["visibility"] = await self._visibility_of(room_id)
                if invite is not None:
                    entry["inviter"] = invite.sender
                    entry["invite"] = invite
                rooms.append(entry)
                continue
            room = await self._rooms.get(room_id)
            if room is None:
                continue
            snap = await self._snapshot(user_id, room, row.membership, limit, with_ephemeral=False)
            rooms.append(snap)
        joined = frozenset(r for r, row in rows.items() if row.membership == "join")
        presence, receipts = await self._ephemeral_now(user_id, joined, now)
        changes = await self._storage.account_data.get_changes(user_id, 0, now.account_data)
        return {
            "end": str(now),
            "rooms": rooms,
            "presence": presence,
            "receipts": receipts,
            # The push rules are served by /pushrules and /sync, not here (as Synapse,
            # whose /initialSync lists only the account data clients stored).
            "account_data": [
                {"type": c.data_type, "content": c.content}
                for c in changes
                if c.room_id == GLOBAL and c.data_type != PUSH_RULES_TYPE
            ],
        }

    async def _snapshot(
        self, user_id: str, room: LiveRoom, membership: str, limit: int, *, with_ephemeral: bool
    ) -> RoomSnapshot:
        room_id = room.room_id
        now = self._sync.current_token()
        chunk, _, page_end, _ = await self._history.messages(
            user_id, room_id, None, None, "b", limit, None
        )
        state = await self._room_handler.visible_state(user_id, room_id, banned_may_read=True)
        changes = await self._storage.account_data.get_changes(user_id, 0, now.account_data)
        presence: list[JsonDict] = []
        receipts: list[JsonDict] = []
        if with_ephemeral and membership == "join":
            presence, receipts = await self._ephemeral_now(user_id, frozenset([room_id]), now)
        return RoomSnapshot(
            room_id=room_id,
            membership=membership,
            messages=list(reversed(chunk)),
            start=page_end or str(now),
            end=str(now),
            state=list(state.values()),
            visibility=await self._visibility_of(room_id),
            account_data=[
                {"type": c.data_type, "content": c.content} for c in changes if c.room_id == room_id
            ],
            presence=presence,
            receipts=receipts,
        )

    async def _ephemeral_now(
        self, user_id: str, room_ids: frozenset[str], now: SyncToken
    ) -> tuple[list[JsonDict], list[JsonDict]]:
        """(presence of the rooms' members, offline ones too, as Synapse; receipts in the
        rooms) as they are now."""
        members: set[str] = {user_id}
        for room_id in room_ids:
            room = await self._rooms.get(room_id)
            if room is not None:
                members |= room.joined_members()
        at = now_ms(self._clock)
        presence = [
            {"type": "m.presence", "sender": s.user_id, "content": format_presence(s, at)}
            for s in await self._presence.current_states(sorted(members))
        ]
        ctx = SyncContext(
            user_id=user_id,
            device_id=None,
            joined_room_ids=room_ids,
            filters=DEFAULT_FILTERS,
            initial=True,
        )
        start = SyncToken((0,) * len(now.positions))
        fragment = await self._sync.source_updates("receipts", ctx, start, now)
        receipts = _ephemeral_items(fragment.ephemeral) if fragment is not None else []
        return presence, receipts

    async def _visibility_of(self, room_id: str) -> str:
        return "public" if await self._storage.room_directory.is_public(room_id) else "private"


def _world_readable(room: LiveRoom) -> bool:
    hv = room.state_content("m.room.history_visibility").get("history_visibility")
    return bool(hv == "world_readable")
