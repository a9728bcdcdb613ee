"""A user's push rules: their own rules merged with the server-default ones.

:class:`PushRuleSet` holds, per kind, the user-defined rules (highest priority
first) and the user's changes to server-default rules (``enabled`` and
``actions`` only: server-default rules cannot be added, replaced or deleted).
It implements the logic of the ``/pushrules`` endpoints without any I/O; errors
are :class:`PushRuleError` (a :class:`~homeserver.errors.MatrixError`).

Priority within a kind: user-defined rules rank above server-default rules,
except ``.m.rule.master`` which ranks above everything. The lists returned by
:meth:`PushRuleSet.rules` and :meth:`PushRuleSet.to_client_json` are in that
order, which is the order :mod:`homeserver.push.evaluator` checks them.

Error codes (the spec leaves most of them open):

* unknown ``kind``, bad ``rule_id`` (empty, leading ``.``, ``/`` or ``\\``):
  400 ``M_INVALID_PARAM``;
* malformed body (missing ``actions``, ``pattern`` for content rules, wrong
  types, unknown actions): 400 ``M_BAD_JSON``;
* ``before``/``after`` not naming another user-defined rule of the kind: 400
  ``M_UNKNOWN`` "before/after rule not found", as in the spec's example;
* rule not found, and deleting a server-default rule (as Synapse, the only
  error the spec documents for DELETE): 404 ``M_NOT_FOUND``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import lru_cache
from types import MappingProxyType
from typing import Any, Final, TypeAlias, TypeVar, cast

from homeserver.errors import Codes, MatrixError
from homeserver.push.default_rules import KINDS, MASTER_RULE_ID, default_rules_for_user

__all__ = [
    "Action",
    "HISTORICAL_ACTIONS",
    "KINDS",
    "PushRule",
    "PushRuleError",
    "PushRuleSet",
    "strip_historical_actions",
    "validate_actions",
]

Action: TypeAlias = str | dict[str, Any]

# Actions from older spec versions: "MUST ignore", here by stripping them.
HISTORICAL_ACTIONS: Final = frozenset({"dont_notify", "coalesce"})
_STRING_ACTIONS: Final = frozenset({"notify"}) | HISTORICAL_ACTIONS

_CONDITION_KINDS: Final = frozenset({"override", "underride"})
_STORAGE_VERSION: Final = 1

T = TypeVar("T")


class PushRuleError(MatrixError):
    """A push rule request that cannot be carried out."""


def _invalid_param(message: str) -> PushRuleError:
    return PushRuleError(400, Codes.INVALID_PARAM, message)


def _bad_json(message: str) -> PushRuleError:
    return PushRuleError(400, Codes.BAD_JSON, message)


def _not_found(message: str = "The push rule was not found.") -> PushRuleError:
    return PushRuleError(404, Codes.NOT_FOUND, message)


@dataclass(frozen=True, slots=True)
class PushRule:
    """One rule. ``conditions`` is used by override/underride rules, ``pattern``
    by content rules; room and sender rules are defined by their ``rule_id``."""

    kind: str
    rule_id: str
    actions: tuple[Action, ...]
    enabled: bool = True
    default: bool = False
    conditions: tuple[Mapping[str, Any], ...] = ()
    pattern: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The rule as the client-server API shows it (a fresh, mutable copy)."""
        body: dict[str, Any] = {
            "rule_id": self.rule_id,
            "default": self.default,
            "enabled": self.enabled,
            "actions": copy.deepcopy(list(self.actions)),
        }
        if self.kind in _CONDITION_KINDS:
            body["conditions"] = [copy.deepcopy(dict(c)) for c in self.conditions]
        elif self.kind == "content":
            body["pattern"] = self.pattern if self.pattern is not None else ""
        return body


# ---------------------------------------------------------------------------
# Validation helpers
# ---------------------------------------------------------------------------


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise _invalid_param(f"Unknown push rule kind: {kind!r}")


def _check_new_rule_id(rule_id: str) -> None:
    if not isinstance(rule_id, str) or not rule_id:
        raise _invalid_param("rule_id must be a non-empty string")
    if rule_id.startswith("."):
        raise _invalid_param("rule_ids starting with '.' are reserved for server-default rules")
    if "/" in rule_id or "\\" in rule_id:
        raise _invalid_param("rule_id may not contain slashes or backslashes")


