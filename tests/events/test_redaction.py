"""The redaction algorithm per event type and room version (v10 rules vs v11/v12 rules)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from homeserver.events.redaction import prune_event
from homeserver.events.room_versions import ROOM_VERSIONS

SIGNED = {"mxid": "@bob:b", "token": "tok", "signatures": {"idp": {"ed25519:0": "sig"}}}
PL_FULL: dict[str, Any] = {
    "ban": 50,
    "events": {"m.room.name": 100},
    "events_default": 0,
    "invite": 0,
    "kick": 50,
    "redact": 50,
    "state_default": 50,
    "users": {"@a:d": 100},
    "users_default": 0,
    "notifications": {"room": 50},
    "historical": 100,
}
PL_V10 = {k: v for k, v in PL_FULL.items() if k not in ("invite", "notifications", "historical")}
PL_V11 = dict(PL_V10, invite=0)

# (event type, content, pruned content for v10, pruned content for v11 and v12)
CASES: list[tuple[str, dict[str, Any], dict[str, Any], dict[str, Any]]] = [
    (
        "m.room.member",
        {
            "membership": "join",
            "displayname": "Bob",
            "avatar_url": "mxc://d/x",
            "reason": "hi",
            "is_direct": True,
            "join_authorised_via_users_server": "@a:d",
        },
        {"membership": "join", "join_authorised_via_users_server": "@a:d"},
        {"membership": "join", "join_authorised_via_users_server": "@a:d"},
    ),
    (
        "m.room.member",
        {
            "membership": "invite",
            "third_party_invite": {"display_name": "bob@example.com", "signed": SIGNED},
        },
        {"membership": "invite"},
        {"membership": "invite", "third_party_invite": {"signed": SIGNED}},
    ),
    (
        # v11 keeps the third_party_invite object even without `signed` (as Synapse does).
        "m.room.member",
        {"membership": "invite", "third_party_invite": {"display_name": "x"}},
        {"membership": "invite"},
        {"membership": "invite", "third_party_invite": {}},
    ),
    (
        "m.room.member",
        {"membership": "invite", "third_party_invite": "not an object"},
        {"membership": "invite"},
        {"membership": "invite"},
    ),
    (
        "m.room.create",
        {
            "creator": "@a:d",
            "room_version": "10",
            "m.federate": False,
            "predecessor": {"room_id": "!old:d"},
            "type": "m.space",
        },
        {"creator": "@a:d"},
        {
            "creator": "@a:d",
            "room_version": "10",
            "m.federate": False,
            "predecessor": {"room_id": "!old:d"},
            "type": "m.space",
        },
    ),
    (
        "m.room.create",
        {"room_version": "12", "additional_creators": ["@b:d"]},
        {},
        {"room_version": "12", "additional_creators": ["@b:d"]},
    ),
    (
        "m.room.join_rules",
        {
            "join_rule": "restricted",
            "allow": [{"type": "m.room_membership", "room_id": "!s:d"}],
            "extra": 1,
        },
        {"join_rule": "restricted", "allow": [{"type": "m.room_membership", "room_id": "!s:d"}]},
        {"join_rule": "restricted", "allow": [{"type": "m.room_membership", "room_id": "!s:d"}]},
    ),
    ("m.room.power_levels", PL_FULL, PL_V10, PL_V11),
    (
        "m.room.history_visibility",
        {"history_visibility": "joined", "extra": True},
        {"history_visibility": "joined"},
        {"history_visibility": "joined"},
    ),
    (
        "m.room.redaction",
        {"redacts": "$abc", "reason": "spam"},
        {},
        {"redacts": "$abc"},
    ),
    ("m.room.message", {"msgtype": "m.text", "body": "hello"}, {}, {}),
    ("m.room.name", {"name": "Room"}, {}, {}),
    ("m.room.topic", {"topic": "About"}, {}, {}),
    ("m.room.aliases", {"aliases": ["#a:d"]}, {}, {}),
    ("m.room.canonical_alias", {"alias": "#a:d"}, {}, {}),
    ("m.room.guest_access", {"guest_access": "can_join"}, {}, {}),
    ("m.room.encryption", {"algorithm": "m.megolm.v1.aes-sha2"}, {}, {}),
    ("m.room.server_acl", {"allow": ["*"], "deny": []}, {}, {}),
    ("m.room.third_party_invite", {"display_name": "x", "public_key": "k"}, {}, {}),
    ("m.room.tombstone", {"body": "gone", "replacement_room": "!n:d"}, {}, {}),
    # Content rules go by exact type, not by look-alike content.
    ("org.example.member", {"membership": "join", "redacts": "$x", "join_rule": "public"}, {}, {}),
]


def _event(event_type: str, content: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": event_type,
        "room_id": "!r:d",
        "sender": "@a:d",
        "state_key": "",
        "content": copy.deepcopy(content),
        "depth": 5,
        "prev_events": ["$p"],
        "auth_events": ["$a"],
        "origin_server_ts": 1,
        "hashes": {"sha256": "h"},
        "signatures": {"d": {"ed25519:1": "s"}},
        "unsigned": {"age_ts": 1, "redacted_because": {}},
    }


@pytest.mark.parametrize("room_version", ["10", "11", "12"])
@pytest.mark.parametrize(
    ("event_type", "content", "v10", "v11"),
    CASES,
    ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)],
)
def test_content_redaction(
    room_version: str,
    event_type: str,
    content: dict[str, Any],
    v10: dict[str, Any],
    v11: dict[str, Any],
) -> None:
    expected = v10 if room_version == "10" else v11
    pruned = prune_event(_event(event_type, content), ROOM_VERSIONS[room_version])
    assert pruned["content"] == expected


def test_v10_and_v11_differ_where_the_spec_says() -> None:
    """Every v11 content change is covered by at least one case above."""
    changed = {c[0] for c in CASES if c[2] != c[3]}
    assert changed == {"m.room.member", "m.room.create", "m.room.power_levels", "m.room.redaction"}


ALL_TOP_LEVEL: dict[str, Any] = {
    "event_id": "$e",
    "type": "m.room.member",
    "room_id": "!r:d",
    "sender": "@a:d",
    "state_key": "@a:d",
    "content": {"membership": "join"},
    "hashes": {"sha256": "h"},
    "signatures": {"d": {"ed25519:1": "s"}},
    "depth": 3,
    "prev_events": ["$p"],
    "prev_state": [],
    "auth_events": ["$a"],
    "origin": "d",
    "origin_server_ts": 7,
    "membership": "join",
    "unsigned": {"age_ts": 1},
    "redacts": "$x",
    "age_ts": 5,
    "custom": "dropped",
}
COMMON_KEPT = {
    "event_id",
    "type",
    "room_id",
    "sender",
    "state_key",
    "content",
    "hashes",
    "signatures",
    "depth",
    "prev_events",
    "auth_events",
    "origin_server_ts",
}


@pytest.mark.parametrize(
    ("room_version", "kept"),
    [
        ("10", COMMON_KEPT | {"prev_state", "origin", "membership"}),
        ("11", COMMON_KEPT),
        ("12", COMMON_KEPT),
    ],
)
def test_top_level_keys(room_version: str, kept: set[str]) -> None:
    pruned = prune_event(ALL_TOP_LEVEL, ROOM_VERSIONS[room_version])
    assert set(pruned) == kept
    for key in kept - {"content"}:
        assert pruned[key] == ALL_TOP_LEVEL[key]


@pytest.mark.parametrize("room_version", ["10", "11"])
def test_top_level_redacts_is_never_kept(room_version: str) -> None:
    """v10 does not protect top-level `redacts`; v11+ keeps it in content instead."""
    event = _event("m.room.redaction", {"redacts": "$c"})
    event["redacts"] = "$t"
    pruned = prune_event(event, ROOM_VERSIONS[room_version])
    assert "redacts" not in pruned


def test_unsigned_is_dropped_entirely() -> None:
    pruned = prune_event(_event("m.room.message", {"body": "x"}), ROOM_VERSIONS["11"])
    assert "unsigned" not in pruned


@pytest.mark.parametrize("content", [None, "string", ["list"], 5])
def test_missing_or_non_object_content_becomes_empty(content: Any) -> None:
    event = _event("m.room.member", {})
    if content is None:
        del event["content"]
    else:
        event["content"] = content
    assert prune_event(event, ROOM_VERSIONS["11"])["content"] == {}


def test_prune_is_pure() -> None:
    event = _event("m.room.create", {"room_version": "11", "predecessor": {"room_id": "!o:d"}})
    before = copy.deepcopy(event)
    pruned = prune_event(event, ROOM_VERSIONS["11"])
    assert event == before
    pruned["content"]["predecessor"]["room_id"] = "!changed:d"
    pruned["signatures"]["d"]["ed25519:1"] = "changed"
    pruned["prev_events"].append("$more")
    assert event == before


def test_prune_is_idempotent() -> None:
    for room_version in ROOM_VERSIONS.values():
        for event_type, content, _, _ in CASES:
            once = prune_event(_event(event_type, content), room_version)
            assert prune_event(once, room_version) == once
