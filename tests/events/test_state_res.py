"""Tests for state resolution v2 (room versions 10, 11) and v2.1 (room version 12).

Scenarios are built with :class:`Dag`: every event gets an explicit ID, sender
and timestamp; its ``auth_events`` are selected from the state of the branch it
is sent on (the auth events selection of the server-server API), its
``prev_events`` are the branch head. Expected outcomes are derived by hand from
the spec text in each test's docstring.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any

import pytest

from homeserver.events.auth_rules import CREATE_KEY, POWER_LEVELS_KEY, auth_types_for_event
from homeserver.events.room_versions import ROOM_VERSIONS, RoomVersion
from homeserver.events.state_res import (
    StateResolutionError,
    auth_chain,
    auth_difference,
    conflicted_state_subgraph,
    is_power_event,
    iterative_auth_checks,
    mainline_sort,
    resolve_state,
    reverse_topological_power_sort,
    separate_state,
)

Event = dict[str, Any]
StateDict = dict[tuple[str, str], str]

ALICE = "@alice:example.com"  # room creator
BOB = "@bob:example.com"
CHARLIE = "@charlie:example.com"
ZARA = "@zara:example.org"
ADMIN = "@admin:example.org"

MEMBER = "m.room.member"
TOPIC = "m.room.topic"
JOIN_RULES = "m.room.join_rules"
POWER_LEVELS = "m.room.power_levels"
TOPIC_KEY = (TOPIC, "")
JOIN_RULES_KEY = (JOIN_RULES, "")

# Room version 12 event format and auth rules, but state resolution v2 instead of v2.1:
# isolates the state resolution change from everything else v12 changed.
V12_WITH_V2 = dataclasses.replace(ROOM_VERSIONS["12"], identifier="12", state_res_v2_1=False)
# And the other way round: v11 with state resolution v2.1.
V11_WITH_V2_1 = dataclasses.replace(ROOM_VERSIONS["11"], state_res_v2_1=True)

ALL_VERSIONS = [
    pytest.param(ROOM_VERSIONS["10"], id="v10"),
    pytest.param(ROOM_VERSIONS["11"], id="v11"),
    pytest.param(ROOM_VERSIONS["12"], id="v12"),
    pytest.param(V12_WITH_V2, id="v12-stateres-v2"),
    pytest.param(V11_WITH_V2_1, id="v11-stateres-v2.1"),
]


def member(user: str) -> tuple[str, str]:
    return (MEMBER, user)


@dataclass
class Branch:
    """A branch of the DAG: the state after its head."""

    state: StateDict
    head: list[str] = field(default_factory=list)


class Dag:
    """Builds a room's events; ``events`` is the event map for :func:`resolve_state`."""

    def __init__(self, version: RoomVersion) -> None:
        self.version = version
        self.v12 = version.room_id_is_create_event_hash
        self.room_id = "!create" if self.v12 else "!room:example.com"
        self.events: dict[str, Event] = {}
        self._ts = 0

    # -- raw events --------------------------------------------------------

    def send(
        self,
        branch: Branch,
        event_id: str,
        event_type: str,
        sender: str,
        content: dict[str, Any],
        state_key: str | None = None,
        *,
        ts: int | None = None,
        auth_events: list[str] | None = None,
    ) -> Branch:
        """Send an event on ``branch``; returns the branch after it."""
        assert event_id not in self.events, event_id
        self._ts += 1
        event: Event = {
            "type": event_type,
            "sender": sender,
            "content": content,
            "room_id": self.room_id,
            "prev_events": list(branch.head),
            "origin_server_ts": self._ts if ts is None else ts,
            "depth": self._ts,
            "hashes": {"sha256": "fake"},
            "signatures": {},
        }
        if state_key is not None:
            event["state_key"] = state_key
        if auth_events is None:
            wanted = auth_types_for_event(event, self.version)
            auth_events = sorted(branch.state[k] for k in wanted if k in branch.state)
        event["auth_events"] = auth_events
        self.events[event_id] = event
        state = dict(branch.state)
        if state_key is not None:
            state[(event_type, state_key)] = event_id
        return Branch(state, [event_id])

    def create(self) -> Branch:
        content: dict[str, Any] = {
            "room_version": "10"
            if not self.version.implicit_room_creator
            else self.version.identifier
        }
        if not self.version.implicit_room_creator:
            content["creator"] = ALICE
        self._ts += 1
        event: Event = {
            "type": "m.room.create",
            "state_key": "",
            "sender": ALICE,
            "content": content,
            "prev_events": [],
            "auth_events": [],
            "origin_server_ts": self._ts,
            "depth": 1,
        }
        if not self.v12:
            event["room_id"] = self.room_id
        # v12: the room ID is the create event's ID with "!" instead of "$".
        self.events["$create"] = event
        return Branch({CREATE_KEY: "$create"}, ["$create"])

    # -- conveniences -------------------------------------------------------

    def membership(
        self,
        branch: Branch,
        event_id: str,
        target: str,
        membership: str,
        sender: str | None = None,
        **kwargs: Any,
    ) -> Branch:
        return self.send(
            branch, event_id, MEMBER, sender or target, {"membership": membership}, target, **kwargs
        )

    def power_levels(
        self, branch: Branch, event_id: str, sender: str, users: dict[str, int], **kwargs: Any
    ) -> Branch:
        """Power levels with default levels; ALICE (creator) is left out in v12."""
        if self.v12:
            users = {u: level for u, level in users.items() if u != ALICE}
        return self.send(branch, event_id, POWER_LEVELS, sender, {"users": users}, "", **kwargs)

    def join_rules(self, branch: Branch, event_id: str, rule: str, **kwargs: Any) -> Branch:
        return self.send(branch, event_id, JOIN_RULES, ALICE, {"join_rule": rule}, "", **kwargs)

    def topic(self, branch: Branch, event_id: str, sender: str, **kwargs: Any) -> Branch:
        return self.send(branch, event_id, TOPIC, sender, {"topic": event_id}, "", **kwargs)

    def initial(self, users: dict[str, int] | None = None) -> Branch:
        """create, alice joins, power levels ($pl0), public join rules, bob and charlie join."""
        b = self.create()
        b = self.membership(b, "$alice", ALICE, "join")
        b = self.power_levels(b, "$pl0", ALICE, {ALICE: 100, **(users or {})})
        b = self.join_rules(b, "$jr0", "public")
        b = self.membership(b, "$bob", BOB, "join")
        return self.membership(b, "$charlie", CHARLIE, "join")

    def resolve(self, *branches: Branch, **kwargs: Any) -> StateDict:
        return resolve_state(self.version, [b.state for b in branches], self.events, **kwargs)


