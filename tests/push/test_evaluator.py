"""Push rule evaluation: every default rule, every condition kind, priorities,
action helpers and reuse of the prepared event across many users."""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import pytest

from homeserver.push import evaluator
from homeserver.push.default_rules import DEFAULT_UNDERRIDE_RULE_IDS
from homeserver.push.evaluator import (
    PreparedEvent,
    PushContext,
    actions_highlight,
    actions_notify,
    actions_sound,
    actions_tweaks,
    compile_condition,
    evaluate,
    evaluate_for_users,
    find_matching_rule,
    flatten_event,
    glob_matches,
    parse_dotted_path,
)
from homeserver.push.rules import Action, PushRuleSet

USER = "@alice:example.org"
OTHER = "@bob:example.org"
ROOM = "!room:example.org"

Event = dict[str, Any]


def ctx(**kwargs: Any) -> PushContext:
    kwargs.setdefault("user_id", USER)
    kwargs.setdefault("room_member_count", 10)
    return PushContext(**kwargs)


def message(
    body: str = "hello", *, sender: str = OTHER, extra: Mapping[str, Any] | None = None
) -> Event:
    """An m.room.message; ``extra`` is merged into its content."""
    return {
        "type": "m.room.message",
        "sender": sender,
        "room_id": ROOM,
        "event_id": "$ev",
        "content": {"msgtype": "m.text", "body": body, **(extra or {})},
    }


def state(event_type: str, state_key: str = "", content: Any = None, sender: str = OTHER) -> Event:
    return {
        "type": event_type,
        "state_key": state_key,
        "sender": sender,
        "room_id": ROOM,
        "content": content if content is not None else {},
    }


def cond(
    condition: Mapping[str, Any], event: Mapping[str, Any], context: PushContext | None = None
) -> bool:
    return compile_condition(condition).matches(PreparedEvent(event), context or ctx())


def match(key: str, pattern: str, event: Mapping[str, Any]) -> bool:
    return cond({"kind": "event_match", "key": key, "pattern": pattern}, event)


def matched_id(
    rs: PushRuleSet, event: Mapping[str, Any], context: PushContext | None = None
) -> str | None:
    rule = find_matching_rule(rs, event, context or ctx())
    return None if rule is None else rule.rule_id


def default_rule_matches(rule_id: str, event: Mapping[str, Any], context: PushContext) -> bool:
    """Whether that one default rule's conditions all hold (ignoring priorities)."""
    rs = PushRuleSet(context.user_id)
    rule = next(r for r in rs.ordered_rules() if r.rule_id == rule_id)
    prepared = PreparedEvent(event)
    return all(compile_condition(c).matches(prepared, context) for c in rule.conditions)


# ---------------------------------------------------------------------------
# Every default rule: an event that triggers it, one that does not
# ---------------------------------------------------------------------------

PL_ROOM_MENTION = {"users": {OTHER: 50}, "users_default": 0}

DEFAULT_RULE_CASES: list[tuple[str, Event, dict[str, Any], Event, dict[str, Any]]] = [
    (".m.rule.master", message(), {}, message(), {}),  # non-trigger: disabled by default
    (
        ".m.rule.suppress_notices",
        message(extra={"msgtype": "m.notice"}),
        {},
        message(extra={"msgtype": "m.text"}),
        {},
    ),
    (
        ".m.rule.invite_for_me",
        state("m.room.member", USER, {"membership": "invite"}),
        {},
        state("m.room.member", "@carol:example.org", {"membership": "invite"}),
        {},
    ),
    (
        ".m.rule.member_event",
        state("m.room.member", OTHER, {"membership": "join"}),
        {},
        message(),
        {},
    ),
    (
        ".m.rule.is_user_mention",
        message("hi", extra={"m.mentions": {"user_ids": [OTHER, USER]}}),
        {},
        message("hi alice", extra={"m.mentions": {"user_ids": [OTHER]}}),
        {},
    ),
    (
        ".m.rule.is_room_mention",
        message("@room", extra={"m.mentions": {"room": True}}),
        {"power_levels": PL_ROOM_MENTION},
        message("@room", extra={"m.mentions": {"room": True}}),
        {"power_levels": {"users": {OTHER: 49}}},
    ),
    (
        ".m.rule.tombstone",
        state("m.room.tombstone", "", {"body": "moved", "replacement_room": "!new:x"}),
        {},
        {"type": "m.room.tombstone", "sender": OTHER, "content": {}},  # not a state event
        {},
    ),
    (
        ".m.rule.reaction",
        {
            "type": "m.reaction",
            "sender": OTHER,
            "content": {"m.relates_to": {"rel_type": "m.annotation", "key": "👍"}},
        },
        {},
        message(),
        {},
    ),
    (
        ".m.rule.room.server_acl",
        state("m.room.server_acl", "", {"allow": ["*"]}),
        {},
        state("m.room.server_acl", "not-empty", {"allow": ["*"]}),
        {},
    ),
    (
        ".m.rule.suppress_edits",
        message("* fixed", extra={"m.relates_to": {"rel_type": "m.replace", "event_id": "$x"}}),
        {},
        message("in thread", extra={"m.relates_to": {"rel_type": "m.thread", "event_id": "$x"}}),
        {},
    ),
    (
        ".m.rule.call",
        {"type": "m.call.invite", "sender": OTHER, "content": {"call_id": "1"}},
        {},
        {"type": "m.call.answer", "sender": OTHER, "content": {"call_id": "1"}},
        {},
    ),
    (
        ".m.rule.encrypted_room_one_to_one",
        {"type": "m.room.encrypted", "sender": OTHER, "content": {"ciphertext": "x"}},
        {"room_member_count": 2},
        {"type": "m.room.encrypted", "sender": OTHER, "content": {"ciphertext": "x"}},
        {"room_member_count": 3},
    ),
    (
        ".m.rule.room_one_to_one",
        message(),
        {"room_member_count": 2},
        message(),
        {"room_member_count": 3},
    ),
    (
        ".m.rule.message",
        message(),
        {},
        state("m.room.topic", "", {"topic": "hello"}),
        {},
    ),
    (
        ".m.rule.encrypted",
        {"type": "m.room.encrypted", "sender": OTHER, "content": {}},
        {},
        message(),
        {},
    ),
]


