"""The default rule set and the CRUD logic of ``PushRuleSet``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from homeserver.errors import MatrixError
from homeserver.push.default_rules import (
    DEFAULT_OVERRIDE_RULE_IDS,
    DEFAULT_UNDERRIDE_RULE_IDS,
    KINDS,
    default_rules_for_user,
)
from homeserver.push.rules import PushRuleError, PushRuleSet, validate_actions

USER = "@alice:example.org"

SPEC_OVERRIDE_ORDER = [
    ".m.rule.master",
    ".m.rule.suppress_notices",
    ".m.rule.invite_for_me",
    ".m.rule.member_event",
    ".m.rule.is_user_mention",
    ".m.rule.is_room_mention",
    ".m.rule.tombstone",
    ".m.rule.reaction",
    ".m.rule.room.server_acl",
    ".m.rule.suppress_edits",
]
SPEC_UNDERRIDE_ORDER = [
    ".m.rule.call",
    ".m.rule.encrypted_room_one_to_one",
    ".m.rule.room_one_to_one",
    ".m.rule.message",
    ".m.rule.encrypted",
]


def ids(rules: list[dict[str, Any]]) -> list[str]:
    return [r["rule_id"] for r in rules]


def custom_ids(ruleset: PushRuleSet, kind: str) -> list[str]:
    return [r.rule_id for r in ruleset.rules(kind) if not r.default]


@contextmanager
def raises(errcode: str, status: int) -> Iterator[None]:
    with pytest.raises(PushRuleError) as info:
        yield
    assert info.value.errcode == errcode, info.value.message
    assert info.value.status == status


# ---------------------------------------------------------------------------
# Default rules
# ---------------------------------------------------------------------------


class TestDefaultRules:
    def test_kinds_and_order(self) -> None:
        rules = default_rules_for_user(USER)
        assert list(rules) == list(KINDS)
        assert ids(rules["override"]) == SPEC_OVERRIDE_ORDER == list(DEFAULT_OVERRIDE_RULE_IDS)
        assert ids(rules["underride"]) == SPEC_UNDERRIDE_ORDER == list(DEFAULT_UNDERRIDE_RULE_IDS)
        assert rules["content"] == rules["room"] == rules["sender"] == []

    def test_legacy_mention_rules_removed_in_v1_17(self) -> None:
        all_ids = {r["rule_id"] for rules in default_rules_for_user(USER).values() for r in rules}
        for legacy in (
            ".m.rule.contains_display_name",
            ".m.rule.roomnotif",
            ".m.rule.contains_user_name",
        ):
            assert legacy not in all_ids

    def test_shape(self) -> None:
        for rules in default_rules_for_user(USER).values():
            for rule in rules:
                assert rule["default"] is True
                assert rule["rule_id"].startswith(".")
                assert set(rule) == {"rule_id", "default", "enabled", "conditions", "actions"}
                json.dumps(rule)  # plain JSON
                expected_enabled = rule["rule_id"] != ".m.rule.master"
                assert rule["enabled"] is expected_enabled

    def test_user_id_substituted(self) -> None:
        rules = {r["rule_id"]: r for r in default_rules_for_user(USER)["override"]}
        assert rules[".m.rule.invite_for_me"]["conditions"][2] == {
            "kind": "event_match",
            "key": "state_key",
            "pattern": USER,
        }
        assert rules[".m.rule.is_user_mention"]["conditions"] == [
            {
                "kind": "event_property_contains",
                "key": "content.m\\.mentions.user_ids",
                "value": USER,
            }
        ]

    def test_spec_definitions(self) -> None:
        rules = default_rules_for_user(USER)
        by_id = {r["rule_id"]: r for kind in rules.values() for r in kind}
        assert by_id[".m.rule.master"] == {
            "rule_id": ".m.rule.master",
            "default": True,
            "enabled": False,
            "conditions": [],
            "actions": [],
        }
        assert by_id[".m.rule.is_room_mention"]["conditions"] == [
            {"kind": "event_property_is", "key": "content.m\\.mentions.room", "value": True},
            {"kind": "sender_notification_permission", "key": "room"},
        ]
        assert by_id[".m.rule.is_room_mention"]["actions"] == ["notify", {"set_tweak": "highlight"}]
        assert by_id[".m.rule.tombstone"]["conditions"][1] == {
            "kind": "event_match",
            "key": "state_key",
            "pattern": "",
        }
        assert by_id[".m.rule.suppress_edits"]["conditions"] == [
            {
                "kind": "event_property_is",
                "key": "content.m\\.relates_to.rel_type",
                "value": "m.replace",
            }
        ]
        assert by_id[".m.rule.call"]["actions"] == [
            "notify",
            {"set_tweak": "sound", "value": "ring"},
        ]
        assert by_id[".m.rule.encrypted_room_one_to_one"]["conditions"][0] == {
            "kind": "room_member_count",
            "is": "2",
        }
        assert by_id[".m.rule.message"]["actions"] == ["notify"]

    def test_fresh_copies(self) -> None:
        first = default_rules_for_user(USER)
        first["override"][0]["actions"].append("notify")
        assert default_rules_for_user(USER)["override"][0]["actions"] == []


# ---------------------------------------------------------------------------
# PushRuleSet
# ---------------------------------------------------------------------------


class TestClientJson:
    def test_defaults_only(self) -> None:
        body = PushRuleSet(USER).to_client_json()
        assert list(body) == ["global"]
        assert body["global"] == default_rules_for_user(USER)

    def test_kind_specific_keys(self) -> None:
        rs = PushRuleSet(USER)
        rs.add_rule("content", "cake", {"pattern": "cake*lie", "actions": ["notify"]})
        rs.add_rule("room", "!room:x", {"actions": []})
        rs.add_rule("sender", "@spam:x", {"actions": []})
        rs.add_rule("override", "o", {"actions": ["notify"]})
        g = rs.to_client_json()["global"]
        assert g["content"] == [
            {
                "rule_id": "cake",
                "default": False,
                "enabled": True,
                "actions": ["notify"],
                "pattern": "cake*lie",
            }
        ]
        assert g["room"] == [
            {"rule_id": "!room:x", "default": False, "enabled": True, "actions": []}
        ]
        assert g["sender"] == [
            {"rule_id": "@spam:x", "default": False, "enabled": True, "actions": []}
        ]
        assert g["override"][1] == {
            "rule_id": "o",
            "default": False,
            "enabled": True,
            "actions": ["notify"],
            "conditions": [],
        }

    def test_master_stays_first_user_rules_before_other_defaults(self) -> None:
        rs = PushRuleSet(USER)
        rs.add_rule("override", "mine", {"actions": [], "conditions": []})
        rs.add_rule("underride", "low", {"actions": [], "conditions": []})
        g = rs.to_client_json()["global"]
        assert ids(g["override"]) == [".m.rule.master", "mine", *SPEC_OVERRIDE_ORDER[1:]]
        assert ids(g["underride"]) == ["low", *SPEC_UNDERRIDE_ORDER]

    def test_output_is_a_copy(self) -> None:
        rs = PushRuleSet(USER)
        rs.add_rule("override", "o", {"actions": [{"set_tweak": "sound", "value": "x"}]})
        out = rs.to_client_json()
        out["global"]["override"][1]["actions"][0]["value"] = "changed"
        out["global"]["override"][0]["conditions"].append({"kind": "x"})
        again = rs.to_client_json()["global"]["override"]
        assert again[1]["actions"][0]["value"] == "x"
        assert again[0]["conditions"] == []


class TestAddRule:
    def test_new_rules_go_first_and_are_enabled(self) -> None:
        rs = PushRuleSet(USER)
        for name in ("a", "b", "c"):
            rs.add_rule("override", name, {"actions": ["notify"], "conditions": []})
        assert custom_ids(rs, "override") == ["c", "b", "a"]
        assert all(r.enabled for r in rs.rules("override") if not r.default)

    def test_before(self) -> None:
        rs = PushRuleSet(USER)
        for name in ("a", "b", "c"):
            rs.add_rule("content", name, {"pattern": name, "actions": []})
        # order: c, b, a
        rs.add_rule("content", "x", {"pattern": "x", "actions": []}, before="a")
        assert custom_ids(rs, "content") == ["c", "b", "x", "a"]
        rs.add_rule("content", "y", {"pattern": "y", "actions": []}, before="c")
        assert custom_ids(rs, "content") == ["y", "c", "b", "x", "a"]

    def test_after(self) -> None:
        rs = PushRuleSet(USER)
        for name in ("a", "b", "c"):
            rs.add_rule("room", f"!{name}:x", {"actions": []})
        rs.add_rule("room", "!x:x", {"actions": []}, after="!a:x")
        assert custom_ids(rs, "room") == ["!c:x", "!b:x", "!a:x", "!x:x"]
        rs.add_rule("room", "!y:x", {"actions": []}, after="!c:x")
        assert custom_ids(rs, "room") == ["!c:x", "!y:x", "!b:x", "!a:x", "!x:x"]

    def test_before_wins_over_after(self) -> None:
        rs = PushRuleSet(USER)
        for name in ("a", "b", "c"):
            rs.add_rule("sender", f"@{name}:x", {"actions": []})
        rs.add_rule("sender", "@x:x", {"actions": []}, before="@a:x", after="@c:x")
        assert custom_ids(rs, "sender") == ["@c:x", "@b:x", "@x:x", "@a:x"]

    def test_update_keeps_position_and_enabled(self) -> None:
        rs = PushRuleSet(USER)
        for name in ("a", "b", "c"):
            rs.add_rule("override", name, {"actions": []})
        rs.set_enabled("override", "b", False)
        rs.add_rule("override", "b", {"actions": ["notify"], "conditions": [{"kind": "k"}]})
        assert custom_ids(rs, "override") == ["c", "b", "a"]
        rule = rs.get_rule("override", "b")
        assert rule.enabled is False
        assert rule.actions == ("notify",)
        assert rule.conditions == ({"kind": "k"},)

    def test_update_with_before_moves(self) -> None:
        rs = PushRuleSet(USER)
        for name in ("a", "b", "c"):
            rs.add_rule("override", name, {"actions": []})
        rs.add_rule("override", "c", {"actions": []}, after="a")
        assert custom_ids(rs, "override") == ["b", "a", "c"]
        rs.add_rule("override", "c", {"actions": []}, before="b")
        assert custom_ids(rs, "override") == ["c", "b", "a"]

    def test_before_after_not_found(self) -> None:
        rs = PushRuleSet(USER)
        rs.add_rule("override", "a", {"actions": []})
        with raises("M_UNKNOWN", 400):
            rs.add_rule("override", "x", {"actions": []}, before="missing")
        with raises("M_UNKNOWN", 400):
            rs.add_rule("override", "x", {"actions": []}, after="missing")
        # a rule of another kind does not count
        rs.add_rule("underride", "u", {"actions": []})
        with raises("M_UNKNOWN", 400):
            rs.add_rule("override", "x", {"actions": []}, after="u")
        assert custom_ids(rs, "override") == ["a"]

    def test_not_relative_to_server_default_rules(self) -> None:
        rs = PushRuleSet(USER)
        with raises("M_UNKNOWN", 400):
            rs.add_rule("override", "x", {"actions": []}, before=".m.rule.master")
        with raises("M_UNKNOWN", 400):
            rs.add_rule("underride", "x", {"actions": []}, after=".m.rule.message")

    def test_not_relative_to_itself(self) -> None:
        rs = PushRuleSet(USER)
        rs.add_rule("override", "a", {"actions": []})
        with raises("M_UNKNOWN", 400):
            rs.add_rule("override", "a", {"actions": []}, before="a")

    @pytest.mark.parametrize(
        "rule_id",
        ["", ".m.rule.master", ".mine", "a/b", "a\\b"],
    )
    def test_bad_rule_ids(self, rule_id: str) -> None:
        with raises("M_INVALID_PARAM", 400):
            PushRuleSet(USER).add_rule("override", rule_id, {"actions": []})

    def test_unknown_kind(self) -> None:
        rs = PushRuleSet(USER)
        with raises("M_INVALID_PARAM", 400):
            rs.add_rule("global", "x", {"actions": []})
        for op in (
            lambda: rs.get_rule("nope", "x"),
            lambda: rs.delete_rule("nope", "x"),
            lambda: rs.set_enabled("nope", "x", True),
            lambda: rs.set_actions("nope", "x", []),
            lambda: rs.rules("nope"),
        ):
            with raises("M_INVALID_PARAM", 400):
                op()

    @pytest.mark.parametrize(
        ("kind", "body"),
        [
            ("override", {}),
            ("override", []),
            ("override", "x"),
            ("override", {"actions": "notify"}),
            ("override", {"actions": ["bogus"]}),
            ("override", {"actions": [1]}),
            ("override", {"actions": [{"value": 1}]}),
            ("override", {"actions": [{"set_tweak": 1}]}),
            ("override", {"actions": [], "conditions": {}}),
            ("override", {"actions": [], "conditions": ["x"]}),
            ("override", {"actions": [], "conditions": [{"key": "type"}]}),
            ("underride", {"actions": [], "conditions": [{"kind": 3}]}),
            ("content", {"actions": []}),
            ("content", {"actions": [], "pattern": 5}),
            ("room", {"pattern": "x"}),
            ("sender", {"actions": None}),
        ],
    )
    def test_bad_bodies(self, kind: str, body: Any) -> None:
        rs = PushRuleSet(USER)
        with raises("M_BAD_JSON", 400):
            rs.add_rule(kind, "x", body)
        assert custom_ids(rs, kind) == []

    def test_conditions_optional_and_unknown_kinds_accepted(self) -> None:
        rs = PushRuleSet(USER)
        rs.add_rule("override", "a", {"actions": []})
        rs.add_rule("override", "b", {"actions": [], "conditions": [{"kind": "future_thing"}]})
        assert rs.get_rule("override", "a").conditions == ()
        assert rs.get_rule("override", "b").conditions == ({"kind": "future_thing"},)

    def test_inapplicable_keys_ignored(self) -> None:
        rs = PushRuleSet(USER)
        rs.add_rule("room", "!r:x", {"actions": [], "conditions": [{"kind": "x"}], "pattern": "p"})
        assert rs.get_rule("room", "!r:x").to_json() == {
            "rule_id": "!r:x",
            "default": False,
            "enabled": True,
            "actions": [],
        }

    def test_historical_actions_kept(self) -> None:
        rs = PushRuleSet(USER)
        rs.add_rule("override", "a", {"actions": ["dont_notify"]})
        rs.add_rule("override", "b", {"actions": ["notify", "coalesce"]})
        assert rs.get_rule("override", "a").actions == ("dont_notify",)
        assert rs.get_rule("override", "b").actions == ("notify", "coalesce")

    def test_body_is_copied(self) -> None:
        rs = PushRuleSet(USER)
        body: dict[str, Any] = {
            "actions": [{"set_tweak": "sound", "value": "a"}],
            "conditions": [{"kind": "event_match", "key": "type", "pattern": "x"}],
        }
        rs.add_rule("override", "a", body)
        body["actions"][0]["value"] = "changed"
        body["conditions"][0]["pattern"] = "changed"
        rule = rs.get_rule("override", "a")
        assert rule.actions == ({"set_tweak": "sound", "value": "a"},)
        assert rule.conditions[0]["pattern"] == "x"

    def test_error_is_matrix_error(self) -> None:
        with pytest.raises(MatrixError) as info:
            PushRuleSet(USER).add_rule("override", ".x", {"actions": []})
        assert info.value.to_json()["errcode"] == "M_INVALID_PARAM"


class TestGetDeleteEnableActions:
    def test_get(self) -> None:
        rs = PushRuleSet(USER)
        assert rs.get_rule("override", ".m.rule.master").enabled is False
        assert rs.get_rule("underride", ".m.rule.message").actions == ("notify",)
        with raises("M_NOT_FOUND", 404):
            rs.get_rule("override", "nope")
        with raises("M_NOT_FOUND", 404):
            rs.get_rule("underride", ".m.rule.master")  # wrong kind

    def test_delete_custom(self) -> None:
        rs = PushRuleSet(USER)
        rs.add_rule("override", "a", {"actions": []})
        rs.add_rule("override", "b", {"actions": []})
        rs.delete_rule("override", "a")
        assert custom_ids(rs, "override") == ["b"]
        with raises("M_NOT_FOUND", 404):
            rs.delete_rule("override", "a")

    def test_cannot_delete_default(self) -> None:
        rs = PushRuleSet(USER)
        with raises("M_NOT_FOUND", 404):
            rs.delete_rule("override", ".m.rule.master")
        assert ids(rs.ruleset_json()["override"]) == SPEC_OVERRIDE_ORDER

    def test_cannot_replace_default(self) -> None:
        rs = PushRuleSet(USER)
        with raises("M_INVALID_PARAM", 400):
            rs.add_rule("underride", ".m.rule.message", {"actions": []})

    def test_enable_disable(self) -> None:
        rs = PushRuleSet(USER)
        rs.set_enabled("override", ".m.rule.master", True)
        assert rs.get_rule("override", ".m.rule.master").enabled is True
        rs.add_rule("content", "c", {"pattern": "x", "actions": []})
        rs.set_enabled("content", "c", False)
        assert rs.get_rule("content", "c").enabled is False
        rs.set_enabled("content", "c", True)
        assert rs.get_rule("content", "c").enabled is True
        with raises("M_NOT_FOUND", 404):
            rs.set_enabled("content", "missing", True)
        with raises("M_BAD_JSON", 400):
            rs.set_enabled("content", "c", "true")
        with raises("M_BAD_JSON", 400):
            rs.set_enabled("content", "c", 1)

    def test_set_actions(self) -> None:
        rs = PushRuleSet(USER)
        rs.set_actions("underride", ".m.rule.message", ["notify", {"set_tweak": "highlight"}])
        rule = rs.get_rule("underride", ".m.rule.message")
        assert rule.actions == ("notify", {"set_tweak": "highlight"})
        assert rule.default is True
        # other default rules untouched
        assert rs.get_rule("underride", ".m.rule.encrypted").actions == ("notify",)
        rs.add_rule("sender", "@b:x", {"actions": ["notify"]})
        rs.set_actions("sender", "@b:x", ["dont_notify"])
        assert rs.get_rule("sender", "@b:x").actions == ("dont_notify",)
        with raises("M_NOT_FOUND", 404):
            rs.set_actions("sender", "@c:x", [])
        with raises("M_BAD_JSON", 400):
            rs.set_actions("sender", "@b:x", "notify")

    def test_default_changes_are_per_user(self) -> None:
        a = PushRuleSet(USER)
        a.set_enabled("override", ".m.rule.master", True)
        b = PushRuleSet(USER)
        assert b.get_rule("override", ".m.rule.master").enabled is False

    def test_generation_and_cache(self) -> None:
        rs = PushRuleSet(USER)
        calls: list[int] = []

        def factory(r: PushRuleSet) -> int:
            calls.append(1)
            return len(list(r.ordered_rules()))

        assert rs.cached("k", factory) == 15
        assert rs.cached("k", factory) == 15
        assert len(calls) == 1
        gen = rs.generation
        rs.add_rule("override", "a", {"actions": []})
        assert rs.generation > gen
        assert rs.cached("k", factory) == 16
        assert len(calls) == 2
        # a failed change changes nothing
        gen = rs.generation
        with raises("M_BAD_JSON", 400):
            rs.add_rule("override", "b", {})
        assert rs.generation == gen


class TestStorage:
    def test_round_trip(self) -> None:
        rs = PushRuleSet(USER)
        rs.add_rule("override", "o1", {"actions": ["notify"], "conditions": [{"kind": "k"}]})
        rs.add_rule("override", "o2", {"actions": []}, after="o1")
        rs.add_rule("content", "c", {"pattern": "cake", "actions": ["notify"]})
        rs.add_rule("room", "!r:x", {"actions": []})
        rs.set_enabled("room", "!r:x", False)
        rs.set_enabled("override", ".m.rule.master", True)
        rs.set_actions("underride", ".m.rule.message", [])
        stored = rs.to_storage_json()
        reloaded = PushRuleSet.from_storage_json(USER, json.loads(json.dumps(stored)))
        assert reloaded.to_client_json() == rs.to_client_json()
        assert reloaded.to_storage_json() == stored

    def test_defaults_not_stored(self) -> None:
        stored = PushRuleSet(USER).to_storage_json()
        assert stored == {"version": 1, "rules": {}, "default_changes": {}}

    def test_empty_or_missing(self) -> None:
        empty: list[dict[str, Any] | None] = [None, {}]
        for data in empty:
            assert PushRuleSet.from_storage_json(USER, data).to_client_json() == (
                PushRuleSet(USER).to_client_json()
            )

    def test_malformed_entries_skipped(self) -> None:
        data: dict[str, Any] = {
            "version": 1,
            "rules": {
                "override": [
                    "junk",
                    {"rule_id": ".m.rule.master", "actions": []},
                    {"rule_id": "ok", "actions": ["notify"], "enabled": False},
                    {"rule_id": "ok", "actions": []},  # duplicate
                    {"rule_id": "no_actions"},
                ],
                "content": [{"rule_id": "nopattern", "actions": []}],
                "bogus_kind": [{"rule_id": "x", "actions": []}],
            },
            "default_changes": {
                "override": {
                    ".m.rule.master": {"enabled": "yes", "actions": ["bogus"]},
                    ".m.rule.reaction": {"actions": ["notify"]},
                },
                "underride": "junk",
            },
        }
        rs = PushRuleSet.from_storage_json(USER, data)
        assert custom_ids(rs, "override") == ["ok"]
        assert rs.get_rule("override", "ok").enabled is False
        assert rs.get_rule("override", "ok").actions == ("notify",)
        assert custom_ids(rs, "content") == []
        assert rs.get_rule("override", ".m.rule.master").enabled is False
        assert rs.get_rule("override", ".m.rule.reaction").actions == ("notify",)


def test_validate_actions() -> None:
    assert validate_actions(["notify", {"set_tweak": "sound", "value": "x"}]) == [
        "notify",
        {"set_tweak": "sound", "value": "x"},
    ]
    # Kept as set (a client reads back what it wrote); evaluation ignores them.
    assert validate_actions(["dont_notify", "coalesce"]) == ["dont_notify", "coalesce"]
    assert validate_actions([{"set_tweak": "custom", "value": {"nested": [1]}}]) == [
        {"set_tweak": "custom", "value": {"nested": [1]}}
    ]
