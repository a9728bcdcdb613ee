"""State resolution v2 (room versions 2 to 11) and v2.1 (room version 12), as pure functions.

Everything works on plain PDU dicts looked up by event ID in an ``event_map``
(PDUs of these room versions carry no ``event_id``; the map's key is the ID).
The caller gathers every event the algorithm touches (the events of every
state set and their full auth chains) before calling. An event that is still
missing from the map is treated as Synapse treats an event it cannot fetch: it
is left out of the full conflicted set, and an auth event that is missing is
skipped (it authorises nothing, contributes no power level and no edge). The
outcome is then a function of the map, never of the order of the state sets.
:class:`StateResolutionError` is raised only for inputs that cannot be resolved
at all (auth events forming a cycle, no create event for a v12 room); a caller
must then not persist anything built on the failed resolution.

The entry point is :func:`resolve_state`. The building blocks are public so
they can be tested and reused: :func:`separate_state`, :func:`auth_chain`,
:func:`auth_difference`, :func:`conflicted_state_subgraph`,
:func:`is_power_event`, :func:`reverse_topological_power_sort`,
:func:`mainline_sort` and :func:`iterative_auth_checks`.

Readings of the spec text worth knowing (see the comments where they apply);
where the text is loose we do what Synapse does, so that rooms shared with it
converge:

* The auth chain of a state set (for the *auth difference*) includes the state
  events themselves as well as their auth chains, as Synapse does.
* Step 1 sorts the power events of the full conflicted set together with the
  events reached from them through auth edges that stay inside the full
  conflicted set; the topological order only follows those edges (Synapse's
  ``_add_event_and_auth_chain_to_graph``).
* ``m.room.create`` is not a power event (the spec's definition; Synapse and
  Ruma count it as one, which only matters if the create event is conflicted).
* The mainline position of an event starts from the power levels event in its
  ``auth_events`` (``e_1``), never from the event itself.
* Events known to be rejected are never admitted by the iterative auth checks
  (Synapse keeps a previous rejection) and are never used as auth events.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from typing import Any, Final

from homeserver.events.auth_rules import (
    CREATE,
    CREATE_KEY,
    JOIN_RULES,
    MEMBER,
    POWER_LEVELS_KEY,
    AuthError,
    auth_types_for_event,
    check_auth_rules,
    get_user_power_level,
)
from homeserver.events.format import event_reference_ids
from homeserver.events.room_versions import RoomVersion
from homeserver.events.state_res_v1 import resolve_state_v1

__all__ = [
    "EventMap",
    "StateKey",
    "StateMap",
    "StateResolutionError",
    "auth_chain",
    "auth_difference",
    "conflicted_state_subgraph",
    "is_power_event",
    "iterative_auth_checks",
    "mainline_sort",
    "resolve_state",
    "reverse_topological_power_sort",
    "separate_state",
]

StateKey = tuple[str, str]
StateMap = Mapping[StateKey, str]
Event = Mapping[str, Any]
EventMap = Mapping[str, Event]

_EMPTY: Final[frozenset[str]] = frozenset()


class StateResolutionError(Exception):
    """The inputs cannot be resolved: auth events form a cycle, or a v12 room has no create event."""

    def __init__(self, message: str, event_id: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.event_id = event_id


# ---------------------------------------------------------------------------
# Small helpers on plain events
# ---------------------------------------------------------------------------


def _get(event_map: EventMap, event_id: str) -> Event:
    event = event_map.get(event_id)
    if event is None:
        raise StateResolutionError(f"event {event_id} is missing from the event map", event_id)
    return event


def _auth_ids_of(event_map: EventMap, event_id: str) -> list[str]:
    """The auth events of ``event_id``; none for an event missing from the map."""
    event = event_map.get(event_id)
    return _auth_event_ids(event) if event is not None else []


def _auth_event_ids(event: Event) -> list[str]:
    return event_reference_ids(event.get("auth_events"))


def _state_key_of(event: Event) -> StateKey | None:
    event_type, state_key = event.get("type"), event.get("state_key")
    if isinstance(event_type, str) and isinstance(state_key, str):
        return (event_type, state_key)
    return None


def _origin_server_ts(event: Event) -> int:
    ts = event.get("origin_server_ts")
    return ts if type(ts) is int else 0


def is_power_event(event: Event) -> bool:
    """A *power event*: power levels, join rules, or a kick/ban/unban of someone else."""
    key = _state_key_of(event)
    if key is None:
        return False
    if key in (POWER_LEVELS_KEY, (JOIN_RULES, "")):
        return True
    if key[0] != MEMBER:
        return False
    content = event.get("content")
    membership = content.get("membership") if isinstance(content, Mapping) else None
    return membership in ("leave", "ban") and event.get("sender") != key[1]


def separate_state(
    state_sets: Sequence[StateMap],
) -> tuple[dict[StateKey, str], dict[StateKey, set[str]]]:
    """Split the state sets into the unconflicted state map and the conflicted state.

    A key is unconflicted only if every state set has it with the same event;
    a key missing from some state set is conflicted. The conflicted state maps
    each conflicted key to the event IDs the state sets give it.
    """
    unconflicted: dict[StateKey, str] = {}
    conflicted: dict[StateKey, set[str]] = {}
    if not state_sets:
        return unconflicted, conflicted
    first, rest = state_sets[0], state_sets[1:]
    all_keys: set[StateKey] = set(first)
    for state_set in rest:
        all_keys.update(state_set)
    for key in all_keys:
        event_id = first.get(key)
        if event_id is not None and all(s.get(key) == event_id for s in rest):
            unconflicted[key] = event_id
        else:
            conflicted[key] = {s[key] for s in state_sets if key in s}
    return unconflicted, conflicted


def auth_chain(event_ids: Iterable[str], event_map: EventMap) -> set[str]:
    """The union of the auth chains of ``event_ids``.

    The given events themselves are only included if one is in the auth chain
    of another. An event missing from the map is in the chain if referenced,
    but adds nothing below it.
    """
    seen: set[str] = set()
    stack: list[str] = []
    for event_id in event_ids:
        stack.extend(_auth_ids_of(event_map, event_id))
    while stack:
        event_id = stack.pop()
        if event_id in seen:
            continue
        seen.add(event_id)
        stack.extend(a for a in _auth_ids_of(event_map, event_id) if a not in seen)
    return seen


def _closure(
    starts: Iterable[str], event_map: EventMap, stop: AbstractSet[str] = _EMPTY
) -> set[str]:
    """``starts`` plus their auth chains, not entering events in ``stop``.

    ``stop`` must be closed under taking auth events for the result to be
    "the full auth chain minus ``stop``".
    """
    seen: set[str] = set()
    stack = [e for e in starts if e not in stop]
    while stack:
        event_id = stack.pop()
        if event_id in seen:
            continue
        seen.add(event_id)
        for auth_id in _auth_ids_of(event_map, event_id):
            if auth_id not in seen and auth_id not in stop:
                stack.append(auth_id)
    return seen


def auth_difference(state_sets: Sequence[StateMap], event_map: EventMap) -> set[str]:
    """The *auth difference*: events in some but not all of the state sets' full auth chains.

    The full auth chain of a state set is its events plus all their auth
    chains. The events every state set shares (the unconflicted state) and
    their chains are in every full auth chain, so they are computed once and
    pruned from the per-set walks: with ``U`` that shared closure and ``D_i``
    the closure of the rest of set ``i``, ``∪C_i − ∩C_i = ∪(D_i − U) − ∩(D_i − U)``.
    """
    if len(state_sets) < 2:
        return set()
    unconflicted, conflicted = separate_state(state_sets)
    if not conflicted:
        return set()
    shared = _closure(unconflicted.values(), event_map)
    own = [
        _closure((s[k] for k in conflicted if k in s), event_map, stop=shared) for s in state_sets
    ]
    union = set().union(*own)
    intersection = own[0].intersection(*own[1:])
    return union - intersection


def conflicted_state_subgraph(conflicted_event_ids: Iterable[str], event_map: EventMap) -> set[str]:
    """The *conflicted state subgraph* (state resolution v2.1).

    Every event on an ``auth_events`` path from one conflicted event to another,
    endpoints included; the conflicted events themselves are always part of it.
    An event is on such a path when it is in the auth chain of a conflicted
    event and has a conflicted event in its own auth chain.
    """
    conflicted = set(conflicted_event_ids)
    below = auth_chain(conflicted, event_map)  # reachable from a conflicted event
    region = below | conflicted
    # Reverse edges inside the region, to walk from conflicted events towards
    # the events whose auth chains contain them.
    children: dict[str, list[str]] = {}
    for event_id in region:
        for auth_id in _auth_ids_of(event_map, event_id):
            children.setdefault(auth_id, []).append(event_id)
    result = set(conflicted)
    stack = [e for e in conflicted if e in below]  # conflicted events some conflicted event reaches
    seen: set[str] = set(stack)
    while stack:
        event_id = stack.pop()
        for child in children.get(event_id, ()):
            if child not in seen:
                seen.add(child)
                stack.append(child)
    result.update(seen & region)
    return result


def _lexicographic_topological_sort(
    dependencies: Mapping[str, AbstractSet[str]], sort_key: Callable[[str], Any]
) -> list[str]:
    """Kahn's algorithm taking the smallest ready node (by ``sort_key``) at every step.

    ``dependencies[n]`` are the nodes that must come before ``n``; every one
    must itself be a key. ``sort_key`` must be unique per node.
    """
    waiting = {node: len(deps) for node, deps in dependencies.items()}
    dependents: dict[str, list[str]] = {node: [] for node in dependencies}
    for node, deps in dependencies.items():
        for dep in deps:
            dependents[dep].append(node)
    ready = [(sort_key(node), node) for node, count in waiting.items() if count == 0]
    heapq.heapify(ready)
    ordered: list[str] = []
    while ready:
        _, node = heapq.heappop(ready)
        ordered.append(node)
        for dependent in dependents[node]:
            waiting[dependent] -= 1
            if waiting[dependent] == 0:
                heapq.heappush(ready, (sort_key(dependent), dependent))
    if len(ordered) != len(dependencies):
        raise StateResolutionError("auth events form a cycle")
    return ordered


# ---------------------------------------------------------------------------
# The resolver: shared caches for one resolution
# ---------------------------------------------------------------------------


class _Events:
    """Event lookups and the power levels auth event of each event, cached."""

    def __init__(self, event_map: EventMap) -> None:
        self.event_map = event_map
        self._pl_auth: dict[str, str | None] = {}

    def event(self, event_id: str) -> Event:
        return _get(self.event_map, event_id)

    def power_levels_auth_event(self, event_id: str) -> str | None:
        """The ``m.room.power_levels`` event among the event's auth events, if any."""
        if event_id in self._pl_auth:
            return self._pl_auth[event_id]
        found: str | None = None
        for auth_id in _auth_ids_of(self.event_map, event_id):
            auth_event = self.event_map.get(auth_id)
            if auth_event is not None and _state_key_of(auth_event) == POWER_LEVELS_KEY:
                found = auth_id
                break
        self._pl_auth[event_id] = found
        return found

    # -- mainline ordering ---------------------------------------------------

    def mainline_sort(self, event_ids: Iterable[str], power_levels_id: str | None) -> list[str]:
        """Mainline ordering of ``event_ids`` based on the power levels event ``power_levels_id``."""
        mainline: dict[str, int] = {}
        current = power_levels_id
        while current is not None and current not in mainline:
            mainline[current] = len(mainline)
            current = self.power_levels_auth_event(current)

        positions: dict[str, float] = {}  # power levels event -> position of the walk from it

        def position_from(start: str | None) -> float:
            """Mainline position found walking power levels auth events from ``start`` on."""
            path: list[str] = []
            on_path: set[str] = set()
            result = math.inf
            current = start
            while current is not None:
                if current in mainline:
                    result = mainline[current]
                    break
                if current in positions:
                    result = positions[current]
                    break
                if current in on_path:
                    break  # malformed cycle: never reaches the mainline
                path.append(current)
                on_path.add(current)
                current = self.power_levels_auth_event(current)
            for event_id in path:
                positions[event_id] = result
            return result

        def mainline_order(event_id: str) -> tuple[float, int, str]:
            # The walk starts at e_1, the power levels event in e's auth events.
            position = position_from(self.power_levels_auth_event(event_id))
            return (-position, _origin_server_ts(self.event(event_id)), event_id)

        return sorted(event_ids, key=mainline_order)