def test_every_default_rule_has_a_case() -> None:
    all_ids = [r.rule_id for r in PushRuleSet(USER).ordered_rules()]
    assert sorted(all_ids) == sorted(case[0] for case in DEFAULT_RULE_CASES)


@pytest.mark.parametrize(
    ("rule_id", "hit", "hit_ctx", "miss", "miss_ctx"),
    DEFAULT_RULE_CASES,
    ids=[case[0] for case in DEFAULT_RULE_CASES],
)
def test_default_rule(
    rule_id: str,
    hit: Event,
    hit_ctx: dict[str, Any],
    miss: Event,
    miss_ctx: dict[str, Any],
) -> None:
    rs = PushRuleSet(USER)
    if rule_id == ".m.rule.master":
        # Its (empty) conditions match everything, but it is disabled by default.
        assert matched_id(rs, miss, ctx(**miss_ctx)) != rule_id
        rs.set_enabled("override", rule_id, True)
    else:
        assert default_rule_matches(rule_id, hit, ctx(**hit_ctx))
        assert not default_rule_matches(rule_id, miss, ctx(**miss_ctx))
        assert matched_id(rs, miss, ctx(**miss_ctx)) != rule_id
    # With the full default rule set, the triggering event lands on this rule.
    assert matched_id(rs, hit, ctx(**hit_ctx)) == rule_id
    expected = rs.get_rule(_kind(rule_id), rule_id).to_json()["actions"]
    assert evaluate(rs, hit, ctx(**hit_ctx)) == expected


def _kind(rule_id: str) -> str:
    return "underride" if rule_id in DEFAULT_UNDERRIDE_RULE_IDS else "override"


class TestDefaultOutcomes:
    """What the defaults mean for common events."""

    def test_plain_message_in_group_notifies_without_sound(self) -> None:
        actions = evaluate(PushRuleSet(USER), message(), ctx())
        assert actions_notify(actions) and not actions_highlight(actions)
        assert actions_sound(actions) is None

    def test_mention_highlights_with_sound(self) -> None:
        event = message("hey", extra={"m.mentions": {"user_ids": [USER]}})
        actions = evaluate(PushRuleSet(USER), event, ctx())
        assert actions_highlight(actions) and actions_sound(actions) == "default"

    def test_body_mentions_no_longer_highlight(self) -> None:
        # v1.17 removed .m.rule.contains_display_name / contains_user_name / roomnotif
        event = message("alice: @room Alice")
        actions = evaluate(PushRuleSet(USER), event, ctx(user_display_name="Alice"))
        assert actions == ["notify"]

    def test_room_mention_power(self) -> None:
        event = message("@room", extra={"m.mentions": {"room": True}})
        rs = PushRuleSet(USER)
        pl = {"users": {OTHER: 10}, "notifications": {"room": 10}}
        assert actions_highlight(evaluate(rs, event, ctx(power_levels=pl)))
        assert not actions_highlight(evaluate(rs, event, ctx(power_levels={})))
        # m.mentions.room must be the boolean true
        not_bool = message("@room", extra={"m.mentions": {"room": "true"}})
        assert not actions_highlight(evaluate(rs, not_bool, ctx(power_levels=pl)))

    def test_mentions_key_needs_literal_dot(self) -> None:
        # {"m": {"mentions": ...}} is not the property "m.mentions"
        event = message("hi", extra={"m": {"mentions": {"user_ids": [USER]}}})
        assert not default_rule_matches(".m.rule.is_user_mention", event, ctx())

    def test_master_suppresses_everything(self) -> None:
        rs = PushRuleSet(USER)
        rs.add_rule("override", "loud", {"actions": ["notify", {"set_tweak": "highlight"}]})
        rs.set_enabled("override", ".m.rule.master", True)
        assert evaluate(rs, message(), ctx()) == []
        assert matched_id(rs, message(), ctx()) == ".m.rule.master"

    def test_unmatched_event(self) -> None:
        assert evaluate(PushRuleSet(USER), state("m.room.name", "", {"name": "x"}), ctx()) is None

    def test_own_events_never_notify(self) -> None:
        rs = PushRuleSet(USER)
        event = message("x", sender=USER, extra={"m.mentions": {"user_ids": [USER]}})
        assert evaluate(rs, event, ctx()) is None
        assert find_matching_rule(rs, event, ctx()) is None


