"""Table-driven tests for the authorisation rules of room versions 10, 11 and 12.

Each case builds on a small room (see :class:`Room` / :func:`make_room`):

* ``ALICE`` created the room and is joined (PL 100 in v10/11, a creator with
  infinite power in v12), ``ADMIN`` is joined with 100, ``MOD`` with 50 and
  ``BOB`` with 0. ``CAROL`` and ``ERIN`` have no membership.
* Power levels: kick/ban/redact 50, invite 0, state_default 50.
* Join rule: public unless the case says otherwise.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import Any

import pytest
from signedjson.key import encode_verify_key_base64, generate_signing_key, get_verify_key
from signedjson.sign import sign_json

from homeserver.events.auth_rules import (
    CREATE_KEY,
    POWER_LEVELS_KEY,
    AuthError,
    auth_types_for_event,
    check_auth_events,
    check_auth_rules,
    get_event_power_level,
    get_named_level,
    get_user_power_level,
    is_valid_user_id,
    room_creators,
)
from homeserver.events.room_versions import ROOM_VERSIONS, RoomVersion

Event = dict[str, Any]

ALL_VERSIONS = ["10", "11", "12"]
LEGACY_VERSIONS = ["10", "11"]

ALICE = "@alice:a.test"
ADMIN = "@admin:a.test"
MOD = "@mod:a.test"
BOB = "@bob:b.test"
CAROL = "@carol:c.test"
ERIN = "@erin:e.test"
DAVE = "@dave:d.test"

CREATE_ID = "$createhash"


def _server(user_id: str) -> str:
    return user_id.split(":", 1)[1]


class Room:
    """A room's state map plus helpers to build and check events against it."""

    def __init__(self, version: str, *, create_content: dict[str, Any] | None = None) -> None:
        self.version_id = version
        self.version: RoomVersion = ROOM_VERSIONS[version]
        self.v12 = self.version.room_id_is_create_event_hash
        content: dict[str, Any] = {"room_version": version}
        if version == "10":
            content["creator"] = ALICE
        content.update(create_content or {})
        self.create: Event = {
            "type": "m.room.create",
            "state_key": "",
            "sender": ALICE,
            "content": content,
            "prev_events": [],
            "auth_events": [],
            "origin_server_ts": 0,
            "depth": 1,
            "event_id": CREATE_ID,
        }
        if self.v12:
            self.room_id = "!" + CREATE_ID[1:]
            self.state: dict[tuple[str, str], Event] = {}
        else:
            self.room_id = "!room:a.test"
            self.create["room_id"] = self.room_id
            self.state = {CREATE_KEY: self.create}
        self._counter = 1

    # -- building events ---------------------------------------------------

    def event(
        self,
        event_type: str,
        sender: str,
        content: dict[str, Any],
        state_key: str | None = None,
        **extra: Any,
    ) -> Event:
        self._counter += 1
        event: Event = {
            "type": event_type,
            "sender": sender,
            "content": content,
            "room_id": self.room_id,
            "event_id": f"$event{self._counter}",
            "prev_events": ["$previous"],
            "auth_events": [],
            "origin_server_ts": self._counter,
            "depth": self._counter,
            "signatures": {_server(sender): {"ed25519:key": "sig"}},
        }
        if state_key is not None:
            event["state_key"] = state_key
        authoriser = content.get("join_authorised_via_users_server")
        if isinstance(authoriser, str) and ":" in authoriser:
            # The resident server vouching for a restricted join signs it too.
            event["signatures"][_server(authoriser)] = {"ed25519:key": "sig"}
        event.update(extra)
        return event

    def member(
        self, target: str, membership: str, sender: str | None = None, **content: Any
    ) -> Event:
        return self.event(
            "m.room.member", sender or target, {"membership": membership, **content}, target
        )

    def add(self, event: Event) -> Event:
        self.state[(event["type"], event["state_key"])] = event
        return event

    def set_member(
        self, target: str, membership: str, sender: str | None = None, **content: Any
    ) -> Event:
        return self.add(self.member(target, membership, sender, **content))

    def power_levels(self, sender: str = ALICE, **content: Any) -> Event:
        return self.event("m.room.power_levels", sender, content, "")

    def set_power_levels(self, **changes: Any) -> Event:
        """Replace the power levels with the defaults updated by ``changes``."""
        return self.add(self.power_levels(**{**default_power_levels(self), **changes}))

    def set_join_rule(self, rule: str) -> Event:
        return self.add(self.event("m.room.join_rules", ALICE, {"join_rule": rule}, ""))

    def pl_content(self) -> dict[str, Any]:
        content: dict[str, Any] = self.state[POWER_LEVELS_KEY]["content"]
        return content

    # -- checking ------------------------------------------------------------

    def check(self, event: Event, **kwargs: Any) -> None:
        kwargs.setdefault("create_event", self.create if self.v12 else None)
        check_auth_rules(event, self.state, self.version, **kwargs)

    def allowed(self, event: Event, **kwargs: Any) -> None:
        self.check(event, **kwargs)

    def rejected(self, event: Event, **kwargs: Any) -> str:
        with pytest.raises(AuthError) as info:
            self.check(event, **kwargs)
        assert isinstance(info.value.message, str) and info.value.message
        return info.value.message

    def outcome(self, event: Event, **kwargs: Any) -> bool:
        try:
            self.check(event, **kwargs)
        except AuthError:
            return False
        return True


def default_power_levels(room: Room) -> dict[str, Any]:
    users = {ADMIN: 100, MOD: 50}
    if not room.v12:
        users[ALICE] = 100
    return {
        "users": users,
        "users_default": 0,
        "events_default": 0,
        "state_default": 50,
        "ban": 50,
        "kick": 50,
        "redact": 50,
        "invite": 0,
        "events": {"m.room.name": 50, "m.room.power_levels": 100, "m.room.history_visibility": 100},
        "notifications": {"room": 50},
    }


def make_room(version: str, join_rule: str = "public", **create_content: Any) -> Room:
    """Create, creator join, power levels, join rules; ADMIN, MOD and BOB joined."""
    room = Room(version, create_content=create_content)
    first_join = room.member(ALICE, "join")
    first_join["prev_events"] = [CREATE_ID]
    room.add(first_join)
    room.set_power_levels()
    room.set_join_rule(join_rule)
    for user in (ADMIN, MOD, BOB):
        room.set_member(user, "join")
    return room


@pytest.fixture(params=ALL_VERSIONS)
def version(request: pytest.FixtureRequest) -> str:
    param: str = request.param
    return param


# ---------------------------------------------------------------------------
# AuthError and helpers
# ---------------------------------------------------------------------------


def test_auth_error_has_message() -> None:
    err = AuthError("nope")
    assert err.message == "nope"
    assert str(err) == "nope"


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("@alice:example.org", True),
        ("@alice:example.org:8448", True),
        ("@alice:[::1]:8448", True),
        ("@alice:1.2.3.4", True),
        ("@Historical Name!:example.org", True),
        ("@:example.org", True),
        ("alice:example.org", False),
        ("@alice", False),
        ("@alice:", False),
        ("@alice:exa mple.org", False),
        ("@alice:example.org:port", False),
        ("@al\x00ice:example.org", False),
        ("@" + "a" * 250 + ":example.org", False),
        (12, False),
    ],
)
def test_is_valid_user_id(value: object, ok: bool) -> None:
    assert is_valid_user_id(value) is ok


@pytest.mark.parametrize(
    ("version", "content", "sender", "expected"),
    [
        ("10", {"creator": ALICE}, ALICE, {ALICE}),
        ("10", {"creator": BOB}, ALICE, {BOB}),
        ("11", {"creator": BOB}, ALICE, {ALICE}),
        ("11", {"additional_creators": [BOB]}, ALICE, {ALICE}),
        ("12", {}, ALICE, {ALICE}),
        ("12", {"additional_creators": [BOB, DAVE]}, ALICE, {ALICE, BOB, DAVE}),
    ],
)
def test_room_creators(
    version: str, content: dict[str, Any], sender: str, expected: set[str]
) -> None:
    create = {"type": "m.room.create", "state_key": "", "sender": sender, "content": content}
    assert room_creators(create, ROOM_VERSIONS[version]) == expected