class _Resolver(_Events):
    """Caches (event lookups, sender power, auth events by key) for one resolution."""

    def __init__(
        self,
        room_version: RoomVersion,
        event_map: EventMap,
        create_event: Event | None,
        rejected_event_ids: AbstractSet[str],
    ) -> None:
        super().__init__(event_map)
        self.room_version = room_version
        self.rejected = rejected_event_ids
        # Only v12 passes the create event separately (it is never an auth event there).
        self.create_event = create_event if room_version.room_id_is_create_event_hash else None
        self._sender_power: dict[str, int | float] = {}
        self._own_auth: dict[str, dict[StateKey, Event]] = {}
        self._with_id: dict[str, Event] = {}

    def auth_view(self, event_id: str) -> Event:
        """The event as handed to the auth rules.

        The create event gets its ``event_id`` filled in from the map's key: the
        rules compare it with ``prev_events`` (creator's first join) and, in v12,
        with the room ID.
        """
        event = self.event(event_id)
        if event.get("type") != CREATE or event.get("event_id") == event_id:
            return event
        cached = self._with_id.get(event_id)
        if cached is None:
            cached = {**event, "event_id": event_id}
            self._with_id[event_id] = cached
        return cached

    def own_auth_events(self, event_id: str) -> dict[StateKey, Event]:
        """The event's (not rejected, not missing) auth events by ``(type, state_key)``."""
        cached = self._own_auth.get(event_id)
        if cached is None:
            cached = {}
            for auth_id in _auth_event_ids(self.event(event_id)):
                if auth_id in self.rejected or auth_id not in self.event_map:
                    continue
                auth_event = self.auth_view(auth_id)
                key = _state_key_of(auth_event)
                if key is not None:
                    cached[key] = auth_event
            self._own_auth[event_id] = cached
        return cached

    def sender_power(self, event_id: str) -> int | float:
        """Power level of the event's sender according to its auth events (v12: creators ∞)."""
        level = self._sender_power.get(event_id)
        if level is None:
            event = self.event(event_id)
            sender = event.get("sender")
            auth_state: dict[StateKey, Event] = {}
            for auth_id in _auth_event_ids(event):
                auth_event = self.event_map.get(auth_id)
                if auth_event is None:
                    continue
                key = _state_key_of(auth_event)
                if key is not None:
                    auth_state[key] = auth_event
            level = (
                get_user_power_level(sender, auth_state, self.room_version, self.create_event)
                if isinstance(sender, str)
                else 0
            )
            self._sender_power[event_id] = level
        return level

    # -- reverse topological power ordering ----------------------------------

    def power_sort(self, event_ids: Iterable[str], universe: AbstractSet[str]) -> list[str]:
        """Reverse topological power ordering of ``event_ids`` and of the events reached
        from them through auth edges that stay inside ``universe`` (Synapse's graph).

        ``x`` comes after each of its auth events in the graph; ties by the sender's
        power (higher first), then ``origin_server_ts``, then event ID.
        """
        graph: dict[str, set[str]] = {}
        stack = [e for e in event_ids if e in self.event_map]
        while stack:
            event_id = stack.pop()
            if event_id in graph:
                continue
            edges = {a for a in _auth_event_ids(self.event(event_id)) if a in universe}
            edges &= self.event_map.keys()
            graph[event_id] = edges
            stack.extend(a for a in edges if a not in graph)

        def power_order(event_id: str) -> tuple[float, int, str]:
            event = self.event(event_id)
            return (-self.sender_power(event_id), _origin_server_ts(event), event_id)

        return _lexicographic_topological_sort(graph, power_order)

    # -- iterative auth checks -----------------------------------------------

    def iterative_auth_checks(
        self, event_ids: Iterable[str], initial_state: Mapping[StateKey, str]
    ) -> dict[StateKey, str]:
        """Apply each event in order if it passes the auth rules against the state so far.

        For each key the rules need (the auth events selection for the event),
        the event in the state is used; if the state has none, the event's own
        auth event for that key, unless it was rejected.
        """
        state = dict(initial_state)
        for event_id in event_ids:
            if event_id in self.rejected:
                continue  # a previous rejection stands (Synapse)
            event = self.event(event_id)
            key = _state_key_of(event)
            if key is None:
                continue  # not a state event: nothing to apply
            own = self.own_auth_events(event_id)
            auth_state: dict[StateKey, Event] = {}
            for needed in auth_types_for_event(event, self.room_version):
                state_event_id = state.get(needed)
                usable = (
                    state_event_id is not None
                    and state_event_id in self.event_map
                    and state_event_id not in self.rejected
                )
                if usable:
                    assert state_event_id is not None
                    auth_state[needed] = self.auth_view(state_event_id)
                elif needed in own:
                    auth_state[needed] = own[needed]
            try:
                check_auth_rules(
                    event, auth_state, self.room_version, create_event=self.create_event
                )
            except AuthError:
                continue
            state[key] = event_id
        return state