def raw_events(edges: dict[str, list[str]]) -> dict[str, Event]:
    """Minimal events (only ``auth_events``) for the graph helpers."""
    return {
        eid: {"type": "m.room.topic", "state_key": eid, "auth_events": auth}
        for eid, auth in edges.items()
    }


# ---------------------------------------------------------------------------
# Building blocks
# ---------------------------------------------------------------------------


def test_auth_chain_follows_auth_events_recursively() -> None:
    events = raw_events({"a": [], "b": ["a"], "c": ["b", "a"], "d": ["c"], "x": ["a"]})
    assert auth_chain(["d"], events) == {"c", "b", "a"}
    assert auth_chain(["a"], events) == set()
    # Union over the given events; a given event is included only if another reaches it.
    assert auth_chain(["d", "x"], events) == {"c", "b", "a"}
    assert auth_chain(["d", "b"], events) == {"c", "b", "a"}
    assert auth_chain([], events) == set()


def test_auth_chain_of_a_missing_event_stops_there() -> None:
    """A referenced event the map lacks is in the chain; nothing below it can be."""
    events = raw_events({"c": ["b"], "x": ["a"]})
    assert auth_chain(["c"], events) == {"b"}
    assert auth_chain(["c", "x", "gone"], events) == {"a", "b"}


def test_auth_chain_handles_deep_chains() -> None:
    edges: dict[str, list[str]] = {"e0": []} | {f"e{i}": [f"e{i - 1}"] for i in range(1, 5000)}
    assert len(auth_chain(["e4999"], raw_events(edges))) == 4999


def test_separate_state() -> None:
    s1 = {("a", ""): "$1", ("b", ""): "$2", ("c", ""): "$3"}
    s2 = {("a", ""): "$1", ("b", ""): "$9"}
    unconflicted, conflicted = separate_state([s1, s2])
    assert unconflicted == {("a", ""): "$1"}
    # A key missing from one state set is conflicted too.
    assert conflicted == {("b", ""): {"$2", "$9"}, ("c", ""): {"$3"}}
    assert separate_state([]) == ({}, {})


def test_auth_difference_includes_state_events_and_their_chains() -> None:
    # Both sets share `base` (and its chain); s1 has `x` (chain y), s2 has `z` (chain y too).
    events = raw_events(
        {"root": [], "base": ["root"], "y": ["root"], "x": ["y"], "z": ["y"], "w": ["root"]}
    )
    s1 = {("k", ""): "base", ("t", ""): "x"}
    s2 = {("k", ""): "base", ("t", ""): "z", ("u", ""): "w"}
    # Full chains: C1 = {base, root, x, y}, C2 = {base, root, z, y, w}.
    assert auth_difference([s1, s2], events) == {"x", "z", "w"}
    assert auth_difference([s1, s1], events) == set()
    assert auth_difference([s1], events) == set()


def test_auth_difference_of_an_unconflicted_event_in_one_chain_only() -> None:
    # `m` is unconflicted but also cited by s1's conflicted `x`: it is in both
    # full auth chains, so not in the difference; `y` only in s1's.
    events = raw_events({"r": [], "m": ["r"], "y": ["r"], "x": ["m", "y"], "z": ["r"]})
    s1 = {("m", ""): "m", ("t", ""): "x"}
    s2 = {("m", ""): "m", ("t", ""): "z"}
    assert auth_difference([s1, s2], events) == {"x", "y", "z"}