def test_get_named_level() -> None:
    assert get_named_level(None, "ban", 50) == 50
    assert get_named_level({}, "ban", 50) == 50
    assert get_named_level({"ban": 30}, "ban", 50) == 30
    assert get_named_level({"ban": None}, "kick", 50) == 50


def test_get_event_power_level() -> None:
    assert get_event_power_level("m.room.name", True, None) == 50
    assert get_event_power_level("m.room.message", False, None) == 0
    content = {
        "events": {"m.room.name": 20, "m.custom": 70},
        "state_default": 40,
        "events_default": 10,
    }
    assert get_event_power_level("m.room.name", True, content) == 20
    assert get_event_power_level("m.custom", False, content) == 70
    assert get_event_power_level("m.room.topic", True, content) == 40
    assert get_event_power_level("m.room.message", False, content) == 10
    assert get_event_power_level("m.room.topic", True, {}) == 50


def test_get_user_power_level_with_power_levels(version: str) -> None:
    room = make_room(version)
    rv = room.version
    create = room.create if room.v12 else None
    expected_alice = math.inf if room.v12 else 100
    assert get_user_power_level(ALICE, room.state, rv, create) == expected_alice
    assert get_user_power_level(MOD, room.state, rv, create) == 50
    assert get_user_power_level(BOB, room.state, rv, create) == 0
    room.set_power_levels(users_default=7)
    assert get_user_power_level(CAROL, room.state, rv, create) == 7


def test_get_user_power_level_without_power_levels(version: str) -> None:
    room = Room(version)
    create = room.create if room.v12 else None
    expected = math.inf if room.v12 else 100
    assert get_user_power_level(ALICE, room.state, room.version, create) == expected
    assert get_user_power_level(BOB, room.state, room.version, create) == 0


def test_get_user_power_level_v12_additional_creators() -> None:
    room = make_room("12", additional_creators=[DAVE])
    assert get_user_power_level(DAVE, room.state, room.version, room.create) == math.inf
    assert get_user_power_level(BOB, room.state, room.version, room.create) == 0
    # The create event in the state map is used when none is passed.
    state = {**room.state, CREATE_KEY: room.create}
    assert get_user_power_level(DAVE, state, room.version) == math.inf


@pytest.mark.parametrize("version", LEGACY_VERSIONS)
def test_get_user_power_level_additional_creators_ignored_before_v12(version: str) -> None:
    room = make_room(version, additional_creators=[DAVE])
    assert get_user_power_level(DAVE, room.state, room.version) == 0


# ---------------------------------------------------------------------------
# Auth events selection
# ---------------------------------------------------------------------------


def test_auth_types_for_create_event(version: str) -> None:
    room = Room(version)
    assert auth_types_for_event(room.create, room.version) == set()


def test_auth_types_for_message(version: str) -> None:
    room = make_room(version)
    event = room.event("m.room.message", BOB, {"body": "hi"})
    expected = {("m.room.power_levels", ""), ("m.room.member", BOB)}
    if version != "12":
        expected.add(("m.room.create", ""))
    assert auth_types_for_event(event, room.version) == expected


@pytest.mark.parametrize(
    ("membership", "has_join_rules"),
    [("join", True), ("invite", True), ("knock", True), ("leave", False), ("ban", False)],
)
def test_auth_types_for_membership(version: str, membership: str, has_join_rules: bool) -> None:
    room = make_room(version)
    event = room.member(
        CAROL, membership, sender=MOD if membership in ("invite", "leave", "ban") else None
    )
    types = auth_types_for_event(event, room.version)
    assert ("m.room.member", CAROL) in types
    assert ("m.room.member", event["sender"]) in types
    assert (("m.room.join_rules", "") in types) is has_join_rules
    assert (("m.room.create", "") in types) is (version != "12")


def test_auth_types_for_third_party_invite(version: str) -> None:
    room = make_room(version)
    event = room.member(
        CAROL, "invite", sender=MOD, third_party_invite={"signed": {"mxid": CAROL, "token": "tok"}}
    )
    assert ("m.room.third_party_invite", "tok") in auth_types_for_event(event, room.version)
    event = room.member(CAROL, "invite", sender=MOD, third_party_invite={"signed": {"mxid": CAROL}})
    assert not any(
        t == "m.room.third_party_invite" for t, _ in auth_types_for_event(event, room.version)
    )


def test_auth_types_for_restricted_join(version: str) -> None:
    room = make_room(version)
    event = room.member(CAROL, "join", join_authorised_via_users_server=MOD)
    assert ("m.room.member", MOD) in auth_types_for_event(event, room.version)
    event = room.member(CAROL, "leave", join_authorised_via_users_server=MOD)
    assert ("m.room.member", MOD) not in auth_types_for_event(event, room.version)


# ---------------------------------------------------------------------------
# Rule 1: m.room.create
# ---------------------------------------------------------------------------


def _create(version: str, **changes: Any) -> tuple[Event, RoomVersion]:
    room = Room(version)
    create = dict(room.create)
    create["content"] = dict(create["content"])
    content_changes = changes.pop("content", {})
    create["content"].update(content_changes)
    for key, value in changes.items():
        if value is None:
            create.pop(key, None)
        else:
            create[key] = value
    return create, room.version


CREATE_CASES: list[tuple[str, str, dict[str, Any], bool]] = [
    # (id, version, changes, allowed)
    ("v10-valid", "10", {}, True),
    ("v10-prev-events", "10", {"prev_events": ["$x"]}, False),
    ("v10-room-domain-mismatch", "10", {"room_id": "!room:other.test"}, False),
    ("v10-unknown-room-version", "10", {"content": {"room_version": "999"}}, False),
    ("v10-non-string-room-version", "10", {"content": {"room_version": 10}}, False),
    ("v10-no-room-version", "10", {"content": {}}, True),
    ("v11-valid-without-creator", "11", {}, True),
    ("v11-prev-events", "11", {"prev_events": ["$x"]}, False),
    ("v11-room-domain-mismatch", "11", {"room_id": "!room:other.test"}, False),
    ("v11-unknown-room-version", "11", {"content": {"room_version": "v99"}}, False),
    (
        "v11-additional-creators-not-validated",
        "11",
        {"content": {"additional_creators": "junk"}},
        True,
    ),
    ("v12-valid-without-room-id", "12", {}, True),
    ("v12-room-id-present", "12", {"room_id": "!abc"}, False),
    ("v12-prev-events", "12", {"prev_events": ["$x"]}, False),
    ("v12-unknown-room-version", "12", {"content": {"room_version": "13"}}, False),
    (
        "v12-additional-creators-valid",
        "12",
        {"content": {"additional_creators": [BOB, DAVE]}},
        True,
    ),
    ("v12-additional-creators-empty", "12", {"content": {"additional_creators": []}}, True),
    ("v12-additional-creators-not-list", "12", {"content": {"additional_creators": BOB}}, False),
    (
        "v12-additional-creators-non-string",
        "12",
        {"content": {"additional_creators": [BOB, 5]}},
        False,
    ),
    ("v12-additional-creators-bad-id", "12", {"content": {"additional_creators": ["bob"]}}, False),
    (
        "v12-additional-creators-no-server",
        "12",
        {"content": {"additional_creators": ["@bob"]}},
        False,
    ),
]


@pytest.mark.parametrize(
    ("version", "changes", "ok"), [c[1:] for c in CREATE_CASES], ids=[c[0] for c in CREATE_CASES]
)
def test_create_event_rules(version: str, changes: dict[str, Any], ok: bool) -> None:
    create, rv = _create(version, **changes)
    if ok:
        check_auth_rules(create, {}, rv)
    else:
        with pytest.raises(AuthError):
            check_auth_rules(create, {}, rv)


def test_v10_create_requires_creator() -> None:
    create, rv = _create("10")
    del create["content"]["creator"]
    with pytest.raises(AuthError, match="creator"):
        check_auth_rules(create, {}, rv)


