"""The server-default push rules of the Matrix spec v1.19, as plain JSON data.

Rules are listed per kind in the order the spec gives them, which is also their
priority order among server-default rules of that kind. v1.17 removed the legacy
mention rules (MSC4210): ``.m.rule.contains_display_name``, ``.m.rule.roomnotif``
and the content rule ``.m.rule.contains_user_name`` are therefore *not* part of
this set, and there are no default ``content``, ``room`` or ``sender`` rules.

``.m.rule.master`` is always the first override rule; it ranks above every other
rule, including user-defined ones (see :mod:`homeserver.push.rules`).
"""

from __future__ import annotations

from typing import Any, Final

__all__ = [
    "KINDS",
    "MASTER_RULE_ID",
    "DEFAULT_OVERRIDE_RULE_IDS",
    "DEFAULT_UNDERRIDE_RULE_IDS",
    "default_rules_for_user",
]

# The kinds of push rules, in the order they are checked.
KINDS: Final[tuple[str, ...]] = ("override", "content", "room", "sender", "underride")

MASTER_RULE_ID: Final = ".m.rule.master"

DEFAULT_OVERRIDE_RULE_IDS: Final[tuple[str, ...]] = (
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
)

DEFAULT_UNDERRIDE_RULE_IDS: Final[tuple[str, ...]] = (
    ".m.rule.call",
    ".m.rule.encrypted_room_one_to_one",
    ".m.rule.room_one_to_one",
    ".m.rule.message",
    ".m.rule.encrypted",
)

_SOUND_DEFAULT: Final = {"set_tweak": "sound", "value": "default"}
_SOUND_RING: Final = {"set_tweak": "sound", "value": "ring"}
_HIGHLIGHT: Final = {"set_tweak": "highlight"}


def _rule(rule_id: str, conditions: list[dict[str, Any]], actions: list[Any]) -> dict[str, Any]:
    return {
        "rule_id": rule_id,
        "default": True,
        "enabled": True,
        "conditions": conditions,
        "actions": actions,
    }


def _match(key: str, pattern: str) -> dict[str, Any]:
    return {"kind": "event_match", "key": key, "pattern": pattern}


def _override_rules(user_id: str) -> list[dict[str, Any]]:
    master = _rule(".m.rule.master", [], [])
    master["enabled"] = False
    return [
        master,
        _rule(".m.rule.suppress_notices", [_match("content.msgtype", "m.notice")], []),
        _rule(
            ".m.rule.invite_for_me",
            [
                _match("type", "m.room.member"),
                _match("content.membership", "invite"),
                _match("state_key", user_id),
            ],
            ["notify", dict(_SOUND_DEFAULT)],
        ),
        _rule(".m.rule.member_event", [_match("type", "m.room.member")], []),
        _rule(
            ".m.rule.is_user_mention",
            [
                {
                    "kind": "event_property_contains",
                    "key": "content.m\\.mentions.user_ids",
                    "value": user_id,
                }
            ],
            ["notify", dict(_SOUND_DEFAULT), dict(_HIGHLIGHT)],
        ),
        _rule(
            ".m.rule.is_room_mention",
            [
                {"kind": "event_property_is", "key": "content.m\\.mentions.room", "value": True},
                {"kind": "sender_notification_permission", "key": "room"},
            ],
            ["notify", dict(_HIGHLIGHT)],
        ),
        _rule(
            ".m.rule.tombstone",
            [_match("type", "m.room.tombstone"), _match("state_key", "")],
            ["notify", dict(_HIGHLIGHT)],
        ),
        _rule(".m.rule.reaction", [_match("type", "m.reaction")], []),
        _rule(
            ".m.rule.room.server_acl",
            [_match("type", "m.room.server_acl"), _match("state_key", "")],
            [],
        ),
        _rule(
            ".m.rule.suppress_edits",
            [
                {
                    "kind": "event_property_is",
                    "key": "content.m\\.relates_to.rel_type",
                    "value": "m.replace",
                }
            ],
            [],
        ),
    ]


def _underride_rules() -> list[dict[str, Any]]:
    one_to_one = {"kind": "room_member_count", "is": "2"}
    return [
        _rule(".m.rule.call", [_match("type", "m.call.invite")], ["notify", dict(_SOUND_RING)]),
        _rule(
            ".m.rule.encrypted_room_one_to_one",
            [dict(one_to_one), _match("type", "m.room.encrypted")],
            ["notify", dict(_SOUND_DEFAULT)],
        ),
        _rule(
            ".m.rule.room_one_to_one",
            [dict(one_to_one), _match("type", "m.room.message")],
            ["notify", dict(_SOUND_DEFAULT)],
        ),
        _rule(".m.rule.message", [_match("type", "m.room.message")], ["notify"]),
        _rule(".m.rule.encrypted", [_match("type", "m.room.encrypted")], ["notify"]),
    ]


def default_rules_for_user(user_id: str) -> dict[str, list[dict[str, Any]]]:
    """The server-default rules for ``user_id``: kind -> rules, highest priority first.

    Every rule carries ``rule_id``, ``default: true``, ``enabled``, ``conditions``
    and ``actions`` (there are no default ``content`` rules, so no ``pattern``).
    The result is freshly built: callers may mutate it.
    """
    return {
        "override": _override_rules(user_id),
        "content": [],
        "room": [],
        "sender": [],
        "underride": _underride_rules(),
    }