# ---------------------------------------------------------------------------
# Paths and flattening
# ---------------------------------------------------------------------------


class TestPaths:
    @pytest.mark.parametrize(
        ("key", "path"),
        [
            ("content.body", ("content", "body")),
            ("type", ("type",)),
            ("content.m\\.relates_to.rel_type", ("content", "m.relates_to", "rel_type")),
            ("content.m\\\\foo", ("content", "m\\foo")),
            ("content.m\\xfoo", ("content", "m\\xfoo")),
            ("content.a\\", ("content", "a\\")),
            ("content.", ("content", "")),
            ("", ("",)),
            ("a\\\\.b", ("a\\", "b")),
            ("a\\\\\\.b", ("a\\.b",)),
        ],
    )
    def test_parse(self, key: str, path: tuple[str, ...]) -> None:
        assert parse_dotted_path(key) == path

    def test_flatten(self) -> None:
        flat = flatten_event(
            {
                "type": "t",
                "content": {
                    "m.x": {"y": 1},
                    "f": 1.5,
                    "n": None,
                    "b": False,
                    "list": ["a", 1, True, None, {"o": 1}, [2], 2.5],
                },
            }
        )
        assert flat == {
            ("type",): "t",
            ("content", "m.x", "y"): 1,
            ("content", "n"): None,
            ("content", "b"): False,
            ("content", "list"): ("a", 1, True, None),
        }

    def test_deep_nesting_does_not_recurse(self) -> None:
        event: dict[str, Any] = {"leaf": "x"}
        for _ in range(5000):
            event = {"a": event}
        flat = flatten_event(event)
        assert list(flat.values()) == ["x"]


# ---------------------------------------------------------------------------
# event_match and globs
# ---------------------------------------------------------------------------


def _ref_glob(pattern: str, value: str) -> bool:
    """Reference: dynamic programming over the whole value, case-insensitive."""
    p, v = pattern.lower(), value.lower()
    table = [[False] * (len(v) + 1) for _ in range(len(p) + 1)]
    table[0][0] = True
    for i in range(1, len(p) + 1):
        table[i][0] = table[i - 1][0] and p[i - 1] == "*"
        for j in range(1, len(v) + 1):
            if p[i - 1] == "*":
                table[i][j] = table[i - 1][j] or table[i][j - 1]
            else:
                table[i][j] = table[i - 1][j - 1] and p[i - 1] in ("?", v[j - 1])
    return table[len(p)][len(v)]


def _is_word_char(c: str) -> bool:
    return c.isascii() and (c.isalnum() or c == "_")


def _ref_words(pattern: str, value: str) -> bool:
    n = len(value)
    for i in range(n + 1):
        if i > 0 and _is_word_char(value[i - 1]):
            continue
        for j in range(i, n + 1):
            if j < n and _is_word_char(value[j]):
                continue
            if _ref_glob(pattern, value[i:j]):
                return True
    return False


