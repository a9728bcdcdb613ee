"""/sync: what changed for a user between two stream tokens.

Invariants:
- A response covers exactly (since, next_batch]: every stream position in it is at or
  below the token handed back, and ``next_batch`` is taken before anything is read, so a
  client that syncs again from it misses nothing and sees nothing twice.
- The live path (an incremental sync woken by a new event) reads only memory: the
  user's rooms from ``MembershipCache``, recent events from ``LiveRoom.recent``.
  The database is asked only for history older than the in-memory window, for state
  when a timeline is ``limited``, and for account data that changed.
"""

from __future__ import annotations

import logging
import re
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from homeserver.clock import Clock
from homeserver.errors import Codes, MatrixError
from homeserver.events.event import Event
from homeserver.events.filtering import FilterCollection, apply_event_fields
from homeserver.rooms.ignored import NOBODY, IgnoredUsers, without_ignored
from homeserver.rooms.membership_changes import membership_changes
from homeserver.rooms.memberships import MembershipCache
from homeserver.rooms.room_cache import LiveRoom, RoomCache
from homeserver.rooms.visibility import VisibilityFilter
from homeserver.sync.encoding import SharedJson
from homeserver.sync.notifier import Notifier
from homeserver.sync.sources import SOURCE_ORDER, SyncContext, SyncFragment, SyncSource
from homeserver.untrusted import parse_int64
from storage.account_data import GLOBAL, AccountDataChange
from storage.memberships import MembershipRow
from storage.storage import Storage

logger = logging.getLogger(__name__)

JsonDict = dict[str, Any]

STRIPPED_STATE_TYPES = (
    "m.room.create",
    "m.room.join_rules",
    "m.room.name",
    "m.room.avatar",
    "m.room.canonical_alias",
    "m.room.encryption",
    "m.room.topic",
)

_TOKEN_RE = re.compile(r"^s\d+(?:_\d+)*$")
TOKEN_FIELDS = ("events", "account_data", *SOURCE_ORDER)
_FIELD_INDEX = {name: i for i, name in enumerate(TOKEN_FIELDS)}


@dataclass(frozen=True, slots=True)
class SyncToken:
    """One position per stream, in ``TOKEN_FIELDS`` order: ``s<events>_<account_data>_...``.

    Tokens from before a stream existed simply have fewer parts (read as 0).
    """

    positions: tuple[int, ...]

    @property
    def events(self) -> int:
        return self.positions[0]

    @property
    def account_data(self) -> int:
        return self.positions[1]

    def get(self, name: str) -> int:
        return self.positions[_FIELD_INDEX[name]]

    def __str__(self) -> str:
        return "s" + "_".join(str(p) for p in self.positions)

    @classmethod
    def parse(cls, token: str) -> SyncToken:
        if not _TOKEN_RE.match(token):
            raise MatrixError(400, Codes.INVALID_PARAM, f"Invalid sync token {token!r}")
        parts = [parse_int64(p, "since") for p in token[1:].split("_")][: len(TOKEN_FIELDS)]
        parts += [0] * (len(TOKEN_FIELDS) - len(parts))
        return cls(tuple(parts))


@dataclass(frozen=True, slots=True)
class SyncRequest:
    user_id: str
    device_id: str | None
    since: SyncToken | None
    timeout_ms: int
    filters: FilterCollection
    full_state: bool
    # The ``set_presence`` query parameter (None: the default, online).
    set_presence: str | None = None


@dataclass(slots=True)
class InitialPrefetch:
    """What an initial sync reads for all its joined rooms at once, not room by room."""

    # room id -> the newest events up to the sync's position, and whether older were cut
    timelines: dict[str, tuple[list[Event], bool]]
    # event id -> bundled aggregations, for every event of ``timelines``
    bundles: dict[str, JsonDict]


def strip_event(ev: Event) -> JsonDict:
    return {"type": ev.type, "state_key": ev.state_key, "content": ev.content, "sender": ev.sender}


def stripped_state(room: LiveRoom, invite_event: Event | None) -> list[JsonDict]:
    out = [strip_event(room.state[(t, "")]) for t in STRIPPED_STATE_TYPES if (t, "") in room.state]
    if invite_event is not None:
        # The inviter's membership too (as Synapse), so clients can show who invited.
        inviter = room.state.get(("m.room.member", invite_event.sender))
        if inviter is not None and inviter.event_id != invite_event.event_id:
            out.append(strip_event(inviter))
        out.append(strip_event(invite_event))
    return out


# Shared room sections kept for the current events position (one per room and filter).
MAX_SHARED_SECTIONS = 256


@dataclass(frozen=True, slots=True)
class SharedSection:
    """The part of a joined room's incremental section that is the same for every
    member: built once per (room, window, filter) while the events position holds."""

    timeline: SharedJson
    state: SharedJson
    with_summary: bool
    unread_threads: bool
    # Senders of events with a transaction id: their own sections show it, so they
    # never use the shared one.
    txn_senders: frozenset[str]
    filters: FilterCollection


# Devices whose lazy-loaded members are remembered, and members remembered per device.
LAZY_MEMBER_DEVICES = 10_000
LAZY_MEMBERS_PER_DEVICE = 5_000