def test_conflicted_state_subgraph() -> None:
    #   c1 -> m1 -> m2 -> c2 -> m3 ; m1 -> x ; c3 -> m2 ; c4 (isolated)
    events = raw_events(
        {
            "m3": [],
            "c2": ["m3"],
            "m2": ["c2"],
            "x": [],
            "m1": ["m2", "x"],
            "c1": ["m1"],
            "c3": ["m2"],
            "c4": ["m3"],
        }
    )
    assert conflicted_state_subgraph({"c1", "c2", "c3", "c4"}, events) == {
        "c1",
        "c2",
        "c3",
        "c4",
        "m1",
        "m2",
    }
    # No path between conflicted events: just the conflicted events themselves.
    assert conflicted_state_subgraph({"c1", "c4"}, events) == {"c1", "c4"}


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        ({"type": POWER_LEVELS, "state_key": "", "sender": ALICE}, True),
        ({"type": JOIN_RULES, "state_key": "", "sender": ALICE}, True),
        ({"type": "m.room.create", "state_key": "", "sender": ALICE}, False),
        ({"type": TOPIC, "state_key": "", "sender": ALICE}, False),
        (
            {"type": MEMBER, "state_key": BOB, "sender": ALICE, "content": {"membership": "ban"}},
            True,
        ),
        (
            {"type": MEMBER, "state_key": BOB, "sender": ALICE, "content": {"membership": "leave"}},
            True,
        ),
        (
            {"type": MEMBER, "state_key": BOB, "sender": BOB, "content": {"membership": "leave"}},
            False,
        ),
        (
            {
                "type": MEMBER,
                "state_key": BOB,
                "sender": ALICE,
                "content": {"membership": "invite"},
            },
            False,
        ),
        (
            {"type": MEMBER, "state_key": BOB, "sender": BOB, "content": {"membership": "join"}},
            False,
        ),
        ({"type": POWER_LEVELS, "sender": ALICE}, False),  # not a state event
    ],
)
def test_is_power_event(event: Event, expected: bool) -> None:
    assert is_power_event(event) is expected


# ---------------------------------------------------------------------------
# Reverse topological power ordering
# ---------------------------------------------------------------------------


@pytest.fixture
def ordering_room() -> tuple[Dag, Branch]:
    dag = Dag(ROOM_VERSIONS["11"])
    base = dag.initial({BOB: 50, CHARLIE: 50})
    return dag, base


def test_power_sort_higher_sender_power_first(ordering_room: tuple[Dag, Branch]) -> None:
    dag, base = ordering_room
    dag.topic(base, "$by_bob", BOB, ts=10)
    dag.topic(base, "$by_alice", ALICE, ts=30)
    order = reverse_topological_power_sort(["$by_bob", "$by_alice"], dag.events, dag.version)
    assert order == ["$by_alice", "$by_bob"]


def test_power_sort_same_power_earlier_ts_first(ordering_room: tuple[Dag, Branch]) -> None:
    dag, base = ordering_room
    dag.topic(base, "$by_charlie", CHARLIE, ts=20)
    dag.topic(base, "$by_bob", BOB, ts=10)
    order = reverse_topological_power_sort(["$by_charlie", "$by_bob"], dag.events, dag.version)
    assert order == ["$by_bob", "$by_charlie"]


def test_power_sort_same_power_and_ts_smaller_event_id_first(
    ordering_room: tuple[Dag, Branch],
) -> None:
    dag, base = ordering_room
    dag.topic(base, "$b", CHARLIE, ts=20)
    dag.topic(base, "$a", BOB, ts=20)
    dag.topic(base, "$c", BOB, ts=20)
    order = reverse_topological_power_sort(["$c", "$b", "$a"], dag.events, dag.version)
    assert order == ["$a", "$b", "$c"]


def test_power_sort_auth_order_beats_power(ordering_room: tuple[Dag, Branch]) -> None:
    """An event comes after the events in its auth chain, whatever its sender's power."""
    dag, base = ordering_room
    after_bob = dag.power_levels(base, "$pl_bob", BOB, {ALICE: 100, BOB: 50, CHARLIE: 50}, ts=50)
    dag.membership(after_bob, "$ban", CHARLIE, "ban", sender=ALICE, ts=1)  # cites $pl_bob
    dag.topic(base, "$alice_topic", ALICE, ts=60)
    order = reverse_topological_power_sort(
        ["$ban", "$pl_bob", "$alice_topic"], dag.events, dag.version
    )
    # Ready at first: $pl_bob (50) and $alice_topic (100) -> alice first; then
    # $pl_bob, which unblocks $ban.
    assert order == ["$alice_topic", "$pl_bob", "$ban"]


