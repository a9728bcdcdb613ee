"""The lists of simplified sliding sync: which rooms, in which order, through which
filters.

Invariants:
- A room's ``bump_stamp`` is the stream position of its newest event of a
  ``BUMP_EVENT_TYPES`` type (for a joined room up to now, else up to the membership;
  invites and knocks, and rooms without one, the membership's own position): the
  room's ``newest_bump`` in memory when it is within that bound, else read from its
  recent events. A room whose window holds none asks the database once; the answer
  holds while the window still reaches back to it (any newer bump event is then in
  the window).
- A list is ordered by (``bump_stamp``, room id), newest first; its ``count`` is every
  room through its filters.
- ``RecencyIndex`` keeps each user's candidate rooms, their bump stamps and that order
  between requests: a request re-reads only the rooms named by events persisted (or
  rooms invalidated) since the user's last one, plus those it could not settle then
  (an event or membership beyond that request's ``now``). Anything else that changes
  users' rooms (forget, purge) moves ``MembershipCache.epoch`` and every order is
  rebuilt, as is one whose log entries have been dropped.
- Filters read each room's facts (type, encryption, stripped state) at most once per
  build, and the user's ``m.direct`` and tags only when a filter asks.
"""

from __future__ import annotations

import bisect
from collections import OrderedDict, deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from homeserver.ephemeral.tags import TAG_TYPE
from homeserver.events.event import Event
from homeserver.rooms.memberships import MembershipCache
from homeserver.rooms.room_cache import BUMP_EVENT_TYPES, LiveRoom, RoomCache
from homeserver.sync.handler import SyncToken, stripped_state
from homeserver.sync.sliding_config import ListConfig, ListFilters
from storage.memberships import MembershipRow
from storage.storage import Storage

JsonDict = dict[str, Any]

_BUMP_TYPES_SORTED = tuple(sorted(BUMP_EVENT_TYPES))
MAX_BUMP_CACHE = 50_000
MAX_DIRECT_CACHE = 10_000
# Rooms named by persisted events, for the orders to catch up with; an order older
# than the oldest entry is rebuilt.
MAX_RECENCY_LOG = 8192
MAX_RECENCY_USERS = 2000


