"""State resolution v1 (room version 1), as a pure function.

The spec's algorithm (``content/rooms/v1.md``, "State resolution"), read as Synapse
1.163 implements it (``synapse/state/v1.py``), so that rooms shared with it converge:

* A key is *conflicted* when the state sets holding it disagree on its event; a key
  held by only some of the sets is not a conflict (its one event is kept).
* Conflicted events missing from ``event_map`` are left out; a key left with one event
  is then unconflicted.
* Events are checked against *auth events* taken from the unconflicted state only
  (for every key the auth events selection picks for a conflicted event), then
  updated with what each pass resolved: power levels first, then join rules, then
  memberships, then everything else.
* For power levels, join rules and memberships the candidates are ordered by
  ascending ``depth`` then descending ``sha1(event_id)``; the first is taken, and each
  next one replaces it while it passes the auth rules against the state so far (the
  previous candidate included); the first failure stops the walk.
* Any other key takes the first candidate, by descending ``depth`` then ascending
  ``sha1(event_id)``, that passes the auth rules; the last one if none does.

The auth checks are the state-dependent rules only (:func:`check_auth_rules`
without the PDU's own auth event list); signatures were checked on receipt.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from collections.abc import Set as AbstractSet
from typing import Any

from homeserver.events.auth_rules import (
    JOIN_RULES,
    MEMBER,
    POWER_LEVELS_KEY,
    AuthError,
    auth_types_for_event,
    check_auth_rules,
)
from homeserver.events.room_versions import RoomVersion

__all__ = ["resolve_state_v1", "separate_state_v1"]

StateKey = tuple[str, str]
StateMap = Mapping[StateKey, str]
Event = Mapping[str, Any]
EventMap = Mapping[str, Event]


def separate_state_v1(
    state_sets: Sequence[StateMap],
) -> tuple[dict[StateKey, str], dict[StateKey, set[str]]]:
    """Split the state sets into unconflicted state and conflicted keys (with their
    events). A key only some sets hold is unconflicted."""
    unconflicted: dict[StateKey, str] = {}
    conflicted: dict[StateKey, set[str]] = {}
    for state_set in state_sets:
        for key, event_id in state_set.items():
            if key in conflicted:
                conflicted[key].add(event_id)
            elif key in unconflicted:
                if unconflicted[key] != event_id:
                    conflicted[key] = {event_id, unconflicted.pop(key)}
            else:
                unconflicted[key] = event_id
    return unconflicted, conflicted


def _event_id(event: Event) -> str:
    return str(event.get("event_id", ""))


def _depth(event: Event) -> int:
    depth = event.get("depth")
    return depth if type(depth) is int else 0


def _ordered(events: list[Event]) -> list[Event]:
    """By descending depth, then ascending sha1 of the event id (hex)."""

    def key(event: Event) -> tuple[int, str]:
        sha1 = hashlib.sha1(_event_id(event).encode("utf-8")).hexdigest()
        return -_depth(event), sha1

    return sorted(events, key=key)


def _key_of(event: Event) -> StateKey:
    return (str(event.get("type")), str(event.get("state_key")))


def _allowed(event: Event, auth_events: Mapping[StateKey, Event], version: RoomVersion) -> bool:
    try:
        check_auth_rules(event, auth_events, version)
    except AuthError:
        return False
    return True


def _resolve_auth_events(
    events: list[Event], auth_events: Mapping[StateKey, Event], version: RoomVersion
) -> Event:
    """Power levels, join rules or a membership: walk up from the oldest candidate."""
    ascending = list(reversed(_ordered(events)))
    wanted = {key for event in events for key in auth_types_for_event(event, version)}
    state = {key: auth_events[key] for key in wanted if key in auth_events}
    chosen = ascending[0]
    for event in ascending[1:]:
        state[_key_of(chosen)] = chosen
        if not _allowed(event, state, version):
            return chosen
        chosen = event
    return chosen


def _resolve_normal_events(
    events: list[Event], auth_events: Mapping[StateKey, Event], version: RoomVersion
) -> Event:
    """Any other key: the newest candidate that passes the auth rules (else the oldest)."""
    ordered = _ordered(events)
    for event in ordered:
        if _allowed(event, auth_events, version):
            return event
    return ordered[-1]


def resolve_state_v1(
    room_version: RoomVersion,
    state_sets: Sequence[StateMap],
    event_map: EventMap,
    rejected_event_ids: AbstractSet[str] = frozenset(),
) -> dict[StateKey, str]:
    """Resolve ``state_sets`` with state resolution v1.

    ``event_map`` maps event ids to PDUs (with ``event_id``); it needs the events of
    the conflicted keys and those of the unconflicted state that authorise them.
    Events known to be rejected are taken out of the state sets first: a rejected
    event never enters the state (a state set from another server naming one, e.g. a
    made-up power levels event with a low depth, must not win the walk up from the
    oldest candidate; Synapse's fix for taking over rooms this way).
    """
    if not state_sets:
        return {}
    if rejected_event_ids:
        state_sets = [
            {k: e for k, e in s.items() if e not in rejected_event_ids} for s in state_sets
        ]
    unconflicted, conflicted_ids = separate_state_v1(state_sets)

    def with_id(event_id: str) -> Event:
        # The map's key is the event's id (a v1 PDU carries it too).
        event = event_map[event_id]
        return event if event.get("event_id") == event_id else {**event, "event_id": event_id}

    conflicted: dict[StateKey, list[Event]] = {}
    for key, ids in conflicted_ids.items():
        events = [with_id(e) for e in sorted(ids) if e in event_map]
        if len(events) > 1:
            conflicted[key] = events
        elif events:
            unconflicted[key] = _event_id(events[0])
    if not conflicted:
        return unconflicted

    # Auth events from the unconflicted state, for every conflicted event.
    auth_events: dict[StateKey, Event] = {}
    for events in conflicted.values():
        for event in events:
            for key in auth_types_for_event(event, room_version):
                event_id = unconflicted.get(key)
                if key not in auth_events and event_id is not None and event_id in event_map:
                    auth_events[key] = with_id(event_id)

    resolved: dict[StateKey, Event] = {}
    if POWER_LEVELS_KEY in conflicted:
        resolved[POWER_LEVELS_KEY] = _resolve_auth_events(
            conflicted[POWER_LEVELS_KEY], auth_events, room_version
        )
    auth_events.update(resolved)
    for event_type in (JOIN_RULES, MEMBER):
        for key, events in conflicted.items():
            if key[0] == event_type:
                resolved[key] = _resolve_auth_events(events, auth_events, room_version)
        auth_events.update(resolved)
    for key, events in conflicted.items():
        if key not in resolved:
            resolved[key] = _resolve_normal_events(events, auth_events, room_version)

    out = dict(unconflicted)
    out.update({key: _event_id(event) for key, event in resolved.items()})
    return out