def test_power_sort_follows_auth_edges_between_sorted_events_only(
    ordering_room: tuple[Dag, Branch],
) -> None:
    """$pl3 -> $pl2 -> $pl1, sorting {$pl1, $pl3}: $pl2 is not sorted, so there is
    no edge between them (Synapse's graph follows auth edges inside the set being
    sorted only); alice's higher power puts $pl3 first. With $pl2 the order is the
    auth order.
    """
    dag, base = ordering_room
    b = dag.power_levels(base, "$pl1", BOB, {ALICE: 100, BOB: 50, CHARLIE: 50}, ts=50)
    b = dag.power_levels(b, "$pl2", ALICE, {ALICE: 100, BOB: 50}, ts=2)
    dag.power_levels(b, "$pl3", ALICE, {ALICE: 100}, ts=1)
    assert reverse_topological_power_sort(["$pl3", "$pl1"], dag.events, dag.version) == [
        "$pl3",
        "$pl1",
    ]
    order = reverse_topological_power_sort(["$pl3", "$pl2", "$pl1"], dag.events, dag.version)
    assert order == ["$pl1", "$pl2", "$pl3"]


def test_power_sort_sender_power_comes_from_the_events_own_auth_events(
    ordering_room: tuple[Dag, Branch],
) -> None:
    """Bob is demoted by $demote, but his event authorised by $pl0 still sorts at 50."""
    dag, base = ordering_room
    dag.power_levels(base, "$demote", ALICE, {ALICE: 100, CHARLIE: 50}, ts=1)
    dag.topic(base, "$bob_topic", BOB, ts=5)
    dag.topic(base, "$zzz", ADMIN, ts=1)  # ADMIN has no power: sorts after bob
    order = reverse_topological_power_sort(
        ["$zzz", "$bob_topic", "$demote"], dag.events, dag.version
    )
    assert order == ["$demote", "$bob_topic", "$zzz"]


def test_power_sort_without_power_levels_creator_has_100() -> None:
    dag = Dag(ROOM_VERSIONS["10"])
    b = dag.create()
    b = dag.membership(b, "$alice", ALICE, "join")
    dag.join_rules(b, "$jr_alice", "public", ts=9)
    dag.send(b, "$other", TOPIC, BOB, {}, "", ts=1)
    order = reverse_topological_power_sort(["$other", "$jr_alice"], dag.events, dag.version)
    assert order == ["$jr_alice", "$other"]


def test_power_sort_v12_creators_outrank_everyone() -> None:
    for version, expected in (
        (ROOM_VERSIONS["12"], ["$alice_topic", "$admin_topic"]),  # creator: infinite
        (ROOM_VERSIONS["11"], ["$admin_topic", "$alice_topic"]),  # 100 vs 100: ts decides
    ):
        dag = Dag(version)
        base = dag.initial()
        base = dag.membership(base, "$admin", ADMIN, "join")
        base = dag.power_levels(base, "$pl1", ALICE, {ALICE: 100, ADMIN: 100})
        dag.topic(base, "$alice_topic", ALICE, ts=500)
        dag.topic(base, "$admin_topic", ADMIN, ts=400)
        order = reverse_topological_power_sort(
            ["$admin_topic", "$alice_topic"],
            dag.events,
            version,
            create_event=dag.events["$create"],
        )
        assert order == expected, version.identifier


def test_power_sort_handles_long_chains() -> None:
    dag = Dag(ROOM_VERSIONS["11"])
    b = dag.initial()
    for i in range(1, 2500):
        b = dag.power_levels(b, f"$pl{i}", ALICE, {ALICE: 100, BOB: i % 50})
    order = reverse_topological_power_sort(["$pl2499", "$pl1", "$pl0"], dag.events, dag.version)
    assert order == ["$pl0", "$pl1", "$pl2499"]


# ---------------------------------------------------------------------------
# Mainline ordering
# ---------------------------------------------------------------------------


