"""History visibility applied to stored events (the pure rules are in events/visibility).

Visibility is always judged by the state *at* each event (before it), never by the
room's current state: a server or user that joined late does not see what came before
because it is a member now.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from homeserver.events.event import Event
from homeserver.events.redaction import prune_event
from homeserver.events.visibility import (
    filter_events_for_client,
    filter_events_for_server,
    server_of_user,
)
from homeserver.rooms.ignored import IgnoredUsers, without_ignored
from homeserver.rooms.room_cache import RoomCache
from storage.events import EventsStore
from storage.state_groups import StateGroupStore

HISTORY_KEY = ("m.room.history_visibility", "")


def _as_redacted(ev: Event) -> Event:
    """A copy of ``ev`` with its content pruned as a redaction would (not stored)."""
    return Event(
        ev.event_id,
        prune_event(ev.pdu, ev.room_version),
        ev.room_version,
        stream_ordering=ev.stream_ordering,
    )


MEMBER = "m.room.member"


class VisibilityFilter:
    def __init__(
        self, events: EventsStore, state_groups: StateGroupStore, rooms: RoomCache
    ) -> None:
        self._events = events
        self._state_groups = state_groups
        self._rooms = rooms
        # The users each user ignores (their non-state events are never shown); set by
        # the composition root.
        self.ignored: IgnoredUsers | None = None
        # Which of some users are erased (deactivated with ``erase``); set by the
        # composition root.
        self.erased: Callable[[set[str]], Awaitable[set[str]]] | None = None

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
        state_ids = await self._state_groups.get_state_keys_at_events(
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

        visible = filter_events_for_client(
            events,
            user_id,
            state_at,
            current_membership=current_membership,
            is_peeking=current_membership is None,
            view=lambda e: (e.event_id, e.pdu),
        )
        if self.erased is None or not visible:
            return visible
        erased = await self.erased({ev.sender for ev in visible} - {user_id})
        if not erased:
            return visible
        # As Synapse: an erased user's events are redacted for whoever was not joined
        # when they were sent.
        return [
            _as_redacted(ev) if ev.sender in erased and state_at(ev.event_id)[1] != "join" else ev
            for ev in visible
        ]

    async def filter_for_server(
        self, server_name: str, events: list[Event], *, redact: bool
    ) -> list[dict[str, Any]]:
        """The PDUs of ``events`` for the remote ``server_name`` (``/backfill``,
        ``/get_missing_events``, ``/event``), in order. Those it may not see, by the
        history visibility and its users' memberships in the state at each event, are
        redacted (``redact``) or left out.

        As Synapse, an event without state (an outlier) counts as ``shared``: there is
        no state at it to judge by. The server's users are those with a membership in
        the current state of the event's room (a state key, once set, stays in it)."""
        if not events:
            return []
        keys: set[tuple[str, str]] = {HISTORY_KEY}
        for room_id in {ev.room_id for ev in events}:
            room = await self._rooms.get(room_id)
            if room is not None:
                keys.update(
                    k for k in room.state if k[0] == MEMBER and server_of_user(k[1]) == server_name
                )
        state_ids = await self._state_groups.get_state_keys_at_events(
            [ev.event_id for ev in events], sorted(keys), before=True
        )
        state_events = await self._events.get_events(
            {eid for m in state_ids.values() for eid in m.values()}
        )

        def state_at(event_id: str) -> tuple[str | None, Mapping[str, str | None]]:
            ids = state_ids.get(event_id, {})
            hv_event = state_events.get(ids.get(HISTORY_KEY, ""))
            hv = hv_event.content.get("history_visibility") if hv_event else None
            memberships = {
                key[1]: ev.membership
                for key, eid in ids.items()
                if key[0] == MEMBER and (ev := state_events.get(eid)) is not None
            }
            return (hv if isinstance(hv, str) else None), memberships

        visible = {
            ev.event_id
            for ev in filter_events_for_server(
                events, server_name, state_at, view=lambda e: (e.event_id, e.pdu)
            )
        }
        return [
            ev.pdu if ev.event_id in visible else prune_event(ev.pdu, ev.room_version)
            for ev in events
            if redact or ev.event_id in visible
        ]