# ---------------------------------------------------------------------------
# Rule 2 (v12) and rule 3 / 2: the auth events themselves
# ---------------------------------------------------------------------------


def test_auth_event_from_another_room_rejected(version: str) -> None:
    room = make_room(version)
    foreign = room.set_member(BOB, "join")
    foreign["room_id"] = "!other:a.test"
    assert "another room" in room.rejected(room.event("m.room.message", BOB, {}))


def test_auth_event_filed_under_wrong_key_rejected(version: str) -> None:
    room = make_room(version)
    room.state[("m.room.member", CAROL)] = room.state[("m.room.member", BOB)]
    room.rejected(room.event("m.room.message", CAROL, {}))


@pytest.mark.parametrize("version", LEGACY_VERSIONS)
def test_missing_create_event_rejected_v10_v11(version: str) -> None:
    room = make_room(version)
    event = room.event("m.room.message", BOB, {})
    room.allowed(event)
    del room.state[CREATE_KEY]
    room.rejected(event)
    # create_event= does not stand in for the auth event before v12.
    room.rejected(event, create_event=room.create)


def test_v12_create_event_from_argument_or_state() -> None:
    room = make_room("12")
    event = room.event("m.room.message", BOB, {})
    with pytest.raises(AuthError):
        check_auth_rules(event, room.state, room.version)  # no create event at all
    check_auth_rules(event, {**room.state, CREATE_KEY: room.create}, room.version)
    check_auth_rules(event, room.state, room.version, create_event=room.create)


def test_v12_room_id_must_derive_from_create_event() -> None:
    room = make_room("12")
    event = room.event("m.room.message", BOB, {})
    room.allowed(event)
    other = room.event("m.room.message", BOB, {}, room_id="!somethingelse")
    for auth_event in room.state.values():
        auth_event["room_id"] = "!somethingelse"
    assert "derived" in room.rejected(other)


def test_v12_room_id_without_bang_rejected() -> None:
    room = make_room("12")
    room.rejected(room.event("m.room.message", BOB, {}, room_id="createhash"))


@pytest.mark.parametrize("version", LEGACY_VERSIONS)
def test_check_auth_events_list_legacy(version: str) -> None:
    room = make_room(version)
    event = room.event("m.room.message", BOB, {})
    good = [
        room.state[CREATE_KEY],
        room.state[POWER_LEVELS_KEY],
        room.state[("m.room.member", BOB)],
    ]
    check_auth_events(event, good, room.version)
    room.allowed(event, auth_event_list=good)
    # Rule 2.1: duplicates.
    with pytest.raises(AuthError, match="duplicate"):
        check_auth_events(event, [*good, room.state[POWER_LEVELS_KEY]], room.version)
    # Rule 2.2: entries the selection algorithm would not pick.
    room.rejected(event, auth_event_list=[*good, room.state[("m.room.join_rules", "")]])
    # Rule 2.4: the create event must be present.
    with pytest.raises(AuthError, match="create"):
        check_auth_events(event, good[1:], room.version)
    # Rule 2.5: auth events from another room.
    foreign = dict(good[2], room_id="!other:a.test")
    with pytest.raises(AuthError, match="another room"):
        check_auth_events(event, [good[0], good[1], foreign], room.version)


def test_check_auth_events_list_v12() -> None:
    room = make_room("12")
    event = room.event("m.room.message", BOB, {})
    good = [room.state[POWER_LEVELS_KEY], room.state[("m.room.member", BOB)]]
    check_auth_events(event, good, room.version)
    # Rule 3.2 (v12): the create event MUST NOT be selected.
    with pytest.raises(AuthError, match="unexpected"):
        check_auth_events(event, [room.create, *good], room.version)
    # Rule 3.1: duplicates.
    with pytest.raises(AuthError, match="duplicate"):
        check_auth_events(event, [*good, good[1]], room.version)
    room.rejected(event, auth_event_list=[*good, good[0]])


def test_check_auth_events_restricted_join_includes_authoriser(version: str) -> None:
    room = make_room(version, join_rule="restricted")
    event = room.member(CAROL, "join", join_authorised_via_users_server=MOD)
    auth = [
        room.state[POWER_LEVELS_KEY],
        room.state[("m.room.join_rules", "")],
        room.state[("m.room.member", MOD)],
    ]
    if version != "12":
        auth.append(room.state[CREATE_KEY])
    check_auth_events(event, auth, room.version)


# ---------------------------------------------------------------------------
# Rule 4 (v12) / 3: m.federate
# ---------------------------------------------------------------------------


def test_unfederated_room(version: str) -> None:
    room = make_room(version, **{"m.federate": False})
    room.allowed(room.member("@zed:a.test", "join"))
    assert "federated" in room.rejected(room.member(CAROL, "join"))
    # Applies to non-member events of users already in the state, too.
    room.rejected(room.event("m.room.message", BOB, {}))
    room.allowed(room.event("m.room.message", MOD, {}))


def test_federated_true_allows_other_servers(version: str) -> None:
    room = make_room(version, **{"m.federate": True})
    room.allowed(room.member(CAROL, "join"))


# ---------------------------------------------------------------------------
# Rule 5 (v12) / 4: m.room.member
# ---------------------------------------------------------------------------

Setup = Callable[[Room], Event]


def _no_state_key(room: Room) -> Event:
    event = room.member(CAROL, "join")
    del event["state_key"]
    return event


def _no_membership(room: Room) -> Event:
    return room.event("m.room.member", CAROL, {"displayname": "C"}, CAROL)


def _first_join(room: Room, user: str = ALICE, prev: str = CREATE_ID) -> Event:
    event = room.member(user, "join")
    event["prev_events"] = [prev]
    return event


def _fresh(version_room: Room) -> Room:
    return Room(version_room.version_id)


def _with(room: Room, *steps: Callable[[Room], Any]) -> Room:
    for step in steps:
        step(room)
    return room


def _join_rule(rule: str) -> Callable[[Room], Any]:
    return lambda room: room.set_join_rule(rule)


def _membership(user: str, membership: str, sender: str | None = None) -> Callable[[Room], Any]:
    return lambda room: room.set_member(user, membership, sender)


def _levels(**changes: Any) -> Callable[[Room], Any]:
    return lambda room: room.set_power_levels(**changes)