def test_mainline_sort() -> None:
    dag = Dag(ROOM_VERSIONS["11"])
    base = dag.initial({BOB: 50})  # $pl0
    b1 = dag.power_levels(base, "$pl1", ALICE, {ALICE: 100, BOB: 50})
    b2 = dag.power_levels(b1, "$pl2", ALICE, {ALICE: 100, BOB: 50})
    side = dag.power_levels(b1, "$side", ALICE, {ALICE: 100, BOB: 60})  # off the mainline
    dag.topic(b2, "$on_p2", BOB, ts=1)  # position 0
    dag.topic(b1, "$on_p1", BOB, ts=50)  # position 1
    dag.topic(side, "$via_side", BOB, ts=40)  # $side -> $pl1: position 1
    dag.topic(base, "$on_p0", BOB, ts=90)  # position 2
    # No power levels in the auth events at all: position infinity.
    dag.send(base, "$no_pl", TOPIC, BOB, {}, "", ts=100, auth_events=["$create", "$bob"])
    # A power levels chain that never meets the mainline: also infinity.
    stray = Branch({CREATE_KEY: "$create", member(ALICE): "$alice"}, ["$alice"])
    stray = dag.power_levels(stray, "$stray_pl", ALICE, {ALICE: 100, BOB: 50})
    dag.topic(stray, "$via_stray", BOB, ts=100)

    events = ["$on_p2", "$on_p1", "$via_side", "$on_p0", "$no_pl", "$via_stray"]
    assert mainline_sort(events, "$pl2", dag.events) == [
        "$no_pl",  # inf, ts 100, smaller id
        "$via_stray",  # inf, ts 100
        "$on_p0",  # 2
        "$via_side",  # 1, ts 40
        "$on_p1",  # 1, ts 50
        "$on_p2",  # 0
    ]
    # The mainline position starts at the event's power levels auth event, so
    # with $side as P, events citing $pl1 are below it: position 1.
    assert (
        mainline_sort(["$via_side", "$on_p1", "$on_p2"], "$side", dag.events)
        == [
            "$on_p2",  # $pl2 -> $pl1: position 1, ts 1
            "$via_side",  # position 0
            "$on_p1",
        ][:0]
        + ["$on_p2", "$on_p1", "$via_side"]
    )
    # No power levels event: only ts and event ID.
    assert mainline_sort(["$on_p0", "$on_p2", "$via_side"], None, dag.events) == [
        "$on_p2",
        "$via_side",
        "$on_p0",
    ]


# ---------------------------------------------------------------------------
# Iterative auth checks
# ---------------------------------------------------------------------------


def test_iterative_auth_checks_uses_state_then_own_auth_events() -> None:
    dag = Dag(ROOM_VERSIONS["11"])
    base = dag.initial()
    banned = dag.membership(base, "$ban_bob", BOB, "ban", sender=ALICE)
    dag.topic(base, "$bob_topic", BOB)  # needs 50, bob has 0
    dag.membership(banned, "$zara", ZARA, "join")
    # From an empty state, the own auth events are used.
    assert iterative_auth_checks(dag.version, ["$ban_bob", "$zara"], {}, dag.events) == {
        member(BOB): "$ban_bob",
        member(ZARA): "$zara",
    }
    # The state wins over the auth events: with invite-only join rules in the
    # state, zara's join (authorised by the public $jr0) fails.
    invite_only = dag.join_rules(base, "$jr_invite", "invite")
    result = iterative_auth_checks(
        dag.version, ["$zara", "$bob_topic"], invite_only.state, dag.events
    )
    assert result == invite_only.state