class TestGlob:
    def test_spec_topic_example(self) -> None:
        topic = state("m.room.topic", "", {"topic": "Lunch plans"})
        assert match("content.topic", "lunc?*", topic)
        for value, expected in [("LUNCH", True), (" lunch", False), ("lunc", False)]:
            assert (
                match("content.topic", "lunc?*", state("m.room.topic", "", {"topic": value}))
                is expected
            )
        assert not match("content.topic", "lunc?*", state("m.room.topic", "", {"topic": None}))

    def test_spec_body_example(self) -> None:
        for body, expected in [
            ("An example event.", True),
            ("exple", True),
            ("An exciting triple-whammy", True),
            ("An examples event", False),
            ("counterexample", False),
        ]:
            assert match("content.body", "ex*ple", message(body)) is expected, body

    @pytest.mark.parametrize(
        ("pattern", "value", "expected"),
        [
            ("m.room.message", "m.room.message", True),
            ("m.room.message", "M.ROOM.MESSAGE", True),
            ("m.room.message", "m.room.message.extra", False),
            ("m.room.message", "xm.room.message", False),
            ("m.room.*", "m.room.message", True),
            ("m.room.*", "m.room.", True),
            ("m.room.*", "m.roomy", False),
            ("m.room.?", "m.room.x", True),
            ("m.room.?", "m.room.", False),
            ("m.room.?", "m.room.xy", False),
            ("*", "", True),
            ("*", "anything at all", True),
            ("", "", True),
            ("", "x", False),
            ("?", "", False),
            ("**", "abc", True),
            ("a**c", "abc", True),
            ("*a*b*", "xxaxxbxx", True),
            ("*a*b*", "xxbxxaxx", False),
            ("a*a", "a", False),
            ("a*a", "aa", True),
            ("m.room", "mxroom", False),  # '.' is literal
            ("a+b", "a+b", True),
            ("a+b", "aab", False),
            ("(x)[y]{1}$^|\\", "(x)[y]{1}$^|\\", True),
            ("[ab]", "a", False),  # no character classes
            ("line1*line2", "line1\nmiddle\nline2", True),
            ("a?b", "a\nb", True),
            ("ÉCOLE", "école", True),
            ("straße", "STRASSE", False),  # simple case folding only
            ("日本*", "日本語", True),
            ("??", "日本", True),
            ("🎉", "🎉", True),
        ],
    )
    def test_whole_value(self, pattern: str, value: str, expected: bool) -> None:
        assert glob_matches(pattern, value) is expected
        assert match("content.topic", pattern, {"content": {"topic": value}}) is expected

    @pytest.mark.parametrize(
        ("pattern", "body", "expected"),
        [
            ("hello", "hello", True),
            ("hello", "say hello!", True),
            ("hello", "HELLO there", True),
            ("hello", "hellothere", False),
            ("hell", "hello", False),
            ("ello", "hello", False),
            ("foo", "foo_bar", False),  # '_' is a word character
            ("foo", "foo-bar", True),
            ("foo", "foo1", False),
            ("foo", "1foo", False),
            ("foo", "(foo)", True),
            ("foo", "foo\nbar", True),
            ("foo bar", "x foo bar y", True),
            ("foo*", "foobar baz", True),
            ("foo*", "xfoobar", False),
            ("*bar", "foobar baz", True),
            ("*bar", "foobarx", False),
            ("f?o", "say fxo now", True),
            ("a*b", "a x a y b", True),
            ("a*b", "ab", True),
            ("a*b", "abc", False),
            ("a*b*c", "a b c", True),
            ("a*b*c", "a c b", False),
            ("*", "", True),
            ("*", "anything", True),
            ("@room", "hi @room", True),
            ("@room", "x@room", False),  # must start after a boundary character
            ("cake*lie", "The cake is a lie", True),
            ("cake*lie", "The cakes are lies", False),
            # Boundaries are ASCII-defined: non-ASCII letters are boundaries
            ("caf", "café", True),
            ("josé", "hi josé!", True),
            ("JOSÉ", "hi josé!", True),
            ("日本", "日本語", True),
        ],
    )
    def test_body_word_boundaries(self, pattern: str, body: str, expected: bool) -> None:
        assert glob_matches(pattern, body, word_boundary=True) is expected
        assert match("content.body", pattern, message(body)) is expected

    def test_only_content_body_is_special(self) -> None:
        event = {"content": {"body": "say hello", "text": "say hello"}}
        assert match("content.body", "hello", event)
        assert not match("content.text", "hello", event)
        # A top-level key called "content.body" is a different property
        assert not match("content\\.body", "hello", {"content.body": "say hello"})
        assert match("content\\.body", "say hello", {"content.body": "say hello"})

    def test_kelvin_sign_is_a_boundary(self) -> None:
        # U+212A folds to "k", but is not in [A-Za-z0-9_], so it is a boundary.
        assert glob_matches("ok", "\u212aok", word_boundary=True)

    def test_agrees_with_reference(self) -> None:
        rng = random.Random(1234)
        pattern_alphabet = "ab_ -*?"
        value_alphabet = "aAb_ -"
        for _ in range(4000):
            pattern = "".join(rng.choice(pattern_alphabet) for _ in range(rng.randint(0, 6)))
            value = "".join(rng.choice(value_alphabet) for _ in range(rng.randint(0, 9)))
            assert glob_matches(pattern, value) is _ref_glob(pattern, value), (pattern, value)
            assert glob_matches(pattern, value, word_boundary=True) is _ref_words(pattern, value), (
                pattern,
                value,
            )

    def test_large_adversarial_body(self) -> None:
        # Quadratic with a backtracking regex; linear pieces-based matching.
        body = "a " * 100_000
        assert not glob_matches("a*a*a*b", body, word_boundary=True)
        assert not glob_matches("*a*a*a*b", body)
        assert glob_matches("a*a*a", body, word_boundary=True)

    @pytest.mark.parametrize(
        "value",
        [None, 1, 0, True, False, ["m.room.message"], {"x": "y"}, 1.5],
    )
    def test_non_strings_never_match(self, value: Any) -> None:
        event = {"type": "t", "content": {"v": value}}
        assert not match("content.v", "*", event)
        assert not match("content.v", "m.room.message", event)

    def test_absent_never_matches(self) -> None:
        assert not match("content.missing", "*", message())
        assert not match("content", "*", message())  # an object, not a string

    @pytest.mark.parametrize(
        "condition",
        [
            {"kind": "event_match", "key": "type"},
            {"kind": "event_match", "pattern": "*"},
            {"kind": "event_match", "key": "type", "pattern": 5},
            {"kind": "event_match", "key": ["type"], "pattern": "*"},
            {"kind": "event_match", "key": "type", "pattern": None},
        ],
    )
    def test_malformed_never_matches(self, condition: dict[str, Any]) -> None:
        assert not cond(condition, message())

    def test_compiled_once(self) -> None:
        a = compile_condition({"kind": "event_match", "key": "type", "pattern": "x*"})
        b = compile_condition({"pattern": "x*", "key": "type", "kind": "event_match"})
        assert a is b


# ---------------------------------------------------------------------------
# event_property_is / event_property_contains
# ---------------------------------------------------------------------------


def is_(key: str, value: Any, event: Mapping[str, Any]) -> bool:
    return cond({"kind": "event_property_is", "key": key, "value": value}, event)


def contains(key: str, value: Any, event: Mapping[str, Any]) -> bool:
    return cond({"kind": "event_property_contains", "key": key, "value": value}, event)


