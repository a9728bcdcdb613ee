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

from collections.abc import Callable, Iterable
from typing import Any

from twisted.internet import defer

from homeserver.events.event import Event
from homeserver.rooms.persister import EventPersister
from homeserver.rooms.room_cache import LiveRoom, RoomCache
from storage.events import EventsStore, PersistItem
from storage.state_groups import (
    MAX_STATE_DELTA_DEPTH,
    NewStateGroup,
    StateGroupStore,
)


class RoomWriter:
    def __init__(
        self,
        events: EventsStore,
        state_groups: StateGroupStore,
        rooms: RoomCache,
        on_persisted: Callable[[list[Event]], None],
    ) -> None:
        self._events = events
        self._state_groups = state_groups
        self._rooms = rooms
        # Owned here: a failed batch must reach ``_on_failure`` (and nothing else may
        # enqueue). Readers use ``pending``, ``wait_idle`` and ``preparers``.
        self.persister = EventPersister(events, on_persisted, self._on_failure)

    def _on_failure(self, room_ids: set[str]) -> None:
        for room_id in room_ids:
            self._rooms.invalidate(room_id)

    def _next_group(self) -> int:
        return self._state_groups.ids.next_id()

    def _append_recent(self, room: LiveRoom, event: Event) -> None:
        room.recent.append(event)
        if len(room.recent) == room.recent.maxlen:
            room.recent_floor = room.recent[0].stream_ordering - 1

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
        room.recent.append(event)
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
        self._append_recent(room, event)
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