# Each case: (id, list of setup steps applied to make_room(version), event builder, allowed).
MEMBER_CASES: list[tuple[str, list[Callable[[Room], Any]], Setup, bool]] = [
    # 5.1
    ("no-state-key", [], _no_state_key, False),
    ("no-membership", [], _no_membership, False),
    ("unknown-membership", [], lambda r: r.member(CAROL, "dance"), False),
    # 5.3 join
    ("join-public", [], lambda r: r.member(CAROL, "join"), True),
    ("join-for-someone-else", [], lambda r: r.member(CAROL, "join", sender=BOB), False),
    ("join-banned", [_membership(CAROL, "ban", MOD)], lambda r: r.member(CAROL, "join"), False),
    ("join-again-profile-change", [], lambda r: r.member(BOB, "join", displayname="B"), True),
    (
        "join-invite-rule-uninvited",
        [_join_rule("invite")],
        lambda r: r.member(CAROL, "join"),
        False,
    ),
    (
        "join-invite-rule-invited",
        [_join_rule("invite"), _membership(CAROL, "invite", MOD)],
        lambda r: r.member(CAROL, "join"),
        True,
    ),
    (
        "join-invite-rule-already-joined",
        [_join_rule("invite")],
        lambda r: r.member(BOB, "join"),
        True,
    ),
    (
        "join-invite-rule-after-leave",
        [_join_rule("invite"), _membership(CAROL, "leave")],
        lambda r: r.member(CAROL, "join"),
        False,
    ),
    ("join-knock-rule-uninvited", [_join_rule("knock")], lambda r: r.member(CAROL, "join"), False),
    (
        "join-knock-rule-knocked-only",
        [_join_rule("knock"), _membership(CAROL, "knock")],
        lambda r: r.member(CAROL, "join"),
        False,
    ),
    (
        "join-knock-rule-invited",
        [_join_rule("knock"), _membership(CAROL, "invite", MOD)],
        lambda r: r.member(CAROL, "join"),
        True,
    ),
    ("join-private-rule", [_join_rule("private")], lambda r: r.member(CAROL, "join"), False),
    ("join-unknown-rule", [_join_rule("weird")], lambda r: r.member(CAROL, "join"), False),
    (
        "join-no-join-rules-event-uninvited",
        [lambda r: r.state.pop(("m.room.join_rules", ""))],
        lambda r: r.member(CAROL, "join"),
        False,
    ),
    (
        "join-no-join-rules-event-invited",
        [lambda r: r.state.pop(("m.room.join_rules", "")), _membership(CAROL, "invite", MOD)],
        lambda r: r.member(CAROL, "join"),
        True,
    ),
    # 5.3.5 restricted / knock_restricted
    (
        "restricted-authorised-by-joined-inviter",
        [_join_rule("restricted")],
        lambda r: r.member(CAROL, "join", join_authorised_via_users_server=MOD),
        True,
    ),
    (
        "restricted-no-authoriser",
        [_join_rule("restricted")],
        lambda r: r.member(CAROL, "join"),
        False,
    ),
    (
        "restricted-authoriser-not-joined",
        [_join_rule("restricted"), _membership(MOD, "leave")],
        lambda r: r.member(CAROL, "join", join_authorised_via_users_server=MOD),
        False,
    ),
    (
        "restricted-authoriser-never-in-room",
        [_join_rule("restricted")],
        lambda r: r.member(CAROL, "join", join_authorised_via_users_server="@zed:a.test"),
        False,
    ),
    (
        "restricted-authoriser-lacks-invite-power",
        [_join_rule("restricted"), _levels(invite=50)],
        lambda r: r.member(CAROL, "join", join_authorised_via_users_server=BOB),
        False,
    ),
    (
        "restricted-authoriser-has-invite-power",
        [_join_rule("restricted"), _levels(invite=50)],
        lambda r: r.member(CAROL, "join", join_authorised_via_users_server=MOD),
        True,
    ),
    (
        "restricted-authoriser-is-creator",
        [_join_rule("restricted"), _levels(invite=100)],
        lambda r: r.member(CAROL, "join", join_authorised_via_users_server=ALICE),
        True,
    ),
    (
        "restricted-invited-needs-no-authoriser",
        [_join_rule("restricted"), _membership(CAROL, "invite", MOD)],
        lambda r: r.member(CAROL, "join"),
        True,
    ),
    (
        "restricted-banned",
        [_join_rule("restricted"), _membership(CAROL, "ban", MOD)],
        lambda r: r.member(CAROL, "join", join_authorised_via_users_server=MOD),
        False,
    ),
    (
        "knock-restricted-authorised",
        [_join_rule("knock_restricted")],
        lambda r: r.member(CAROL, "join", join_authorised_via_users_server=MOD),
        True,
    ),
    (
        "knock-restricted-authoriser-lacks-power",
        [_join_rule("knock_restricted"), _levels(invite=50)],
        lambda r: r.member(CAROL, "join", join_authorised_via_users_server=BOB),
        False,
    ),
    (
        "knock-restricted-invited",
        [_join_rule("knock_restricted"), _membership(CAROL, "invite", MOD)],
        lambda r: r.member(CAROL, "join"),
        True,
    ),
    # 5.4 invite
    ("invite-by-member", [], lambda r: r.member(CAROL, "invite", sender=BOB), True),
    ("invite-by-non-member", [], lambda r: r.member(CAROL, "invite", sender=ERIN), False),
    (
        "invite-by-left-member",
        [_membership(BOB, "leave")],
        lambda r: r.member(CAROL, "invite", sender=BOB),
        False,
    ),
    ("invite-joined-target", [], lambda r: r.member(MOD, "invite", sender=BOB), False),
    (
        "invite-banned-target",
        [_membership(CAROL, "ban", MOD)],
        lambda r: r.member(CAROL, "invite", sender=MOD),
        False,
    ),
    (
        "invite-invited-target",
        [_membership(CAROL, "invite", MOD)],
        lambda r: r.member(CAROL, "invite", sender=BOB),
        True,
    ),
    (
        "invite-left-target",
        [_membership(CAROL, "leave")],
        lambda r: r.member(CAROL, "invite", sender=BOB),
        True,
    ),
    (
        "invite-knocked-target",
        [_membership(CAROL, "knock")],
        lambda r: r.member(CAROL, "invite", sender=BOB),
        True,
    ),
    (
        "invite-below-invite-level",
        [_levels(invite=50)],
        lambda r: r.member(CAROL, "invite", sender=BOB),
        False,
    ),
    (
        "invite-at-invite-level",
        [_levels(invite=50)],
        lambda r: r.member(CAROL, "invite", sender=MOD),
        True,
    ),
    (
        "invite-creator-high-invite-level",
        [_levels(invite=100)],
        lambda r: r.member(CAROL, "invite", sender=ALICE),
        True,
    ),
    # 5.5 leave
    ("leave-self-joined", [], lambda r: r.member(BOB, "leave"), True),
    (
        "leave-self-invited-rejects-invite",
        [_membership(CAROL, "invite", MOD)],
        lambda r: r.member(CAROL, "leave"),
        True,
    ),
    (
        "leave-self-knocked-rescinds",
        [_membership(CAROL, "knock")],
        lambda r: r.member(CAROL, "leave"),
        True,
    ),
    ("leave-self-never-joined", [], lambda r: r.member(CAROL, "leave"), False),
    (
        "leave-self-already-left",
        [_membership(CAROL, "leave")],
        lambda r: r.member(CAROL, "leave"),
        False,
    ),
    (
        "leave-self-banned",
        [_membership(CAROL, "ban", MOD)],
        lambda r: r.member(CAROL, "leave"),
        False,
    ),
    ("kick-by-mod", [], lambda r: r.member(BOB, "leave", sender=MOD), True),
    (
        "kick-by-unprivileged",
        [_membership(CAROL, "join")],
        lambda r: r.member(CAROL, "leave", sender=BOB),
        False,
    ),
    (
        "kick-equal-power",
        [_levels(users={ADMIN: 100, MOD: 50, BOB: 50})],
        lambda r: r.member(BOB, "leave", sender=MOD),
        False,
    ),
    ("kick-higher-power", [], lambda r: r.member(ADMIN, "leave", sender=MOD), False),
    (
        "kick-by-non-member",
        [_membership(MOD, "leave")],
        lambda r: r.member(BOB, "leave", sender=MOD),
        False,
    ),
    (
        "kick-below-kick-level",
        [_levels(kick=60)],
        lambda r: r.member(BOB, "leave", sender=MOD),
        False,
    ),
    (
        "kick-target-at-sender-level",
        [_levels(kick=0)],
        lambda r: r.member(CAROL, "leave", sender=BOB),
        False,
    ),
    (
        "kick-invited-user",
        [_membership(CAROL, "invite", MOD)],
        lambda r: r.member(CAROL, "leave", sender=MOD),
        True,
    ),
    ("kick-absent-user", [], lambda r: r.member(CAROL, "leave", sender=MOD), True),
    (
        "unban-by-mod",
        [_membership(CAROL, "ban", MOD)],
        lambda r: r.member(CAROL, "leave", sender=MOD),
        True,
    ),
    (
        "unban-below-ban-level",
        [_levels(ban=75), _membership(CAROL, "ban", ADMIN)],
        lambda r: r.member(CAROL, "leave", sender=MOD),
        False,
    ),
    (
        "unban-below-kick-level",
        [_levels(kick=75), _membership(CAROL, "ban", ADMIN)],
        lambda r: r.member(CAROL, "leave", sender=MOD),
        False,
    ),
    (
        "unban-by-unprivileged",
        [_membership(CAROL, "ban", MOD)],
        lambda r: r.member(CAROL, "leave", sender=BOB),
        False,
    ),
    # 5.6 ban
    ("ban-by-mod", [], lambda r: r.member(BOB, "ban", sender=MOD), True),
    ("ban-absent-user", [], lambda r: r.member(CAROL, "ban", sender=MOD), True),
    (
        "ban-already-banned",
        [_membership(CAROL, "ban", MOD)],
        lambda r: r.member(CAROL, "ban", sender=MOD),
        True,
    ),
    ("ban-by-unprivileged", [], lambda r: r.member(CAROL, "ban", sender=BOB), False),
    (
        "ban-equal-power",
        [_levels(users={ADMIN: 100, MOD: 50, BOB: 50})],
        lambda r: r.member(BOB, "ban", sender=MOD),
        False,
    ),
    ("ban-higher-power", [], lambda r: r.member(ADMIN, "ban", sender=MOD), False),
    ("ban-below-ban-level", [_levels(ban=75)], lambda r: r.member(BOB, "ban", sender=MOD), False),
    (
        "ban-by-non-member",
        [_membership(MOD, "leave")],
        lambda r: r.member(BOB, "ban", sender=MOD),
        False,
    ),
    ("ban-self", [], lambda r: r.member(MOD, "ban", sender=MOD), False),
    # 5.7 knock
    ("knock-knock-rule", [_join_rule("knock")], lambda r: r.member(CAROL, "knock"), True),
    (
        "knock-knock-restricted-rule",
        [_join_rule("knock_restricted")],
        lambda r: r.member(CAROL, "knock"),
        True,
    ),
    ("knock-public-rule", [], lambda r: r.member(CAROL, "knock"), False),
    ("knock-invite-rule", [_join_rule("invite")], lambda r: r.member(CAROL, "knock"), False),
    (
        "knock-restricted-rule",
        [_join_rule("restricted")],
        lambda r: r.member(CAROL, "knock"),
        False,
    ),
    (
        "knock-for-someone-else",
        [_join_rule("knock")],
        lambda r: r.member(CAROL, "knock", sender=BOB),
        False,
    ),
    (
        "knock-banned",
        [_join_rule("knock"), _membership(CAROL, "ban", MOD)],
        lambda r: r.member(CAROL, "knock"),
        False,
    ),
    (
        "knock-invited",
        [_join_rule("knock"), _membership(CAROL, "invite", MOD)],
        lambda r: r.member(CAROL, "knock"),
        False,
    ),
    ("knock-joined", [_join_rule("knock")], lambda r: r.member(BOB, "knock"), False),
    (
        "knock-after-leave",
        [_join_rule("knock"), _membership(CAROL, "leave")],
        lambda r: r.member(CAROL, "knock"),
        True,
    ),
    (
        "knock-again",
        [_join_rule("knock"), _membership(CAROL, "knock")],
        lambda r: r.member(CAROL, "knock"),
        True,
    ),
]