CREATE_EVENT = state(
    "m.room.create",
    "",
    {
        "creator": "@example:example.org",
        "m.federate": True,
        "predecessor": {"event_id": "$something:example.org", "room_id": "!oldroom:example.org"},
        "room_version": "1",
        "count": 1,
        "nothing": None,
        "ratio": 1.0,
    },
)


class TestPropertyIs:
    def test_spec_example(self) -> None:
        assert is_("content.m\\.federate", True, CREATE_EVENT)
        assert not is_("content.m\\.federate", "true", CREATE_EVENT)
        assert not is_("content.m\\.federate", 1, CREATE_EVENT)
        assert not is_("content.m.federate", True, CREATE_EVENT)

    def test_types_are_not_cast(self) -> None:
        assert is_("content.count", 1, CREATE_EVENT)
        assert not is_("content.count", True, CREATE_EVENT)
        assert not is_("content.count", "1", CREATE_EVENT)
        assert not is_("content.room_version", 1, CREATE_EVENT)
        assert is_("content.room_version", "1", CREATE_EVENT)
        assert not is_("content.ratio", 1, CREATE_EVENT)  # floats are not canonical JSON

    def test_exact_and_case_sensitive(self) -> None:
        assert is_("content.predecessor.room_id", "!oldroom:example.org", CREATE_EVENT)
        assert not is_("content.predecessor.room_id", "!OLDROOM:example.org", CREATE_EVENT)
        assert not is_("content.predecessor.room_id", "!oldroom:*", CREATE_EVENT)

    def test_null(self) -> None:
        assert is_("content.nothing", None, CREATE_EVENT)
        assert not is_("content.missing", None, CREATE_EVENT)
        assert not is_("content.creator", None, CREATE_EVENT)

    def test_compound_values_never_match(self) -> None:
        assert not is_("content.predecessor", {"event_id": "$something:example.org"}, CREATE_EVENT)
        event = {"content": {"list": ["a"]}}
        assert not is_("content.list", ["a"], event)

    def test_integer_range(self) -> None:
        big = 2**53
        event = {"content": {"n": big, "m": 2**53 - 1, "neg": -(2**53) + 1}}
        assert not is_("content.n", big, event)
        assert is_("content.m", 2**53 - 1, event)
        assert is_("content.neg", -(2**53) + 1, event)

    def test_backslash_escaping(self) -> None:
        event = {"content": {"m\\foo": "x", "a.b": {"c": "y"}, "m\\xfoo": "z"}}
        assert is_("content.m\\\\foo", "x", event)
        assert is_("content.a\\.b.c", "y", event)
        assert is_("content.m\\xfoo", "z", event)  # other escapes left as-is

    def test_malformed(self) -> None:
        assert not cond({"kind": "event_property_is", "key": "type"}, message())
        assert not cond({"kind": "event_property_is", "value": "m.room.message"}, message())


class TestPropertyContains:
    EVENT = state(
        "m.room.canonical_alias",
        "",
        {
            "alias": "#somewhere:localhost",
            "alt_aliases": ["#somewhere:example.org", "#myroom:example.com"],
            "mixed": [1, True, None, {"o": 1}, ["n"], "s", 2.0],
        },
    )

    def test_spec_example(self) -> None:
        assert contains("content.alt_aliases", "#myroom:example.com", self.EVENT)
        assert not contains("content.alt_aliases", ":example.com", self.EVENT)
        assert not contains("content.alt_aliases", "#MYROOM:example.com", self.EVENT)

    def test_not_an_array(self) -> None:
        assert not contains("content.alias", "#somewhere:localhost", self.EVENT)
        assert not contains("content.missing", "x", self.EVENT)

    def test_types(self) -> None:
        assert contains("content.mixed", 1, self.EVENT)
        assert contains("content.mixed", True, self.EVENT)
        assert contains("content.mixed", None, self.EVENT)
        assert contains("content.mixed", "s", self.EVENT)
        assert not contains("content.mixed", "1", self.EVENT)
        assert not contains("content.mixed", 2, self.EVENT)  # 2.0 is ignored
        assert not contains("content.mixed", {"o": 1}, self.EVENT)
        assert not contains("content.mixed", "n", self.EVENT)
        only_true = {"content": {"l": [True]}}
        assert not contains("content.l", 1, only_true)
        only_one = {"content": {"l": [1]}}
        assert not contains("content.l", True, only_one)


# ---------------------------------------------------------------------------
# contains_display_name
# ---------------------------------------------------------------------------


class TestContainsDisplayName:
    CONDITION = {"kind": "contains_display_name"}

    @pytest.mark.parametrize(
        ("name", "body", "expected"),
        [
            ("Alice", "hi Alice!", True),
            ("Alice", "hi alice", True),
            ("Alice", "ALICE: ping", True),
            ("Alice", "Alicea", False),
            ("Alice", "Malice", False),
            ("Alice", "alice_2", False),
            ("Alice", "alice-2", True),
            ("Alice Smith", "ask alice smith.", True),
            ("B*b", "hi Bob", False),  # not a glob
            ("B*b", "hi b*b", True),
            ("a.c", "abc", False),  # not a regex
            ("Zoë", "hey zoë", True),
            ("Zoë", "hey ZOË", True),
            ("山田", "こんにちは山田さん", True),
            ("Alice", "", False),
        ],
    )
    def test_matching(self, name: str, body: str, expected: bool) -> None:
        assert cond(self.CONDITION, message(body), ctx(user_display_name=name)) is expected

    def test_no_display_name(self) -> None:
        for name in (None, ""):
            assert not cond(self.CONDITION, message("hi"), ctx(user_display_name=name))

    def test_body_not_string(self) -> None:
        event = {"type": "m.room.message", "content": {"body": ["Alice"]}}
        assert not cond(self.CONDITION, event, ctx(user_display_name="Alice"))

    def test_per_user_names_share_a_prepared_event(self) -> None:
        prepared = PreparedEvent(message("hi Alice"))
        compiled = compile_condition(self.CONDITION)
        assert compiled.matches(prepared, ctx(user_display_name="alice"))
        assert not compiled.matches(prepared, ctx(user_id=OTHER, user_display_name="Bob"))
        assert compiled.matches(prepared, ctx(user_display_name="ALICE"))