class LazyMembersSent:
    """Which member event of each room every device was last sent (with lazy-loaded
    members), so an incremental sync leaves out those it holds already (as Synapse's
    per-device cache). Memory only, bounded: forgetting means a redundant resend."""

    def __init__(self) -> None:
        # device -> room id -> member -> event id
        self._devices: OrderedDict[tuple[str, str | None], dict[str, dict[str, str]]] = (
            OrderedDict()
        )
        self._counts: dict[tuple[str, str | None], int] = {}

    def unsent(
        self,
        device: tuple[str, str | None],
        room_id: str,
        state: list[Event],
        timeline: list[Event],
        *,
        fresh: bool,
    ) -> list[Event]:
        """``state`` without the member events the device holds; records what it is
        now sent (in state or timeline). ``fresh``: a new sync sequence, it holds none."""
        rooms = self._devices.pop(device, None)
        if rooms is None:
            rooms = {}
            self._counts[device] = 0
        self._devices[device] = rooms
        if len(self._devices) > LAZY_MEMBER_DEVICES:
            gone, _ = self._devices.popitem(last=False)
            self._counts.pop(gone, None)
        if fresh:
            self._counts[device] -= len(rooms.pop(room_id, {}))
        sent = rooms.setdefault(room_id, {})
        out = [
            ev
            for ev in state
            if ev.type != "m.room.member" or sent.get(ev.state_key or "") != ev.event_id
        ]
        for ev in (*out, *timeline):
            if ev.type == "m.room.member" and ev.state_key is not None:
                if ev.state_key not in sent:
                    self._counts[device] += 1
                sent[ev.state_key] = ev.event_id
        if self._counts[device] > LAZY_MEMBERS_PER_DEVICE:
            rooms.clear()
            self._counts[device] = 0
        return out


_NO_FILTER = FilterCollection.from_json({})


def client_event(
    ev: Event, user_id: str, device_id: str | None, relations: JsonDict | None = None
) -> JsonDict:
    """An event as a client sees it in a sync: its transaction id for the device that
    sent it, its bundled aggregations (``relations``) if any."""
    out = ev.client_dict()
    if ev.txn_id is not None and ev.sender == user_id and ev.txn_device_id == device_id:
        out = dict(out)
        out["unsigned"] = {**out.get("unsigned", {}), "transaction_id": ev.txn_id}
    if relations:
        out = dict(out)
        out["unsigned"] = {**out.get("unsigned", {}), "m.relations": relations}
    return out


def room_heroes(room: LiveRoom, user_id: str) -> list[str] | None:
    """The spec's heroes of a room for ``user_id`` (None when it has a name or alias)."""
    return SyncHandler._heroes(room, user_id)