@pytest.mark.parametrize(
    ("steps", "build", "ok"), [c[1:] for c in MEMBER_CASES], ids=[c[0] for c in MEMBER_CASES]
)
def test_membership_rules(
    version: str, steps: list[Callable[[Room], Any]], build: Setup, ok: bool
) -> None:
    room = _with(make_room(version), *steps)
    event = build(room)
    if ok:
        room.allowed(event)
    else:
        room.rejected(event)


def test_member_rules_cover_both_outcomes() -> None:
    """Sanity check of the table: every membership has allowed and rejected cases."""
    for prefix in (
        "join",
        "restricted",
        "knock-restricted",
        "invite",
        "leave",
        "kick",
        "unban",
        "ban",
        "knock",
    ):
        outcomes = {ok for name, _, _, ok in MEMBER_CASES if name.startswith(prefix + "-")}
        assert outcomes == {True, False}, prefix


# 5.3.1: the creator's first join.


def test_creator_first_join(version: str) -> None:
    room = Room(version)
    room.allowed(_first_join(room))


def test_first_join_by_non_creator_rejected(version: str) -> None:
    room = Room(version)
    room.rejected(_first_join(room, BOB))


def test_first_join_needs_create_as_only_prev_event(version: str) -> None:
    room = Room(version)
    event = _first_join(room)
    event["prev_events"] = [CREATE_ID, "$other"]
    room.rejected(event)
    event["prev_events"] = ["$other"]
    room.rejected(event)


def test_v10_first_join_uses_content_creator() -> None:
    room = Room("10", create_content={"creator": BOB})
    room.create["sender"] = BOB  # v10 create events name the sender as creator
    room.allowed(_first_join(room, BOB))
    room.rejected(_first_join(room, ALICE))


@pytest.mark.parametrize("version", LEGACY_VERSIONS)
def test_first_join_without_create_event_id(version: str) -> None:
    """A create PDU without ``event_id``: judged by the state holding nothing else."""
    room = Room(version)
    del room.create["event_id"]
    room.allowed(_first_join(room, prev="$whatever"))
    room.set_power_levels()
    room.rejected(_first_join(room, prev="$whatever"))


def test_v12_first_join_derives_create_id_from_room_id() -> None:
    room = Room("12")
    del room.create["event_id"]
    room.allowed(_first_join(room))
    room.rejected(_first_join(room, prev="$notcreate"))


def test_v12_additional_creator_has_no_first_join_shortcut() -> None:
    room = Room("12", create_content={"additional_creators": [DAVE]})
    room.rejected(_first_join(room, DAVE))


# 5.2: join_authorised_via_users_server signatures.


def test_authoriser_signature_required(version: str) -> None:
    room = make_room(version, join_rule="restricted")
    event = room.member(CAROL, "join", join_authorised_via_users_server=MOD)
    event["signatures"] = {_server(CAROL): {"ed25519:k": "sig"}}
    assert "signed" in room.rejected(event)
    event["signatures"][_server(MOD)] = {"ed25519:k": "sig"}
    room.allowed(event)


def test_authoriser_signature_checked_for_any_membership(version: str) -> None:
    room = make_room(version)
    event = room.member(BOB, "leave", join_authorised_via_users_server=CAROL)
    event["signatures"] = {_server(BOB): {"ed25519:k": "sig"}}
    room.rejected(event)
    event["signatures"][_server(CAROL)] = {"ed25519:k": "sig"}
    room.allowed(event)


def test_authoriser_must_be_a_user_id(version: str) -> None:
    room = make_room(version, join_rule="restricted")
    event = room.member(CAROL, "join", join_authorised_via_users_server="mod")
    room.rejected(event)


def test_authoriser_signature_verifier_injected(version: str) -> None:
    room = make_room(version, join_rule="restricted")
    event = room.member(CAROL, "join", join_authorised_via_users_server=MOD)
    event["signatures"][_server(MOD)] = {"ed25519:k": "sig"}
    calls: list[str] = []

    def verifier(ok: bool) -> Callable[[dict[str, Any], str], bool]:
        def verify(ev: dict[str, Any], server: str) -> bool:
            calls.append(server)
            return ok

        return verify

    room.allowed(event, verify_event_signature=verifier(True))
    room.rejected(event, verify_event_signature=verifier(False))
    assert calls == [_server(MOD), _server(MOD)]


# 5.4.1: third-party invites.


class ThirdParty:
    """An identity server key and a matching m.room.third_party_invite in the room."""

    def __init__(
        self, room: Room, *, sender: str = BOB, token: str = "tok", as_list: bool = False
    ) -> None:
        self.signing_key = generate_signing_key("0")
        public = encode_verify_key_base64(get_verify_key(self.signing_key))
        self.token = token
        content: dict[str, Any] = {
            "display_name": "c...@example.org",
            "key_validity_url": "https://id.test/v",
        }
        if as_list:
            content["public_keys"] = [{"public_key": "AAAA"}, {"public_key": public}]
        else:
            content["public_key"] = public
        room.add(room.event("m.room.third_party_invite", sender, content, token))

    def signed(
        self, mxid: str = CAROL, *, token: str | None = None, key: Any = None
    ) -> dict[str, Any]:
        block = {"mxid": mxid, "token": token or self.token, "sender": BOB}
        signed: dict[str, Any] = sign_json(block, "id.test", key or self.signing_key)
        return signed