# ---------------------------------------------------------------------------
# room_member_count
# ---------------------------------------------------------------------------


class TestRoomMemberCount:
    @pytest.mark.parametrize(
        ("spec", "count", "expected"),
        [
            ("2", 2, True),
            ("2", 3, False),
            ("==2", 2, True),
            ("==2", 1, False),
            ("<10", 9, True),
            ("<10", 10, False),
            (">10", 11, True),
            (">10", 10, False),
            ("<=10", 10, True),
            ("<=10", 11, False),
            (">=10", 10, True),
            (">=10", 9, False),
            ("0", 0, True),
            ("007", 7, True),
        ],
    )
    def test_operators(self, spec: str, count: int, expected: bool) -> None:
        condition = {"kind": "room_member_count", "is": spec}
        assert cond(condition, message(), ctx(room_member_count=count)) is expected

    @pytest.mark.parametrize(
        "spec", ["", "=2", "=>2", "2.0", " 2", "2 ", "-1", "abc", "<", "<<2", "!=2", "²"]
    )
    def test_malformed_never_matches(self, spec: str) -> None:
        condition = {"kind": "room_member_count", "is": spec}
        for count in (0, 1, 2, 3, 100):
            assert not cond(condition, message(), ctx(room_member_count=count))

    def test_non_string_never_matches(self) -> None:
        for value in (2, None, ["2"]):
            condition = {"kind": "room_member_count", "is": value}
            assert not cond(condition, message(), ctx(room_member_count=2))
        assert not cond({"kind": "room_member_count"}, message(), ctx(room_member_count=2))


# ---------------------------------------------------------------------------
# sender_notification_permission
# ---------------------------------------------------------------------------


class TestSenderNotificationPermission:
    CONDITION = {"kind": "sender_notification_permission", "key": "room"}

    def check(self, power_levels: Any, sender_power_level: Any = None, sender: str = OTHER) -> bool:
        context = ctx(power_levels=power_levels, sender_power_level=sender_power_level)
        return cond(self.CONDITION, message(sender=sender), context)

    def test_default_required_level_is_50(self) -> None:
        assert self.check({"users": {OTHER: 50}})
        assert not self.check({"users": {OTHER: 49}})

    def test_notifications_room(self) -> None:
        assert self.check({"users": {OTHER: 10}, "notifications": {"room": 10}})
        assert not self.check({"users": {OTHER: 99}, "notifications": {"room": 100}})

    def test_users_default(self) -> None:
        assert self.check({"users_default": 50})
        assert not self.check({"users_default": 0})
        assert not self.check({})

    def test_legacy_string_levels(self) -> None:
        assert self.check({"users": {OTHER: "50"}, "notifications": {"room": "20"}})
        assert not self.check({"users": {OTHER: "fifty"}})

    def test_explicit_sender_level(self) -> None:
        assert self.check(None, sender_power_level=100)  # creator without power levels
        assert self.check({"notifications": {"room": 10**9}}, sender_power_level=math.inf)
        assert not self.check({"users": {OTHER: 100}}, sender_power_level=0)

    def test_no_power_levels(self) -> None:
        assert not self.check(None)

    def test_other_keys(self) -> None:
        condition = {"kind": "sender_notification_permission", "key": "custom"}
        pl = {"users": {OTHER: 60}, "notifications": {"custom": 70}}
        assert not cond(condition, message(), ctx(power_levels=pl))
        assert cond(condition, message(), ctx(power_levels={"users": {OTHER: 60}}))

    def test_missing_key_never_matches(self) -> None:
        context = ctx(sender_power_level=100)
        assert not cond({"kind": "sender_notification_permission"}, message(), context)


# ---------------------------------------------------------------------------
# Unknown conditions, priorities, user rules
# ---------------------------------------------------------------------------