def strip_historical_actions(actions: Sequence[Action]) -> list[Action]:
    """``actions`` without ``dont_notify`` / ``coalesce``, which MUST be ignored."""
    return [a for a in actions if not (isinstance(a, str) and a in HISTORICAL_ACTIONS)]


def validate_actions(actions: object) -> list[Action]:
    """Check an ``actions`` array from a request; return it deep-copied. The historical
    actions (``dont_notify``, ``coalesce``) are kept, so that a client reads back what it
    set (as from Synapse); evaluation ignores them. Raises ``M_BAD_JSON`` when malformed."""
    if not isinstance(actions, list):
        raise _bad_json("'actions' must be an array")
    result: list[Action] = []
    for action in actions:
        if isinstance(action, str):
            if action not in _STRING_ACTIONS:
                raise _bad_json(f"Unrecognised action: {action!r}")
            result.append(action)
        elif isinstance(action, dict):
            if not isinstance(action.get("set_tweak"), str):
                raise _bad_json("Action objects must have a string 'set_tweak'")
            result.append(copy.deepcopy(action))
        else:
            raise _bad_json("Each action must be a string or an object")
    return result


def _validate_conditions(conditions: object) -> list[dict[str, Any]]:
    if not isinstance(conditions, list):
        raise _bad_json("'conditions' must be an array")
    result: list[dict[str, Any]] = []
    for condition in conditions:
        if not isinstance(condition, dict):
            raise _bad_json("Each condition must be an object")
        if not isinstance(condition.get("kind"), str):
            raise _bad_json("Each condition must have a string 'kind'")
        # Unknown condition kinds are accepted: they never match (spec).
        result.append(copy.deepcopy(condition))
    return result


def _rule_from_body(kind: str, rule_id: str, body: object) -> PushRule:
    if not isinstance(body, Mapping):
        raise _bad_json("The push rule must be a JSON object")
    if "actions" not in body:
        raise _bad_json("Missing 'actions'")
    actions = validate_actions(body["actions"])
    conditions: list[dict[str, Any]] = []
    pattern: str | None = None
    if kind in _CONDITION_KINDS:
        conditions = _validate_conditions(body.get("conditions", []))
    elif kind == "content":
        pattern = body.get("pattern")
        if not isinstance(pattern, str):
            raise _bad_json("Content rules need a string 'pattern'")
    return PushRule(
        kind=kind,
        rule_id=rule_id,
        actions=tuple(actions),
        enabled=True,
        default=False,
        conditions=tuple(conditions),
        pattern=pattern,
    )


# ---------------------------------------------------------------------------
# Server-default rules, built once per user
# ---------------------------------------------------------------------------


@lru_cache(maxsize=8192)
def _default_rules(user_id: str) -> Mapping[str, tuple[PushRule, ...]]:
    by_kind: dict[str, tuple[PushRule, ...]] = {}
    for kind, rules in default_rules_for_user(user_id).items():
        by_kind[kind] = tuple(
            PushRule(
                kind=kind,
                rule_id=r["rule_id"],
                actions=tuple(r["actions"]),
                enabled=bool(r["enabled"]),
                default=True,
                conditions=tuple(r.get("conditions", ())),
                pattern=r.get("pattern"),
            )
            for r in rules
        )
    return MappingProxyType(by_kind)


# ---------------------------------------------------------------------------
# The rule set
# ---------------------------------------------------------------------------