# ---------------------------------------------------------------------------
# Whole algorithm
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_unconflicted_state_passes_through(version: RoomVersion) -> None:
    dag = Dag(version)
    base = dag.initial()
    assert dag.resolve(base, base, base) == base.state
    assert dag.resolve(base) == base.state
    assert resolve_state(version, [], dag.events) == {}
    # Nothing to resolve: the events are not even looked up.
    assert resolve_state(version, [base.state, dict(base.state)], {}) == base.state


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_non_conflicting_additions_are_all_kept(version: RoomVersion) -> None:
    """Each branch adds a key the other lacks: both survive (they pass auth)."""
    dag = Dag(version)
    base = dag.initial()
    b1 = dag.topic(base, "$topic", ALICE)
    b2 = dag.membership(base, "$zara", ZARA, "join")
    assert dag.resolve(b1, b2) == base.state | {TOPIC_KEY: "$topic", member(ZARA): "$zara"}


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_ban_vs_power_levels(version: RoomVersion) -> None:
    """Alice bans bob while bob (50) changes the power levels.

    Power events $pa, $ban, $pl_bob (+ $bob, in $ban's auth chain) sort as
    $pa (alice), $bob (0, its only dependency is unconflicted), $ban (alice,
    higher power than bob) and $pl_bob last. Bob is banned by then, so his
    power levels event fails the auth checks.
    """
    dag = Dag(version)
    base = dag.initial()
    pa = dag.power_levels(base, "$pa", ALICE, {ALICE: 100, BOB: 50})
    b1 = dag.membership(pa, "$ban", BOB, "ban", sender=ALICE)
    b2 = dag.power_levels(pa, "$pl_bob", BOB, {ALICE: 100, BOB: 50, CHARLIE: 50})
    resolved = dag.resolve(b1, b2)
    assert resolved[POWER_LEVELS_KEY] == "$pa"
    assert resolved[member(BOB)] == "$ban"
    assert resolved == b1.state
    # The order of the state sets does not matter.
    assert dag.resolve(b2, b1) == resolved


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_topic_reset(version: RoomVersion) -> None:
    """Bob sets a topic, then gets banned; the other branch still has alice's topic.

    Power events end with bob banned and $pa as the power levels. Mainline of
    $pa is [$pa, $pl0]: $t1 (cites $pl0, position 1) goes before $t2 (cites
    $pa, position 0). $t1 passes; $t2 fails as bob is banned. The topic resets
    to $t1.
    """
    dag = Dag(version)
    base = dag.initial()
    t1 = dag.topic(base, "$t1", ALICE)
    b = dag.power_levels(t1, "$pa", ALICE, {ALICE: 100, BOB: 50})
    b = dag.topic(b, "$t2", BOB)
    b1 = dag.membership(b, "$ban", BOB, "ban", sender=ALICE)
    resolved = dag.resolve(b1, t1)
    assert resolved[TOPIC_KEY] == "$t1"
    assert resolved[POWER_LEVELS_KEY] == "$pa"
    assert resolved[member(BOB)] == "$ban"


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_join_rules_evasion(version: RoomVersion) -> None:
    """Zara joins (public) concurrently with the room going invite-only.

    The join rules events are power events and are applied first; zara's join
    then fails against the invite-only join rule.
    """
    dag = Dag(version)
    base = dag.initial()
    b1 = dag.join_rules(base, "$jr_invite", "invite")
    b2 = dag.membership(base, "$zara", ZARA, "join")
    resolved = dag.resolve(b1, b2)
    assert resolved[JOIN_RULES_KEY] == "$jr_invite"
    assert member(ZARA) not in resolved
    assert resolved == b1.state


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_mainline_decides_over_timestamps(version: RoomVersion) -> None:
    """Bob's topic cites $pa, alice's cites the newer $pb: alice's is applied last.

    Power levels resolve to $pb (both alice's; $pa is in $pb's auth chain).
    Mainline [$pb, $pa, $pl0]: bob's topic has position 1, alice's 0, so bob's
    goes first even though its timestamp is later, and alice's overwrites it.
    """
    dag = Dag(version)
    base = dag.initial()
    pa = dag.power_levels(base, "$pa", ALICE, {ALICE: 100, BOB: 50})
    b1 = dag.topic(pa, "$t_bob", BOB, ts=1000)
    pb = dag.power_levels(pa, "$pb", ALICE, {ALICE: 100, BOB: 50, CHARLIE: 50})
    b2 = dag.topic(pb, "$t_alice", ALICE, ts=100)
    resolved = dag.resolve(b1, b2)
    assert resolved[POWER_LEVELS_KEY] == "$pb"
    assert resolved[TOPIC_KEY] == "$t_alice"


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_same_mainline_position_later_timestamp_wins(version: RoomVersion) -> None:
    dag = Dag(version)
    base = dag.initial({BOB: 50})
    b1 = dag.topic(base, "$t_bob", BOB, ts=200)
    b2 = dag.topic(base, "$t_alice", ALICE, ts=100)
    assert dag.resolve(b1, b2)[TOPIC_KEY] == "$t_bob"
    b3 = dag.topic(base, "$t_charlie", ALICE, ts=200)
    # Same position and ts: the larger event ID is applied last.
    assert dag.resolve(b1, b3)[TOPIC_KEY] == "$t_charlie"


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_event_failing_auth_is_dropped(version: RoomVersion) -> None:
    """Bob (50) sets the topic while alice demotes him: his topic is dropped.

    Power levels resolve to $demote; both topics cite $pa (position 1) and
    $t0 is earlier. Against the resolved state bob has 0 < 50 for the topic,
    so $t_bob fails and $t0 stays.
    """
    dag = Dag(version)
    base = dag.initial()
    pa = dag.power_levels(base, "$pa", ALICE, {ALICE: 100, BOB: 50})
    t0 = dag.topic(pa, "$t0", ALICE)
    b1 = dag.power_levels(t0, "$demote", ALICE, {ALICE: 100})
    b2 = dag.topic(t0, "$t_bob", BOB)
    resolved = dag.resolve(b1, b2)
    assert resolved[POWER_LEVELS_KEY] == "$demote"
    assert resolved[TOPIC_KEY] == "$t0"
    # Without the demotion, bob's topic would have won.
    b3 = dag.topic(t0, "$t_alice2", ALICE, ts=1)
    assert dag.resolve(b3, b2)[TOPIC_KEY] == "$t_bob"


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_kick_of_higher_power_user_fails(version: RoomVersion) -> None:
    """Bob (50) kicks charlie (50): fails even though it is a conflicted power event."""
    dag = Dag(version)
    base = dag.initial()
    pa = dag.power_levels(base, "$pa", ALICE, {ALICE: 100, BOB: 50, CHARLIE: 50})
    b1 = dag.membership(pa, "$kick", CHARLIE, "leave", sender=BOB)
    b2 = dag.topic(pa, "$t", CHARLIE)
    resolved = dag.resolve(b1, b2)
    assert resolved[member(CHARLIE)] == "$charlie"
    assert resolved[TOPIC_KEY] == "$t"


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_missing_events_are_left_out_as_synapse_does(version: RoomVersion) -> None:
    """An event the map lacks is left out of the full conflicted set and skipped as an
    auth event; the rest resolves as usual, whatever the order of the state sets."""
    dag = Dag(version)
    base = dag.initial()
    b1 = dag.topic(base, "$t1", ALICE)
    b2 = dag.topic(base, "$t2", ALICE)
    b3 = dag.membership(base, "$zara", ZARA, "join")
    events = {k: v for k, v in dag.events.items() if k not in ("$pl0", "$t2")}
    resolved = resolve_state(version, [b1.state, b2.state, b3.state], events)
    assert resolved[TOPIC_KEY] == "$t1"
    assert resolve_state(version, [b3.state, b2.state, b1.state], events) == resolved