def _tpi(room: Room, signed: Any, sender: str = BOB, target: str = CAROL) -> Event:
    return room.member(
        target, "invite", sender=sender, third_party_invite={"display_name": "c", "signed": signed}
    )


def test_third_party_invite_valid(version: str) -> None:
    room = make_room(version)
    tp = ThirdParty(room)
    room.allowed(_tpi(room, tp.signed()))


def test_third_party_invite_public_keys_list(version: str) -> None:
    room = make_room(version)
    tp = ThirdParty(room, as_list=True)
    room.allowed(_tpi(room, tp.signed()))


def test_third_party_invite_urlsafe_key(version: str) -> None:
    room = make_room(version)
    tp = ThirdParty(room)
    invite = room.state[("m.room.third_party_invite", "tok")]
    invite["content"]["public_key"] = (
        invite["content"]["public_key"].replace("+", "-").replace("/", "_")
    )
    room.allowed(_tpi(room, tp.signed()))


def test_third_party_invite_rejections(version: str) -> None:
    room = make_room(version)
    tp = ThirdParty(room)
    other_key = generate_signing_key("1")
    # 5.4.1.2: no signed block.
    room.rejected(
        room.member(CAROL, "invite", sender=BOB, third_party_invite={"display_name": "c"})
    )
    room.rejected(room.member(CAROL, "invite", sender=BOB, third_party_invite="junk"))
    # 5.4.1.3: signed lacks mxid / token.
    room.rejected(_tpi(room, {"token": "tok"}))
    room.rejected(_tpi(room, {"mxid": CAROL}))
    # 5.4.1.4: mxid differs from state_key.
    room.rejected(_tpi(room, tp.signed(ERIN)))
    # 5.4.1.5: no m.room.third_party_invite for the token.
    room.rejected(_tpi(room, tp.signed(token="other")))
    # 5.4.1.6: sender differs from the third-party invite's sender.
    room.rejected(_tpi(room, tp.signed(), sender=MOD))
    # 5.4.1.8: signed with a key not in the invite, or tampered with.
    room.rejected(_tpi(room, tp.signed(key=other_key)))
    tampered = tp.signed()
    tampered["extra"] = "x"
    room.rejected(_tpi(room, tampered))
    room.rejected(_tpi(room, {"mxid": CAROL, "token": "tok"}))  # no signatures at all


def test_third_party_invite_banned_target(version: str) -> None:
    room = make_room(version)
    tp = ThirdParty(room)
    room.set_member(CAROL, "ban", MOD)
    assert "banned" in room.rejected(_tpi(room, tp.signed()))


def test_third_party_invite_without_public_keys_rejected(version: str) -> None:
    room = make_room(version)
    tp = ThirdParty(room)
    invite = room.state[("m.room.third_party_invite", "tok")]
    del invite["content"]["public_key"]
    room.rejected(_tpi(room, tp.signed()))


def test_third_party_invite_custom_verifier(version: str) -> None:
    room = make_room(version)
    ThirdParty(room)
    seen: list[tuple[dict[str, Any], dict[str, Any]]] = []

    def accept(signed: dict[str, Any], invite: dict[str, Any]) -> bool:
        seen.append((signed, invite))
        return True

    unsigned = {"mxid": CAROL, "token": "tok"}
    room.allowed(_tpi(room, unsigned), verify_third_party_invite_signature=accept)
    assert seen[0][0] == unsigned and seen[0][1]["type"] == "m.room.third_party_invite"
    room.rejected(_tpi(room, unsigned), verify_third_party_invite_signature=lambda s, i: False)


# ---------------------------------------------------------------------------
# Rules 6-9 (v12) / 5-8: non-membership events
# ---------------------------------------------------------------------------

EVENT_CASES: list[tuple[str, list[Callable[[Room], Any]], Setup, bool]] = [
    # 6 / 5: sender must be joined.
    ("message-by-member", [], lambda r: r.event("m.room.message", BOB, {"body": "hi"}), True),
    ("message-by-stranger", [], lambda r: r.event("m.room.message", CAROL, {"body": "hi"}), False),
    (
        "message-by-invitee",
        [_membership(CAROL, "invite", MOD)],
        lambda r: r.event("m.room.message", CAROL, {}),
        False,
    ),
    (
        "message-by-knocker",
        [_membership(CAROL, "knock")],
        lambda r: r.event("m.room.message", CAROL, {}),
        False,
    ),
    (
        "message-after-leave",
        [_membership(BOB, "leave")],
        lambda r: r.event("m.room.message", BOB, {}),
        False,
    ),
    (
        "message-by-banned",
        [_membership(BOB, "ban", MOD)],
        lambda r: r.event("m.room.message", BOB, {}),
        False,
    ),
    # 7 / 6: m.room.third_party_invite.
    (
        "3pid-invite-at-invite-level",
        [],
        lambda r: r.event("m.room.third_party_invite", BOB, {}, "t"),
        True,
    ),
    (
        "3pid-invite-below-invite-level",
        [_levels(invite=50)],
        lambda r: r.event("m.room.third_party_invite", BOB, {}, "t"),
        False,
    ),
    (
        "3pid-invite-ignores-event-level",
        [_levels(events={"m.room.third_party_invite": 100})],
        lambda r: r.event("m.room.third_party_invite", BOB, {}, "t"),
        True,
    ),
    (
        "3pid-invite-by-stranger",
        [],
        lambda r: r.event("m.room.third_party_invite", CAROL, {}, "t"),
        False,
    ),
    # 8 / 7: required power level.
    (
        "state-below-state-default",
        [],
        lambda r: r.event("m.room.topic", BOB, {"topic": "x"}, ""),
        False,
    ),
    (
        "state-at-state-default",
        [],
        lambda r: r.event("m.room.topic", MOD, {"topic": "x"}, ""),
        True,
    ),
    (
        "state-events-override-lower",
        [_levels(events={"m.room.topic": 0})],
        lambda r: r.event("m.room.topic", BOB, {}, ""),
        True,
    ),
    (
        "state-events-override-higher",
        [],
        lambda r: r.event("m.room.history_visibility", MOD, {}, ""),
        False,
    ),
    (
        "state-events-override-creator",
        [],
        lambda r: r.event("m.room.history_visibility", ALICE, {}, ""),
        True,
    ),
    (
        "message-below-events-default",
        [_levels(events_default=10)],
        lambda r: r.event("m.room.message", BOB, {}),
        False,
    ),
    (
        "message-events-override",
        [_levels(events={"m.room.message": 60})],
        lambda r: r.event("m.room.message", MOD, {}),
        False,
    ),
    (
        "message-users-default",
        [_levels(events_default=10, users_default=10)],
        lambda r: r.event("m.room.message", BOB, {}),
        True,
    ),
    ("custom-state-empty-key", [], lambda r: r.event("com.example.x", MOD, {}, ""), True),
    ("custom-state-by-user", [], lambda r: r.event("com.example.x", BOB, {}, "k"), False),
    # m.room.aliases has no special rules in v6+: it is an ordinary state event.
    (
        "aliases-by-user",
        [],
        lambda r: r.event("m.room.aliases", BOB, {"aliases": []}, "b.test"),
        False,
    ),
    (
        "aliases-by-mod-other-server",
        [],
        lambda r: r.event("m.room.aliases", MOD, {"aliases": []}, "b.test"),
        True,
    ),
    (
        "aliases-events-level",
        [_levels(events={"m.room.aliases": 0})],
        lambda r: r.event("m.room.aliases", BOB, {}, "x"),
        True,
    ),
    # Redactions: only the event type's level counts; the redact level does not.
    (
        "redaction-below-redact-level",
        [],
        lambda r: r.event("m.room.redaction", BOB, {"redacts": "$x"}, redacts="$x"),
        True,
    ),
    (
        "redaction-events-level",
        [_levels(events={"m.room.redaction": 50})],
        lambda r: r.event("m.room.redaction", BOB, {"redacts": "$x"}),
        False,
    ),
    (
        "redaction-events-level-met",
        [_levels(events={"m.room.redaction": 50})],
        lambda r: r.event("m.room.redaction", MOD, {"redacts": "$x"}),
        True,
    ),
    (
        "redaction-events-default",
        [_levels(events_default=20, redact=0)],
        lambda r: r.event("m.room.redaction", BOB, {"redacts": "$x"}),
        False,
    ),
    (
        "redaction-by-stranger",
        [],
        lambda r: r.event("m.room.redaction", CAROL, {"redacts": "$x"}),
        False,
    ),
    # 9 / 8: state keys starting with '@'.
    (
        "user-state-key-own",
        [_levels(state_default=0)],
        lambda r: r.event("com.example.x", BOB, {}, BOB),
        True,
    ),
    (
        "user-state-key-other",
        [_levels(state_default=0)],
        lambda r: r.event("com.example.x", BOB, {}, MOD),
        False,
    ),
    (
        "user-state-key-other-even-admin",
        [],
        lambda r: r.event("com.example.x", ADMIN, {}, BOB),
        False,
    ),
    ("user-state-key-creator", [], lambda r: r.event("com.example.x", ALICE, {}, BOB), False),
    (
        "state-key-at-later",
        [_levels(state_default=0)],
        lambda r: r.event("com.example.x", BOB, {}, "x@y"),
        True,
    ),
]