class PushRuleSet:
    """A user's effective push rules (user-defined + server-default)."""

    def __init__(self, user_id: str) -> None:
        self._user_id = user_id
        self._defaults = _default_rules(user_id)
        self._custom: dict[str, list[PushRule]] = {kind: [] for kind in KINDS}
        # kind -> rule_id -> {"enabled": bool, "actions": [...]} (either key optional)
        self._default_changes: dict[str, dict[str, dict[str, Any]]] = {k: {} for k in KINDS}
        self._generation = 0
        self._cache: dict[str, object] = {}

    # -- introspection -----------------------------------------------------

    @property
    def user_id(self) -> str:
        return self._user_id

    @property
    def generation(self) -> int:
        """Bumped by every change; lets callers tell whether to re-save/re-derive."""
        return self._generation

    def only_server_defaults(self) -> bool:
        """No rule of the user's own and every server-default rule as shipped."""
        return self.cached(
            "only_server_defaults",
            lambda rules: (
                not any(rules._custom.values()) and not any(rules._default_changes.values())
            ),
        )

    def cached(self, key: str, factory: Callable[[PushRuleSet], T]) -> T:
        """A value derived from the rules, computed once until the next change.

        Used by the evaluator to keep compiled rules with the rule set.
        """
        try:
            return cast(T, self._cache[key])
        except KeyError:
            value = factory(self)
            self._cache[key] = value
            return value

    def _changed(self) -> None:
        self._generation += 1
        self._cache.clear()

    def _effective_default(self, rule: PushRule) -> PushRule:
        change = self._default_changes[rule.kind].get(rule.rule_id)
        if not change:
            return rule
        enabled = change.get("enabled", rule.enabled)
        actions = change.get("actions")
        return replace(
            rule,
            enabled=enabled,
            actions=tuple(actions) if actions is not None else rule.actions,
        )

    def rules(self, kind: str) -> list[PushRule]:
        """All rules of ``kind`` in priority order (highest first)."""
        _check_kind(kind)
        defaults = [self._effective_default(r) for r in self._defaults.get(kind, ())]
        custom = self._custom[kind]
        if kind == "override":
            first = [r for r in defaults if r.rule_id == MASTER_RULE_ID]
            rest = [r for r in defaults if r.rule_id != MASTER_RULE_ID]
            return first + custom + rest
        return custom + defaults

    def ordered_rules(self) -> Iterator[PushRule]:
        """Every rule, in the order they are evaluated."""
        for kind in KINDS:
            yield from self.rules(kind)

    def _find_default(self, kind: str, rule_id: str) -> PushRule | None:
        for rule in self._defaults.get(kind, ()):
            if rule.rule_id == rule_id:
                return rule
        return None

    def _custom_index(self, kind: str, rule_id: str) -> int | None:
        for i, rule in enumerate(self._custom[kind]):
            if rule.rule_id == rule_id:
                return i
        return None

    def get_rule(self, kind: str, rule_id: str) -> PushRule:
        """GET /pushrules/global/{kind}/{ruleId}; 404 if there is no such rule."""
        _check_kind(kind)
        default = self._find_default(kind, rule_id)
        if default is not None:
            return self._effective_default(default)
        index = self._custom_index(kind, rule_id)
        if index is None:
            raise _not_found()
        return self._custom[kind][index]

    # -- changes -----------------------------------------------------------

    def add_rule(
        self,
        kind: str,
        rule_id: str,
        rule_body: object,
        before: str | None = None,
        after: str | None = None,
    ) -> None:
        """PUT /pushrules/global/{kind}/{ruleId}: create or replace a user-defined rule.

        A new rule without ``before``/``after`` becomes the most important
        user-defined rule of its kind; a replaced one keeps its place. With both,
        ``before`` wins (spec). New rules are enabled; a replaced rule keeps its
        ``enabled`` state.
        """
        _check_kind(kind)
        _check_new_rule_id(rule_id)
        new_rule = _rule_from_body(kind, rule_id, rule_body)

        rules = self._custom[kind]
        existing = self._custom_index(kind, rule_id)
        if existing is not None:
            new_rule = replace(new_rule, enabled=rules[existing].enabled)

        anchor = before if before is not None else after
        if anchor is None:
            if existing is not None:
                rules[existing] = new_rule
            else:
                rules.insert(0, new_rule)
            self._changed()
            return

        if anchor == rule_id:
            raise PushRuleError(400, Codes.UNKNOWN, "A rule cannot be placed relative to itself")
        if anchor.startswith("."):
            raise PushRuleError(
                400,
                Codes.UNKNOWN,
                f"before/after rule not found: {anchor} (rules cannot be placed "
                "relative to server-default rules)",
            )
        remaining = [r for r in rules if r.rule_id != rule_id]
        anchor_index = next((i for i, r in enumerate(remaining) if r.rule_id == anchor), None)
        if anchor_index is None:
            raise PushRuleError(400, Codes.UNKNOWN, f"before/after rule not found: {anchor}")
        insert_at = anchor_index if before is not None else anchor_index + 1
        remaining.insert(insert_at, new_rule)
        self._custom[kind] = remaining
        self._changed()

    def delete_rule(self, kind: str, rule_id: str) -> None:
        """DELETE /pushrules/global/{kind}/{ruleId}. Server-default rules cannot be
        deleted (404, as Synapse; they can be disabled instead)."""
        _check_kind(kind)
        if self._find_default(kind, rule_id) is not None:
            raise _not_found("Server-default push rules cannot be deleted")
        index = self._custom_index(kind, rule_id)
        if index is None:
            raise _not_found()
        del self._custom[kind][index]
        self._changed()

    def set_enabled(self, kind: str, rule_id: str, enabled: object) -> None:
        """PUT .../enabled with the body's ``enabled`` value."""
        _check_kind(kind)
        if not isinstance(enabled, bool):
            raise _bad_json("'enabled' must be a boolean")
        self._update(kind, rule_id, "enabled", enabled)

    def set_actions(self, kind: str, rule_id: str, actions: object) -> None:
        """PUT .../actions with the body's ``actions`` value (also for default rules)."""
        _check_kind(kind)
        self._update(kind, rule_id, "actions", validate_actions(actions))

    def _update(self, kind: str, rule_id: str, attr: str, value: Any) -> None:
        if self._find_default(kind, rule_id) is not None:
            self._default_changes[kind].setdefault(rule_id, {})[attr] = value
            self._changed()
            return
        index = self._custom_index(kind, rule_id)
        if index is None:
            raise _not_found()
        rule = self._custom[kind][index]
        if attr == "enabled":
            rule = replace(rule, enabled=value)
        else:
            rule = replace(rule, actions=tuple(value))
        self._custom[kind][index] = rule
        self._changed()

    # -- serialisation -----------------------------------------------------

    def ruleset_json(self) -> dict[str, list[dict[str, Any]]]:
        """The ``global`` ruleset: kind -> rules in priority order."""
        return {kind: [rule.to_json() for rule in self.rules(kind)] for kind in KINDS}

    def to_client_json(self) -> dict[str, Any]:
        """Body of GET /pushrules/ (and content of the ``m.push_rules`` account data)."""
        return {"global": self.ruleset_json()}

    def to_storage_json(self) -> dict[str, Any]:
        """Everything the user changed, as plain JSON (defaults are not stored)."""
        custom: dict[str, list[dict[str, Any]]] = {}
        for kind in KINDS:
            stored = []
            for rule in self._custom[kind]:
                entry = rule.to_json()
                del entry["default"]
                stored.append(entry)
            if stored:
                custom[kind] = stored
        changes = {
            kind: copy.deepcopy(by_id) for kind, by_id in self._default_changes.items() if by_id
        }
        return {"version": _STORAGE_VERSION, "rules": custom, "default_changes": changes}

    @classmethod
    def from_storage_json(cls, user_id: str, data: Mapping[str, Any] | None) -> PushRuleSet:
        """Rebuild from :meth:`to_storage_json` output. Malformed entries are skipped
        so that one bad row cannot take a user's notifications down."""
        ruleset = cls(user_id)
        if not data:
            return ruleset
        stored_rules = data.get("rules")
        if isinstance(stored_rules, Mapping):
            for kind in KINDS:
                entries = stored_rules.get(kind)
                if not isinstance(entries, list):
                    continue
                seen: set[str] = set()
                for entry in entries:
                    rule = _rule_from_storage(kind, entry)
                    if rule is not None and rule.rule_id not in seen:
                        seen.add(rule.rule_id)
                        ruleset._custom[kind].append(rule)
        changes = data.get("default_changes")
        if isinstance(changes, Mapping):
            for kind in KINDS:
                by_id = changes.get(kind)
                if not isinstance(by_id, Mapping):
                    continue
                for rule_id, change in by_id.items():
                    if not isinstance(change, Mapping):
                        continue
                    kept: dict[str, Any] = {}
                    if isinstance(change.get("enabled"), bool):
                        kept["enabled"] = change["enabled"]
                    try:
                        if "actions" in change:
                            kept["actions"] = validate_actions(change["actions"])
                    except PushRuleError:
                        pass
                    if kept:
                        ruleset._default_changes[kind][str(rule_id)] = kept
        return ruleset


def _rule_from_storage(kind: str, entry: object) -> PushRule | None:
    if not isinstance(entry, Mapping):
        return None
    rule_id = entry.get("rule_id")
    try:
        _check_new_rule_id(cast(str, rule_id))
        rule = _rule_from_body(kind, cast(str, rule_id), entry)
    except PushRuleError:
        return None
    enabled = entry.get("enabled", True)
    return replace(rule, enabled=enabled) if isinstance(enabled, bool) else rule
