"""Room versions 1 to 9 on plain data: event ids and formats, redaction, auth rule
differences (each versus the neighbouring version without it), state resolution v1."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from signedjson.key import generate_signing_key, get_verify_key

from crypto.errors import SignatureError
from crypto.event_hashing import (
    check_content_hash,
    compute_event_id,
    hash_and_sign_event,
    verify_event_signature,
)
from homeserver.events.auth_rules import CREATE_KEY, POWER_LEVELS_KEY, auth_types_for_event
from homeserver.events.format import (
    EventFormatError,
    event_reference_ids,
    is_valid_event_id,
    references_for_version,
    validate_pdu_format,
)
from homeserver.events.redaction import prune_event
from homeserver.events.room_versions import ROOM_VERSIONS, RoomVersion
from homeserver.events.state_res import resolve_state
from homeserver.events.state_res_v1 import resolve_state_v1, separate_state_v1
from tests.events.test_auth_rules import ADMIN, ALICE, BOB, CAROL, MOD, make_room

Event = dict[str, Any]
V = ROOM_VERSIONS
OLD = [str(v) for v in range(1, 10)]


def _room(version: str) -> Any:
    return make_room(version, creator=ALICE)


# ---------------------------------------------------------------------------
# Event ids, references and the PDU format
# ---------------------------------------------------------------------------


def _pdu(version: RoomVersion, **extra: Any) -> Event:
    refs = references_for_version(["$a:x.test"], version, {"$a:x.test": {"sha256": "h"}})
    pdu: Event = {
        "type": "m.room.message",
        "room_id": "!r:x.test",
        "sender": "@u:x.test",
        "content": {"body": "hi"},
        "origin_server_ts": 1,
        "depth": 3,
        "prev_events": refs if version.event_id_in_event else ["$" + "A" * 43],
        "auth_events": refs if version.event_id_in_event else ["$" + "B" * 43],
    }
    pdu.update(extra)
    return pdu


@pytest.mark.parametrize("version", ["1", "2"])
def test_v1_v2_events_carry_their_id_and_reference_pairs(version: str) -> None:
    rv = V[version]
    key = generate_signing_key("k")
    signed = hash_and_sign_event(_pdu(rv), "x.test", key, rv)
    event_id = signed["event_id"]
    assert event_id.startswith("$") and event_id.endswith(":x.test")
    assert compute_event_id(signed, rv) == event_id
    assert signed["prev_events"] == [["$a:x.test", {"sha256": "h"}]]
    assert event_reference_ids(signed["prev_events"]) == ["$a:x.test"]
    assert check_content_hash(signed)
    verify_event_signature(signed, "x.test", get_verify_key(key), rv)
    validate_pdu_format(signed, rv)
    # The id is covered by the signature: another id breaks it.
    with pytest.raises(SignatureError):
        verify_event_signature(
            {**signed, "event_id": "$other:x.test"}, "x.test", get_verify_key(key), rv
        )
    # A v1 PDU without an id, or with plain id lists, is malformed.
    without = {k: v for k, v in signed.items() if k != "event_id"}
    with pytest.raises(EventFormatError):
        validate_pdu_format(without, rv)
    with pytest.raises(ValueError):
        compute_event_id(without, rv)
    with pytest.raises(EventFormatError):
        validate_pdu_format({**signed, "prev_events": ["$a:x.test"]}, rv)
    with pytest.raises(EventFormatError):
        validate_pdu_format({**signed, "prev_events": [["$a", {}]]}, rv)


def test_v3_ids_are_standard_base64_and_v4_url_safe() -> None:
    key = generate_signing_key("k")
    # Find an event whose hash holds + or / (or - or _), so the alphabets differ.
    for n in range(200):
        pdu = _pdu(V["3"], content={"body": str(n)})
        signed = hash_and_sign_event(pdu, "x.test", key, V["3"])
        v3 = compute_event_id(signed, V["3"])
        if "+" in v3 or "/" in v3:
            break
    else:
        raise AssertionError("no hash with + or / in 200 tries")
    v4 = compute_event_id(signed, V["4"])
    assert v3[1:].replace("+", "-").replace("/", "_") == v4[1:]
    assert is_valid_event_id(v3, V["3"]) and not is_valid_event_id(v3, V["4"])
    assert is_valid_event_id(v4, V["4"])
    assert "event_id" not in signed
    validate_pdu_format(signed, V["3"])
    bad = {**signed, "prev_events": ["$" + "A" * 42 + "-"]}
    with pytest.raises(EventFormatError):
        validate_pdu_format(bad, V["3"])


@pytest.mark.parametrize(("version", "strict"), [("5", False), ("6", True)])
def test_canonical_json_is_strict_from_v6(version: str, strict: bool) -> None:
    rv = V[version]
    pdu = hash_and_sign_event(
        _pdu(rv, content={"n": 2**60}), "x.test", generate_signing_key("k"), rv
    )
    if strict:
        with pytest.raises(EventFormatError):
            validate_pdu_format(pdu, rv)
    else:
        validate_pdu_format(pdu, rv)


# ---------------------------------------------------------------------------
# Redaction algorithm
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("event_type", "content", "kept_from", "kept_until"),
    [
        ("m.room.aliases", {"aliases": ["#a:x"]}, 1, 5),
        ("m.room.join_rules", {"join_rule": "restricted", "allow": []}, 8, 12),
        (
            "m.room.member",
            {"membership": "join", "join_authorised_via_users_server": "@a:x"},
            9,
            12,
        ),
    ],
)
def test_redaction_keeps_per_version(
    event_type: str, content: dict[str, Any], kept_from: int, kept_until: int
) -> None:
    key = next(k for k in content if k not in ("join_rule", "membership"))
    for version in range(1, 13):
        pruned = prune_event({"type": event_type, "content": content}, V[str(version)])
        assert (key in pruned["content"]) == (kept_from <= version <= kept_until), version


# ---------------------------------------------------------------------------
# Auth rules
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("version", OLD)
def test_aliases_rule_v1_to_v5(version: str) -> None:
    room = _room(version)
    own = room.event("m.room.aliases", BOB, {"aliases": ["#x:b.test"]}, "b.test")
    other = room.event("m.room.aliases", BOB, {"aliases": ["#x:a.test"]}, "a.test")
    none = room.event("m.room.aliases", BOB, {"aliases": []})
    if int(version) <= 5:
        room.allowed(own)  # any user of the server, whatever their power
        room.rejected(other)
        room.rejected(none)
    else:
        # v6+: an ordinary state event (BOB has 0 < state_default 50).
        room.rejected(own)
        room.allowed(room.event("m.room.aliases", ADMIN, {"aliases": []}, "b.test"))


@pytest.mark.parametrize("version", ["1", "2", "3"])
def test_redaction_rule_v1_v2(version: str) -> None:
    room = _room(version)
    same = room.event("m.room.redaction", BOB, {}, redacts="$t:b.test", event_id="$r:b.test")
    other = room.event("m.room.redaction", BOB, {}, redacts="$t:a.test", event_id="$r:b.test")
    by_mod = room.event("m.room.redaction", MOD, {}, redacts="$t:b.test", event_id="$r:a.test")
    room.allowed(same)
    room.allowed(by_mod)
    if version in ("1", "2"):
        room.rejected(other)
    else:
        room.allowed(other)  # v3+: decided when the redaction is applied


@pytest.mark.parametrize(("version", "checked"), [("5", False), ("6", True)])
def test_notifications_levels_checked_from_v6(version: str, checked: bool) -> None:
    room = _room(version)
    content = {**room.pl_content(), "notifications": {"room": 101}}
    event = room.power_levels(ADMIN, **content)
    assert room.outcome(event) is not checked


@pytest.mark.parametrize("version", OLD)
def test_string_power_levels_before_v10(version: str) -> None:
    room = _room(version)
    content = {**room.pl_content(), "users": {**room.pl_content()["users"], BOB: "10"}}
    room.allowed(room.power_levels(ADMIN, **content))
    content = {**room.pl_content(), "users": {**room.pl_content()["users"], BOB: "ten"}}
    room.rejected(room.power_levels(ADMIN, **content))


@pytest.mark.parametrize("version", OLD)
def test_knock_from_v7_and_restricted_from_v8(version: str) -> None:
    room = _room(version)
    room.set_join_rule("knock")
    assert room.outcome(room.member(CAROL, "knock")) is (int(version) >= 7)
    room = _room(version)
    room.set_join_rule("restricted")
    join = room.member(
        CAROL, "join", join_authorised_via_users_server=ADMIN
    )  # ADMIN (100) may invite
    assert room.outcome(join) is (int(version) >= 8)


@pytest.mark.parametrize("version", OLD)
def test_create_event_needs_creator_before_v11(version: str) -> None:
    room = _room(version)
    create = {**room.create, "content": {"room_version": version}}
    room.rejected(create)
    room.allowed(room.create)


# ---------------------------------------------------------------------------
# State resolution v1
# ---------------------------------------------------------------------------

V1 = V["1"]


def _sha1(event_id: str) -> str:
    return hashlib.sha1(event_id.encode()).hexdigest()


class V1Room:
    """Events of a version 1 room, with the state after each branch."""

    def __init__(self) -> None:
        self.events: dict[str, Event] = {}
        self.state: dict[tuple[str, str], str] = {}
        self._add("$create:a.test", "m.room.create", ALICE, {"creator": ALICE}, "", 1)
        self._add("$alice:a.test", "m.room.member", ALICE, {"membership": "join"}, ALICE, 2)
        pl = {"users": {ALICE: 100, MOD: 50}, "state_default": 50, "events_default": 0}
        self._add("$pl0:a.test", "m.room.power_levels", ALICE, pl, "", 3)
        self._add("$jr0:a.test", "m.room.join_rules", ALICE, {"join_rule": "public"}, "", 4)
        for n, user in enumerate((MOD, BOB)):
            self._add(f"${n}:a.test", "m.room.member", user, {"membership": "join"}, user, 5 + n)

    def _add(
        self,
        event_id: str,
        event_type: str,
        sender: str,
        content: dict[str, Any],
        state_key: str,
        depth: int,
        state: dict[tuple[str, str], str] | None = None,
    ) -> dict[tuple[str, str], str]:
        base = self.state if state is None else state
        event: Event = {
            "event_id": event_id,
            "type": event_type,
            "sender": sender,
            "content": content,
            "state_key": state_key,
            "room_id": "!r:a.test",
            "depth": depth,
            "prev_events": [],
        }
        wanted = auth_types_for_event(event, V1)
        event["auth_events"] = [[base[k], {}] for k in sorted(wanted) if k in base]
        self.events[event_id] = event
        base[(event_type, state_key)] = event_id
        return base

    def branch(self, *steps: tuple[Any, ...]) -> dict[tuple[str, str], str]:
        state = dict(self.state)
        for step in steps:
            self._add(*step, state=state)
        return state

    def resolve(self, *states: dict[tuple[str, str], str]) -> dict[tuple[str, str], str]:
        out = resolve_state(V1, list(states), self.events)
        assert out == resolve_state_v1(V1, list(reversed(states)), self.events)
        return out


TOPIC = ("m.room.topic", "")


def test_separate_keeps_keys_of_only_some_sets() -> None:
    un, con = separate_state_v1([{("a", ""): "$1", ("b", ""): "$2"}, {("a", ""): "$1"}])
    assert un == {("a", ""): "$1", ("b", ""): "$2"} and con == {}
    un, con = separate_state_v1([{("a", ""): "$1"}, {("a", ""): "$2"}, {("a", ""): "$1"}])
    assert un == {} and con == {("a", ""): {"$1", "$2"}}


def test_v1_identical_states_resolve_to_themselves() -> None:
    room = V1Room()
    assert room.resolve(room.state, dict(room.state)) == room.state


def test_v1_topic_conflict_deepest_allowed_wins() -> None:
    room = V1Room()
    a = room.branch(("$ta:a.test", "m.room.topic", MOD, {"topic": "a"}, "", 10))
    b = room.branch(("$tb:a.test", "m.room.topic", ALICE, {"topic": "b"}, "", 11))
    assert room.resolve(a, b)[TOPIC] == "$tb:a.test"
    # The deepest one's sender lacks the power: the other one wins.
    c = room.branch(("$tc:a.test", "m.room.topic", BOB, {"topic": "c"}, "", 12))
    assert room.resolve(a, c)[TOPIC] == "$ta:a.test"
    # None is allowed: the shallowest one.
    d = room.branch(("$td:a.test", "m.room.topic", BOB, {"topic": "d"}, "", 9))
    assert room.resolve(c, d)[TOPIC] == "$td:a.test"


def test_v1_equal_depth_lowest_sha1_wins() -> None:
    room = V1Room()
    a = room.branch(("$x1:a.test", "m.room.topic", MOD, {"topic": "a"}, "", 10))
    b = room.branch(("$x2:a.test", "m.room.topic", ALICE, {"topic": "b"}, "", 10))
    want = min(("$x1:a.test", "$x2:a.test"), key=_sha1)
    assert room.resolve(a, b)[TOPIC] == want


def test_v1_power_levels_walk_up_until_one_is_not_allowed() -> None:
    room = V1Room()
    pl = room.events["$pl0:a.test"]["content"]
    # Branch a: alice gives bob 50 (depth 10). Branch b: bob, without power, makes
    # himself 100 (depth 11): checked against a's levels (bob 50), refused: a's stays.
    a = room.branch(
        (
            "$pla:a.test",
            "m.room.power_levels",
            ALICE,
            {**pl, "users": {**pl["users"], BOB: 50}},
            "",
            10,
        )
    )
    b = room.branch(
        (
            "$plb:a.test",
            "m.room.power_levels",
            BOB,
            {**pl, "users": {**pl["users"], BOB: 100}},
            "",
            11,
        )
    )
    assert room.resolve(a, b)[POWER_LEVELS_KEY] == "$pla:a.test"
    # Alice's own later change passes: the deepest wins.
    c = room.branch(
        (
            "$plc:a.test",
            "m.room.power_levels",
            ALICE,
            {**pl, "users": {**pl["users"], MOD: 0}},
            "",
            12,
        )
    )
    assert room.resolve(a, c)[POWER_LEVELS_KEY] == "$plc:a.test"


def test_v1_membership_conflict_ban_against_join() -> None:
    room = V1Room()
    carol = "@carol:c.test"
    # Branch a: carol joins (depth 10); branch b: mod bans carol (depth 11).
    a = room.branch(("$cj:a.test", "m.room.member", carol, {"membership": "join"}, carol, 10))
    b = room.branch(("$cb:a.test", "m.room.member", MOD, {"membership": "ban"}, carol, 11))
    assert room.resolve(a, b)[("m.room.member", carol)] == "$cb:a.test"
    # Bob (0) cannot ban: the join stays.
    c = room.branch(("$cx:a.test", "m.room.member", BOB, {"membership": "ban"}, carol, 11))
    assert room.resolve(a, c)[("m.room.member", carol)] == "$cj:a.test"


def test_v1_missing_conflicted_event_is_left_out() -> None:
    room = V1Room()
    a = room.branch(("$ta:a.test", "m.room.topic", MOD, {"topic": "a"}, "", 10))
    b = {**room.state, TOPIC: "$unknown:z.test"}
    assert room.resolve(a, b)[TOPIC] == "$ta:a.test"
    assert room.resolve(a, b)[CREATE_KEY] == "$create:a.test"


def test_v1_rejected_events_never_enter_the_state() -> None:
    """A made-up power levels event at depth 0 giving its sender all the power would win
    the walk up from the oldest candidate (the real one, by a sender it demotes, is
    then not allowed); once known to be rejected, it is out of the resolution."""
    room = V1Room()
    pl = room.events["$pl0:a.test"]["content"]
    evil = {**pl, "users": {BOB: 100, ALICE: 0}}
    bogus = room.branch(("$plx:a.test", "m.room.power_levels", BOB, evil, "", 0))
    assert room.resolve(room.state, bogus)[POWER_LEVELS_KEY] == "$plx:a.test"
    resolved = resolve_state(
        V1, [room.state, bogus], room.events, rejected_event_ids={"$plx:a.test"}
    )
    assert resolved[POWER_LEVELS_KEY] == "$pl0:a.test"