@pytest.mark.parametrize(
    ("steps", "build", "ok"), [c[1:] for c in EVENT_CASES], ids=[c[0] for c in EVENT_CASES]
)
def test_event_rules(
    version: str, steps: list[Callable[[Room], Any]], build: Setup, ok: bool
) -> None:
    room = _with(make_room(version), *steps)
    event = build(room)
    assert room.outcome(event) is ok


def test_no_power_levels_event_defaults(version: str) -> None:
    room = Room(version)
    room.add(_first_join(room))
    room.set_member(BOB, "join", ALICE)  # stands in for any route in
    # The creator has 100 (inf in v12); state_default is 50, events_default 0.
    room.allowed(room.event("m.room.name", ALICE, {}, ""))
    room.rejected(room.event("m.room.name", BOB, {}, ""))
    room.allowed(room.event("m.room.message", BOB, {}))
    # kick/ban default to 50, invite to 0.
    room.allowed(room.member(BOB, "ban", sender=ALICE))
    room.rejected(room.member(ALICE, "ban", sender=BOB))
    room.allowed(room.member(CAROL, "invite", sender=BOB))


# ---------------------------------------------------------------------------
# v12 creators
# ---------------------------------------------------------------------------


def test_v12_creators_cannot_be_kicked_or_banned() -> None:
    room = make_room("12", additional_creators=[DAVE])
    room.set_member(DAVE, "join")
    for target in (ALICE, DAVE):
        room.rejected(room.member(target, "ban", sender=ADMIN))
        room.rejected(room.member(target, "leave", sender=ADMIN))
    # Creators cannot remove each other: both are infinitely powerful.
    room.rejected(room.member(DAVE, "ban", sender=ALICE))
    # A creator outranks a 100 user.
    room.allowed(room.member(ADMIN, "ban", sender=DAVE))


@pytest.mark.parametrize("version", LEGACY_VERSIONS)
def test_legacy_creator_is_an_ordinary_user(version: str) -> None:
    """Before v12 the creator only has the level the power levels give them."""
    room = make_room(version)
    room.rejected(room.member(ALICE, "ban", sender=ADMIN))  # 100 vs 100
    room.set_power_levels(users={ALICE: 90, ADMIN: 100, MOD: 50})
    room.allowed(room.member(ALICE, "ban", sender=ADMIN))


def test_v12_additional_creator_power() -> None:
    room = make_room("12", additional_creators=[DAVE])
    room.set_member(DAVE, "join")
    room.allowed(room.event("m.room.history_visibility", DAVE, {}, ""))
    room.allowed(room.power_levels(DAVE, **default_power_levels(room)))


# ---------------------------------------------------------------------------
# Rule 10 (v12) / 9: m.room.power_levels
# ---------------------------------------------------------------------------


def _pl_change(sender: str, **changes: Any) -> Callable[[Room], Event]:
    def build(room: Room) -> Event:
        content = {**copy.deepcopy(room.pl_content()), **changes}
        return room.power_levels(sender, **{k: v for k, v in content.items() if v is not None})

    return build


def _pl_edit(sender: str, edit: Callable[[dict[str, Any]], Any]) -> Callable[[Room], Event]:
    def build(room: Room) -> Event:
        content = copy.deepcopy(room.pl_content())
        edit(content)
        return room.power_levels(sender, **content)

    return build


_PL_BY_MOD = _levels(
    events={"m.room.power_levels": 50, "m.room.name": 50, "m.room.history_visibility": 100}
)

