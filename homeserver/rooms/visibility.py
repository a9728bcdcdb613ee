"""History visibility applied to stored events (the pure rules are in events/visibility)."""

from __future__ import annotations

from homeserver.events.event import Event
from homeserver.events.visibility import filter_events_for_client
from homeserver.rooms.ignored import IgnoredUsers, without_ignored
from homeserver.rooms.room_cache import RoomCache
from storage.events import EventsStore

HISTORY_KEY = ("m.room.history_visibility", "")


class VisibilityFilter:
    def __init__(self, events: EventsStore, rooms: RoomCache) -> None:
        self._events = events
        self._rooms = rooms
        # The users each user ignores (their non-state events are never shown); set by
        # the composition root.
        self.ignored: IgnoredUsers | None = None

    async def filter_for_user(
        self, user_id: str, events: list[Event], *, current_membership: str | None = None
    ) -> list[Event]:
        """The events ``user_id`` may see, using the state at each event (and not the
        non-state events of users they ignore, nor withheld redactions)."""
        # Redactions that do not take effect are never shown (as Synapse withholds them).
        events = [ev for ev in events if not ev.withheld]
        if not events:
            return []
        if self.ignored is not None:
            ignored = await self.ignored.get(user_id)
            if ignored:
                events = without_ignored(events, ignored)
                if not events:
                    return []
        member_key = ("m.room.member", user_id)
        wanted = [HISTORY_KEY, member_key]
        state_ids = await self._events.get_state_keys_at_events(
            [ev.event_id for ev in events], wanted, before=True
        )
        needed = {eid for m in state_ids.values() for eid in m.values()}
        state_events = await self._events.get_events(needed)

        def state_at(event_id: str) -> tuple[str | None, str | None]:
            ids = state_ids.get(event_id, {})
            hv_event = state_events.get(ids.get(HISTORY_KEY, ""))
            member_event = state_events.get(ids.get(member_key, ""))
            hv = hv_event.content.get("history_visibility") if hv_event else None
            membership = member_event.membership if member_event else None
            return (hv if isinstance(hv, str) else None), membership

        return filter_events_for_client(
            events,
            user_id,
            state_at,
            current_membership=current_membership,
            is_peeking=current_membership is None,
            view=lambda e: (e.event_id, e.pdu),
        )
