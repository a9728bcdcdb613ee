"""Event filters: validation, matching, FilterCollection helpers and event_fields."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import pytest

from homeserver.events.filtering import (
    DEFAULT_FILTER_COLLECTION,
    DEFAULT_LIMIT,
    EventFilter,
    FilterCollection,
    FilterError,
    apply_event_fields,
    event_json,
    matches_type_glob,
    parse_event_field,
    validate_filter,
    validate_room_event_filter,
)

ROOM_A = "!a:example.org"
ROOM_B = "!b:example.org"
ROOM_V12 = "!Rqnc-F-dvnEYJTyHq_iKxU2bZ1CI92-kuZq3a5lr5Zg"
ALICE = "@alice:example.org"
BOB = "@bob:example.org"


def ev(
    type_: str = "m.room.message",
    sender: str = ALICE,
    room_id: str | None = ROOM_A,
    content: dict[str, Any] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    event: dict[str, Any] = {
        "type": type_,
        "sender": sender,
        "content": {"body": "hi"} if content is None else content,
        "event_id": "$e",
        **extra,
    }
    if room_id is not None:
        event["room_id"] = room_id
    return event


# --- validation -------------------------------------------------------------------

VALID_FILTERS: list[dict[str, Any]] = [
    {},
    {"event_format": "client"},
    {"event_format": "federation"},
    {"event_fields": []},
    {"event_fields": ["type", "content.body", "content.m\\.relates_to", "a\\\\b"]},
    {"presence": {}},
    {"presence": {"limit": 1, "types": ["m.presence"], "not_senders": [BOB]}},
    {"account_data": {"types": ["m.*"], "not_types": ["m.push_rules"]}},
    {"room": {}},
    {"room": {"rooms": [ROOM_A, ROOM_V12], "not_rooms": [], "include_leave": True}},
    {
        "room": {
            "timeline": {
                "limit": 50,
                "types": ["m.room.*"],
                "not_types": [],
                "senders": [ALICE],
                "not_senders": [BOB],
                "rooms": [ROOM_A],
                "not_rooms": [ROOM_B],
                "contains_url": False,
                "lazy_load_members": True,
                "include_redundant_members": False,
                "unread_thread_notifications": True,
                "related_by_senders": [ALICE],
                "related_by_rel_types": ["m.thread"],
            },
            "state": {"lazy_load_members": True, "include_redundant_members": True},
            "ephemeral": {"types": ["m.typing"]},
            "account_data": {"not_types": ["*"]},
        }
    },
    # Unknown keys are allowed everywhere (forward compatibility).
    {"future": 1, "room": {"future": [], "timeline": {"org.example.x": True}}},
    # Room-only keys inside a plain EventFilter are ignored, not validated.
    {"presence": {"rooms": "ignored", "lazy_load_members": "ignored"}},
]


@pytest.mark.parametrize("filter_json", VALID_FILTERS)
def test_valid_filters(filter_json: dict[str, Any]) -> None:
    validate_filter(filter_json)
    FilterCollection.from_json(filter_json)


# (filter, fragment expected in the error message)
INVALID_FILTERS: list[tuple[Any, str]] = [
    ([], "filter must be an object"),
    ("x", "filter must be an object"),
    (None, "filter must be an object"),
    ({"event_format": "raw"}, "event_format must be one of"),
    ({"event_format": None}, "event_format must be one of"),
    ({"event_fields": "content.body"}, "event_fields must be a list of strings"),
    ({"event_fields": ["type", 1]}, "event_fields[1] must be a string"),
    ({"presence": []}, "presence must be an object"),
    ({"presence": {"limit": -1}}, "presence.limit must be a non-negative integer"),
    ({"account_data": {"types": "m.tag"}}, "account_data.types must be a list of strings"),
    ({"account_data": {"not_types": [None]}}, "account_data.not_types[0] must be a string"),
    ({"presence": {"senders": ["alice"]}}, "presence.senders[0] must be a user ID"),
    ({"presence": {"not_senders": [1]}}, "presence.not_senders[0] must be a string"),
    ({"room": "all"}, "room must be an object"),
    ({"room": {"rooms": "!a:b"}}, "room.rooms must be a list of strings"),
    ({"room": {"rooms": ["#alias:b"]}}, "room.rooms[0] must be a room ID"),
    ({"room": {"not_rooms": [ROOM_A, "a"]}}, "room.not_rooms[1] must be a room ID"),
    ({"room": {"include_leave": "yes"}}, "room.include_leave must be a boolean"),
    ({"room": {"include_leave": 1}}, "room.include_leave must be a boolean"),
    ({"room": {"timeline": None}}, "room.timeline must be an object"),
    ({"room": {"state": []}}, "room.state must be an object"),
    ({"room": {"timeline": {"limit": -1}}}, "room.timeline.limit must be a non-negative"),
    ({"room": {"timeline": {"limit": 1.5}}}, "room.timeline.limit must be a non-negative"),
    ({"room": {"timeline": {"limit": 10.0}}}, "room.timeline.limit must be a non-negative"),
    ({"room": {"timeline": {"limit": "10"}}}, "room.timeline.limit must be a non-negative"),
    ({"room": {"timeline": {"limit": True}}}, "room.timeline.limit must be a non-negative"),
    ({"room": {"timeline": {"types": [1]}}}, "room.timeline.types[0] must be a string"),
    ({"room": {"timeline": {"not_types": "x"}}}, "room.timeline.not_types must be a list"),
    ({"room": {"timeline": {"senders": ["@nocolon"]}}}, "room.timeline.senders[0] must be"),
    ({"room": {"timeline": {"not_senders": [{}]}}}, "room.timeline.not_senders[0] must be"),
    ({"room": {"timeline": {"rooms": ["!"]}}}, "room.timeline.rooms[0] must be a room ID"),
    ({"room": {"timeline": {"not_rooms": [5]}}}, "room.timeline.not_rooms[0] must be"),
    ({"room": {"timeline": {"contains_url": "true"}}}, "room.timeline.contains_url must be a"),
    ({"room": {"state": {"lazy_load_members": 1}}}, "room.state.lazy_load_members must be a"),
    (
        {"room": {"state": {"include_redundant_members": "no"}}},
        "room.state.include_redundant_members must be a boolean",
    ),
    (
        {"room": {"timeline": {"unread_thread_notifications": None}}},
        "room.timeline.unread_thread_notifications must be a boolean",
    ),
    ({"room": {"ephemeral": {"limit": "5"}}}, "room.ephemeral.limit must be"),
    ({"room": {"account_data": {"types": None}}}, "room.account_data.types must be a list"),
    (
        {"room": {"timeline": {"related_by_senders": ["bob"]}}},
        "room.timeline.related_by_senders[0] must be a user ID",
    ),
    (
        {"room": {"timeline": {"related_by_rel_types": "m.thread"}}},
        "room.timeline.related_by_rel_types must be a list of strings",
    ),
]


@pytest.mark.parametrize(("filter_json", "message"), INVALID_FILTERS)
def test_invalid_filters(filter_json: Any, message: str) -> None:
    with pytest.raises(FilterError) as exc_info:
        validate_filter(filter_json)
    assert message in exc_info.value.message
    assert message in str(exc_info.value)
    if isinstance(filter_json, dict):
        with pytest.raises(FilterError):
            FilterCollection.from_json(filter_json)


def test_room_event_filter_validation_standalone() -> None:
    """The ``/messages`` ``filter`` parameter is a bare RoomEventFilter."""
    validate_room_event_filter({"lazy_load_members": True, "limit": 5})
    with pytest.raises(FilterError, match="^limit must be a non-negative integer"):
        EventFilter.from_json({"limit": -1})
    assert EventFilter.from_json({"limit": 0}).limit == 0
    with pytest.raises(FilterError, match="^filter must be an object"):
        validate_room_event_filter([])
    with pytest.raises(FilterError, match="^rooms\\[0\\] must be a room ID"):
        EventFilter.from_json({"rooms": ["nope"]})
    # A plain EventFilter ignores room-only keys.
    plain = EventFilter.from_json({"rooms": "x", "contains_url": 3}, room_filter=False)
    assert plain.rooms is None and plain.contains_url is None


# --- parsing ----------------------------------------------------------------------


def test_event_filter_defaults() -> None:
    f = EventFilter.from_json({})
    assert f == EventFilter()
    assert f.limit == DEFAULT_LIMIT == 10
    assert f.types is None and f.senders is None and f.rooms is None
    assert f.not_types == () and f.not_senders == () and f.not_rooms == ()
    assert f.contains_url is None
    assert not f.lazy_load_members and not f.include_redundant_members
    assert not f.unread_thread_notifications
    assert f.related_by_senders is None and f.related_by_rel_types is None


def test_event_filter_parses_every_field() -> None:
    f = EventFilter.from_json(
        {
            "limit": 3,
            "types": ["a"],
            "not_types": ["b"],
            "senders": [ALICE],
            "not_senders": [BOB],
            "rooms": [ROOM_A],
            "not_rooms": [ROOM_B],
            "contains_url": True,
            "lazy_load_members": True,
            "include_redundant_members": True,
            "unread_thread_notifications": True,
            "related_by_senders": [BOB],
            "related_by_rel_types": ["m.thread"],
        }
    )
    assert f == EventFilter(
        limit=3,
        types=("a",),
        not_types=("b",),
        senders=(ALICE,),
        not_senders=(BOB,),
        rooms=(ROOM_A,),
        not_rooms=(ROOM_B,),
        contains_url=True,
        lazy_load_members=True,
        include_redundant_members=True,
        unread_thread_notifications=True,
        related_by_senders=(BOB,),
        related_by_rel_types=("m.thread",),
    )
    hash(f)  # frozen and hashable


def test_default_filter_collection() -> None:
    for fc in (DEFAULT_FILTER_COLLECTION, FilterCollection.from_json({})):
        assert fc.timeline_limit() == 10
        assert fc.presence_limit() == 10
        assert fc.ephemeral_limit() == 10
        assert fc.event_fields is None
        assert fc.event_format == "client"
        assert not fc.lazy_load_members()
        assert not fc.include_redundant_members()
        assert not fc.unread_thread_notifications()
        assert not fc.include_leave()
        assert fc.room_allowed(ROOM_A)
        assert not fc.blocks_all_rooms()
        assert not fc.blocks_all_presence()
        assert not fc.blocks_all_account_data()
        assert not fc.blocks_all_room_timeline()
        assert not fc.blocks_all_room_ephemeral()
        assert not fc.blocks_all_room_account_data()
        events = [ev(), ev("m.room.member", room_id=ROOM_B), ev("m.presence", room_id=None)]
        assert fc.filter_room_timeline(events) == events
        assert fc.filter_room_state(events) == events
        assert fc.filter_ephemeral(events) == events
        assert fc.filter_room_account_data(events) == events
        assert fc.filter_presence(events) == events
        assert fc.filter_account_data(events) == events
        event = ev()
        assert fc.project_event(event) is event


def test_filter_collection_parses_sections() -> None:
    fc = FilterCollection.from_json(
        {
            "event_fields": ["type", "content.body"],
            "event_format": "federation",
            "presence": {"limit": 4, "types": ["m.presence"]},
            "account_data": {"not_types": ["m.push_rules"]},
            "room": {
                "rooms": [ROOM_A],
                "not_rooms": [ROOM_B],
                "include_leave": True,
                "timeline": {"limit": 20, "unread_thread_notifications": True},
                "state": {"lazy_load_members": True, "include_redundant_members": True},
                "ephemeral": {"limit": 7, "types": ["m.receipt"]},
                "account_data": {"types": ["m.tag"]},
            },
        }
    )
    assert fc.event_fields == ("type", "content.body")
    assert fc.event_format == "federation"
    assert fc.presence == EventFilter(limit=4, types=("m.presence",))
    assert fc.account_data == EventFilter(not_types=("m.push_rules",))
    assert fc.rooms == (ROOM_A,) and fc.not_rooms == (ROOM_B,)
    assert fc.include_leave()
    assert fc.timeline_limit() == 20
    assert fc.presence_limit() == 4
    assert fc.ephemeral_limit() == 7
    assert fc.unread_thread_notifications()
    # Like Synapse, lazy-loading settings come from the state filter.
    assert fc.lazy_load_members() and fc.include_redundant_members()
    assert fc.ephemeral.types == ("m.receipt",)
    assert fc.room_account_data.types == ("m.tag",)


def test_lazy_load_members_on_timeline_only_is_not_enabled() -> None:
    fc = FilterCollection.from_json({"room": {"timeline": {"lazy_load_members": True}}})
    assert fc.timeline.lazy_load_members
    assert not fc.lazy_load_members()


# --- glob -------------------------------------------------------------------------

GLOB_CASES: list[tuple[object, str, bool]] = [
    ("m.room.message", "m.room.message", True),
    ("m.room.message", "m.room.messag", False),
    ("m.room.message", "m.room.*", True),
    ("m.room", "m.room.*", False),
    ("m.room.", "m.room.*", True),
    ("m.room.message", "*", True),
    ("", "*", True),
    ("m.room.message", "m.*.message", True),
    ("m.room.encrypted", "m.*.message", False),
    ("m.room.message", "*.message", True),
    ("m.room.message", "*message*", True),
    ("m.room.message", "m.room.message*", True),
    ("m.room.message", "m**e", True),
    ("m.roomXmessage", "m.room.message", False),  # '.' is literal
    ("m.room.message", "m.room.?essage", False),  # only '*' is special
    ("m.room.?essage", "m.room.?essage", True),
    ("a[b]", "a[b]", True),
    ("ab", "a[b]", False),
    ("m.room\nmessage", "m.room*", True),
    (None, "*", False),
    (5, "*", False),
]


@pytest.mark.parametrize(("event_type", "pattern", "expected"), GLOB_CASES)
def test_type_glob(event_type: object, pattern: str, expected: bool) -> None:
    assert matches_type_glob(event_type, pattern) is expected


# --- EventFilter.matches ----------------------------------------------------------

# (filter json, event, expected)
MATCH_CASES: list[tuple[str, dict[str, Any], dict[str, Any], bool]] = [
    ("empty filter matches all", {}, ev(), True),
    ("types exact", {"types": ["m.room.message"]}, ev(), True),
    ("types miss", {"types": ["m.room.member"]}, ev(), False),
    ("types glob", {"types": ["m.room.*"]}, ev(), True),
    ("types glob miss", {"types": ["m.room.*"]}, ev("m.reaction"), False),
    ("types any of", {"types": ["m.reaction", "m.room.message"]}, ev(), True),
    ("types empty list matches nothing", {"types": []}, ev(), False),
    ("not_types exact", {"not_types": ["m.room.message"]}, ev(), False),
    ("not_types miss", {"not_types": ["m.room.member"]}, ev(), True),
    ("not_types glob", {"not_types": ["m.room.*"]}, ev(), False),
    ("not_types star", {"not_types": ["*"]}, ev(), False),
    ("not_types empty", {"not_types": []}, ev(), True),
    (
        "not_types beats types",
        {"types": ["m.room.message"], "not_types": ["m.room.message"]},
        ev(),
        False,
    ),
    (
        "not_types glob beats types",
        {"types": ["m.room.message"], "not_types": ["m.room.*"]},
        ev(),
        False,
    ),
    (
        "types glob with narrower not_types",
        {"types": ["m.room.*"], "not_types": ["m.room.member"]},
        ev("m.room.topic"),
        True,
    ),
    ("event without type vs types", {"types": ["*"]}, {"sender": ALICE}, False),
    ("event without type, no type filter", {"senders": [ALICE]}, {"sender": ALICE}, True),
    ("senders hit", {"senders": [ALICE]}, ev(), True),
    ("senders miss", {"senders": [BOB]}, ev(), False),
    ("senders empty", {"senders": []}, ev(), False),
    ("senders are not globs", {"senders": ["@*:example.org"]}, ev(), False),
    ("not_senders hit", {"not_senders": [ALICE]}, ev(), False),
    ("not_senders miss", {"not_senders": [BOB]}, ev(), True),
    ("not_senders beats senders", {"senders": [ALICE], "not_senders": [ALICE]}, ev(), False),
    ("event without sender vs senders", {"senders": [ALICE]}, {"type": "m.tag"}, False),
    ("event without sender vs not_senders", {"not_senders": [ALICE]}, {"type": "m.tag"}, True),
    ("rooms hit", {"rooms": [ROOM_A]}, ev(), True),
    ("rooms miss", {"rooms": [ROOM_B]}, ev(), False),
    ("rooms empty", {"rooms": []}, ev(), False),
    ("not_rooms hit", {"not_rooms": [ROOM_A]}, ev(), False),
    ("not_rooms miss", {"not_rooms": [ROOM_B]}, ev(), True),
    ("not_rooms beats rooms", {"rooms": [ROOM_A], "not_rooms": [ROOM_A]}, ev(), False),
    ("event without room vs rooms", {"rooms": [ROOM_A]}, ev(room_id=None), False),
    ("event without room vs not_rooms", {"not_rooms": [ROOM_A]}, ev(room_id=None), True),
    (
        "contains_url true with url",
        {"contains_url": True},
        ev(content={"url": "mxc://a/b"}),
        True,
    ),
    ("contains_url true without url", {"contains_url": True}, ev(), False),
    ("contains_url true non-string url", {"contains_url": True}, ev(content={"url": 1}), False),
    ("contains_url false with url", {"contains_url": False}, ev(content={"url": "mxc://a"}), False),
    ("contains_url false without url", {"contains_url": False}, ev(), True),
    ("contains_url absent with url", {}, ev(content={"url": "mxc://a"}), True),
    ("contains_url content not object", {"contains_url": True}, ev(content=[]), False),  # type: ignore[arg-type]
    (
        "all fields must match",
        {"types": ["m.room.*"], "senders": [ALICE], "rooms": [ROOM_A], "contains_url": False},
        ev(),
        True,
    ),
    (
        "one failing field rejects",
        {"types": ["m.room.*"], "senders": [ALICE], "rooms": [ROOM_B]},
        ev(),
        False,
    ),
    ("presence event by type", {"types": ["m.presence"]}, ev("m.presence", room_id=None), True),
]


@pytest.mark.parametrize(
    ("filter_json", "event", "expected"),
    [c[1:] for c in MATCH_CASES],
    ids=[c[0] for c in MATCH_CASES],
)
def test_matches(filter_json: dict[str, Any], event: dict[str, Any], expected: bool) -> None:
    f = EventFilter.from_json(filter_json)
    assert f.matches(event) is expected
    assert f.filter([event]) == ([event] if expected else [])


def test_matches_uses_fallback_room_id() -> None:
    f = EventFilter.from_json({"rooms": [ROOM_A]})
    event = ev(room_id=None)
    assert f.matches(event, ROOM_A)
    assert not f.matches(event, ROOM_B)
    # The event's own room id wins over the fallback.
    assert not f.matches(ev(room_id=ROOM_B), ROOM_A)


def test_filter_keeps_order_and_ignores_limit() -> None:
    f = EventFilter.from_json({"limit": 1, "not_types": ["m.room.member"]})
    events = [ev(body=i) for i in range(3)] + [ev("m.room.member")]
    assert f.filter(events) == events[:3]


def test_matches_does_not_check_relations() -> None:
    f = EventFilter.from_json({"related_by_rel_types": ["m.thread"]})
    assert f.matches(ev())


# (filter json, children (rel_type, sender), expected)
RELATION_CASES: list[tuple[dict[str, Any], list[tuple[str, str]], bool]] = [
    ({}, [], True),
    ({"related_by_senders": [], "related_by_rel_types": []}, [], True),
    ({"related_by_rel_types": ["m.thread"]}, [], False),
    ({"related_by_rel_types": ["m.thread"]}, [("m.thread", BOB)], True),
    ({"related_by_rel_types": ["m.thread"]}, [("m.annotation", BOB)], False),
    ({"related_by_senders": [ALICE]}, [("m.thread", ALICE)], True),
    ({"related_by_senders": [ALICE]}, [("m.thread", BOB)], False),
    (
        {"related_by_senders": [ALICE], "related_by_rel_types": ["m.thread"]},
        [("m.thread", ALICE)],
        True,
    ),
    # Both constraints must hold for the same child.
    (
        {"related_by_senders": [ALICE], "related_by_rel_types": ["m.thread"]},
        [("m.thread", BOB), ("m.annotation", ALICE)],
        False,
    ),
    (
        {"related_by_senders": [ALICE, BOB], "related_by_rel_types": ["m.thread", "m.reference"]},
        [("m.annotation", ALICE), ("m.reference", BOB)],
        True,
    ),
]


@pytest.mark.parametrize(("filter_json", "children", "expected"), RELATION_CASES)
def test_matches_relations(
    filter_json: dict[str, Any], children: list[tuple[str, str]], expected: bool
) -> None:
    f = EventFilter.from_json(filter_json)
    assert f.matches_relations(children) is expected
    assert f.has_relation_filter is (
        filter_json not in ({}, {"related_by_senders": [], "related_by_rel_types": []})
    )


# (filter json, filters_all_types, filters_all_senders, filters_all_rooms)
BLOCKS_CASES: list[tuple[dict[str, Any], bool, bool, bool]] = [
    ({}, False, False, False),
    ({"types": []}, True, False, False),
    ({"not_types": ["*"]}, True, False, False),
    ({"not_types": ["m.*"]}, False, False, False),
    ({"senders": []}, False, True, False),
    ({"rooms": []}, False, False, True),
]


@pytest.mark.parametrize(("filter_json", "types", "senders", "rooms"), BLOCKS_CASES)
def test_filters_all(filter_json: dict[str, Any], types: bool, senders: bool, rooms: bool) -> None:
    f = EventFilter.from_json(filter_json)
    assert f.filters_all_types() is types
    assert f.filters_all_senders() is senders
    assert f.filters_all_rooms() is rooms
    assert f.blocks_all() is (types or senders or rooms)


# --- FilterCollection -------------------------------------------------------------


def test_room_level_rooms_apply_before_sub_filters() -> None:
    fc = FilterCollection.from_json(
        {
            "room": {
                "rooms": [ROOM_A, ROOM_B],
                "not_rooms": [ROOM_B],
                "timeline": {"types": ["m.room.message"]},
                "state": {"types": ["m.room.member"]},
                "ephemeral": {"not_types": ["m.typing"]},
                "account_data": {"types": ["m.tag"]},
            }
        }
    )
    msg_a, msg_b = ev(room_id=ROOM_A), ev(room_id=ROOM_B)
    member_a = ev("m.room.member", room_id=ROOM_A)
    typing_a, receipt_a = ev("m.typing", room_id=ROOM_A), ev("m.receipt", room_id=ROOM_A)
    tag_a, tag_b = ev("m.tag", room_id=ROOM_A), ev("m.tag", room_id=ROOM_B)
    msg_c = ev(room_id="!c:example.org")

    assert fc.room_allowed(ROOM_A)
    assert not fc.room_allowed(ROOM_B)  # not_rooms wins over rooms
    assert not fc.room_allowed("!c:example.org")

    assert fc.filter_room_timeline([msg_a, msg_b, member_a, msg_c]) == [msg_a]
    assert fc.filter_room_state([msg_a, member_a, ev("m.room.member", room_id=ROOM_B)]) == [
        member_a
    ]
    assert fc.filter_ephemeral([typing_a, receipt_a, ev("m.receipt", room_id=ROOM_B)]) == [
        receipt_a
    ]
    assert fc.filter_room_account_data([tag_a, tag_b, msg_a]) == [tag_a]


def test_room_level_uses_fallback_room_id() -> None:
    fc = FilterCollection.from_json({"room": {"not_rooms": [ROOM_B]}})
    client_event = ev(room_id=None)  # client-format events carry no room_id
    assert fc.filter_room_timeline([client_event], room_id=ROOM_A) == [client_event]
    assert fc.filter_room_timeline([client_event], room_id=ROOM_B) == []
    assert fc.filter_ephemeral([client_event], ROOM_B) == []
    fc2 = FilterCollection.from_json({"room": {"rooms": [ROOM_A]}})
    assert fc2.filter_room_state([client_event]) == []  # unknown room vs explicit list
    assert fc2.filter_room_state([client_event], ROOM_A) == [client_event]


def test_sub_filter_rooms_also_apply() -> None:
    fc = FilterCollection.from_json({"room": {"timeline": {"not_rooms": [ROOM_A]}}})
    assert fc.room_allowed(ROOM_A)
    assert fc.filter_room_timeline([ev(room_id=ROOM_A), ev(room_id=ROOM_B)]) == [ev(room_id=ROOM_B)]
    assert fc.filter_room_timeline([ev(room_id=None)], ROOM_A) == []


def test_presence_and_account_data_filters() -> None:
    fc = FilterCollection.from_json(
        {
            "presence": {"senders": [ALICE], "not_senders": [BOB]},
            "account_data": {"types": ["m.*"], "not_types": ["m.push_rules"]},
            "room": {"rooms": []},  # room filters do not touch these
        }
    )
    p_alice = {"type": "m.presence", "sender": ALICE, "content": {"presence": "online"}}
    p_bob = {"type": "m.presence", "sender": BOB, "content": {"presence": "online"}}
    assert fc.filter_presence([p_alice, p_bob]) == [p_alice]
    direct = {"type": "m.direct", "content": {}}
    push = {"type": "m.push_rules", "content": {}}
    custom = {"type": "org.example", "content": {}}
    assert fc.filter_account_data([direct, push, custom]) == [direct]
    assert fc.blocks_all_rooms()
    assert fc.blocks_all_room_timeline()
    assert fc.blocks_all_room_ephemeral()
    assert fc.blocks_all_room_account_data()
    assert fc.filter_room_timeline([ev()]) == []
    assert not fc.blocks_all_presence()


# (filter json, accessor name, expected)
BLOCKS_ALL_CASES: list[tuple[dict[str, Any], str, bool]] = [
    ({"presence": {"types": []}}, "blocks_all_presence", True),
    ({"presence": {"not_types": ["*"]}}, "blocks_all_presence", True),
    ({"presence": {"senders": []}}, "blocks_all_presence", True),
    ({"presence": {"not_types": ["m.x"]}}, "blocks_all_presence", False),
    ({"account_data": {"not_types": ["*"]}}, "blocks_all_account_data", True),
    ({"account_data": {"senders": []}}, "blocks_all_account_data", True),
    ({"room": {"rooms": []}}, "blocks_all_rooms", True),
    ({"room": {"not_rooms": [ROOM_A]}}, "blocks_all_rooms", False),
    ({"room": {"timeline": {"types": []}}}, "blocks_all_room_timeline", True),
    ({"room": {"timeline": {"rooms": []}}}, "blocks_all_room_timeline", True),
    ({"room": {"ephemeral": {"not_types": ["*"]}}}, "blocks_all_room_ephemeral", True),
    ({"room": {"ephemeral": {"not_types": ["m.typing"]}}}, "blocks_all_room_ephemeral", False),
    ({"room": {"account_data": {"senders": []}}}, "blocks_all_room_account_data", True),
]


@pytest.mark.parametrize(("filter_json", "accessor", "expected"), BLOCKS_ALL_CASES)
def test_blocks_all(filter_json: dict[str, Any], accessor: str, expected: bool) -> None:
    fc = FilterCollection.from_json(filter_json)
    assert getattr(fc, accessor)() is expected


def test_filter_collection_project_event() -> None:
    fc = FilterCollection.from_json({"event_fields": ["type", "content.body"]})
    event = ev(content={"body": "hi", "msgtype": "m.text"})
    assert fc.project_event(event) == {"type": "m.room.message", "content": {"body": "hi"}}
    empty = FilterCollection.from_json({"event_fields": []})
    assert empty.project_event(event) is event


def test_from_json_does_not_alias_input() -> None:
    raw: dict[str, Any] = {"room": {"timeline": {"types": ["m.room.message"]}}}
    fc = FilterCollection.from_json(raw)
    raw["room"]["timeline"]["types"].append("m.room.member")
    assert fc.timeline.types == ("m.room.message",)


# --- event_fields -----------------------------------------------------------------

PARSE_FIELD_CASES: list[tuple[str, list[str]]] = [
    ("type", ["type"]),
    ("content.body", ["content", "body"]),
    ("content.m\\.relates_to", ["content", "m.relates_to"]),
    ("content.m\\.relates_to.rel_type", ["content", "m.relates_to", "rel_type"]),
    ("content.m\\\\foo", ["content", "m\\foo"]),
    ("content.m\\\\.foo", ["content", "m\\", "foo"]),
    ("content.a\\\\\\.b", ["content", "a\\.b"]),
    ("content.\\x", ["content", "\\x"]),  # other escapes are literal
    ("content.a\\", ["content", "a\\"]),  # trailing backslash is literal
    ("a..b", ["a", "", "b"]),
    ("", [""]),
    ("\\.", ["."]),
]


@pytest.mark.parametrize(("path", "expected"), PARSE_FIELD_CASES)
def test_parse_event_field(path: str, expected: list[str]) -> None:
    assert parse_event_field(path) == expected


FULL_EVENT: dict[str, Any] = {
    "type": "m.room.message",
    "event_id": "$ev",
    "sender": ALICE,
    "origin_server_ts": 1,
    "content": {
        "body": "hello",
        "msgtype": "m.text",
        "m.relates_to": {"rel_type": "m.thread", "event_id": "$root"},
        "m\\foo": 1,
        "a.b": {"c": 2},
        "x\\y": 3,
    },
    "unsigned": {"age": 5, "m.relations": {"m.thread": {"count": 1}}},
}

# (fields, expected projection)
EVENT_FIELDS_CASES: list[tuple[list[str], dict[str, Any]]] = [
    (["type"], {"type": "m.room.message"}),
    (["type", "sender"], {"type": "m.room.message", "sender": ALICE}),
    (["content.body"], {"content": {"body": "hello"}}),
    (
        ["content.body", "content.msgtype"],
        {"content": {"body": "hello", "msgtype": "m.text"}},
    ),
    (
        ["content.m\\.relates_to"],
        {"content": {"m.relates_to": {"rel_type": "m.thread", "event_id": "$root"}}},
    ),
    (["content.m\\.relates_to.rel_type"], {"content": {"m.relates_to": {"rel_type": "m.thread"}}}),
    (["content.m\\\\foo"], {"content": {"m\\foo": 1}}),
    (["content.a\\.b.c"], {"content": {"a.b": {"c": 2}}}),
    (["content.x\\y"], {"content": {"x\\y": 3}}),  # unrecognised escape: literal
    (
        ["unsigned.m\\.relations.m\\.thread.count"],
        {"unsigned": {"m.relations": {"m.thread": {"count": 1}}}},
    ),
    # Unescaped dots descend: "m.relates_to" is not a key path here.
    (["content.m.relates_to"], {"content": {}}),
    (["missing"], {}),
    (["missing.deeper"], {}),
    # Like Synapse: an existing intermediate object is kept even if the leaf is missing.
    (["content.missing"], {"content": {}}),
    # Descending into a non-object yields nothing.
    (["type.foo"], {}),
    (["content.body.x"], {"content": {}}),
    (["content", "content.body"], {"content": FULL_EVENT["content"]}),
    (["content.body", "content"], {"content": FULL_EVENT["content"]}),
    (["type", "type"], {"type": "m.room.message"}),
    ([], FULL_EVENT),
]


@pytest.mark.parametrize(("fields", "expected"), EVENT_FIELDS_CASES)
def test_apply_event_fields(fields: list[str], expected: dict[str, Any]) -> None:
    before = copy.deepcopy(FULL_EVENT)
    result = apply_event_fields(FULL_EVENT, fields)
    assert result == expected
    assert before == FULL_EVENT  # input untouched


def test_apply_event_fields_copies() -> None:
    event = copy.deepcopy(FULL_EVENT)
    result = apply_event_fields(event, ["content", "unsigned.m\\.relations"])
    result["content"]["body"] = "changed"
    result["unsigned"]["m.relations"]["m.thread"]["count"] = 99
    assert event["content"]["body"] == "hello"
    assert event["unsigned"]["m.relations"]["m.thread"]["count"] == 1
    whole = apply_event_fields(event, [])
    assert whole == event and whole is not event


@dataclass
class FakeEvent:
    event_id: str
    pdu: dict[str, Any]


def test_filters_accept_objects_with_pdu() -> None:
    fc = FilterCollection.from_json(
        {
            "presence": {"senders": [ALICE]},
            "room": {"not_rooms": [ROOM_B], "timeline": {"types": ["m.room.*"]}},
        }
    )
    keep = FakeEvent("$1", ev())
    other_type = FakeEvent("$2", ev("m.reaction"))
    other_room = FakeEvent("$3", ev(room_id=ROOM_B))
    no_room = FakeEvent("$4", ev(room_id=None))  # e.g. a v12 create event
    events = [keep, other_type, other_room, no_room]
    assert fc.filter_room_timeline(events) == [keep, no_room]
    assert fc.filter_room_timeline(events, ROOM_B) == [keep]
    assert fc.filter_room_state(events) == events[:2] + [no_room]
    assert fc.filter_presence(events) == events
    assert EventFilter.from_json({"senders": [BOB]}).filter(events) == []
    assert event_json(keep) is keep.pdu
    assert event_json(keep.pdu) is keep.pdu
    with pytest.raises(TypeError):
        fc.filter_room_timeline([object()])


@pytest.mark.parametrize(
    "restriction",
    [
        {"types": ["m.room.message"]},
        {"not_types": ["m.room.member"]},
        {"senders": ["@a:x"]},
        {"not_senders": ["@b:x"]},
        {"rooms": ["!r:x"]},
        {"not_rooms": ["!s:x"]},
        {"contains_url": True},
    ],
)
def test_matches_everything_only_without_restrictions(restriction: dict[str, Any]) -> None:
    assert EventFilter.from_json({"limit": 5, "lazy_load_members": True}).matches_everything
    assert not EventFilter.from_json(restriction).matches_everything
    events = [
        {
            "type": "m.room.message",
            "sender": "@a:x",
            "room_id": "!r:x",
            "content": {"url": "mxc://x/y"},
        },
        {"type": "m.room.member", "sender": "@b:x", "room_id": "!s:x", "content": {}},
    ]
    open_filter = FilterCollection.from_json({"room": {"timeline": {"limit": 5}}})
    assert open_filter.filter_room_timeline(events) == events
    restricted = FilterCollection.from_json({"room": {"timeline": restriction}})
    assert len(restricted.filter_room_timeline(events)) == 1