POWER_LEVEL_CASES: list[tuple[str, list[Callable[[Room], Any]], Setup, bool]] = [
    ("unchanged-by-admin", [], _pl_change(ADMIN), True),
    ("by-user-below-event-level", [], _pl_change(BOB), False),
    ("by-mod-below-event-level", [], _pl_change(MOD), False),
    # 10.1 / 9.1: integers only (v10+).
    ("string-ban", [], _pl_change(ADMIN, ban="50"), False),
    ("string-users-default", [], _pl_change(ADMIN, users_default="0"), False),
    ("bool-kick", [], _pl_change(ADMIN, kick=True), False),
    ("float-invite", [], _pl_change(ADMIN, invite=1.5), False),
    ("admin-removes-redact", [], _pl_change(ADMIN, redact=None), True),
    ("huge-state-default", [], _pl_change(ADMIN, state_default=2**60), False),
    ("negative-events-default", [], _pl_change(ADMIN, events_default=-5), True),
    # 10.2 / 9.2: events and notifications.
    ("events-not-object", [], _pl_change(ADMIN, events=["m.room.name"]), False),
    ("events-string-value", [], _pl_change(ADMIN, events={"m.room.name": "50"}), False),
    ("notifications-string-value", [], _pl_change(ADMIN, notifications={"room": "50"}), False),
    ("notifications-not-object", [], _pl_change(ADMIN, notifications=50), False),
    # 10.3 / 9.3: users.
    ("users-not-object", [], _pl_change(ADMIN, users=[MOD]), False),
    ("users-invalid-key", [], _pl_edit(ADMIN, lambda c: c["users"].update({"mod": 10})), False),
    ("users-string-value", [], _pl_edit(ADMIN, lambda c: c["users"].update({BOB: "10"})), False),
    ("users-bool-value", [], _pl_edit(ADMIN, lambda c: c["users"].update({BOB: False})), False),
    ("users-valid-add", [], _pl_edit(ADMIN, lambda c: c["users"].update({BOB: 10})), True),
    # 10.6 / 9.5: single levels.
    ("mod-raises-kick-above-self", [_PL_BY_MOD], _pl_change(MOD, kick=75), False),
    ("mod-lowers-kick", [_PL_BY_MOD], _pl_change(MOD, kick=20), True),
    ("mod-raises-kick-to-self", [_PL_BY_MOD], _pl_change(MOD, kick=50), True),
    (
        "mod-changes-level-above-self",
        [_levels(ban=75, events={"m.room.power_levels": 50})],
        _pl_change(MOD, ban=40, events={"m.room.power_levels": 50}),
        False,
    ),
    (
        "mod-removes-level-above-self",
        [_levels(redact=75, events={"m.room.power_levels": 50})],
        _pl_change(MOD, redact=None, events={"m.room.power_levels": 50}),
        False,
    ),
    (
        "mod-adds-users-default-above-self",
        [_PL_BY_MOD],
        _pl_change(
            MOD,
            users_default=60,
            events={"m.room.power_levels": 50, "m.room.name": 50, "m.room.history_visibility": 100},
        ),
        False,
    ),
    # 10.7, 10.8 / 9.6, 9.7: events and notifications entries.
    (
        "mod-adds-event-at-self",
        [_PL_BY_MOD],
        _pl_edit(
            MOD, lambda c: c["events"].update({"m.room.power_levels": 50, "m.room.topic": 50})
        ),
        True,
    ),
    (
        "mod-adds-event-above-self",
        [_PL_BY_MOD],
        _pl_edit(
            MOD, lambda c: c["events"].update({"m.room.power_levels": 50, "m.room.topic": 51})
        ),
        False,
    ),
    (
        "mod-changes-event-above-self",
        [_PL_BY_MOD],
        _pl_edit(
            MOD,
            lambda c: c["events"].update(
                {"m.room.power_levels": 50, "m.room.history_visibility": 10}
            ),
        ),
        False,
    ),
    (
        "mod-removes-event-above-self",
        [_PL_BY_MOD],
        _pl_edit(
            MOD,
            lambda c: (
                c["events"].update({"m.room.power_levels": 50}),
                c["events"].pop("m.room.history_visibility"),
            ),
        ),
        False,
    ),
    (
        "mod-removes-event-at-self",
        [_PL_BY_MOD],
        _pl_edit(
            MOD,
            lambda c: (
                c["events"].update({"m.room.power_levels": 50}),
                c["events"].pop("m.room.name"),
            ),
        ),
        True,
    ),
    (
        "mod-raises-notification-above-self",
        [_PL_BY_MOD],
        _pl_edit(
            MOD,
            lambda c: (
                c["events"].update({"m.room.power_levels": 50}),
                c["notifications"].update({"room": 60}),
            ),
        ),
        False,
    ),
    (
        "mod-lowers-notification",
        [_PL_BY_MOD],
        _pl_edit(
            MOD,
            lambda c: (
                c["events"].update({"m.room.power_levels": 50}),
                c["notifications"].update({"room": 0}),
            ),
        ),
        True,
    ),
    (
        "mod-changes-notification-above-self",
        [_levels(notifications={"room": 80}, events={"m.room.power_levels": 50})],
        _pl_edit(
            MOD,
            lambda c: (
                c.update({"events": {"m.room.power_levels": 50}}),
                c["notifications"].update({"room": 10}),
            ),
        ),
        False,
    ),
    # 10.9, 10.10 / 9.8, 9.9: users entries.
    (
        "mod-promotes-user-to-self",
        [_PL_BY_MOD],
        _pl_edit(
            MOD,
            lambda c: (
                c["events"].update({"m.room.power_levels": 50}),
                c["users"].update({BOB: 50}),
            ),
        ),
        True,
    ),
    (
        "mod-promotes-user-above-self",
        [_PL_BY_MOD],
        _pl_edit(
            MOD,
            lambda c: (
                c["events"].update({"m.room.power_levels": 50}),
                c["users"].update({BOB: 51}),
            ),
        ),
        False,
    ),
    (
        "mod-raises-self-above-self",
        [_PL_BY_MOD],
        _pl_edit(
            MOD,
            lambda c: (
                c["events"].update({"m.room.power_levels": 50}),
                c["users"].update({MOD: 60}),
            ),
        ),
        False,
    ),
    (
        "mod-demotes-self",
        [_PL_BY_MOD],
        _pl_edit(
            MOD,
            lambda c: (
                c["events"].update({"m.room.power_levels": 50}),
                c["users"].update({MOD: 10}),
            ),
        ),
        True,
    ),
    (
        "mod-removes-self",
        [_PL_BY_MOD],
        _pl_edit(
            MOD, lambda c: (c["events"].update({"m.room.power_levels": 50}), c["users"].pop(MOD))
        ),
        True,
    ),
    (
        "mod-demotes-admin",
        [_PL_BY_MOD],
        _pl_edit(
            MOD,
            lambda c: (
                c["events"].update({"m.room.power_levels": 50}),
                c["users"].update({ADMIN: 0}),
            ),
        ),
        False,
    ),
    (
        "mod-removes-admin",
        [_PL_BY_MOD],
        _pl_edit(
            MOD, lambda c: (c["events"].update({"m.room.power_levels": 50}), c["users"].pop(ADMIN))
        ),
        False,
    ),
    (
        "mod-demotes-equal-mod",
        [_levels(users={ADMIN: 100, MOD: 50, BOB: 50}, events={"m.room.power_levels": 50})],
        _pl_edit(
            MOD,
            lambda c: c.update(
                {"events": {"m.room.power_levels": 50}, "users": {ADMIN: 100, MOD: 50, BOB: 0}}
            ),
        ),
        False,
    ),
    (
        "mod-demotes-lower-user",
        [_levels(users={ADMIN: 100, MOD: 50, BOB: 20}, events={"m.room.power_levels": 50})],
        _pl_edit(
            MOD,
            lambda c: c.update(
                {"events": {"m.room.power_levels": 50}, "users": {ADMIN: 100, MOD: 50, BOB: 0}}
            ),
        ),
        True,
    ),
    ("admin-demotes-mod", [], _pl_edit(ADMIN, lambda c: c["users"].update({MOD: 0})), True),
    (
        "admin-promotes-user-to-admin",
        [],
        _pl_edit(ADMIN, lambda c: c["users"].update({BOB: 100})),
        True,
    ),
    (
        "admin-promotes-user-above-admin",
        [],
        _pl_edit(ADMIN, lambda c: c["users"].update({BOB: 101})),
        False,
    ),
]


@pytest.mark.parametrize(
    ("steps", "build", "ok"),
    [c[1:] for c in POWER_LEVEL_CASES],
    ids=[c[0] for c in POWER_LEVEL_CASES],
)
def test_power_level_rules(
    version: str, steps: list[Callable[[Room], Any]], build: Setup, ok: bool
) -> None:
    room = _with(make_room(version), *steps)
    event = build(room)
    assert room.outcome(event) is ok


@pytest.mark.parametrize(("version", "ok"), [("10", False), ("11", False), ("12", True)])
def test_creator_power_level_limits(version: str, ok: bool) -> None:
    """v12 creators (infinite power) may set any level; a v10/11 creator is capped at 100."""
    room = make_room(version)
    event = _pl_edit(ALICE, lambda c: (c.update({"ban": 1000}), c["users"].update({BOB: 99})))(room)
    assert room.outcome(event) is ok


def test_first_power_levels_event_allowed(version: str) -> None:
    room = Room(version)
    room.add(_first_join(room))
    content = default_power_levels(room) | {"ban": 1000}
    content["users"] = {**content["users"], BOB: 100}
    # 10.5 / 9.4: with no previous power levels event, any levels are allowed.
    room.allowed(room.power_levels(ALICE, **content))
    # ...but the type checks still apply to the first one.
    room.rejected(room.power_levels(ALICE, ban="50"))


def test_v12_creators_cannot_be_in_users() -> None:
    room = make_room("12", additional_creators=[DAVE])
    room.set_member(DAVE, "join")
    assert "creator" in room.rejected(
        _pl_edit(ALICE, lambda c: c["users"].update({ALICE: 100}))(room)
    )
    room.rejected(_pl_edit(ALICE, lambda c: c["users"].update({DAVE: 100}))(room))
    room.rejected(_pl_edit(ADMIN, lambda c: c["users"].update({DAVE: 0}))(room))
    room.allowed(_pl_edit(DAVE, lambda c: c["users"].update({BOB: 100}))(room))
    # Also for the very first power levels event.
    fresh = Room("12")
    fresh.add(_first_join(fresh))
    fresh.rejected(fresh.power_levels(ALICE, users={ALICE: 100}))
    fresh.allowed(fresh.power_levels(ALICE, users={BOB: 100}))


@pytest.mark.parametrize("version", LEGACY_VERSIONS)
def test_legacy_creator_may_be_in_users(version: str) -> None:
    room = make_room(version, additional_creators=[DAVE])
    room.allowed(_pl_edit(ADMIN, lambda c: c["users"].update({DAVE: 50}))(room))
    room.allowed(_pl_change(ADMIN)(room))  # ALICE listed in users


def test_v12_admin_cannot_touch_creator_power() -> None:
    room = make_room("12")
    room.rejected(room.member(ALICE, "leave", sender=ADMIN))
    room.allowed(room.member(ADMIN, "leave", sender=ALICE))