class SyncHandler:
    def __init__(
        self,
        storage: Storage,
        rooms: RoomCache,
        memberships: MembershipCache,
        notifier: Notifier,
        visibility: VisibilityFilter,
        clock: Clock,
    ) -> None:
        self._storage = storage
        self._rooms = rooms
        self._memberships = memberships
        self._notifier = notifier
        self._visibility = visibility
        self._clock = clock
        self._sources: dict[str, SyncSource] = {}
        # Room sections shared by the members a single event wakes (see _joined_room),
        # valid for the events position _shared_at only.
        self._shared_sections: dict[tuple[Any, ...], SharedSection] = {}
        self._shared_at = -1
        self._last_token_text: tuple[tuple[int, ...], str] = ((), "")
        self._lazy_members = LazyMembersSent()
        # Told when a sync starts (user, device, set_presence); each returns a callable
        # run when that sync ends (presence heartbeats).
        self.sync_hooks: list[
            Callable[[str, str | None, str | None], Awaitable[Callable[[], None]]]
        ] = []
        # Bundled aggregations (``unsigned.m.relations``) of a user's timeline events, by
        # event id; set by the composition root, asked for limited or new timelines only.
        self.bundler: Callable[[list[Event], str], Awaitable[dict[str, JsonDict]]] | None = None
        # The users each user ignores; set by the composition root.
        self.ignored: IgnoredUsers | None = None

    def add_source(self, source: SyncSource) -> None:
        if source.name not in SOURCE_ORDER:
            raise ValueError(f"unknown sync source {source.name}; add it to SOURCE_ORDER")
        self._sources[source.name] = source

    def current_token(self) -> SyncToken:
        positions = [
            self._storage.events.stream.current_position,
            self._storage.account_data.stream.current_position,
        ]
        for name in SOURCE_ORDER:
            source = self._sources.get(name)
            positions.append(source.current_position() if source is not None else 0)
        return SyncToken(tuple(positions))

    async def sync(self, req: SyncRequest) -> JsonDict:
        return (await self.sync_with_updates(req))[0]

    async def sync_with_updates(self, req: SyncRequest) -> tuple[JsonDict, bool]:
        """The /sync response and whether it holds anything for the user (a long-poll
        that timed out holds nothing; the WebSocket transport does not push those)."""
        ends = [
            await hook(req.user_id, req.device_id, req.set_presence) for hook in self.sync_hooks
        ]
        try:
            response, has_updates, _ = await self._sync(req)
            return response, has_updates
        finally:
            for end in ends:
                end()

    async def sync_held(self, req: SyncRequest) -> tuple[JsonDict, bool, SyncToken]:
        """``sync_with_updates`` for a connection whose hooks ``hold`` already runs (a
        WebSocket): no hooks per build; the token handed back comes parsed too."""
        return await self._sync(req)

    async def hold(
        self, user_id: str, device_id: str | None, set_presence: str | None
    ) -> tuple[Callable[[], None], ...]:
        """Start the sync hooks for a connection that stays open between syncs (a
        WebSocket): the user counts as syncing until every returned callable is called."""
        return tuple([await hook(user_id, device_id, set_presence) for hook in self.sync_hooks])

    @property
    def notifier(self) -> Notifier:
        return self._notifier

    async def room_events_between(
        self, room_id: str, from_stream: int, to_stream: int, limit: int
    ) -> tuple[list[Event], bool]:
        """A room's newest events in (from, to], oldest first, at most ``limit``, and
        whether older ones were cut: from memory when the room's recent window holds them."""
        room = await self._rooms.get(room_id)
        return await self._timeline_events(room, room_id, from_stream, to_stream, limit)

    async def visible_timeline(
        self, user_id: str, row: MembershipRow, from_stream: int, to_stream: int, limit: int
    ) -> tuple[list[Event], bool]:
        """A room's newest events in (from, to] that the user (membership ``row``) may
        see, oldest first, at most ``limit``, and whether older ones were cut: /sync's
        timeline rules (history visibility, withheld redactions, ignored users) for
        another transport (sliding sync)."""
        room_id = row.room_id
        room = await self._rooms.get(room_id)
        joined = row.membership == "join"
        events, limited = await self._timeline_events(room, room_id, from_stream, to_stream, limit)

        async def visible(batch: list[Event]) -> list[Event]:
            if not joined:
                return await self._visibility.filter_for_user(
                    user_id, batch, current_membership=row.membership
                )
            if batch and batch[0].stream_ordering <= row.stream_ordering:
                return await self._visible_with_current_state(user_id, room, batch, "join")
            return batch

        floor = events[0].stream_ordering if events else to_stream
        events = await visible(events)
        if limited:
            events, limited = await self._fill_timeline(
                room_id, from_stream, floor, events, limit, _NO_FILTER, visible
            )
        events = [ev for ev in events if not ev.withheld]
        ignored = await self.ignored.get(user_id) if self.ignored is not None else NOBODY
        if ignored:
            events = without_ignored(events, ignored)
        return events, limited

    async def source_updates(
        self, name: str, ctx: SyncContext, since: SyncToken, now: SyncToken
    ) -> SyncFragment | None:
        """One source's part for (since, now] (None without such a source)."""
        source = self._sources.get(name)
        if source is None:
            return None
        end = now.get(name)
        return await source.get_updates(ctx, min(since.get(name), end), end)

    async def _sync(self, req: SyncRequest) -> tuple[JsonDict, bool, SyncToken]:
        deadline = self._clock.seconds() + req.timeout_ms / 1000.0
        while True:
            now = self.current_token()
            if req.since is not None and (
                req.since.events > now.events or req.since.account_data > now.account_data
            ):
                # Persisted streams cannot go backwards; in-memory ones (typing) may.
                # A token from the future (e.g. from before a database restore): start over.
                raise MatrixError(400, Codes.INVALID_PARAM, "Sync token is ahead of the server")
            response, has_updates = await self._build(req, now)
            if has_updates or req.since is None or req.full_state:
                return response, has_updates, now
            if self.current_token() != now:
                continue  # something arrived while building: look again at once
            remaining = deadline - self._clock.seconds()
            if remaining <= 0:
                return response, False, now
            await self._notifier.wait(req.user_id, remaining)
            if self._clock.seconds() >= deadline and self.current_token() == now:
                return response, False, now

    # Building ------------------------------------------------------------------

    async def _build(self, req: SyncRequest, now: SyncToken) -> tuple[JsonDict, bool]:
        since = req.since
        filters = req.filters
        account_data = await self._account_data(req.user_id, since, now)
        rooms = await self._memberships.rooms_for_user(req.user_id)
        ignored = await self.ignored.get(req.user_id) if self.ignored is not None else NOBODY
        join: JsonDict = {}
        invite: JsonDict = {}
        leave: JsonDict = {}
        knock: JsonDict = {}
        prefetch = await self._initial_prefetch(req, rooms, now) if since is None else None
        for room_id, row in list(rooms.items()):
            if row.stream_ordering > now.events or not filters.room_allowed(room_id):
                continue
            changed = since is None or row.stream_ordering > since.events
            room_account_data = filters.filter_room_account_data(
                [
                    {"type": c.data_type, "content": c.content}
                    for c in account_data
                    if c.room_id == room_id
                ],
                room_id,
            )
            if row.membership == "join":
                section = await self._joined_room(
                    req, row, now, changed, room_account_data, prefetch, ignored
                )
                if section is not None:
                    join[room_id] = section
            elif row.membership in ("invite", "knock") and (changed or req.full_state):
                if row.membership == "invite" and row.sender in ignored:
                    continue  # as Synapse: invites from ignored users are not shown
                live = await self._rooms.get(room_id)
                if live is not None:
                    event = await self._storage.events.get_event(row.event_id)
                    events = stripped_state(live, event)
                else:
                    # A room we do not hold (a remote invite): the stripped state we were sent.
                    oob = await self._storage.memberships.get_out_of_band_stripped_state(
                        req.user_id, room_id
                    )
                    if oob is None:
                        continue
                    events = oob
                key = "invite_state" if row.membership == "invite" else "knock_state"
                target = invite if row.membership == "invite" else knock
                target[room_id] = {key: {"events": events}}
            elif row.membership in ("leave", "ban"):
                if since is None or req.full_state:
                    # As Synapse: rooms one was kicked or banned from always show; rooms
                    # one left oneself only with include_leave.
                    own_leave = row.membership == "leave" and row.sender == req.user_id
                    if own_leave and not filters.include_leave():
                        continue
                elif not changed:
                    continue
                if await self._rooms.get(room_id) is None:
                    section = await self._out_of_band_leave(req, row, room_account_data)
                else:
                    section = await self._left_room(req, row, now, room_account_data, ignored)
                if section is not None:
                    leave[room_id] = section

        fragments = await self._source_fragments(req, now, join, rooms)
        global_data = filters.filter_account_data(
            [
                {"type": c.data_type, "content": c.content}
                for c in account_data
                if c.room_id == GLOBAL
            ]
        )
        response: JsonDict = {
            "next_batch": self._token_text(now),
            "account_data": {"events": global_data},
            "presence": {"events": []},
            "to_device": {"events": []},
            "device_lists": {"changed": [], "left": []},
            "device_one_time_keys_count": {},
            "device_unused_fallback_key_types": [],
            "rooms": {"join": join, "invite": invite, "leave": leave, "knock": knock},
        }
        for fragment in fragments:
            for key, value in fragment.top_level.items():
                response[key] = value
        has_updates = bool(join or invite or leave or knock or global_data) or any(
            f.has_updates for f in fragments
        )
        return response, has_updates

    async def _out_of_band_leave(
        self, req: SyncRequest, row: MembershipRow, room_account_data: list[JsonDict]
    ) -> JsonDict:
        """A left room we do not hold (a rejected remote invite, a rescinded knock): its
        history is not ours, the leave alone is shown, as Synapse does for an out-of-band
        membership."""
        since = req.since
        events: list[Event] = []
        if since is None or row.stream_ordering > since.events:
            own = await self._storage.events.get_event(row.event_id)
            if own is not None:
                events = req.filters.filter_room_timeline([own], row.room_id)
        return {
            "timeline": {
                "events": [self._serialize(ev, req) for ev in events],
                "limited": False,
                "prev_batch": f"s{row.stream_ordering}",
            },
            "state": {"events": []},
            "account_data": {"events": room_account_data},
        }

    async def _source_fragments(
        self,
        req: SyncRequest,
        now: SyncToken,
        join: JsonDict,
        rooms: dict[str, MembershipRow],
    ) -> list[SyncFragment]:
        """Ask every source for its part; merge per-room parts into ``join``."""
        if not self._sources:
            return []
        since = req.since
        joined = frozenset(r for r, row in rooms.items() if row.membership == "join")
        newly = frozenset(
            r for r in joined if since is None or rooms[r].stream_ordering > since.events
        )
        changes: tuple[tuple[str, str, str], ...] = ()
        if since is not None:
            moved = {r for r, row in rooms.items() if row.stream_ordering > since.events}
            changes = await membership_changes(
                self._rooms,
                self._storage.events,
                self._storage.state_groups,
                joined | moved,
                since.events,
                now.events,
            )
        # Nothing that makes a quiet source speak without its own stream moving.
        still = since is not None and not newly and not changes
        ctx = SyncContext(
            user_id=req.user_id,
            device_id=req.device_id,
            joined_room_ids=joined,
            filters=req.filters,
            initial=since is None,
            newly_joined_room_ids=newly,
            membership_changes=changes,
        )
        fragments = []
        for name in SOURCE_ORDER:
            source = self._sources.get(name)
            if source is None:
                continue
            start = 0 if since is None else since.get(name)
            end = now.get(name)
            if start > end:
                start = end  # an in-memory stream restarted: nothing is owed
            if start == end and still and getattr(source, "quiet_when_still", False):
                continue
            fragment = await source.get_updates(ctx, start, end)
            fragments.append(fragment)
            for room_id, events in fragment.ephemeral.items():
                if room_id not in joined or not events:
                    continue
                section = join.get(room_id)
                if section is None:
                    section = self._empty_joined_section(room_id, now)
                    join[room_id] = section
                section["ephemeral"]["events"].extend(events)
            for room_id, extra in fragment.room_fields.items():
                if room_id in join:
                    join[room_id].update(extra)
        return fragments

    @staticmethod
    def _empty_joined_section(room_id: str, now: SyncToken) -> JsonDict:
        return {
            "timeline": {"events": [], "limited": False, "prev_batch": f"s{now.events}"},
            "state": {"events": []},
            "account_data": {"events": []},
            "ephemeral": {"events": []},
            "unread_notifications": {"notification_count": 0, "highlight_count": 0},
        }

    def _token_text(self, token: SyncToken) -> str:
        """``str(token)``, kept for the last token: a fan-out writes the same one
        into every woken member's response."""
        positions, text = self._last_token_text
        if positions != token.positions:
            text = str(token)
            self._last_token_text = (token.positions, text)
        return text

    async def _account_data(
        self, user_id: str, since: SyncToken | None, now: SyncToken
    ) -> list[AccountDataChange]:
        start = since.account_data if since is not None else 0
        if start >= now.account_data:
            return []
        return await self._storage.account_data.get_changes(user_id, start, now.account_data)

    async def _timeline_events(
        self, room: LiveRoom | None, room_id: str, from_stream: int, to_stream: int, limit: int
    ) -> tuple[list[Event], bool]:
        """Newest events in (from, to], oldest first, at most ``limit``; and whether cut."""
        held = self._timeline_in_memory(room, from_stream, to_stream, limit)
        if held is not None:
            return held
        return await self._storage.events.get_room_events_between(
            room_id, from_stream, to_stream, limit
        )

    @staticmethod
    def _timeline_in_memory(
        room: LiveRoom | None, from_stream: int, to_stream: int, limit: int
    ) -> tuple[list[Event], bool] | None:
        """``_timeline_events`` from ``room.recent`` alone, or None if it may lack some."""
        if room is None:
            return None
        window = room.recent_between(from_stream, to_stream)
        if from_stream >= room.recent_floor or len(window) > limit:
            return window[-limit:] if limit else [], len(window) > limit
        return None

    def _recent_mark(self, room_id: str) -> tuple[object, ...]:
        """What changes when an event enters a loaded room's ``recent`` (or it reloads)."""
        room = self._rooms.get_if_loaded(room_id)
        if room is None:
            return ()
        return room, room.recent_floor, len(room.recent), room.recent[-1] if room.recent else None

    async def _initial_prefetch(
        self, req: SyncRequest, rooms: dict[str, MembershipRow], now: SyncToken
    ) -> InitialPrefetch:
        """The joined rooms (loaded into memory), their timelines and the timelines'
        bundled aggregations, each read for all rooms in one go: a query per room
        makes an initial sync of a large account slow, above all after a restart."""
        limit = req.filters.timeline_limit()
        joined = [
            room_id
            for room_id, row in rooms.items()
            if row.membership == "join"
            and row.stream_ordering <= now.events
            and req.filters.room_allowed(room_id)
        ]
        await self._rooms.preload(joined)
        timelines: dict[str, tuple[list[Event], bool]] = {}
        unheld: list[str] = []
        for room_id in joined:
            room = self._rooms.get_if_loaded(room_id)
            held = self._timeline_in_memory(room, 0, now.events, limit)
            if held is None:
                unheld.append(room_id)
            else:
                timelines[room_id] = held
        before = {room_id: self._recent_mark(room_id) for room_id in unheld}
        # One more than the timeline: with it in ``recent``, memory gives the next ones.
        read = await self._storage.events.get_rooms_latest_events(unheld, now.events, limit + 1)
        for room_id, (events, cut) in read.items():
            # (max: fewer events than the limit must not slice from the end)
            timelines[room_id] = events[max(0, len(events) - limit) :], cut or len(events) > limit
            room = self._rooms.get_if_loaded(room_id)
            if room is not None and self._recent_mark(room_id) == before[room_id]:
                # Unchanged while read: keep them, the next syncs need no query.
                room.seed_recent(events, cut, now.events)
        bundles: dict[str, JsonDict] = {}
        if self.bundler is not None:
            every = [ev for events, _ in timelines.values() for ev in events]
            bundles = await self.bundler(every, req.user_id)
        return InitialPrefetch(timelines, bundles)

    def _serialize(
        self, ev: Event, req: SyncRequest, relations: JsonDict | None = None
    ) -> JsonDict:
        if req.filters.event_format == "federation":
            out: JsonDict = dict(ev.pdu)
            out["event_id"] = ev.event_id
        else:
            out = client_event(ev, req.user_id, req.device_id, relations)
        if req.filters.event_fields:
            out = apply_event_fields(out, list(req.filters.event_fields))
        return out

    async def _joined_room(
        self,
        req: SyncRequest,
        row: MembershipRow,
        now: SyncToken,
        changed: bool,
        room_account_data: list[JsonDict],
        prefetch: InitialPrefetch | None = None,
        ignored: frozenset[str] = NOBODY,
    ) -> JsonDict | None:
        room_id = row.room_id
        room = await self._rooms.get(room_id)
        filters = req.filters
        limit = filters.timeline_limit()
        if changed and req.since is not None:
            # A membership event of the user's own in the window: a fresh start of the
            # room only if they were not joined before it (not for a profile change).
            changed = await self._newly_joined(room, room_id, req.user_id, req.since, now)
        from_stream = 0 if (changed or req.since is None) else req.since.events
        shared_key: tuple[Any, ...] | None = None
        if (
            room is not None
            and req.since is not None
            and prefetch is None
            and not (changed or req.full_state)
            and not self._dedups_members(req)  # each device's members sent differ
        ):
            # The live fan-out: every member woken by the same event asks for the same
            # window of the same room, usually with the same filter. The room part is
            # built once for all of them; only per-user fields are added to a copy.
            if self._shared_at != now.events:
                self._shared_sections.clear()
                self._shared_at = now.events
            # By identity: parsed filters are interned (the servlet), and the entry
            # holds the filter, so its id is not reused while the entry lives.
            shared_key = (room_id, from_stream, id(filters), ignored)
            shared = self._shared_sections.get(shared_key)
            if shared is not None and req.user_id not in shared.txn_senders:
                return self._personalise(shared, req, room, room_account_data)
        prefetched = prefetch.timelines.get(room_id) if prefetch is not None else None
        if prefetched is not None:
            events, limited = prefetched
        else:
            events, limited = await self._timeline_events(
                room, room_id, from_stream, now.events, limit
            )

        async def visible(batch: list[Event]) -> list[Event]:
            if batch and batch[0].stream_ordering <= row.stream_ordering:
                # Some events may predate the user's join: apply history visibility.
                # (The user is joined, since ``row``, at every event after it.)
                return await self._visible_with_current_state(req.user_id, room, batch, "join")
            return batch

        floor = events[0].stream_ordering if events else now.events
        events = await visible(events)
        if limited:
            events, limited = await self._fill_timeline(
                room_id, from_stream, floor, events, limit, filters, visible
            )
        # Withheld redactions (they do not take effect) never reach clients.
        timeline = filters.filter_room_timeline([e for e in events if not e.withheld], room_id)
        if ignored:
            timeline = without_ignored(timeline, ignored)

        state: list[Event] = []
        if changed or req.full_state or req.since is None:
            # The state at the start of the timeline the client is given (the filtered
            # one): with none, the current state.
            state = await self._state_before(room, room_id, timeline, now)
        elif limited:
            state = await self._state_delta(
                room_id, timeline[0] if timeline else None, req.since, now.events
            )
        # An incremental sync of an unbroken timeline: the senders' members go in the
        # state block even where their member event is in the timeline (a join), as
        # Synapse sends them (the members after the timeline's first event). Hydrogen
        # names a member's own join from there (else by user id), as nothing before
        # the join in the timeline tells it.
        live_incremental = req.since is not None and not (changed or limited)
        if filters.lazy_load_members() and not req.full_state:
            # Members of the timeline's senders; on a fresh start of the room also the
            # user's own and the heroes' (the spec: heroes' members MUST be included).
            senders = {ev.sender for ev in timeline}
            if changed or req.since is None:
                senders.add(req.user_id)
                if room is not None:
                    senders.update(self._heroes(room, req.user_id) or [])
            if changed or req.since is None or not limited:
                # (A gapped incremental sync keeps every member change of the gap, as
                # Synapse: the client could not see them happen.)
                state = [
                    ev for ev in state if ev.type != "m.room.member" or ev.state_key in senders
                ]
            present = {ev.state_key for ev in state if ev.type == "m.room.member"}
            if not live_incremental:
                present |= {ev.state_key for ev in timeline if ev.type == "m.room.member"}
            missing = senders - present
            if missing and room is not None:
                state.extend(
                    room.state[("m.room.member", u)]
                    for u in sorted(missing)
                    if ("m.room.member", u) in room.state
                    and room.state[("m.room.member", u)].stream_ordering <= now.events
                )
        timeline_ids = {ev.event_id for ev in timeline}
        keep_members = live_incremental and filters.lazy_load_members()
        state = [
            ev
            for ev in filters.filter_room_state(state, room_id)
            if ev.event_id not in timeline_ids or (keep_members and ev.type == "m.room.member")
        ]
        if self._dedups_members(req):
            state = self._lazy_members.unsent(
                (req.user_id, req.device_id), room_id, state, timeline, fresh=req.since is None
            )

        if not (timeline or state or room_account_data or changed or req.full_state):
            return None
        first = timeline[0] if timeline else (events[0] if events else None)
        if first is None or (req.since is None and not limited):
            # An initial sync holding the room whole: as Synapse, paging back starts at
            # now (the timeline's events again), not before the create event (nothing).
            prev_batch = f"s{now.events}"
        else:
            # Pagination tokens name the point just after an event: just before `first`.
            prev_batch = f"t{first.depth}-{first.stream_ordering - 1}"
        if changed and req.since is not None:
            # A room newly joined in an incremental sync is always limited (as Synapse):
            # the client holds none of it, whatever the filter left of its history.
            limited = True
        bundles: dict[str, JsonDict] = {}
        if prefetched is not None and prefetch is not None:
            bundles = prefetch.bundles
        elif self.bundler is not None and timeline and (limited or changed or req.since is None):
            bundles = await self.bundler(timeline, req.user_id)
        txn_senders = frozenset(ev.sender for ev in timeline if ev.txn_id is not None)
        if (
            shared_key is not None
            and room is not None
            and timeline
            and not bundles
            and req.user_id not in txn_senders  # their copy carries transaction ids
            and self._shared_at == now.events
        ):
            # Nothing user-specific inside: the same for every member with this filter.
            shared = SharedSection(
                timeline=SharedJson(
                    events=[self._serialize(ev, req) for ev in timeline],
                    limited=limited,
                    prev_batch=prev_batch,
                ),
                state=SharedJson(events=[self._serialize(ev, req) for ev in state]),
                with_summary=any(ev.type == "m.room.member" for ev in timeline),
                unread_threads=filters.unread_thread_notifications(),
                txn_senders=txn_senders,
                filters=filters,
            )
            if len(self._shared_sections) >= MAX_SHARED_SECTIONS:
                self._shared_sections.pop(next(iter(self._shared_sections)))
            self._shared_sections[shared_key] = shared
            return self._personalise(shared, req, room, room_account_data)
        section: JsonDict = {
            "timeline": {
                "events": [self._serialize(ev, req, bundles.get(ev.event_id)) for ev in timeline],
                "limited": limited,
                "prev_batch": prev_batch,
            },
            "state": {"events": [self._serialize(ev, req) for ev in state]},
            "account_data": {"events": room_account_data},
            "ephemeral": {"events": []},
            "unread_notifications": {"notification_count": 0, "highlight_count": 0},
        }
        if room is not None and (
            changed or req.since is None or any(ev.type == "m.room.member" for ev in timeline)
        ):
            section["summary"] = self._summary(room, req.user_id)
        if filters.unread_thread_notifications():
            section["unread_thread_notifications"] = {}
        return section

    @staticmethod
    def _dedups_members(req: SyncRequest) -> bool:
        """Lazy-loaded members a device was sent are not sent again (unless asked)."""
        return (
            req.filters.lazy_load_members()
            and not req.filters.include_redundant_members()
            and not req.full_state
        )

    @staticmethod
    def _personalise(
        shared: SharedSection, req: SyncRequest, room: LiveRoom, room_account_data: list[JsonDict]
    ) -> JsonDict:
        """A member's section from the shared part: the timeline and state objects are
        shared between responses (never mutated); the rest is the member's own."""
        section: JsonDict = {
            "timeline": shared.timeline,
            "state": shared.state,
            "account_data": {"events": room_account_data},
            "ephemeral": {"events": []},
            "unread_notifications": {"notification_count": 0, "highlight_count": 0},
        }
        if shared.with_summary:
            section["summary"] = SyncHandler._summary(room, req.user_id)
        if shared.unread_threads:
            section["unread_thread_notifications"] = {}
        return section

    async def _left_room(
        self,
        req: SyncRequest,
        row: MembershipRow,
        now: SyncToken,
        room_account_data: list[JsonDict],
        ignored: frozenset[str] = NOBODY,
    ) -> JsonDict | None:
        room_id = row.room_id
        room = await self._rooms.get(room_id)
        since = req.since
        from_stream = 0 if since is None else since.events
        limit = req.filters.timeline_limit()
        # Was the user joined at ``since``? Then the client holds the room's state
        # and is told what changed only; else (a first sync, or a room joined and
        # left within the window) the state whole.
        fresh = (
            since is None
            or req.full_state
            or not await self._joined_at(room_id, req.user_id, since)
        )
        # History up to and including the leave event, not after.
        events, limited = await self._timeline_events(
            room, room_id, from_stream, row.stream_ordering, limit
        )

        async def visible(batch: list[Event]) -> list[Event]:
            return await self._visibility.filter_for_user(
                req.user_id, batch, current_membership="leave"
            )

        floor = events[0].stream_ordering if events else row.stream_ordering
        events = await visible(events)
        if limited:
            events, limited = await self._fill_timeline(
                room_id, from_stream, floor, events, limit, req.filters, visible
            )
        timeline = req.filters.filter_room_timeline(events, room_id)
        if ignored:
            timeline = without_ignored(timeline, ignored)
        state: list[Event] = []
        if fresh:
            if timeline:
                state = await self._state_at(timeline[0].event_id, before=True)
            else:
                state = await self._state_at_stream(room_id, row.stream_ordering)
        elif limited and since is not None:
            state = await self._state_delta(
                room_id, timeline[0] if timeline else None, since, row.stream_ordering
            )
        ids = {ev.event_id for ev in timeline}
        state = [
            ev for ev in req.filters.filter_room_state(state, room_id) if ev.event_id not in ids
        ]
        first = timeline[0] if timeline else None
        return {
            "timeline": {
                "events": [self._serialize(ev, req) for ev in timeline],
                "limited": limited,
                "prev_batch": f"t{first.depth}-{first.stream_ordering - 1}"
                if first
                else f"s{row.stream_ordering}",
            },
            "state": {"events": [self._serialize(ev, req) for ev in state]},
            "account_data": {"events": room_account_data},
        }

    async def _state_at(self, event_id: str, *, before: bool) -> list[Event]:
        ids = await self._storage.state_groups.get_state_ids_at_event(event_id, before=before)
        if not ids:
            return []
        events = await self._storage.events.get_events(ids.values())
        return [events[e] for e in ids.values() if e in events]

    async def _state_at_stream(self, room_id: str, stream: int) -> list[Event]:
        ids = await self._storage.state_groups.get_state_ids_at_stream(room_id, stream)
        events = await self._storage.events.get_events(ids.values())
        return [events[e] for e in ids.values() if e in events]

    async def _newly_joined(
        self,
        room: LiveRoom | None,
        room_id: str,
        user_id: str,
        since: SyncToken,
        now: SyncToken,
    ) -> bool:
        """Whether the user, joined now, was not joined at ``since`` or left (and came
        back) after it: the client then holds none of the room's state (as Synapse's
        newly joined rooms)."""
        if room is not None:
            window = room.events_after(since.events)
            if window is not None and any(
                ev.type == "m.room.member"
                and ev.state_key == user_id
                and ev.membership != "join"
                and ev.stream_ordering <= now.events
                for ev in window
            ):
                return True
        return not await self._joined_at(room_id, user_id, since)

    async def _joined_at(self, room_id: str, user_id: str, since: SyncToken) -> bool:
        ids = await self._storage.state_groups.get_state_ids_at_stream(room_id, since.events)
        member_id = ids.get(("m.room.member", user_id))
        if member_id is None:
            return False
        member = await self._storage.events.get_event(member_id)
        return member is not None and member.membership == "join"

    async def _fill_timeline(
        self,
        room_id: str,
        from_stream: int,
        floor: int,
        events: list[Event],
        limit: int,
        filters: FilterCollection,
        visible: Callable[[list[Event]], Awaitable[list[Event]]],
    ) -> tuple[list[Event], bool]:
        """A cut timeline (``events``: those the user may see of the newest ``limit``,
        the oldest at ``floor``) of which the filter or history visibility drops some:
        older events of (from_stream, floor) until ``limit`` of them are kept, the
        room's start, or a few pages (as Synapse). Returns the visible events from the
        first kept one on, and whether older kept events may remain."""
        if limit <= 0 or filters.blocks_all_room_timeline():
            return events, True
        matched = filters.filter_room_timeline(events, room_id)
        if len(matched) >= limit:
            return events, True
        page = max(limit * 2, 10)
        more = True
        for _ in range(5):
            older, more = await self._storage.events.get_room_events_between(
                room_id, from_stream, floor - 1, page
            )
            if not older:
                more = False
                break
            floor = older[0].stream_ordering
            events = await visible(older) + events
            matched = filters.filter_room_timeline(events, room_id)
            if not more or len(matched) >= limit:
                break
        if len(matched) > limit:
            more = True
        if len(matched) >= limit:
            first = matched[-limit].stream_ordering
            events = [ev for ev in events if ev.stream_ordering >= first]
        return events, more

    async def _visible_with_current_state(
        self, user_id: str, room: LiveRoom | None, events: list[Event], membership: str
    ) -> list[Event]:
        """History visibility applied to ``events``, keeping those in the room's current
        state (as Synapse: a member sees the state it is told about, even set while it
        could not see the room)."""
        visible = await self._visibility.filter_for_user(
            user_id, events, current_membership=membership
        )
        if room is None:
            return visible
        kept = {ev.event_id: ev for ev in visible}  # (as shown: some may come redacted)
        current = {ev.event_id for ev in room.state.values()}
        return [
            kept.get(ev.event_id, ev)
            for ev in events
            if ev.event_id in kept or (ev.event_id in current and not ev.withheld)
        ]

    async def _state_before(
        self, room: LiveRoom | None, room_id: str, timeline: list[Event], now: SyncToken
    ) -> list[Event]:
        """The state before the first timeline event (or at ``now`` with no timeline)."""
        if (
            room is not None
            and not any(ev.is_state() for ev in timeline)
            and all(ev.stream_ordering <= now.events for ev in room.state.values())
        ):
            return list(room.state.values())  # no state change inside the window: memory
        if timeline:
            return await self._state_at(timeline[0].event_id, before=True)
        ids = await self._storage.state_groups.get_state_ids_at_stream(room_id, now.events)
        events = await self._storage.events.get_events(ids.values())
        return [events[e] for e in ids.values() if e in events]

    async def _state_delta(
        self, room_id: str, first: Event | None, since: SyncToken, upto: int
    ) -> list[Event]:
        """State at the start of a limited timeline (at ``upto`` with none) that
        differs from the state at ``since``."""
        if first is not None:
            at_start = (
                await self._storage.state_groups.get_state_ids_at_event(first.event_id, before=True)
                or {}
            )
        else:
            at_start = await self._storage.state_groups.get_state_ids_at_stream(room_id, upto)
        at_since = await self._storage.state_groups.get_state_ids_at_stream(room_id, since.events)
        changed = [eid for key, eid in at_start.items() if at_since.get(key) != eid]
        events = await self._storage.events.get_events(changed)
        return [events[e] for e in changed if e in events]

    @staticmethod
    def _summary(room: LiveRoom, user_id: str) -> JsonDict:
        summary: JsonDict = {
            "m.joined_member_count": len(room.joined_members()),
            "m.invited_member_count": len(room.members_with("invite")),
        }
        heroes = SyncHandler._heroes(room, user_id)
        if heroes is not None:
            summary["m.heroes"] = heroes
        return summary

    @staticmethod
    def _heroes(room: LiveRoom, user_id: str) -> list[str] | None:
        """None when the room has a name or canonical alias; else (the spec) the first
        5 joined or invited members by stream order, never the user, falling back to
        members who left or were banned."""
        if room.state_content("m.room.name").get("name") or room.state_content(
            "m.room.canonical_alias"
        ).get("alias"):
            return None

        def first_five(memberships: tuple[str, ...]) -> list[str]:
            members = [
                ev
                for (etype, key), ev in room.state.items()
                if etype == "m.room.member" and key != user_id and ev.membership in memberships
            ]
            members.sort(key=lambda ev: ev.stream_ordering)
            return [ev.state_key or "" for ev in members[:5]]

        return first_five(("join", "invite")) or first_five(("leave", "ban"))