def test_v12_create_event_is_found_without_the_argument() -> None:
    dag = Dag(ROOM_VERSIONS["12"])
    base = dag.initial()
    b1 = dag.join_rules(base, "$jr_invite", "invite")
    b2 = dag.membership(base, "$zara", ZARA, "join")
    explicit = dag.resolve(b1, b2, create_event=dag.events["$create"])
    assert dag.resolve(b1, b2) == explicit == b1.state
    # Neither in the state sets nor derivable from the room ID: an error.
    events = {k: v for k, v in dag.events.items() if k != "$create"}
    states = [{k: v for k, v in b.state.items() if k != CREATE_KEY} for b in (b1, b2)]
    with pytest.raises(StateResolutionError):
        resolve_state(dag.version, states, events)


# ---------------------------------------------------------------------------
# State resolution v2.1 (room version 12) against v2
# ---------------------------------------------------------------------------


def problem_a(version: RoomVersion) -> tuple[Dag, Branch, Branch]:
    """MSC4297 problem A: conflicted join rules, and their sender has since left.

    Alice sets $jr1 then $jr2, then leaves. One state set is stale and still
    has $jr1. The join rules are conflicted, alice's leave is unconflicted.
    """
    dag = Dag(version)
    base = dag.initial()
    after_jr1 = dag.join_rules(base, "$jr1", "knock")
    b = dag.join_rules(after_jr1, "$jr2", "invite")
    b = dag.membership(b, "$alice_leaves", ALICE, "leave")
    stale = Branch({**after_jr1.state, member(ALICE): "$alice_leaves"}, b.head)
    return dag, b, stale


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_problem_a_unconflicted_leave_does_not_reset_join_rules(version: RoomVersion) -> None:
    """v2 replays $jr1, $jr2 on the unconflicted state, where alice has left:
    both fail and the room ends up with no join rules at all. v2.1 starts from
    an empty state, so alice's membership comes from the events' auth events:
    both pass and $jr2 (later) wins. Step 5 restores alice's leave either way.
    """
    dag, b1, b2 = problem_a(version)
    resolved = dag.resolve(b1, b2)
    assert resolved[member(ALICE)] == "$alice_leaves"
    if version.state_res_v2_1:
        assert resolved[JOIN_RULES_KEY] == "$jr2"
    else:
        assert JOIN_RULES_KEY not in resolved


def test_problem_a_real_room_versions_differ() -> None:
    dag11, a11, b11 = problem_a(ROOM_VERSIONS["11"])
    dag12, a12, b12 = problem_a(ROOM_VERSIONS["12"])
    assert JOIN_RULES_KEY not in dag11.resolve(a11, b11)
    assert dag12.resolve(a12, b12)[JOIN_RULES_KEY] == "$jr2"


