"""History visibility for clients and servers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from homeserver.events.visibility import (
    HISTORY_VISIBILITY_VALUES,
    effective_history_visibility,
    filter_events_for_client,
    filter_events_for_server,
    is_event_visible,
    mapping_view,
    server_may_see_event,
)

ALICE = "@alice:example.org"
BOB = "@bob:example.org"
ROOM = "!room:example.org"

MESSAGE: dict[str, Any] = {
    "event_id": "$msg",
    "type": "m.room.message",
    "sender": BOB,
    "room_id": ROOM,
    "content": {"body": "hi"},
}

MEMBERSHIPS: list[str | None] = ["join", "invite", "leave", "ban", "knock", None]


def member_event(
    user_id: str, membership: str, prev: str | None = None, *, with_prev: bool = False
) -> dict[str, Any]:
    event: dict[str, Any] = {
        "event_id": f"$m-{user_id}-{membership}",
        "type": "m.room.member",
        "state_key": user_id,
        "sender": user_id,
        "room_id": ROOM,
        "content": {"membership": membership},
    }
    if with_prev:
        event["unsigned"] = {"prev_content": {"membership": prev} if prev else {}}
    return event


def vis_event(
    new: str, prev: str | None = None, *, state_key: str = "", with_prev: bool = False
) -> dict[str, Any]:
    event: dict[str, Any] = {
        "event_id": f"$v-{new}",
        "type": "m.room.history_visibility",
        "state_key": state_key,
        "sender": BOB,
        "room_id": ROOM,
        "content": {"history_visibility": new},
    }
    if with_prev:
        event["unsigned"] = {"prev_content": {"history_visibility": prev} if prev else {}}
    return event


def test_effective_history_visibility() -> None:
    assert HISTORY_VISIBILITY_VALUES == ("world_readable", "shared", "invited", "joined")
    for value in HISTORY_VISIBILITY_VALUES:
        assert effective_history_visibility(value) == value
    unknown: list[object] = [None, "", "public", "Joined", 1, ["joined"]]
    for bad in unknown:
        assert effective_history_visibility(bad) == "shared"


# --- ordinary events: visibility x membership x peeking ---------------------------

# expected[visibility][membership] = (not peeking, peeking)
EXPECTED: dict[str, dict[str | None, tuple[bool, bool]]] = {
    "world_readable": {m: (True, True) for m in MEMBERSHIPS},
    "shared": {
        "join": (True, True),
        "invite": (True, False),
        "leave": (True, False),
        "ban": (True, False),
        "knock": (True, False),
        None: (True, False),
    },
    "invited": {
        "join": (True, True),
        "invite": (True, True),
        "leave": (False, False),
        "ban": (False, False),
        "knock": (False, False),
        None: (False, False),
    },
    "joined": {
        "join": (True, True),
        "invite": (False, False),
        "leave": (False, False),
        "ban": (False, False),
        "knock": (False, False),
        None: (False, False),
    },
}

ORDINARY_CASES = [
    (visibility, membership, peeking, EXPECTED[visibility][membership][int(peeking)])
    for visibility in EXPECTED
    for membership in MEMBERSHIPS
    for peeking in (False, True)
]


@pytest.mark.parametrize(("visibility", "membership", "is_peeking", "expected"), ORDINARY_CASES)
def test_ordinary_event(
    visibility: str, membership: str | None, is_peeking: bool, expected: bool
) -> None:
    assert (
        is_event_visible(
            MESSAGE,
            ALICE,
            history_visibility=visibility,
            membership_at_event=membership,
            is_peeking=is_peeking,
        )
        is expected
    )


@pytest.mark.parametrize("visibility", [None, "", "unknown", "public"])
@pytest.mark.parametrize("membership", MEMBERSHIPS)
@pytest.mark.parametrize("is_peeking", [False, True])
def test_unknown_visibility_is_shared(
    visibility: str | None, membership: str | None, is_peeking: bool
) -> None:
    assert (
        is_event_visible(
            MESSAGE,
            ALICE,
            history_visibility=visibility,
            membership_at_event=membership,
            is_peeking=is_peeking,
        )
        is EXPECTED["shared"][membership][int(is_peeking)]
    )


# (visibility, membership at event, current membership, peeking, expected)
CURRENT_MEMBERSHIP_CASES: list[tuple[str, str | None, str | None, bool, bool]] = [
    # A user who is joined now has joined "at some point after" a shared event.
    ("shared", None, "join", True, True),
    ("shared", "leave", "join", True, True),
    ("shared", None, "invite", True, False),
    ("shared", None, "leave", True, False),
    ("shared", None, "leave", False, True),
    ("shared", None, "ban", False, True),
    # Current membership never helps the stricter settings.
    ("joined", None, "join", False, False),
    ("joined", "invite", "join", False, False),
    ("invited", None, "join", False, False),
    ("invited", "leave", "join", False, False),
    ("invited", "invite", "leave", False, True),
    ("joined", "join", "ban", False, True),  # left later, still sees what it saw
]


@pytest.mark.parametrize(
    ("visibility", "membership", "current", "is_peeking", "expected"), CURRENT_MEMBERSHIP_CASES
)
def test_current_membership(
    visibility: str, membership: str | None, current: str | None, is_peeking: bool, expected: bool
) -> None:
    assert (
        is_event_visible(
            MESSAGE,
            ALICE,
            history_visibility=visibility,
            membership_at_event=membership,
            current_membership=current,
            is_peeking=is_peeking,
        )
        is expected
    )


def test_state_events_follow_the_same_rules() -> None:
    topic = {"event_id": "$t", "type": "m.room.topic", "state_key": "", "content": {}}
    assert not is_event_visible(
        topic, ALICE, history_visibility="joined", membership_at_event="leave"
    )
    assert is_event_visible(topic, ALICE, history_visibility="joined", membership_at_event="join")


# --- the user's own membership events ---------------------------------------------

# (visibility, before, after, peeking, expected)
OWN_MEMBERSHIP_CASES: list[tuple[str, str | None, str, bool, bool]] = [
    # Joining: always visible (after = join).
    ("joined", None, "join", False, True),
    ("joined", "invite", "join", False, True),
    ("joined", "leave", "join", True, True),
    ("joined", "knock", "join", False, True),
    ("invited", None, "join", False, True),
    # Changing away from join: always visible (before = join).
    ("joined", "join", "leave", False, True),
    ("joined", "join", "ban", False, True),
    ("joined", "join", "join", False, True),  # profile change
    ("invited", "join", "leave", True, True),
    # Rejecting / losing an invite: always visible (Synapse).
    ("joined", "invite", "leave", False, True),
    ("joined", "invite", "leave", True, True),
    ("invited", "invite", "leave", False, True),
    # Being invited: visible only where the invite grants history.
    ("joined", None, "invite", False, False),
    ("joined", "leave", "invite", False, False),
    ("invited", None, "invite", False, True),
    ("invited", "leave", "invite", True, True),
    ("shared", None, "invite", False, True),
    ("shared", None, "invite", True, False),
    # Invite -> ban: the before side (invite) counts under `invited` only.
    ("invited", "invite", "ban", False, True),
    ("joined", "invite", "ban", False, False),
    # Memberships that never granted anything.
    ("joined", None, "ban", False, False),
    ("joined", "leave", "ban", False, False),
    ("invited", "leave", "ban", False, False),
    ("joined", "ban", "leave", False, False),
    ("joined", None, "knock", False, False),
    ("invited", "knock", "leave", False, False),
    ("joined", "knock", "leave", False, False),
    ("shared", "leave", "ban", False, True),
    ("shared", "leave", "ban", True, False),
    ("shared", None, "knock", True, False),
    ("world_readable", None, "ban", True, True),
    ("world_readable", None, "knock", True, True),
]


@pytest.mark.parametrize(
    ("visibility", "before", "after", "is_peeking", "expected"), OWN_MEMBERSHIP_CASES
)
def test_own_membership_event(
    visibility: str, before: str | None, after: str, is_peeking: bool, expected: bool
) -> None:
    # Convention 1: membership_at_event is the state before the event.
    event = member_event(ALICE, after)
    assert (
        is_event_visible(
            event,
            ALICE,
            history_visibility=visibility,
            membership_at_event=before,
            is_peeking=is_peeking,
        )
        is expected
    )
    # Convention 2: state after the event, with unsigned.prev_content.
    event = member_event(ALICE, after, before, with_prev=True)
    assert (
        is_event_visible(
            event,
            ALICE,
            history_visibility=visibility,
            membership_at_event=after,
            is_peeking=is_peeking,
        )
        is expected
    )


@pytest.mark.parametrize(
    ("visibility", "before", "after", "is_peeking", "expected"), OWN_MEMBERSHIP_CASES
)
def test_other_users_membership_event_is_not_special(
    visibility: str, before: str | None, after: str, is_peeking: bool, expected: bool
) -> None:
    """Bob's membership changes say nothing about Alice: only Alice's membership counts."""
    event = member_event(BOB, after, before, with_prev=True)
    for alice in MEMBERSHIPS:
        assert is_event_visible(
            event,
            ALICE,
            history_visibility=visibility,
            membership_at_event=alice,
            is_peeking=is_peeking,
        ) is is_event_visible(
            MESSAGE,
            ALICE,
            history_visibility=visibility,
            membership_at_event=alice,
            is_peeking=is_peeking,
        )


def test_own_membership_needs_prev_content_with_state_after() -> None:
    """With the state *after* the event and no prev_content, the before side is unknown."""
    event = member_event(ALICE, "leave")
    assert not is_event_visible(
        event, ALICE, history_visibility="joined", membership_at_event="leave"
    )
    event = member_event(ALICE, "leave", "join", with_prev=True)
    assert is_event_visible(event, ALICE, history_visibility="joined", membership_at_event="leave")


def test_malformed_membership_content() -> None:
    event = member_event(ALICE, "join")
    event["content"] = "join"
    assert not is_event_visible(event, ALICE, history_visibility="joined", membership_at_event=None)
    event["content"] = {"membership": 1}
    event["unsigned"] = "nope"
    assert not is_event_visible(event, ALICE, history_visibility="joined", membership_at_event=None)
    assert is_event_visible(event, ALICE, history_visibility="joined", membership_at_event="join")


# --- m.room.history_visibility events ---------------------------------------------

# (before, after, membership, peeking, expected)
VIS_EVENT_CASES: list[tuple[str | None, str, str | None, bool, bool]] = [
    ("world_readable", "joined", None, True, True),
    ("joined", "world_readable", None, True, True),
    ("joined", "world_readable", "ban", False, True),
    ("joined", "shared", None, False, True),
    ("joined", "shared", None, True, False),
    ("shared", "joined", None, False, True),
    ("shared", "joined", "leave", True, False),
    ("joined", "invited", "invite", False, True),
    ("invited", "joined", "invite", False, True),
    ("invited", "joined", "leave", False, False),
    ("joined", "joined", "leave", False, False),
    ("joined", "joined", "join", False, True),
    ("joined", "invited", "knock", False, False),
    (None, "joined", None, False, True),  # no previous setting = shared
    (None, "joined", None, True, False),
    ("joined", "bogus", None, False, True),  # unknown new value = shared
]


@pytest.mark.parametrize(
    ("before", "after", "membership", "is_peeking", "expected"), VIS_EVENT_CASES
)
def test_history_visibility_event(
    before: str | None, after: str, membership: str | None, is_peeking: bool, expected: bool
) -> None:
    # Convention 1: history_visibility is the state before the event.
    assert (
        is_event_visible(
            vis_event(after),
            ALICE,
            history_visibility=before,
            membership_at_event=membership,
            is_peeking=is_peeking,
        )
        is expected
    )
    # Convention 2: state after the event, with unsigned.prev_content.
    assert (
        is_event_visible(
            vis_event(after, before, with_prev=True),
            ALICE,
            history_visibility=after,
            membership_at_event=membership,
            is_peeking=is_peeking,
        )
        is expected
    )


def test_history_visibility_event_with_state_key_is_not_special() -> None:
    event = vis_event("world_readable", state_key="x")
    assert not is_event_visible(event, ALICE, history_visibility="joined", membership_at_event=None)
    assert is_event_visible(
        vis_event("world_readable"), ALICE, history_visibility="joined", membership_at_event=None
    )


# --- filter_events_for_client -----------------------------------------------------


def timeline() -> tuple[list[dict[str, Any]], dict[str, tuple[str | None, str | None]]]:
    """A room under `joined` where Alice is invited, joins, leaves; then `world_readable`."""
    steps: list[tuple[dict[str, Any], str | None, str | None]] = [
        # (event, history_visibility before, Alice's membership before)
        ({**MESSAGE, "event_id": "$1"}, "joined", None),
        (member_event(ALICE, "invite"), "joined", None),
        ({**MESSAGE, "event_id": "$2"}, "joined", "invite"),
        (member_event(ALICE, "join"), "joined", "invite"),
        ({**MESSAGE, "event_id": "$3"}, "joined", "join"),
        (member_event(ALICE, "leave"), "joined", "join"),
        ({**MESSAGE, "event_id": "$4"}, "joined", "leave"),
        (vis_event("world_readable"), "joined", "leave"),
        ({**MESSAGE, "event_id": "$5"}, "world_readable", "leave"),
    ]
    events = [event for event, _, _ in steps]
    state = {event["event_id"]: (vis, membership) for event, vis, membership in steps}
    return events, state


def ids(events: list[Any]) -> list[str]:
    return [e["event_id"] for e in events]


def test_filter_events_for_client() -> None:
    events, state = timeline()
    visible = filter_events_for_client(events, ALICE, state.__getitem__)
    assert ids(visible) == [
        f"$m-{ALICE}-join",
        "$3",
        f"$m-{ALICE}-leave",
        "$v-world_readable",
        "$5",
    ]
    # Bob was never in the room at all: only the world_readable part.
    visible = filter_events_for_client(
        events, BOB, lambda event_id: (state[event_id][0], None), is_peeking=True
    )
    assert ids(visible) == ["$v-world_readable", "$5"]


def test_filter_events_for_client_always_include() -> None:
    events, state = timeline()
    visible = filter_events_for_client(
        events, ALICE, state.__getitem__, always_include_ids={"$1", "$4"}
    )
    assert ids(visible) == [
        "$1",
        f"$m-{ALICE}-join",
        "$3",
        f"$m-{ALICE}-leave",
        "$4",
        "$v-world_readable",
        "$5",
    ]


@dataclass
class FakeEvent:
    event_id: str
    pdu: dict[str, Any]


def test_filter_events_with_view() -> None:
    events, state = timeline()
    objects = [FakeEvent(e.pop("event_id"), e) for e in events]
    visible = filter_events_for_client(
        objects, ALICE, state.__getitem__, view=lambda e: (e.event_id, e.pdu)
    )
    assert [e.event_id for e in visible] == [
        f"$m-{ALICE}-join",
        "$3",
        f"$m-{ALICE}-leave",
        "$v-world_readable",
        "$5",
    ]
    with pytest.raises(TypeError):
        filter_events_for_client(objects, ALICE, state.__getitem__)
    with pytest.raises(ValueError):
        filter_events_for_client([e.pdu for e in objects], ALICE, state.__getitem__)
    assert mapping_view(MESSAGE) == ("$msg", MESSAGE)


# --- servers ----------------------------------------------------------------------

REMOTE = "remote.example"

# (visibility, memberships at the event, expected)
SERVER_CASES: list[tuple[str | None, dict[str, str | None], bool]] = [
    ("world_readable", {}, True),
    ("shared", {}, True),
    (None, {}, True),
    ("bogus", {}, True),
    ("shared", {f"@a:{REMOTE}": "ban"}, True),
    ("invited", {}, False),
    ("joined", {}, False),
    ("invited", {f"@a:{REMOTE}": "invite"}, True),
    ("invited", {f"@a:{REMOTE}": "join"}, True),
    ("invited", {f"@a:{REMOTE}": "leave"}, False),
    ("invited", {f"@a:{REMOTE}": "knock"}, False),
    ("joined", {f"@a:{REMOTE}": "invite"}, False),
    ("joined", {f"@a:{REMOTE}": "join"}, True),
    ("joined", {f"@a:{REMOTE}": "leave"}, False),
    ("joined", {f"@a:{REMOTE}": "ban"}, False),
    ("joined", {f"@a:{REMOTE}": None}, False),
    ("joined", {f"@a:{REMOTE}": "leave", f"@b:{REMOTE}": "join"}, True),
    ("invited", {f"@a:{REMOTE}": "ban", f"@b:{REMOTE}": "invite"}, True),
    # Other servers' users do not count.
    ("joined", {"@a:other.example": "join", BOB: "join"}, False),
    ("joined", {f"@a:{REMOTE}:8448": "join"}, False),
    ("joined", {f"@a:sub.{REMOTE}": "join"}, False),
]


@pytest.mark.parametrize(("visibility", "memberships", "expected"), SERVER_CASES)
def test_server_may_see_event(
    visibility: str | None, memberships: dict[str, str | None], expected: bool
) -> None:
    assert (
        server_may_see_event(
            MESSAGE, REMOTE, history_visibility=visibility, memberships=memberships
        )
        is expected
    )


def test_server_with_port() -> None:
    memberships: dict[str, str | None] = {"@a:remote.example:8448": "join"}
    assert server_may_see_event(
        MESSAGE, "remote.example:8448", history_visibility="joined", memberships=memberships
    )
    assert not server_may_see_event(
        MESSAGE, REMOTE, history_visibility="joined", memberships=memberships
    )


# (visibility, before membership of @a:remote, event membership, expected)
SERVER_MEMBER_EVENT_CASES: list[tuple[str, str | None, str, bool]] = [
    ("joined", None, "join", True),  # its user joining
    ("joined", "join", "leave", True),  # its user leaving
    ("joined", None, "invite", False),
    ("invited", None, "invite", True),
    ("invited", "invite", "leave", True),
    ("joined", "leave", "ban", False),
]


@pytest.mark.parametrize(
    ("visibility", "before", "membership", "expected"), SERVER_MEMBER_EVENT_CASES
)
def test_server_own_user_membership_event(
    visibility: str, before: str | None, membership: str, expected: bool
) -> None:
    user = f"@a:{REMOTE}"
    memberships: dict[str, str | None] = {} if before is None else {user: before}
    event = member_event(user, membership)
    assert (
        server_may_see_event(event, REMOTE, history_visibility=visibility, memberships=memberships)
        is expected
    )
    # Same with the state after the event and prev_content.
    event = member_event(user, membership, before, with_prev=True)
    assert (
        server_may_see_event(
            event, REMOTE, history_visibility=visibility, memberships={user: membership}
        )
        is expected
    )
    # Another server's user's membership event grants nothing.
    other = member_event("@a:other.example", membership, before, with_prev=True)
    assert not server_may_see_event(other, REMOTE, history_visibility=visibility, memberships={})


def test_server_history_visibility_event() -> None:
    assert server_may_see_event(
        vis_event("joined"), REMOTE, history_visibility="shared", memberships={}
    )
    assert server_may_see_event(
        vis_event("shared"), REMOTE, history_visibility="joined", memberships={}
    )
    assert not server_may_see_event(
        vis_event("invited"), REMOTE, history_visibility="joined", memberships={}
    )
    assert server_may_see_event(
        vis_event("invited"),
        REMOTE,
        history_visibility="joined",
        memberships={f"@a:{REMOTE}": "invite"},
    )


def test_filter_events_for_server() -> None:
    events = [{**MESSAGE, "event_id": f"${i}"} for i in range(4)]
    state: dict[str, tuple[str | None, dict[str, str | None]]] = {
        "$0": ("shared", {}),
        "$1": ("joined", {}),
        "$2": ("joined", {f"@a:{REMOTE}": "join"}),
        "$3": ("invited", {f"@a:{REMOTE}": "invite"}),
    }
    assert ids(filter_events_for_server(events, REMOTE, state.__getitem__)) == ["$0", "$2", "$3"]

    def redact(event: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in event.items() if k != "content"} | {"content": {}}

    out = filter_events_for_server(events, REMOTE, state.__getitem__, redact=redact)
    assert ids(out) == ["$0", "$1", "$2", "$3"]
    assert out[1]["content"] == {}
    assert out[0] is events[0] and out[2] is events[2]

    objects = [FakeEvent(e["event_id"], e) for e in events]
    kept = filter_events_for_server(
        objects, REMOTE, state.__getitem__, view=lambda e: (e.event_id, e.pdu)
    )
    assert [e.event_id for e in kept] == ["$0", "$2", "$3"]