class RoomLists:
    def __init__(self, storage: Storage, rooms: RoomCache) -> None:
        self._storage = storage
        self._rooms = rooms
        # room id -> (its newest bump position at or below ``at``, 0: none; ``at``)
        self._bump_cache: OrderedDict[str, tuple[int, int]] = OrderedDict()
        # user id -> (account data stream position, the rooms of its ``m.direct``)
        self._direct_cache: OrderedDict[str, tuple[int, frozenset[str]]] = OrderedDict()

    def facts(
        self, user_id: str, candidates: dict[str, MembershipRow], now: SyncToken
    ) -> RoomFacts:
        return RoomFacts(self, user_id, candidates, now)

    async def stripped_state(self, user_id: str, row: MembershipRow) -> list[JsonDict]:
        room = await self._rooms.get(row.room_id)
        if room is not None:
            event = await self._storage.events.get_event(row.event_id)
            return stripped_state(room, event)
        oob = await self._storage.memberships.get_out_of_band_stripped_state(user_id, row.room_id)
        return list(oob or [])

    async def bump_stamps(self, candidates: dict[str, MembershipRow], now: int) -> dict[str, int]:
        """Each room's ``bump_stamp``: its newest bump event (for a joined room up to
        now, else up to the membership), or the membership's own position without one
        (invites, knocks, rooms we do not hold)."""
        # One pass over every room of the user on each request: kept to plain lookups.
        out: dict[str, int] = {}
        unknown: list[str] = []
        loaded = self._rooms.get_if_loaded
        now_events = now
        for room_id, row in candidates.items():
            membership = row.membership
            if membership == "join":
                cap = now_events
            elif membership == "invite" or membership == "knock":
                out[room_id] = row.stream_ordering
                continue
            else:
                cap = row.stream_ordering
            room = loaded(room_id)
            if room is not None:
                bump = room.newest_bump
                if 0 < bump <= cap:
                    out[room_id] = bump  # the usual case: no scan, no query
                    continue
            found = self._bump_in_memory(room, cap)
            if found is not None:
                out[room_id] = found
                continue
            cached = self._bump_cache.get(room_id)
            if (
                row.membership == "join"
                and cached is not None
                and room is not None
                and cached[1] >= room.recent_floor
            ):
                out[room_id] = cached[0] or row.stream_ordering
                continue
            unknown.append(room_id)
        if unknown:
            read = await self._storage.events.get_latest_stream_of_types(
                unknown, _BUMP_TYPES_SORTED, now
            )
            for room_id in unknown:
                row = candidates[room_id]
                if row.membership == "join":
                    value = read.get(room_id, 0)
                    self._bump_cache[room_id] = (value, now)
                    self._bump_cache.move_to_end(room_id)
                    if len(self._bump_cache) > MAX_BUMP_CACHE:
                        self._bump_cache.popitem(last=False)
                    out[room_id] = value or row.stream_ordering
                else:
                    value = read.get(room_id, 0)
                    out[room_id] = (
                        value if 0 < value <= row.stream_ordering else row.stream_ordering
                    )
        return out

    async def preload_rooms(self, rows: dict[str, MembershipRow]) -> None:
        """Rooms one is or was in, loaded together (after a restart)."""
        await self._rooms.preload(
            r for r, row in rows.items() if row.membership not in ("invite", "knock")
        )

    def beyond(self, rows: dict[str, MembershipRow], now: int) -> list[str]:
        """Joined rooms whose newest bump in memory is beyond ``now``: their stamp is an
        older one until ``now`` reaches it."""
        loaded = self._rooms.get_if_loaded
        out = []
        for room_id, row in rows.items():
            if row.membership == "join":
                room = loaded(room_id)
                if room is not None and room.newest_bump > now:
                    out.append(room_id)
        return out

    @staticmethod
    def _bump_in_memory(room: LiveRoom | None, cap: int) -> int | None:
        if room is None:
            return None
        for ev in reversed(room.recent):
            if ev.stream_ordering <= cap and ev.type in BUMP_EVENT_TYPES:
                return ev.stream_ordering
        return None

    # Filters -------------------------------------------------------------------

    async def direct_rooms(self, user_id: str, now: SyncToken) -> frozenset[str]:
        """The rooms of the user's ``m.direct`` account data (as of ``now``: remembered
        while the account data stream stands still, as every response asks for them)."""
        position = now.account_data
        held = self._direct_cache.get(user_id)
        if held is not None and held[0] == position:
            return held[1]
        content = await self._storage.account_data.get(user_id, "", "m.direct") or {}
        found: set[str] = set()
        for rooms in content.values():
            if isinstance(rooms, list):
                found.update(r for r in rooms if isinstance(r, str))
        out = frozenset(found)
        if position == self._storage.account_data.stream.current_position:
            self._direct_cache[user_id] = (position, out)
            self._direct_cache.move_to_end(user_id)
            if len(self._direct_cache) > MAX_DIRECT_CACHE:
                self._direct_cache.popitem(last=False)
        return out

    async def room_facts(
        self, user_id: str, row: MembershipRow
    ) -> tuple[str | None, bool, list[JsonDict] | None]:
        """(room type, encrypted, stripped state for an invite or knock) of a room."""
        if row.membership in ("invite", "knock"):
            state = await self.stripped_state(user_id, row)
            room_type: str | None = None
            encrypted = False
            for ev in state:
                if ev.get("type") == "m.room.create":
                    t = ev.get("content", {}).get("type")
                    room_type = t if isinstance(t, str) else None
                elif ev.get("type") == "m.room.encryption":
                    encrypted = True
            return room_type, encrypted, state
        room = await self._rooms.get(row.room_id)
        if room is None:
            return None, False, None
        create = room.create_event
        t = create.content.get("type") if create is not None else None
        return (t if isinstance(t, str) else None), ("m.room.encryption", "") in room.state, None

    async def room_tags(self, user_id: str) -> dict[str, set[str]]:
        """Room id -> the names of the user's tags on it (``m.tag`` room account data)."""
        stream = self._storage.account_data.stream.current_position
        out: dict[str, set[str]] = {}
        for change in await self._storage.account_data.get_changes(user_id, 0, stream):
            if change.room_id and change.data_type == TAG_TYPE:
                tags = change.content.get("tags")
                if isinstance(tags, dict) and tags:
                    out[change.room_id] = set(tags)
        return out

    async def invite_is_direct(self, row: MembershipRow) -> bool:
        event = await self._storage.events.get_event(row.event_id)
        return event is not None and event.content.get("is_direct") is True

    def space_children(self, space_id: str) -> set[str]:
        room = self._rooms.get_if_loaded(space_id)
        if room is None:
            return set()
        return {
            key
            for (etype, key), ev in room.state.items()
            if etype == "m.space.child"
            and isinstance(ev.content.get("via"), list)
            and ev.content["via"]
        }