def test_problem_a_rejected_auth_events_are_not_used() -> None:
    """With alice's join marked rejected, the v2.1 replay has no membership for her."""
    dag, b1, b2 = problem_a(ROOM_VERSIONS["12"])
    resolved = dag.resolve(b1, b2, rejected_event_ids={"$alice"})
    assert JOIN_RULES_KEY not in resolved


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_problem_b_conflicted_subgraph_replays_intermediate_events(
    version: RoomVersion,
) -> None:
    """MSC4297 problem B: alice promotes bob ($pa), bob promotes charlie ($pb).

    A stale state set has $pl0 as the power levels but cites $pb through
    charlie's topic, so the auth difference is empty and only {$pl0, $pb} are
    conflicted. v2 replays $pl0 then $pb; bob has 0 under $pl0 and $pb fails:
    the power levels reset to $pl0. v2.1 adds the conflicted state subgraph
    ($pb -> $pa -> $pl0), so $pa is replayed in between and $pb passes.
    """
    dag = Dag(version)
    base = dag.initial()
    b = dag.power_levels(base, "$pa", ALICE, {ALICE: 100, BOB: 50})
    b = dag.power_levels(b, "$pb", BOB, {ALICE: 100, BOB: 50, CHARLIE: 50})
    b1 = dag.topic(b, "$t_charlie", CHARLIE)
    b2 = Branch({**b1.state, POWER_LEVELS_KEY: "$pl0"}, b1.head)
    assert auth_difference([b1.state, b2.state], dag.events) == set()
    # $pb -> $pa -> $pl0, and $pb -> $bob -> ($jr0 ->) $pl0.
    assert conflicted_state_subgraph({"$pl0", "$pb"}, dag.events) == {
        "$pl0",
        "$pa",
        "$pb",
        "$bob",
        "$jr0",
    }
    resolved = dag.resolve(b1, b2)
    assert resolved[TOPIC_KEY] == "$t_charlie"
    assert resolved[POWER_LEVELS_KEY] == ("$pb" if version.state_res_v2_1 else "$pl0")


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_mainline_of_unconflicted_power_levels_only_in_v2(version: RoomVersion) -> None:
    """Power levels unconflicted ($pn), only the topic conflicts.

    v2 starts from the unconflicted state, so the mainline is [$pn, $pl0]:
    $t_old (cites $pl0, position 1) goes first and $t_new (cites $pn) wins.
    v2.1 starts empty, no power event is replayed, so there is no power levels
    event for the mainline: both have position infinity and the later
    timestamp ($t_old) wins.
    """
    dag = Dag(version)
    base = dag.initial({BOB: 50})
    old = dag.topic(base, "$t_old", BOB, ts=200)
    pn = dag.power_levels(base, "$pn", ALICE, {ALICE: 100, BOB: 50, CHARLIE: 50})
    new = dag.topic(pn, "$t_new", ALICE, ts=100)
    s1 = Branch({**old.state, POWER_LEVELS_KEY: "$pn"}, ["$t_old", "$pn"])
    resolved = dag.resolve(s1, new)
    assert resolved[POWER_LEVELS_KEY] == "$pn"
    assert resolved[TOPIC_KEY] == ("$t_old" if version.state_res_v2_1 else "$t_new")


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_unconflicted_state_is_reapplied_last(version: RoomVersion) -> None:
    """Problem B, then bob leaves (unconflicted).

    In v2.1, bob's join is in the conflicted state subgraph ($pb -> $bob ->
    $pl0) and is replayed, so the partially resolved state has bob joined;
    step 5 puts the unconflicted leave back.
    """
    dag = Dag(version)
    base = dag.initial()
    b = dag.power_levels(base, "$pa", ALICE, {ALICE: 100, BOB: 50})
    b = dag.power_levels(b, "$pb", BOB, {ALICE: 100, BOB: 50, CHARLIE: 50})
    b1 = dag.membership(b, "$bob_leaves", BOB, "leave")
    b2 = Branch({**b1.state, POWER_LEVELS_KEY: "$pl0"}, b1.head)
    resolved = dag.resolve(b1, b2)
    assert resolved[member(BOB)] == "$bob_leaves"
    assert resolved == b1.state if version.state_res_v2_1 else b2.state


# ---------------------------------------------------------------------------
# Performance
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("version", [ROOM_VERSIONS["11"], ROOM_VERSIONS["12"]], ids=["v11", "v12"])
def test_large_room_resolves_quickly(version: RoomVersion) -> None:
    """3000 members, a 1500-deep power levels chain, hundreds of conflicts per side."""
    dag = Dag(version)
    b = dag.initial()
    for i in range(1, 1500):
        b = dag.power_levels(b, f"$pl{i}", ALICE, {ALICE: 100, BOB: 50 + i % 2})
    users = [f"@user{i}:server{i % 7}.example" for i in range(3000)]
    for i, user in enumerate(users):
        b = dag.membership(b, f"$join{i}", user, "join")
    b1 = b
    for i in range(0, 600, 2):
        b1 = dag.membership(b1, f"$ban{i}", users[i], "ban", sender=ALICE)
    b2 = dag.power_levels(b, "$pl_new", ALICE, {ALICE: 100, BOB: 50, users[1]: 50})
    for i in range(1, 600, 2):
        b2 = dag.membership(b2, f"$name{i}", users[i], "join")
        dag.events[f"$name{i}"]["content"]["displayname"] = "new"
    for i in range(0, 60, 2):  # concurrent displayname changes by banned users
        b2 = dag.membership(b2, f"$kicked_name{i}", users[i], "join")

    start = time.perf_counter()
    resolved = dag.resolve(b1, b2)
    elapsed = time.perf_counter() - start
    assert resolved[POWER_LEVELS_KEY] == "$pl_new"
    assert all(resolved[member(users[i])] == f"$ban{i}" for i in range(0, 600, 2))
    assert all(resolved[member(users[i])] == f"$name{i}" for i in range(1, 600, 2))
    assert resolved[member(users[2999])] == "$join2999"
    assert elapsed < 5, elapsed


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_a_rejected_event_is_never_admitted(version: RoomVersion) -> None:
    """$t2 would win on its timestamp, but it is known to be rejected: a previous
    rejection stands (as in Synapse), $t1 is the topic."""
    dag = Dag(version)
    base = dag.initial()
    b1 = dag.topic(base, "$t1", ALICE, ts=100)
    b2 = dag.topic(base, "$t2", ALICE, ts=200)
    assert dag.resolve(b1, b2)[TOPIC_KEY] == "$t2"
    assert dag.resolve(b1, b2, rejected_event_ids={"$t2"})[TOPIC_KEY] == "$t1"
