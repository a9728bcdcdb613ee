"""Properties of state resolution over generated rooms (Hypothesis).

A room forks into branches; on each branch users send state events (power levels that
demote and restore, names, topics, join rules, joins, leaves, kicks), branches fork
again, and some branches' states are resolved together. Some events are then taken
out of the event map, as when an event could not be fetched.

Whatever the input, :func:`resolve_state` either returns a state or raises
``StateResolutionError``, never anything else; the answer does not depend on the order
of the state sets (two servers holding the same events must agree); the unconflicted
state is kept; and every other resolved entry is an event of that key from the map.
"""

from __future__ import annotations

import itertools

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from homeserver.events.room_versions import ROOM_VERSIONS
from homeserver.events.state_res import StateResolutionError, resolve_state, separate_state
from tests.events.test_state_res import ALICE, BOB, CHARLIE, ZARA, Branch, Dag

USERS = [ALICE, BOB, CHARLIE, ZARA]
ACTIONS = ["power", "name", "topic", "join_rules", "join", "leave", "kick"]

step = st.tuples(
    st.integers(0, 7),  # branch (modulo the number of branches)
    st.sampled_from(ACTIONS),
    st.sampled_from(USERS),  # sender
    st.sampled_from(USERS),  # target / value
    st.booleans(),  # fork the branch first
)


def build(
    version_id: str, steps: list[tuple[int, str, str, str, bool]]
) -> tuple[Dag, list[Branch]]:
    dag = Dag(ROOM_VERSIONS[version_id])
    branches = [dag.initial({BOB: 100, CHARLIE: 50})]
    for n, (which, action, sender, target, fork) in enumerate(steps):
        index = which % len(branches)
        branch = branches[index]
        if fork:
            branches.append(branch)
            index = len(branches) - 1
        eid = f"$e{n}"
        if action == "power":
            level = 0 if n % 2 else 50
            users = {ALICE: 100, BOB: 100, CHARLIE: 50, target: level}
            branch = dag.power_levels(branch, eid, sender, users)
        elif action in ("name", "topic"):
            branch = dag.send(branch, eid, f"m.room.{action}", sender, {action: eid}, "")
        elif action == "join_rules":
            rule = "invite" if n % 2 else "public"
            branch = dag.send(branch, eid, "m.room.join_rules", sender, {"join_rule": rule}, "")
        elif action == "join":
            branch = dag.membership(branch, eid, target, "join")
        elif action == "leave":
            branch = dag.membership(branch, eid, sender, "leave")
        else:
            branch = dag.membership(branch, eid, target, "leave", sender=sender)
        branches[index] = branch
    return dag, branches


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    version_id=st.sampled_from(["10", "11", "12"]),
    steps=st.lists(step, min_size=1, max_size=14),
    chosen=st.lists(st.integers(0, 7), min_size=2, max_size=4),
    dropped=st.sets(st.integers(0, 40), max_size=4),
)
def test_resolution_resolves_or_raises_and_is_order_independent(
    version_id: str,
    steps: list[tuple[int, str, str, str, bool]],
    chosen: list[int],
    dropped: set[int],
) -> None:
    dag, branches = build(version_id, steps)
    state_sets = [dict(branches[i % len(branches)].state) for i in chosen]
    all_ids = sorted(dag.events)
    gone = {all_ids[i % len(all_ids)] for i in dropped}
    event_map = {eid: ev for eid, ev in dag.events.items() if eid not in gone}
    version = dag.version
    try:
        resolved = resolve_state(version, state_sets, event_map)
    except StateResolutionError:
        return
    unconflicted, _ = separate_state(state_sets)
    for key, event_id in unconflicted.items():
        assert resolved[key] == event_id
    for key, event_id in resolved.items():
        if key in unconflicted:
            continue
        event = event_map[event_id]
        assert (event["type"], event["state_key"]) == key
    for permutation in itertools.islice(itertools.permutations(state_sets), 1, 4):
        assert resolve_state(version, list(permutation), event_map) == resolved


@pytest.mark.parametrize("version_id", ["10", "11", "12"])
def test_an_auth_cycle_raises_rather_than_picking_a_side(version_id: str) -> None:
    dag = Dag(ROOM_VERSIONS[version_id])
    base = dag.initial()
    b1 = dag.power_levels(base, "$p1", ALICE, {ALICE: 100, BOB: 50})
    b2 = dag.power_levels(base, "$p2", ALICE, {ALICE: 100, BOB: 0})
    # Corrupt the graph: each power levels event cites the other.
    dag.events["$p1"] = {**dag.events["$p1"], "auth_events": ["$p2", "$alice", "$create"]}
    dag.events["$p2"] = {**dag.events["$p2"], "auth_events": ["$p1", "$alice", "$create"]}
    with pytest.raises(StateResolutionError):
        resolve_state(dag.version, [b1.state, b2.state], dag.events)