class TestRulesAndPriorities:
    def test_unknown_condition_kinds_never_match(self) -> None:
        for condition in ({"kind": "future_condition"}, {"kind": 3}, {}, {"kind": None}):
            assert not cond(condition, message())
        rs = PushRuleSet(USER)
        rs.add_rule(
            "override",
            "future",
            {"actions": [], "conditions": [{"kind": "future_condition"}]},
        )
        assert matched_id(rs, message()) == ".m.rule.message"

    def test_no_conditions_match_everything(self) -> None:
        rs = PushRuleSet(USER)
        rs.add_rule("override", "all", {"actions": [{"set_tweak": "x"}]})
        assert evaluate(rs, state("m.room.name"), ctx()) == [{"set_tweak": "x"}]

    def test_kind_order(self) -> None:
        rs = PushRuleSet(USER)
        event = message("I like cake", sender=OTHER)
        rs.add_rule("underride", "u", {"actions": ["notify", {"set_tweak": "sound", "value": "u"}]})
        assert actions_sound(evaluate(rs, event, ctx())) == "u"
        # the default underride loses to a user underride, and sender beats underride
        rs.add_rule("sender", OTHER, {"actions": ["notify", {"set_tweak": "sound", "value": "s"}]})
        assert actions_sound(evaluate(rs, event, ctx())) == "s"
        rs.add_rule("room", ROOM, {"actions": ["notify", {"set_tweak": "sound", "value": "r"}]})
        assert actions_sound(evaluate(rs, event, ctx())) == "r"
        rs.add_rule(
            "content",
            "c",
            {"pattern": "cake", "actions": ["notify", {"set_tweak": "sound", "value": "c"}]},
        )
        assert actions_sound(evaluate(rs, event, ctx())) == "c"
        rs.add_rule(
            "override",
            "o",
            {
                "actions": ["notify", {"set_tweak": "sound", "value": "o"}],
                "conditions": [{"kind": "event_match", "key": "type", "pattern": "m.room.*"}],
            },
        )
        assert actions_sound(evaluate(rs, event, ctx())) == "o"

    def test_user_override_beats_default_override(self) -> None:
        rs = PushRuleSet(USER)
        notice = message(extra={"msgtype": "m.notice"})
        assert evaluate(rs, notice, ctx()) == []
        rs.add_rule(
            "override",
            "notices",
            {
                "actions": ["notify"],
                "conditions": [
                    {"kind": "event_match", "key": "content.msgtype", "pattern": "m.notice"}
                ],
            },
        )
        assert evaluate(rs, notice, ctx()) == ["notify"]

    def test_order_within_kind(self) -> None:
        rs = PushRuleSet(USER)
        rs.add_rule("content", "time", {"pattern": "time", "actions": ["notify"]})
        rs.add_rule("content", "tea", {"pattern": "tea", "actions": []}, after="time")
        assert matched_id(rs, message("It's time for tea")) == "time"
        rs.add_rule("content", "tea", {"pattern": "tea", "actions": []}, before="time")
        assert matched_id(rs, message("It's time for tea")) == "tea"

    def test_disabled_rules_skipped(self) -> None:
        rs = PushRuleSet(USER)
        rs.set_enabled("override", ".m.rule.suppress_notices", False)
        assert matched_id(rs, message(extra={"msgtype": "m.notice"})) == ".m.rule.message"
        rs.add_rule("sender", OTHER, {"actions": []})
        rs.set_enabled("sender", OTHER, False)
        assert evaluate(rs, message(), ctx()) == ["notify"]
        rs.set_enabled("sender", OTHER, True)
        assert evaluate(rs, message(), ctx()) == []

    def test_changed_default_actions(self) -> None:
        rs = PushRuleSet(USER)
        rs.set_actions("underride", ".m.rule.message", [])
        assert evaluate(rs, message(), ctx()) == []
        assert actions_notify(evaluate(rs, message(), ctx(room_member_count=2)))

    def test_room_and_sender_rules_are_exact(self) -> None:
        rs = PushRuleSet(USER)
        rs.add_rule("room", "!room:*", {"actions": []})
        rs.add_rule("sender", "@BOB:example.org", {"actions": []})
        assert evaluate(rs, message(), ctx()) == ["notify"]
        rs.add_rule("sender", OTHER, {"actions": []})
        assert evaluate(rs, message(), ctx()) == []
        assert evaluate(rs, message(sender="@carol:example.org"), ctx()) == ["notify"]

    def test_content_rules_use_word_boundaries(self) -> None:
        rs = PushRuleSet(USER)
        rs.add_rule(
            "content",
            "cake",
            {"pattern": "cake", "actions": ["notify", {"set_tweak": "highlight"}]},
        )
        assert actions_highlight(evaluate(rs, message("Cake time!"), ctx()))
        assert not actions_highlight(evaluate(rs, message("cupcakes"), ctx()))
        assert not actions_highlight(
            evaluate(rs, {"type": "m.room.message", "sender": OTHER, "content": {}}, ctx())
        )

    def test_result_is_a_fresh_copy(self) -> None:
        rs = PushRuleSet(USER)
        event = message("x", extra={"m.mentions": {"user_ids": [USER]}})
        first = evaluate(rs, event, ctx())
        assert first is not None
        first.append("junk")
        tweak = first[1]
        assert isinstance(tweak, dict)
        tweak["value"] = "changed"
        assert evaluate(rs, event, ctx()) == [
            "notify",
            {"set_tweak": "sound", "value": "default"},
            {"set_tweak": "highlight"},
        ]

    def test_changes_invalidate_compiled_rules(self) -> None:
        rs = PushRuleSet(USER)
        assert evaluate(rs, message(), ctx()) == ["notify"]
        rs.add_rule("room", ROOM, {"actions": []})
        assert evaluate(rs, message(), ctx()) == []
        rs.delete_rule("room", ROOM)
        assert evaluate(rs, message(), ctx()) == ["notify"]

    def test_reloaded_rules_evaluate_the_same(self) -> None:
        rs = PushRuleSet(USER)
        rs.add_rule("content", "c", {"pattern": "cake", "actions": []})
        reloaded = PushRuleSet.from_storage_json(USER, rs.to_storage_json())
        assert evaluate(reloaded, message("cake"), ctx()) == []