def _find_create_event(
    room_version: RoomVersion,
    state_sets: Sequence[StateMap],
    event_map: EventMap,
    create_event: Event | None,
    conflicted_event_ids: Iterable[str],
) -> Event | None:
    """The create event for v12 (where it is not among any event's auth events)."""
    if not room_version.room_id_is_create_event_hash:
        return create_event
    if create_event is not None:
        return create_event
    candidates = [s[CREATE_KEY] for s in state_sets if CREATE_KEY in s]
    for event_id in conflicted_event_ids:
        room_id = event_map.get(event_id, {}).get("room_id")
        if isinstance(room_id, str) and room_id.startswith("!"):
            candidates.append("$" + room_id[1:])
            break
    for candidate in candidates:
        event = event_map.get(candidate)
        if event is not None and event.get("type") == CREATE:
            return event if event.get("event_id") == candidate else {**event, "event_id": candidate}
    raise StateResolutionError("no m.room.create event available for a v12 room")


# ---------------------------------------------------------------------------
# Public wrappers for the building blocks
# ---------------------------------------------------------------------------


def reverse_topological_power_sort(
    event_ids: Collection[str],
    event_map: EventMap,
    room_version: RoomVersion,
    *,
    create_event: Event | None = None,
) -> list[str]:
    """Sort events by the *reverse topological power ordering* (earliest first).

    Auth order first (following auth edges between the given events only, as
    Synapse does); ties by the sender's power level from the event's
    auth events (higher first; v12 creators are infinite), then
    ``origin_server_ts``, then event ID.
    """
    create = _find_create_event(room_version, [], event_map, create_event, event_ids)
    resolver = _Resolver(room_version, event_map, create, _EMPTY)
    return resolver.power_sort(event_ids, frozenset(event_ids))