class RoomFacts:
    """What list filters ask of rooms, read once per build."""

    def __init__(
        self,
        handler: RoomLists,
        user_id: str,
        candidates: dict[str, MembershipRow],
        now: SyncToken,
    ) -> None:
        self._handler = handler
        self._user_id = user_id
        self._candidates = candidates
        self._now = now
        self._dms: frozenset[str] | None = None
        self._tags: dict[str, set[str]] | None = None
        self._facts: dict[str, tuple[str | None, bool, list[JsonDict] | None]] = {}

    async def _room(self, room_id: str) -> tuple[str | None, bool, list[JsonDict] | None]:
        held = self._facts.get(room_id)
        if held is None:
            held = await self._handler.room_facts(self._user_id, self._candidates[room_id])
            self._facts[room_id] = held
        return held

    async def matches(self, room_id: str, filters: ListFilters) -> bool:
        row = self._candidates[room_id]
        if filters.is_invite is not None and filters.is_invite != (row.membership == "invite"):
            return False
        if filters.is_dm is not None:
            if self._dms is None:
                self._dms = await self._handler.direct_rooms(self._user_id, self._now)
            is_dm = room_id in self._dms
            if not is_dm and row.membership == "invite":
                is_dm = await self._handler.invite_is_direct(row)
            if is_dm != filters.is_dm:
                return False
        if filters.spaces is not None:
            children: set[str] = set()
            for space_id in filters.spaces:
                space = self._candidates.get(space_id)
                if space is not None and space.membership == "join":
                    children |= self._handler.space_children(space_id)
            if room_id not in children:
                return False
        if filters.tags is not None or filters.not_tags is not None:
            if self._tags is None:
                self._tags = await self._handler.room_tags(self._user_id)
            tags = self._tags.get(room_id, set())
            if filters.tags is not None and not tags.intersection(filters.tags):
                return False
            if filters.not_tags is not None and tags.intersection(filters.not_tags):
                return False
        if (
            filters.is_encrypted is not None
            or filters.room_types is not None
            or filters.not_room_types is not None
        ):
            room_type, encrypted, _ = await self._room(room_id)
            if filters.is_encrypted is not None and filters.is_encrypted != encrypted:
                return False
            if filters.not_room_types is not None and room_type in filters.not_room_types:
                return False
            if filters.room_types is not None and room_type not in filters.room_types:
                return False
        return True


def windows(keyed: list[tuple[int, str]], lst: ListConfig) -> tuple[list[str], list[JsonDict]]:
    """The rooms of a list (``keyed``: its rooms as (``bump_stamp``, room id), sorted
    ascending) inside its ranges, and Synapse's ``SYNC`` ops. Only as many rooms as the
    ranges reach are read."""
    if lst.ranges is None:
        ids = [room_id for _, room_id in reversed(keyed)]
        ops = [{"op": "SYNC", "range": [0, max(0, len(ids) - 1)], "room_ids": ids}]
        return list(ids), ops
    reach = max((end + 1 for _, end in lst.ranges), default=0)
    ids = [room_id for _, room_id in keyed[: -reach - 1 : -1]] if reach > 0 else []
    window: list[str] = []
    ops = []
    seen: set[str] = set()
    for start, end in lst.ranges:
        part = ids[start : end + 1]
        ops.append({"op": "SYNC", "range": [start, end], "room_ids": part})
        for room_id in part:
            if room_id not in seen:
                seen.add(room_id)
                window.append(room_id)
    return window, ops