# ---------------------------------------------------------------------------
# Actions helpers
# ---------------------------------------------------------------------------


class TestActions:
    def test_notify(self) -> None:
        assert actions_notify(["notify"])
        assert not actions_notify([])
        assert not actions_notify(None)
        assert not actions_notify([{"set_tweak": "highlight"}])

    def test_highlight(self) -> None:
        assert actions_highlight(["notify", {"set_tweak": "highlight"}])
        assert actions_highlight([{"set_tweak": "highlight", "value": True}])
        assert not actions_highlight([{"set_tweak": "highlight", "value": False}])
        assert not actions_highlight(["notify"])
        assert not actions_highlight(None)
        assert not actions_highlight([{"set_tweak": "highlight", "value": "yes"}])
        # later tweaks win
        assert not actions_highlight(
            [{"set_tweak": "highlight"}, {"set_tweak": "highlight", "value": False}]
        )

    def test_sound(self) -> None:
        assert actions_sound([{"set_tweak": "sound", "value": "ring"}]) == "ring"
        assert actions_sound([{"set_tweak": "sound"}]) is None
        assert actions_sound([{"set_tweak": "sound", "value": 3}]) is None
        assert actions_sound(["notify"]) is None
        assert actions_sound(None) is None

    def test_tweaks(self) -> None:
        actions: list[Action] = [
            "notify",
            {"set_tweak": "sound", "value": "default"},
            {"set_tweak": "highlight"},
            {"set_tweak": "custom", "value": {"a": 1}},
            {"no_tweak": 1},
        ]
        assert actions_tweaks(actions) == {
            "sound": "default",
            "highlight": True,
            "custom": {"a": 1},
        }


# ---------------------------------------------------------------------------
# Many users, one event
# ---------------------------------------------------------------------------


class TestManyUsers:
    N = 500

    def users(self) -> list[str]:
        return [f"@user{i}:example.org" for i in range(self.N)]

    def targets(self, names: dict[str, str] | None = None) -> list[tuple[PushRuleSet, PushContext]]:
        result = []
        for user in self.users():
            context = PushContext(
                user_id=user,
                room_member_count=self.N,
                user_display_name=(names or {}).get(user, f"User {user}"),
                power_levels={"users": {OTHER: 100}},
            )
            result.append((PushRuleSet(user), context))
        return result

    def test_event_flattened_once(self, monkeypatch: pytest.MonkeyPatch) -> None:
        calls: list[Mapping[str, Any]] = []
        real = evaluator.flatten_event

        def counting(event: Mapping[str, Any]) -> dict[tuple[str, ...], Any]:
            calls.append(event)
            return real(event)

        monkeypatch.setattr(evaluator, "flatten_event", counting)
        mentioned = ["@user7:example.org", "@user42:example.org"]
        event = message("hi", extra={"m.mentions": {"user_ids": mentioned}})
        results = evaluate_for_users(event, self.targets())
        assert len(calls) == 1
        assert len(results) == self.N
        for user, actions in results.items():
            assert actions_notify(actions)
            assert actions_highlight(actions) is (user in mentioned)

    def test_prepared_event_reused_and_conditions_memoised(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        calls: list[int] = []
        real = evaluator.flatten_event

        def counting(event: Mapping[str, Any]) -> dict[tuple[str, ...], Any]:
            calls.append(1)
            return real(event)

        monkeypatch.setattr(evaluator, "flatten_event", counting)
        prepared = PreparedEvent(message("hello"))
        targets = self.targets()
        for rules, context in targets:
            assert evaluate(rules, prepared, context) == ["notify"]
        assert len(calls) == 1
        # Shared default conditions are computed once per event, not per user;
        # only the user-specific ones (invite_for_me's state_key, the mention
        # lists) grow with the number of users.
        memo_after_all = prepared.memoised_conditions
        assert memo_after_all < 2 * self.N + 20
        for rules, context in targets:
            evaluate(rules, prepared, context)
        assert prepared.memoised_conditions == memo_after_all

    def test_display_names_per_user(self) -> None:
        targets = self.targets(names={"@user3:example.org": "Zed"})
        # the deprecated condition still works in user-defined rules
        for rules, _ in targets:
            rules.add_rule(
                "override",
                "name",
                {
                    "actions": ["notify", {"set_tweak": "highlight"}],
                    "conditions": [{"kind": "contains_display_name"}],
                },
            )
        results = evaluate_for_users(message("zed: look"), targets)
        highlighted = [u for u, a in results.items() if actions_highlight(a)]
        assert highlighted == ["@user3:example.org"]

    def test_sender_is_skipped(self) -> None:
        targets = self.targets()[:3]
        event = message("x", sender="@user1:example.org")
        results = evaluate_for_users(event, targets)
        assert results["@user1:example.org"] is None
        assert results["@user0:example.org"] == ["notify"]

    def test_context_is_immutable(self) -> None:
        context = ctx()
        with pytest.raises(AttributeError):
            context.user_id = "x"  # type: ignore[misc]
        assert replace(context, room_member_count=2).room_member_count == 2