def mainline_sort(
    event_ids: Iterable[str], power_levels_event_id: str | None, event_map: EventMap
) -> list[str]:
    """Sort events by the *mainline ordering* based on ``power_levels_event_id``.

    Greater mainline position first (∞ when the event's power levels chain never
    meets the mainline, or there is no power levels event), then
    ``origin_server_ts``, then event ID.
    """
    return _Events(event_map).mainline_sort(event_ids, power_levels_event_id)


def iterative_auth_checks(
    room_version: RoomVersion,
    event_ids: Iterable[str],
    initial_state: StateMap,
    event_map: EventMap,
    *,
    create_event: Event | None = None,
    rejected_event_ids: AbstractSet[str] = _EMPTY,
) -> dict[StateKey, str]:
    """The *iterative auth checks algorithm*: apply each event that passes auth, in order."""
    ordered = list(event_ids)
    create = _find_create_event(room_version, [initial_state], event_map, create_event, ordered)
    resolver = _Resolver(room_version, event_map, create, rejected_event_ids)
    return resolver.iterative_auth_checks(ordered, initial_state)


# ---------------------------------------------------------------------------
# The algorithm
# ---------------------------------------------------------------------------


def resolve_state(
    room_version: RoomVersion,
    state_sets: Sequence[StateMap],
    event_map: EventMap,
    *,
    create_event: Event | None = None,
    rejected_event_ids: AbstractSet[str] = _EMPTY,
) -> dict[StateKey, str]:
    """Resolve ``state_sets`` with state resolution v2, or v2.1 if ``room_version.state_res_v2_1``
    (room version 1: state resolution v1, :mod:`homeserver.events.state_res_v1`).

    ``event_map`` maps event IDs to PDUs and should contain every event of the
    state sets and of their auth chains; one it lacks is left out of the full
    conflicted set (see the module docstring). ``create_event`` is the room's create
    event (v12 only, where it is never an auth event; found through the state
    sets or the room ID if omitted). ``rejected_event_ids`` are events known to
    have been rejected: they are never admitted by, nor used as auth events in,
    the iterative auth checks (as Synapse).
    """
    if room_version.state_res_v1:
        return resolve_state_v1(room_version, state_sets, event_map, rejected_event_ids)
    if not state_sets:
        return {}
    unconflicted, conflicted = separate_state(state_sets)
    if not conflicted:
        # Identical state sets: same auth chains, nothing to resolve.
        return unconflicted

    conflicted_ids: set[str] = set().union(*conflicted.values())
    resolver = _Resolver(
        room_version,
        event_map,
        _find_create_event(room_version, state_sets, event_map, create_event, conflicted_ids),
        rejected_event_ids,
    )

    # Full conflicted set: conflicted state set + auth difference (+ v2.1 subgraph).
    full_conflicted = conflicted_ids | auth_difference(state_sets, event_map)
    if room_version.state_res_v2_1:
        full_conflicted |= conflicted_state_subgraph(conflicted_ids, event_map)
    # What the map lacks cannot be ordered nor checked: left out, as in Synapse.
    full_conflicted &= event_map.keys()

    # Step 1: power events, with the events reached from them through auth edges
    # inside the full conflicted set.
    power_events = sorted(e for e in full_conflicted if is_power_event(resolver.event(e)))
    sorted_power = resolver.power_sort(power_events, full_conflicted)
    power_set = set(sorted_power)

    # Step 2: iterative auth checks from the unconflicted state (v2.1: from nothing).
    initial: Mapping[StateKey, str] = {} if room_version.state_res_v2_1 else unconflicted
    partial = resolver.iterative_auth_checks(sorted_power, initial)

    # Step 3: the other events, by mainline of the partially resolved power levels.
    others = resolver.mainline_sort(full_conflicted - power_set, partial.get(POWER_LEVELS_KEY))

    # Step 4: iterative auth checks on top of the partially resolved state.
    resolved = resolver.iterative_auth_checks(others, partial)

    # Step 5: the unconflicted state map wins.
    resolved.update(unconflicted)
    return resolved
