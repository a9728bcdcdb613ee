"""Hot room state in memory: current state, forward extremities, recent events.

Invariants:
- A ``LiveRoom`` is changed only on the reactor thread, by the room writer
  (``rooms/writer.py``) at the moment an event is accepted (before it is committed).
  The persister commits events in the order they were applied, so the in-memory
  order is the stream order.
- If committing fails, the room is dropped from the cache (``invalidate``) and reloaded
  from the database, which holds exactly what was committed.
- ``recent`` holds the newest events of the room in stream order; a sync that needs
  events after a position older than ``recent_floor`` asks the database instead.
- ``newest_bump`` is the stream position of the newest event of a ``BUMP_EVENT_TYPES``
  type added to ``recent`` since the room came into memory (0: none yet); later events
  of those types only come through ``add_recent``, so it stays the newest one even
  after the event itself has fallen out of ``recent``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Any

from twisted.internet import defer

from homeserver.async_utils import observe
from homeserver.events.event import Event
from homeserver.events.format import references_for_version
from homeserver.events.redaction import redaction_applies
from homeserver.events.room_versions import RoomVersion
from storage.events import EventsStore, RoomSnapshot
from storage.state_groups import StateGroupStore, StateKey

RECENT_EVENTS = 100

# The event types that move a room up a simplified sliding sync list (its
# ``bump_stamp``): Synapse's SLIDING_SYNC_DEFAULT_BUMP_EVENT_TYPES.
BUMP_EVENT_TYPES = frozenset(
    {
        "m.room.create",
        "m.room.message",
        "m.room.encrypted",
        "m.sticker",
        "m.call.invite",
        "m.poll.start",
        "m.beacon_info",
    }
)


@dataclass(eq=False)
class LiveRoom:
    room_id: str
    room_version: RoomVersion
    state: dict[StateKey, Event]
    extremities: list[str]
    max_depth: int
    state_group: int
    state_group_delta_depth: int
    recent: deque[Event] = field(default_factory=lambda: deque(maxlen=RECENT_EVENTS))
    # Stream position below which `recent` may be missing events.
    recent_floor: int = 0
    newest_bump: int = 0
    _joined: set[str] | None = field(default=None, repr=False)

    def joined_members(self) -> set[str]:
        """Users whose membership is ``join`` (cached until member state changes)."""
        if self._joined is None:
            self._joined = set(self.members_with("join"))
        return self._joined

    def set_state(self, event: Event) -> None:
        self.state[event.state_tuple] = event
        if event.type == "m.room.member":
            self._joined = None

    @property
    def create_event(self) -> Event | None:
        return self.state.get(("m.room.create", ""))

    def membership_of(self, user_id: str) -> str | None:
        ev = self.state.get(("m.room.member", user_id))
        return ev.membership if ev is not None else None

    def members_with(self, membership: str) -> list[str]:
        return [
            key[1]
            for key, ev in self.state.items()
            if key[0] == "m.room.member" and ev.membership == membership
        ]

    def state_content(self, event_type: str, state_key: str = "") -> dict[str, Any]:
        ev = self.state.get((event_type, state_key))
        return ev.content if ev is not None else {}

    def references(self, event_ids: list[str]) -> list[Any]:
        """``prev_events`` / ``auth_events`` of a new event in this room's format: the
        ids, or in v1/v2 rooms ``[id, {"sha256": content hash}]`` pairs (the hash of
        the referenced events held in memory, as Synapse fills it in)."""
        if not self.room_version.event_id_in_event:
            return list(event_ids)
        wanted = set(event_ids)
        hashes: dict[str, Any] = {}
        for ev in (*self.state.values(), *self.recent):
            if ev.event_id in wanted:
                hashes[ev.event_id] = ev.pdu.get("hashes")
        return references_for_version(event_ids, self.room_version, hashes)

    def auth_state(self) -> dict[StateKey, dict[str, object]]:
        return {key: pdu_with_id(ev) for key, ev in self.state.items()}

    def apply_redaction(self, redaction: Event) -> None:
        """Mark the redacted event wherever memory holds it: recent events and state
        (a state event loaded from the database is not among the recent ones), when the
        redaction applies to it (the same rule as the database's, events/redaction.py)."""
        if redaction.rejected_reason is not None:
            return  # rejected or soft-failed: never applied (nor stored as a redaction)
        target_id = redaction.redacts
        held = [ev for ev in self.recent if ev.event_id == target_id]
        held += [ev for ev in self.state.values() if ev.event_id == target_id]
        for target in held:
            if target.redacted_by is None and redaction_applies(
                redaction,
                target,
                redaction.room_version,
                sender_had_power=redaction.sender_had_redact_power,
            ):
                target.redacted_by = redaction.event_id
                target.redaction = redaction
                target.invalidate_client_cache()

    def add_recent(self, event: Event) -> None:
        """The room's newest event (applied, in stream order) joins ``recent``."""
        self.recent.append(event)
        if len(self.recent) == self.recent.maxlen:
            self.recent_floor = self.recent[0].stream_ordering - 1
        if event.type in BUMP_EVENT_TYPES:
            self.newest_bump = event.stream_ordering

    def drop_from_timeline(self, event_ids: AbstractSet[str]) -> None:
        """Purged events leave ``recent``: the database no longer holds them in the
        timeline either, so reads from memory and from the database still agree."""
        if any(ev.event_id in event_ids for ev in self.recent):
            kept = [ev for ev in self.recent if ev.event_id not in event_ids]
            self.recent = deque(kept, maxlen=self.recent.maxlen)
            # The newest bump may be gone: only what is still held is known for sure.
            self.newest_bump = next(
                (ev.stream_ordering for ev in reversed(kept) if ev.type in BUMP_EVENT_TYPES), 0
            )

    def redaction_took_effect(self, redaction_id: str) -> None:
        """A withheld redaction in ``recent`` applied once its target arrived: show it."""
        for ev in self.recent:
            if ev.event_id == redaction_id:
                ev.withheld = False

    def seed_recent(self, events: list[Event], limited: bool, up_to: int) -> bool:
        """Put events read from the database in front of ``recent`` (a room loaded after
        a restart holds none): ``events`` are the room's newest at or below ``up_to``
        (oldest first; ``limited``: older ones exist). The caller makes sure the room
        did not change while they were read. False if nothing was added."""
        if up_to < self.recent_floor:
            return False  # a gap between them and ``recent``
        older = [ev for ev in events if ev.stream_ordering <= self.recent_floor]
        space = (self.recent.maxlen or 0) - len(self.recent)
        if not older or space <= 0:
            return False
        if len(older) > space:
            older, limited = older[-space:], True
        # Redactions in ``recent`` may not be committed yet, so not in what was read.
        redactions = [ev for ev in self.recent if ev.type == "m.room.redaction"]
        self.recent.extendleft(reversed(older))
        self.recent_floor = older[0].stream_ordering - 1 if limited else 0
        for redaction in redactions:
            self.apply_redaction(redaction)
        return True

    def events_after(self, stream: int) -> list[Event] | None:
        """Events with stream ordering > ``stream`` from memory, or None if not all held."""
        if stream < self.recent_floor:
            return None
        return self.recent_between(stream, None)

    def recent_between(self, after: int, upto: int | None) -> list[Event]:
        """Held events with ``after`` < stream ordering <= ``upto``, oldest first.

        Walks back from the newest (``recent`` is in stream order): a live sync asks
        for the last few events, once per woken member."""
        out: list[Event] = []
        for ev in reversed(self.recent):
            position = ev.stream_ordering
            if position <= after:
                break
            if upto is None or position <= upto:
                out.append(ev)
        out.reverse()
        return out


def pdu_with_id(ev: Event) -> dict[str, object]:
    """The PDU plus its event id, as the auth rules want it (ids are not in v3+ PDUs)."""
    return {**ev.pdu, "event_id": ev.event_id}


class RoomCache:
    def __init__(self, events: EventsStore, state_groups: StateGroupStore) -> None:
        self._events = events
        self._state_groups = state_groups
        self._rooms: dict[str, LiveRoom] = {}
        self._loading: dict[str, defer.Deferred[LiveRoom | None]] = {}
        self._locks: dict[str, defer.DeferredLock] = {}
        # A reader process: rooms an event arrived for while they were being read (the
        # read may predate it): read again before installing.
        self._changed_while_loading: set[str] = set()
        # A reader process: the newest event position whose message was applied (its
        # positions may lag that; everything up to it is in the database, so a room
        # read now holds it and ``recent`` starts after it).
        self.held_up_to: Callable[[], int] = lambda: 0
        # Lookups through get() answered from memory / loaded (for the cache metrics).
        self.hits = 0
        self.misses = 0

    def lock(self, room_id: str) -> defer.DeferredLock:
        """Serialises changes to a room's graph: local sends take it only for the
        synchronous build step; remote events hold it while they resolve state."""
        lock = self._locks.get(room_id)
        if lock is None:
            lock = self._locks[room_id] = defer.DeferredLock()
        return lock

    def get_if_loaded(self, room_id: str) -> LiveRoom | None:
        return self._rooms.get(room_id)

    def cache_stats(self) -> tuple[int, int, int]:
        """(rooms in memory, hits, misses) of ``get``."""
        return len(self._rooms), self.hits, self.misses

    def loaded_rooms(self) -> Iterable[LiveRoom]:
        return self._rooms.values()

    async def get(self, room_id: str) -> LiveRoom | None:
        room = self._rooms.get(room_id)
        if room is not None:
            self.hits += 1
            return room
        self.misses += 1
        pending = self._loading.get(room_id)
        if pending is None:
            pending = defer.ensureDeferred(self._load(room_id))
            self._loading[room_id] = pending
            pending.addBoth(lambda r: (self._loading.pop(room_id, None), r)[1])
        # Every waiter gets the same result; errors propagate to all of them.
        return await observe(pending)

    async def _load(self, room_id: str) -> LiveRoom | None:
        while True:
            self._changed_while_loading.discard(room_id)
            snapshot = await self._events.load_room(room_id)
            if snapshot is None or snapshot.state_group is None:
                if room_id in self._changed_while_loading:
                    continue
                return None
            events = await self._events.get_events(snapshot.current_state.values())
            depth = await self._state_groups.get_state_group_delta_depth(snapshot.state_group)
            if room_id in self._changed_while_loading:
                continue
            return self._install(snapshot, snapshot.state_group, events, depth)

    async def preload(self, room_ids: Iterable[str]) -> None:
        """Load every room of ``room_ids`` not in memory, with a few queries for all of
        them (an initial sync after a restart) instead of a few per room."""
        missing = list(
            dict.fromkeys(r for r in room_ids if r not in self._rooms and r not in self._loading)
        )
        if len(missing) < 2:
            return  # ``get`` does one as well
        # Meanwhile ``get`` waits for this load, as for its own: nothing can be applied
        # to these rooms before they are in memory.
        pending: dict[str, defer.Deferred[LiveRoom | None]] = {}
        for room_id in missing:
            pending[room_id] = self._loading[room_id] = defer.Deferred()
        installed: dict[str, LiveRoom] = {}
        try:
            loaded = await self._events.load_rooms(missing)
            events = await self._events.get_events(
                eid for snapshot, _ in loaded.values() for eid in snapshot.current_state.values()
            )
            for snapshot, depth in loaded.values():
                if snapshot.state_group is not None:
                    installed[snapshot.room_id] = self._install(
                        snapshot, snapshot.state_group, events, depth
                    )
        except BaseException as e:
            for room_id, d in pending.items():
                self._loading.pop(room_id, None)
                d.errback(e)
                d.addErrback(lambda _: None)  # its waiters have it; the caller gets it too
            raise
        for room_id, d in pending.items():
            if room_id in self._changed_while_loading:
                # A reader process: an event arrived meanwhile; read it again.
                self._rooms.pop(room_id, None)
                defer.ensureDeferred(self._load_again(room_id, d))
                continue
            self._loading.pop(room_id, None)
            d.callback(installed.get(room_id))

    async def _load_again(self, room_id: str, d: defer.Deferred[LiveRoom | None]) -> None:
        try:
            room = await self._load(room_id)
        except BaseException as e:
            self._loading.pop(room_id, None)
            d.errback(e)
            d.addErrback(lambda _: None)
            return
        self._loading.pop(room_id, None)
        d.callback(room)

    def _install(
        self, snapshot: RoomSnapshot, state_group: int, events: dict[str, Event], depth: int
    ) -> LiveRoom:
        # Read after the snapshot: events of a room that is not in memory cannot be
        # applied (that needs the room), so the snapshot holds all of them up to here.
        position = max(self._events.stream.current_position, self.held_up_to())
        room_id = snapshot.room_id
        room = LiveRoom(
            room_id=room_id,
            room_version=snapshot.room_version,
            state={
                key: events[eid] for key, eid in snapshot.current_state.items() if eid in events
            },
            extremities=snapshot.forward_extremities,
            max_depth=snapshot.max_depth,
            state_group=state_group,
            state_group_delta_depth=depth,
            recent_floor=position,
        )
        # Another coroutine may have created it meanwhile (a room being created).
        return self._rooms.setdefault(room_id, room)

    def add_new_room(self, room: LiveRoom) -> None:
        self._rooms[room.room_id] = room

    def invalidate(self, room_id: str) -> None:
        self._rooms.pop(room_id, None)

    def invalidate_all(self) -> None:
        """A reader process that missed events: every room is read again."""
        self._changed_while_loading.update(self._loading)
        self._rooms.clear()

    def follow(self, event: Event, local: bool) -> None:
        """A reader process: bring the room in memory up to an event the writer
        persisted. A local message extends the room as ``RoomWriter.persist_local`` did; after
        anything else (state, whose group only the writer knows; remote events, whose
        state resolution may change more than the event) the room is loaded again."""
        room = self._rooms.get(event.room_id)
        if room is None:
            if event.room_id in self._loading:
                self._changed_while_loading.add(event.room_id)
            return
        if event.outlier:
            return
        newest = room.recent[-1].stream_ordering if room.recent else room.recent_floor
        if event.stream_ordering <= newest:
            return  # in the room as loaded, or older history (backfill)
        if not local or event.is_state():
            self.invalidate(event.room_id)
            return
        room.extremities = [event.event_id]
        room.max_depth = max(room.max_depth, event.depth)
        room.add_recent(event)
