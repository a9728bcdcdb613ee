"""The room writer: the one place where a room's memory and its tables change together.

Every event that enters a room goes through here: a local send, a remote PDU, outliers
(auth chains, remote state, out-of-band invites), backfilled history and the first
event of a new room. Callers decide (auth checks, soft-fail, which state); the writer
alone allocates the stream ordering and state group ids, mutates the ``LiveRoom``,
builds the ``PersistItem`` and hands it to the persister, and drops a room from the
cache when a write of it fails, so it is reloaded from what was committed.

Invariants:
- Each ``persist_*`` call applies its event to memory and enqueues it without yielding
  to the reactor: the memory order of a room's events is its stream order and its
  commit order.
- The room's in-memory state group is always one that is (or is queued to be) in the
  database, and ``state_group_delta_depth`` is that group's delta depth.
- A failed commit invalidates every room of the failed batch; nothing applied to a
  room's memory survives it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from twisted.internet import defer

from homeserver.bus import Bus, EventsPersisted, RoomsInvalidated
from homeserver.events.event import Event
from homeserver.events.room_versions import RoomVersion
from homeserver.rooms.persister import EventPersister
from homeserver.rooms.room_cache import LiveRoom, RoomCache
from storage.events import EventsStore, PersistItem
from storage.state_groups import (
    MAX_STATE_DELTA_DEPTH,
    NewStateGroup,
    StateGroupStore,
    StateKey,
    StateMap,
)


class RoomWriter:
    def __init__(
        self,
        events: EventsStore,
        state_groups: StateGroupStore,
        rooms: RoomCache,
        bus: Bus,
    ) -> None:
        self._events = events
        self._state_groups = state_groups
        self._rooms = rooms
        self._bus = bus
        # Owned here: a failed batch must reach ``_on_failure`` (and nothing else may
        # enqueue). Readers use ``pending``, ``wait_idle`` and ``preparers``.
        self.persister = EventPersister(
            events, lambda batch: bus.publish(EventsPersisted(batch)), self._on_failure
        )

    def _on_failure(self, room_ids: set[str]) -> None:
        # Memory held what the database refused: drop it here at once, and tell other
        # processes holding these rooms.
        for room_id in room_ids:
            self._rooms.invalidate(room_id)
        self._bus.publish(RoomsInvalidated(tuple(sorted(room_ids))))

    def _next_group(self) -> int:
        return self._state_groups.ids.next_id()

    # Local events ------------------------------------------------------------------

    def create_room(self, event: Event, creator: str) -> tuple[LiveRoom, defer.Deferred[None]]:
        """Start a room with its create event; the room enters the cache at once."""
        event.stream_ordering = self._events.stream.allocate()
        group_id = self._next_group()
        room = LiveRoom(
            room_id=event.room_id,
            room_version=event.room_version,
            state={event.state_tuple: event},
            extremities=[event.event_id],
            max_depth=event.depth,
            state_group=group_id,
            state_group_delta_depth=0,
            recent_floor=event.stream_ordering - 1,
        )
        room.add_recent(event)
        self._rooms.add_new_room(room)
        item = PersistItem(
            event=event,
            state_group_before=group_id,
            state_group_after=group_id,
            new_state_group=NewStateGroup(group_id, None, {event.state_tuple: event.event_id}, 0),
            update_current_state=True,
            room_is_new=True,
            room_creator=creator,
        )
        return room, self.persister.enqueue(item)

    def persist_local(
        self,
        room: LiveRoom,
        event: Event,
        accepted_hooks: Iterable[Callable[[Event], None]] = (),
    ) -> defer.Deferred[None]:
        """Make an accepted local event the room's newest, in memory, and queue it; the
        Deferred fires once it is committed. ``accepted_hooks`` run after the event is
        applied to memory, before it is queued."""
        event.stream_ordering = self._events.stream.allocate()
        group_before = room.state_group
        group_after, new_group = self._next_state_group(room, event)
        room.extremities = [event.event_id]
        room.max_depth = max(room.max_depth, event.depth)
        if event.is_state():
            room.set_state(event)
            room.state_group = group_after
            assert new_group is not None
            room.state_group_delta_depth = new_group.delta_depth
        room.add_recent(event)
        for hook in accepted_hooks:
            hook(event)
        return self.persister.enqueue(
            PersistItem(
                event=event,
                state_group_before=group_before,
                state_group_after=group_after,
                new_state_group=new_group,
                update_current_state=True,
            )
        )

    def _next_state_group(self, room: LiveRoom, event: Event) -> tuple[int, NewStateGroup | None]:
        """The state group after ``event`` and, for a state event, the group to write."""
        if not event.is_state() or event.rejected_reason is not None:
            return room.state_group, None
        group_id = self._next_group()
        if room.state_group_delta_depth >= MAX_STATE_DELTA_DEPTH:
            full = {key: ev.event_id for key, ev in room.state.items()}
            full[event.state_tuple] = event.event_id
            return group_id, NewStateGroup(group_id, None, full, 0)
        return group_id, NewStateGroup(
            group_id,
            room.state_group,
            {event.state_tuple: event.event_id},
            room.state_group_delta_depth + 1,
        )

    # Outliers ---------------------------------------------------------------------

    def persist_outlier(
        self, event: Event, *, out_of_band_stripped_state: list[dict[str, Any]] | None = None
    ) -> defer.Deferred[None]:
        """Queue an event held outside any room's timeline (an auth chain's or a remote
        state's event; with ``out_of_band_stripped_state``, a local user's membership in
        a room we do not hold). No room's memory changes."""
        event.stream_ordering = self._events.stream.allocate()
        return self.persister.enqueue(
            PersistItem(
                event=event,
                state_group_before=-1,
                state_group_after=-1,
                new_state_group=None,
                update_current_state=False,
                out_of_band_stripped_state=out_of_band_stripped_state,
            )
        )

    # Remote events --------------------------------------------------------------------

    def persist_remote(
        self,
        room: LiveRoom,
        event: Event,
        state_before: StateMap,
        state_after: StateMap,
        *,
        extremities: list[str],
        new_current: StateMap | None,
        held: Mapping[str, Event],
        replaces_outlier: bool,
        write_full_state: bool = False,
    ) -> defer.Deferred[None]:
        """Queue a remote event of a room we hold, with the state groups before and
        after it; when accepted (``event.rejected_reason`` is None) it becomes part of
        the room's memory: ``extremities`` and, unless None, ``new_current`` (the
        resolved current state, whose events are all in ``held`` or ``event`` itself).
        ``write_full_state``: the database holds no current state of the room yet (it
        was just joined)."""
        event_id = event.event_id
        accepted = event.rejected_reason is None
        extra_groups: list[NewStateGroup] = []
        group_before = self._next_group()
        extra_groups.append(NewStateGroup(group_before, None, dict(state_before), 0))
        group_after = group_before
        new_group = None
        if event.is_state() and state_after.get(event.state_tuple) == event_id:
            group_after = self._next_group()
            new_group = NewStateGroup(group_after, group_before, {event.state_tuple: event_id}, 1)
        group_current = group_after
        if new_current is not None and new_current != state_after:
            # Resolved current state differs from the state after this event: store it
            # whole, so later local events can be stored as deltas on it.
            group_current = self._next_group()
            extra_groups.append(NewStateGroup(group_current, None, dict(new_current), 0))
        current_delta: dict[StateKey, str | None] | None = None
        if new_current is not None:
            old = {} if write_full_state else {key: ev.event_id for key, ev in room.state.items()}
            current_delta = {k: v for k, v in new_current.items() if old.get(k) != v}
            for k in old:
                if k not in new_current:
                    current_delta[k] = None

        event.stream_ordering = self._events.stream.allocate()
        if accepted:
            room.extremities = extremities
            room.max_depth = max(room.max_depth, event.depth)
            if new_current is not None and current_delta:
                for key, eid in current_delta.items():
                    if eid is None:
                        room.state.pop(key, None)
                    elif eid == event_id:
                        room.set_state(event)
                    elif eid in held:
                        room.set_state(held[eid])
                if new_current == state_after:
                    room.state_group = group_after
                    room.state_group_delta_depth = 1
                else:
                    room.state_group = group_current
                    room.state_group_delta_depth = 0
            room.add_recent(event)
        return self.persister.enqueue(
            PersistItem(
                event=event,
                state_group_before=group_before,
                state_group_after=group_after,
                new_state_group=new_group,
                update_current_state=False,
                extra_state_groups=tuple(extra_groups),
                current_state_delta=current_delta if accepted else None,
                replaces_outlier=replaces_outlier,
            )
        )

    def add_joined_room(
        self,
        room_id: str,
        room_version: RoomVersion,
        state: dict[StateKey, Event],
        extremities: list[str],
        max_depth: int,
    ) -> LiveRoom:
        """A room we just joined over federation enters the cache with the state we
        were sent, before our join is persisted on top (``persist_remote``)."""
        room = LiveRoom(
            room_id=room_id,
            room_version=room_version,
            state=state,
            extremities=extremities,
            max_depth=max_depth,
            state_group=self._next_group(),
            # Never the base of a delta: the next state group is stored whole.
            state_group_delta_depth=MAX_STATE_DELTA_DEPTH,
            recent_floor=self._events.stream.current_position,
        )
        self._rooms.add_new_room(room)
        return room

    # Backfilled history ---------------------------------------------------------------

    async def persist_backfilled(
        self,
        event: Event,
        state_before: StateMap,
        prev_group: tuple[int, int, StateMap] | None,
    ) -> tuple[int, int, StateMap]:
        """Store an event of history fetched with /backfill, now (not through the queue:
        it gets a negative stream ordering, which no reader waits for, and the room's
        memory does not change). ``prev_group``: (group, delta depth, state) after its
        single prev event, reused when it is ``state_before``. Returns the same for the
        state after ``event``."""
        event.stream_ordering = self._events.allocate_backfill_ordering()
        extra: list[NewStateGroup] = []
        if prev_group is not None and prev_group[2] == state_before:
            group_before, depth_before = prev_group[0], prev_group[1]
        else:
            group_before, depth_before = self._next_group(), 0
            extra.append(NewStateGroup(group_before, None, dict(state_before), 0))
        group_after, depth_after, state_after = group_before, depth_before, state_before
        new_group = None
        if event.is_state() and event.rejected_reason is None:
            state_after = {**state_before, event.state_tuple: event.event_id}
            group_after = self._next_group()
            if depth_before + 1 >= MAX_STATE_DELTA_DEPTH:
                new_group = NewStateGroup(group_after, None, dict(state_after), 0)
                depth_after = 0
            else:
                delta = {event.state_tuple: event.event_id}
                new_group = NewStateGroup(group_after, group_before, delta, depth_before + 1)
                depth_after = depth_before + 1
        await self._events.persist_batch(
            [
                PersistItem(
                    event=event,
                    state_group_before=group_before,
                    state_group_after=group_after,
                    new_state_group=new_group,
                    update_current_state=False,
                    extra_state_groups=tuple(extra),
                    backfilled=True,
                )
            ]
        )
        return group_after, depth_after, state_after

    # Repairs ----------------------------------------------------------------------------

    async def delete_extra_forward_extremities(self, room_id: str) -> int:
        """Keep only the room's newest forward extremity, in the table and in memory;
        how many were deleted."""
        lock = self._rooms.lock(room_id)
        await lock.acquire()
        try:
            deleted = await self._events.delete_extra_forward_extremities(room_id)
            room = self._rooms.get_if_loaded(room_id)
            if room is not None and deleted:
                # Extremities of events still being persisted are not in the table: kept.
                gone = set(deleted)
                room.extremities = [e for e in room.extremities if e not in gone]
        finally:
            lock.release()
        return len(deleted)
