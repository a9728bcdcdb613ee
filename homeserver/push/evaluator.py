"""Evaluate a user's push rules against an event (pure, no I/O).

Usage::

    actions = evaluate(ruleset, event, PushContext(user_id=..., room_member_count=...))

``None`` means no rule matched (no notification); a list (possibly empty) is the
``actions`` of the highest-priority matching rule, historical actions stripped.

For one event and many users (every local member of a room), prepare the event
once and hand the :class:`PreparedEvent` to each evaluation, or call
:func:`evaluate_for_users`. The event is flattened into a ``path -> value`` map
once, and the result of each condition that depends only on the event is
remembered on the prepared event, so the conditions shared by all users (the
server-default ones) run once per event, not once per user. Globs are compiled
once and cached; a rule set's compiled form is cached on the rule set until it
changes.

Globs are case-insensitive and never backtrack (``homeserver.events.glob``, the
server's one glob matcher).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Final

from homeserver.events.glob import Glob, compile_glob, compile_literal
from homeserver.push.default_rules import default_rules_for_user
from homeserver.push.rules import Action, PushRule, PushRuleSet, strip_historical_actions

__all__ = [
    "PushContext",
    "PreparedEvent",
    "actions_highlight",
    "actions_notify",
    "actions_sound",
    "actions_tweaks",
    "compile_condition",
    "evaluate",
    "evaluate_for_users",
    "find_matching_rule",
    "flatten_event",
    "glob_matches",
    "parse_dotted_path",
]

Path = tuple[str, ...]

# Largest magnitude of a canonical JSON integer.
_MAX_SAFE_INT: Final = 2**53 - 1
# Default level for ``notifications`` keys (the spec gives 50 for ``room``).
_DEFAULT_NOTIFICATION_LEVEL: Final = 50
_BODY_PATH: Final[Path] = ("content", "body")
_COMPILED_KEY: Final = "homeserver.push.evaluator.compiled"


@dataclass(frozen=True, slots=True)
class PushContext:
    """What evaluation needs besides the event, for one user in one room.

    ``power_levels`` is the content of the room's ``m.room.power_levels`` event
    (``None`` when there is none). ``sender_power_level``, when given, is used as
    is (e.g. ``math.inf`` for a v12 room creator, 100 for the creator of a room
    without power levels); otherwise it is read from ``power_levels``.
    """

    user_id: str
    room_member_count: int
    user_display_name: str | None = None
    power_levels: Mapping[str, Any] | None = None
    sender_power_level: int | float | None = None


# ---------------------------------------------------------------------------
# Paths and event flattening
# ---------------------------------------------------------------------------


@lru_cache(maxsize=4096)
def parse_dotted_path(key: str) -> Path:
    """Split a dot-separated property path (appendix) into property names.

    ``\\.`` is a literal dot and ``\\\\`` a literal backslash; any other
    backslash is kept as is.
    """
    parts: list[str] = []
    current: list[str] = []
    i, n = 0, len(key)
    while i < n:
        char = key[i]
        if char == "\\" and i + 1 < n and key[i + 1] in ".\\":
            current.append(key[i + 1])
            i += 2
            continue
        if char == ".":
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
        i += 1
    parts.append("".join(current))
    return tuple(parts)


def _is_scalar(value: object) -> bool:
    """A value ``event_property_*`` can compare: string, integer, boolean or null."""
    return value is None or type(value) in (str, int, bool)


def flatten_event(event: Mapping[str, Any]) -> dict[Path, Any]:
    """``path -> value`` for every string/integer/boolean/null property of the
    event and every array (kept as a tuple of its scalar items). Objects are
    descended into; floats and nested arrays are dropped."""
    flat: dict[Path, Any] = {}
    stack: list[tuple[Path, Mapping[str, Any]]] = [((), event)]
    while stack:
        prefix, obj = stack.pop()
        for name, value in obj.items():
            if not isinstance(name, str):
                continue
            path = (*prefix, name)
            if isinstance(value, Mapping):
                stack.append((path, value))
            elif isinstance(value, list | tuple):
                flat[path] = tuple(item for item in value if _is_scalar(item))
            elif _is_scalar(value):
                flat[path] = value
    return flat


class PreparedEvent:
    """An event flattened once, plus the results of event-only conditions."""

    __slots__ = ("event", "values", "sender", "_memo")

    def __init__(self, event: Mapping[str, Any]) -> None:
        self.event = event
        self.values: dict[Path, Any] = flatten_event(event)
        sender = event.get("sender")
        self.sender: str | None = sender if isinstance(sender, str) else None
        self._memo: dict[object, bool] = {}

    @property
    def memoised_conditions(self) -> int:
        """How many distinct condition results are remembered (for tests/metrics)."""
        return len(self._memo)


# ---------------------------------------------------------------------------
# Globs
# ---------------------------------------------------------------------------


def _compile_glob(pattern: str) -> Glob:
    return compile_glob(pattern, ignore_case=True)


def glob_matches(pattern: str, value: str, *, word_boundary: bool = False) -> bool:
    """Case-insensitive glob (``*``, ``?``) match of the whole ``value``, or with
    ``word_boundary`` of any substring delimited by word boundaries."""
    glob = _compile_glob(pattern)
    return glob.search_words(value) if word_boundary else glob.fullmatch(value)


# ---------------------------------------------------------------------------
# Conditions
# ---------------------------------------------------------------------------


def _same_value(a: object, b: object) -> bool:
    """Exact JSON equality of scalars: no casts (``1`` is not ``true``)."""
    return type(a) is type(b) and a == b


class _Condition:
    __slots__ = ()

    def matches(self, event: PreparedEvent, ctx: PushContext) -> bool:
        raise NotImplementedError


class _Never(_Condition):
    """Unknown or malformed conditions never match."""

    __slots__ = ()

    def matches(self, event: PreparedEvent, ctx: PushContext) -> bool:
        return False


_NEVER: Final = _Never()


class _EventOnly(_Condition):
    """A condition that depends on the event alone: its result is memoised on
    the prepared event (keyed by this object, shared between users)."""

    __slots__ = ()

    def matches(self, event: PreparedEvent, ctx: PushContext) -> bool:
        memo = event._memo
        result = memo.get(self)
        if result is None:
            result = self.compute(event)
            memo[self] = result
        return result

    def compute(self, event: PreparedEvent) -> bool:
        raise NotImplementedError


class _EventMatch(_EventOnly):
    __slots__ = ("path", "glob", "words")

    def __init__(self, path: Path, pattern: str) -> None:
        self.path = path
        self.glob = _compile_glob(pattern)
        self.words = path == _BODY_PATH

    def compute(self, event: PreparedEvent) -> bool:
        value = event.values.get(self.path)
        if type(value) is not str:
            return False
        return self.glob.search_words(value) if self.words else self.glob.fullmatch(value)


class _PropertyIs(_EventOnly):
    __slots__ = ("path", "value")

    def __init__(self, path: Path, value: object) -> None:
        self.path = path
        self.value = value

    def compute(self, event: PreparedEvent) -> bool:
        if self.path not in event.values:
            return False
        return _same_value(event.values[self.path], self.value)


class _PropertyContains(_EventOnly):
    __slots__ = ("path", "value")

    def __init__(self, path: Path, value: object) -> None:
        self.path = path
        self.value = value

    def compute(self, event: PreparedEvent) -> bool:
        items = event.values.get(self.path)
        if type(items) is not tuple:
            return False
        return any(_same_value(item, self.value) for item in items)


class _ContainsDisplayName(_Condition):
    __slots__ = ()

    def matches(self, event: PreparedEvent, ctx: PushContext) -> bool:
        name = ctx.user_display_name
        if not name:
            return False
        key = ("contains_display_name", name)
        result = event._memo.get(key)
        if result is None:
            body = event.values.get(_BODY_PATH)
            result = type(body) is str and compile_literal(name, ignore_case=True).search_words(
                body
            )
            event._memo[key] = result
        return result


_MEMBER_COUNT_RE: Final = re.compile(r"(==|<=|>=|<|>)?([0-9]+)")


class _RoomMemberCount(_Condition):
    __slots__ = ("op", "number")

    def __init__(self, op: str, number: int) -> None:
        self.op = op
        self.number = number

    def matches(self, event: PreparedEvent, ctx: PushContext) -> bool:
        count, n = ctx.room_member_count, self.number
        if self.op == "==":
            return count == n
        if self.op == "<":
            return count < n
        if self.op == ">":
            return count > n
        if self.op == "<=":
            return count <= n
        return count >= n


_LEGACY_INT_RE: Final = re.compile(r"\s*[+-]?[0-9]+\s*")


def _as_level(value: object) -> int | None:
    if type(value) is int:
        return value
    # Room versions before 10 allowed integers in strings.
    if isinstance(value, str) and _LEGACY_INT_RE.fullmatch(value):
        return int(value)
    return None


def _sender_level(ctx: PushContext, sender: str | None) -> int | float:
    if ctx.sender_power_level is not None:
        return ctx.sender_power_level
    power_levels = ctx.power_levels
    if power_levels is None:
        return 0
    users = power_levels.get("users")
    if sender is not None and isinstance(users, Mapping):
        level = _as_level(users.get(sender))
        if level is not None:
            return level
    default = _as_level(power_levels.get("users_default"))
    return 0 if default is None else default


class _SenderNotificationPermission(_Condition):
    __slots__ = ("key",)

    def __init__(self, key: str) -> None:
        self.key = key

    def matches(self, event: PreparedEvent, ctx: PushContext) -> bool:
        required: int = _DEFAULT_NOTIFICATION_LEVEL
        if ctx.power_levels is not None:
            levels = ctx.power_levels.get("notifications")
            if isinstance(levels, Mapping):
                level = _as_level(levels.get(self.key))
                if level is not None:
                    required = level
        return _sender_level(ctx, event.sender) >= required


# A condition frozen into a hashable key for the compile cache: sorted
# (name, (type name, value)) pairs; compound values are never valid parameters.
_Frozen = tuple[tuple[str, tuple[Any, ...]], ...]


def _freeze(condition: Mapping[str, Any]) -> _Frozen:
    items = []
    for name, value in condition.items():
        if not isinstance(name, str):
            continue
        tag = (type(value).__name__, value) if _is_scalar(value) else ("compound",)
        items.append((name, tag))
    items.sort()
    return tuple(items)


@lru_cache(maxsize=65536)
def _compile_frozen(frozen: _Frozen) -> _Condition:
    params = dict(frozen)

    def string(name: str) -> str | None:
        tag = params.get(name)
        return tag[1] if tag is not None and tag[0] == "str" else None

    def scalar(name: str) -> tuple[bool, object]:
        tag = params.get(name)
        if tag is None or tag[0] == "compound":
            return False, None
        value = tag[1]
        if type(value) is int and not -_MAX_SAFE_INT <= value <= _MAX_SAFE_INT:
            return False, None
        return True, value

    kind = string("kind")
    if kind == "event_match":
        key, pattern = string("key"), string("pattern")
        if key is None or pattern is None:
            return _NEVER
        return _EventMatch(parse_dotted_path(key), pattern)
    if kind in ("event_property_is", "event_property_contains"):
        key = string("key")
        ok, value = scalar("value")
        if key is None or not ok:
            return _NEVER
        cls = _PropertyIs if kind == "event_property_is" else _PropertyContains
        return cls(parse_dotted_path(key), value)
    if kind == "contains_display_name":
        return _ContainsDisplayName()
    if kind == "room_member_count":
        spec = string("is")
        parsed = _MEMBER_COUNT_RE.fullmatch(spec) if spec is not None else None
        if parsed is None:
            return _NEVER
        return _RoomMemberCount(parsed.group(1) or "==", int(parsed.group(2)))
    if kind == "sender_notification_permission":
        key = string("key")
        return _NEVER if key is None else _SenderNotificationPermission(key)
    return _NEVER


def compile_condition(condition: Mapping[str, Any]) -> _Condition:
    """The compiled form of a push condition (cached: equal conditions give the
    same object, which lets users share memoised results)."""
    return _compile_frozen(_freeze(condition))


# ---------------------------------------------------------------------------
# Rules
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _CompiledRule:
    rule: PushRule
    conditions: tuple[_Condition, ...]
    actions: tuple[Action, ...]


def _rule_conditions(rule: PushRule) -> tuple[_Condition, ...]:
    if rule.kind == "content":
        if rule.pattern is None:
            return (_NEVER,)
        return (
            compile_condition(
                {"kind": "event_match", "key": "content.body", "pattern": rule.pattern}
            ),
        )
    if rule.kind == "room":
        return (
            compile_condition(
                {"kind": "event_property_is", "key": "room_id", "value": rule.rule_id}
            ),
        )
    if rule.kind == "sender":
        return (
            compile_condition(
                {"kind": "event_property_is", "key": "sender", "value": rule.rule_id}
            ),
        )
    return tuple(compile_condition(c) for c in rule.conditions)


@lru_cache(maxsize=8192)
def _default_rule_conditions(user_id: str) -> Mapping[tuple[str, str], tuple[_Condition, ...]]:
    """Compiled conditions of the server-default rules (which users cannot change)."""
    return {
        (kind, rule["rule_id"]): tuple(compile_condition(c) for c in rule.get("conditions", ()))
        for kind, rules in default_rules_for_user(user_id).items()
        for rule in rules
    }


def _compile_ruleset(ruleset: PushRuleSet) -> tuple[_CompiledRule, ...]:
    defaults = _default_rule_conditions(ruleset.user_id)
    compiled = []
    for rule in ruleset.ordered_rules():
        if not rule.enabled:
            continue
        conditions = defaults.get((rule.kind, rule.rule_id)) if rule.default else None
        if conditions is None:
            conditions = _rule_conditions(rule)
        actions = tuple(strip_historical_actions(rule.actions))
        compiled.append(_CompiledRule(rule, conditions, actions))
    return tuple(compiled)


def _prepare(event: Mapping[str, Any] | PreparedEvent) -> PreparedEvent:
    return event if isinstance(event, PreparedEvent) else PreparedEvent(event)


def _first_match(
    rules: PushRuleSet, event: Mapping[str, Any] | PreparedEvent, ctx: PushContext
) -> _CompiledRule | None:
    prepared = _prepare(event)
    if prepared.sender == ctx.user_id:
        return None
    for compiled in rules.cached(_COMPILED_KEY, _compile_ruleset):
        for condition in compiled.conditions:
            if not condition.matches(prepared, ctx):
                break
        else:
            return compiled
    return None


def find_matching_rule(
    rules: PushRuleSet, event: Mapping[str, Any] | PreparedEvent, ctx: PushContext
) -> PushRule | None:
    """The highest-priority enabled rule matching ``event`` for ``ctx.user_id``.

    Events the user sent themselves never match: homeservers MUST NOT notify
    users of their own events.
    """
    compiled = _first_match(rules, event, ctx)
    return None if compiled is None else compiled.rule


def evaluate(
    rules: PushRuleSet, event: Mapping[str, Any] | PreparedEvent, ctx: PushContext
) -> list[Action] | None:
    """Actions for ``event`` and this user: ``None`` if no rule matched (or the
    user sent the event), else the matching rule's actions (a fresh list,
    historical actions stripped)."""
    compiled = _first_match(rules, event, ctx)
    if compiled is None:
        return None
    return [dict(a) if isinstance(a, dict) else a for a in compiled.actions]


def evaluate_for_users(
    event: Mapping[str, Any] | PreparedEvent,
    targets: Iterable[tuple[PushRuleSet, PushContext]],
) -> dict[str, list[Action] | None]:
    """:func:`evaluate` for many users, flattening the event once."""
    prepared = _prepare(event)
    return {ctx.user_id: evaluate(rules, prepared, ctx) for rules, ctx in targets}


# ---------------------------------------------------------------------------
# Actions
# ---------------------------------------------------------------------------


def actions_tweaks(actions: Sequence[Action] | None) -> dict[str, Any]:
    """The tweaks the actions set, later ones winning; ``highlight`` without a
    value is ``True``."""
    tweaks: dict[str, Any] = {}
    for action in actions or ():
        if isinstance(action, Mapping):
            name = action.get("set_tweak")
            if isinstance(name, str):
                if "value" in action:
                    tweaks[name] = action["value"]
                elif name == "highlight":
                    tweaks[name] = True
                else:
                    tweaks[name] = None
    return tweaks


def actions_notify(actions: Sequence[Action] | None) -> bool:
    """Whether the actions include ``notify``."""
    return actions is not None and "notify" in actions


def actions_highlight(actions: Sequence[Action] | None) -> bool:
    """Whether the ``highlight`` tweak is set to true (absent means false)."""
    return actions_tweaks(actions).get("highlight", False) is True


def actions_sound(actions: Sequence[Action] | None) -> str | None:
    """The ``sound`` tweak's value, if it is a string."""
    sound = actions_tweaks(actions).get("sound")
    return sound if isinstance(sound, str) else None