@dataclass(slots=True)
class Recency:
    """A user's rooms for a request: ``candidates`` (not to be changed by the caller),
    their bump stamps, and (bump stamp, room id) of every candidate, sorted ascending."""

    candidates: dict[str, MembershipRow]
    bumps: dict[str, int]
    keyed: list[tuple[int, str]]


@dataclass(slots=True)
class _Order:
    rooms: dict[str, MembershipRow]  # the MembershipCache's dict it follows
    ignored: frozenset[str]
    epoch: int
    seq: int  # log entries before this one are in
    at: int  # the ``now`` it was brought up to
    shown: dict[str, MembershipRow]  # candidates whatever the ``since``
    own_leaves: dict[str, MembershipRow]  # rooms left oneself: only shown as a change
    bumps: dict[str, int]  # of both
    keyed: list[tuple[int, str]]  # of ``shown``, ascending
    unsettled: set[str]  # rooms to read again next time


class RecencyIndex:
    """Each user's candidate rooms in recency order, kept up to date from the rooms
    events were persisted in (see the module's invariants), so that a request reads
    only what changed instead of every room of the user."""

    def __init__(self, lists: RoomLists, memberships: MembershipCache) -> None:
        self._lists = lists
        self._memberships = memberships
        self._log: deque[tuple[int, str]] = deque(maxlen=MAX_RECENCY_LOG)
        self._log_end = 0  # sequence number of the next entry
        self._orders: OrderedDict[str, _Order] = OrderedDict()

    def on_persisted(self, events: Iterable[Event]) -> None:
        for ev in events:
            self._log.append((ev.stream_ordering, ev.room_id))
            self._log_end += 1

    def on_rooms_invalidated(self, room_ids: Iterable[str]) -> None:
        for room_id in room_ids:
            self._log.append((0, room_id))
            self._log_end += 1

    async def rooms(
        self,
        user_id: str,
        rooms: dict[str, MembershipRow],
        ignored: frozenset[str],
        since: int | None,
        now: int,
    ) -> Recency:
        """The candidates of a request at ``now`` (``since``: its ``pos``'s events
        position): every room of ``rooms`` (the user's memberships) up to ``now``
        but invites from ``ignored`` users and, as Synapse, the rooms the user left
        itself before ``since``."""
        order = self._orders.get(user_id)
        seq = self._log_end
        if order is not None and self._usable(order, rooms, ignored, now):
            touched = set(order.unsettled)
            touched.update(room_id for _, room_id in self._entries_since(order.seq))
            order = await self._catch_up(user_id, order, touched, seq, now)
        else:
            order = None
        if order is None:
            order = await self._build(user_id, rooms, ignored, seq, now)
        self._orders[user_id] = order
        self._orders.move_to_end(user_id)
        if len(self._orders) > MAX_RECENCY_USERS:
            self._orders.popitem(last=False)
        left = (
            [(r, row) for r, row in order.own_leaves.items() if row.stream_ordering > since]
            if since is not None
            else []
        )
        if not left:
            return Recency(order.shown, order.bumps, order.keyed)
        candidates = dict(order.shown)
        keyed = list(order.keyed)
        for room_id, row in left:
            candidates[room_id] = row
            bisect.insort(keyed, (order.bumps[room_id], room_id))
        return Recency(candidates, order.bumps, keyed)

    def _usable(
        self, order: _Order, rooms: dict[str, MembershipRow], ignored: frozenset[str], now: int
    ) -> bool:
        return (
            order.rooms is rooms
            and order.epoch == self._memberships.epoch
            and order.ignored == ignored
            and order.at <= now
            and order.seq >= self._log_end - len(self._log)
            # Catching up on more than the user has rooms costs more than a rebuild.
            and self._log_end - order.seq <= max(64, len(rooms))
        )

    def _entries_since(self, seq: int) -> list[tuple[int, str]]:
        count = self._log_end - seq
        if count <= 0:
            return []
        size = len(self._log)
        return [self._log[i] for i in range(size - min(count, size), size)]

    def _classify(
        self, user_id: str, row: MembershipRow | None, ignored: frozenset[str], now: int
    ) -> str:
        """ "shown", "own_leave", "hidden", or "later" (beyond ``now``)."""
        if row is None:
            return "hidden"
        if row.stream_ordering > now:
            return "later"
        membership = row.membership
        if membership == "invite" and row.sender in ignored:
            return "hidden"  # as /sync: invites from ignored users are not shown
        # Rooms one left oneself only show as a change (as Synapse): kicks and bans
        # stay in the lists.
        if membership == "leave" and row.sender == user_id:
            return "own_leave"
        return "shown"

    async def _build(
        self,
        user_id: str,
        rooms: dict[str, MembershipRow],
        ignored: frozenset[str],
        seq: int,
        now: int,
    ) -> _Order:
        epoch = self._memberships.epoch
        shown: dict[str, MembershipRow] = {}
        own_leaves: dict[str, MembershipRow] = {}
        unsettled: set[str] = set()
        for room_id, row in list(rooms.items()):  # (no await in this loop)
            kind = self._classify(user_id, row, ignored, now)
            if kind == "shown":
                shown[room_id] = row
            elif kind == "own_leave":
                own_leaves[room_id] = row
            elif kind == "later":
                unsettled.add(room_id)
        # Events persisted beyond ``now`` (or whose rooms' bumps are not yet within it).
        unsettled.update(room_id for stream, room_id in self._log if stream > now)
        await self._lists.preload_rooms(shown)
        bumps = await self._lists.bump_stamps({**shown, **own_leaves}, now)
        unsettled.update(self._lists.beyond(shown, now))
        keyed = sorted((bumps[room_id], room_id) for room_id in shown)
        return _Order(rooms, ignored, epoch, seq, now, shown, own_leaves, bumps, keyed, unsettled)

    async def _catch_up(
        self, user_id: str, order: _Order, touched: set[str], seq: int, now: int
    ) -> _Order | None:
        """``order`` brought up to ``now`` by reading the ``touched`` rooms again; None
        when another request changed it meanwhile (then it is rebuilt)."""
        rows: dict[str, MembershipRow] = {}
        unsettled: set[str] = set()
        for room_id in touched:
            row = order.rooms.get(room_id)
            kind = self._classify(user_id, row, order.ignored, now)
            if kind == "later":
                unsettled.add(room_id)
            elif kind != "hidden" and row is not None:
                rows[room_id] = row
        bumps = await self._lists.bump_stamps(rows, now) if rows else {}
        if self._orders.get(user_id) is not order or order.seq > seq:
            return None
        unsettled.update(self._lists.beyond(rows, now))
        unsettled.update(
            room_id for stream, room_id in self._entries_since(order.seq) if stream > now
        )
        if touched:
            # Copies: an earlier request may still be reading the old ones.
            shown, own_leaves = dict(order.shown), dict(order.own_leaves)
            held_bumps, keyed = dict(order.bumps), list(order.keyed)
            for room_id in touched:
                if shown.pop(room_id, None) is not None:
                    old = (held_bumps[room_id], room_id)
                    at = bisect.bisect_left(keyed, old)
                    if at < len(keyed) and keyed[at] == old:
                        del keyed[at]
                own_leaves.pop(room_id, None)
                held_bumps.pop(room_id, None)
                row = rows.get(room_id)
                if row is None:
                    continue
                held_bumps[room_id] = bumps[room_id]
                if self._classify(user_id, row, order.ignored, now) == "own_leave":
                    own_leaves[room_id] = row
                else:
                    shown[room_id] = row
                    bisect.insort(keyed, (bumps[room_id], room_id))
            order.shown, order.own_leaves, order.bumps, order.keyed = (
                shown,
                own_leaves,
                held_bumps,
                keyed,
            )
        order.unsettled = unsettled
        order.seq = seq
        order.at = now
        return order
