"""Spaces as plain data: a space's children, their order, and who may see a room.

Pure functions over plain values (event contents, join rules, memberships); the
summary handler (``summary.py``) feeds them room state. The visibility rules are the
spec's for ``/hierarchy`` and ``/room_summary`` (as Synapse's ``room_summary.py``):
a room is shown to a user who is joined or invited, or who may join it (``public``,
or ``restricted`` while joined to an allowed room), when it is knockable, or when its
history is ``world_readable``. A server sees it on the same terms for its users.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from homeserver.events.room_versions import RoomVersion

JsonDict = dict[str, Any]

SPACE_ROOM_TYPE = "m.space"
# `order` may only hold characters from space to tilde, at most 50 of them.
_INVALID_ORDER = re.compile(r"[^\x20-\x7E]")
MAX_ORDER_LENGTH = 50


@dataclass(frozen=True)
class ChildEvent:
    """An ``m.space.child`` state event as plain data."""

    room_id: str  # the state key: the child room
    content: Mapping[str, Any]
    sender: str
    origin_server_ts: int

    def stripped(self) -> JsonDict:
        """The stripped state event (plus ``origin_server_ts``) ``/hierarchy`` returns."""
        return {
            "type": "m.space.child",
            "state_key": self.room_id,
            "content": dict(self.content),
            "sender": self.sender,
            "origin_server_ts": self.origin_server_ts,
        }


def has_valid_via(content: Mapping[str, Any]) -> bool:
    """A child counts only with a non-empty ``via`` of strings (none: removed/redacted)."""
    via = content.get("via")
    return isinstance(via, list) and bool(via) and all(isinstance(v, str) for v in via)


def is_suggested(content: Mapping[str, Any]) -> bool:
    return content.get("suggested") is True


def _order(content: Mapping[str, Any]) -> str | None:
    order = content.get("order")
    if not isinstance(order, str) or len(order) > MAX_ORDER_LENGTH:
        return None
    return None if _INVALID_ORDER.search(order) else order


def child_sort_key(child: ChildEvent) -> tuple[bool, str, int, str]:
    """The spec's order: valid ``order`` first (lexicographic), then the event's
    ``origin_server_ts``, then the room id."""
    order = _order(child.content)
    return order is None, order or "", child.origin_server_ts, child.room_id


def space_children(children: Iterable[ChildEvent], suggested_only: bool) -> list[ChildEvent]:
    """The children a space lists, in order: valid ``via`` only (and suggested ones only)."""
    listed = [
        c
        for c in children
        if has_valid_via(c.content) and (not suggested_only or is_suggested(c.content))
    ]
    return sorted(listed, key=child_sort_key)


def is_openly_visible(
    join_rule: Any, history_visibility: Any, room_version: RoomVersion | None
) -> bool:
    """Anyone may see the room: it is public or knockable, or its history world-readable.

    ``room_version`` None (a summary from another server, which does not say) takes
    knocking as supported, as Synapse does.
    """
    if history_visibility == "world_readable" or join_rule == "public":
        return True
    if join_rule == "knock":
        return room_version is None or room_version.knock
    if join_rule == "knock_restricted":
        return room_version is None or room_version.knock_restricted_join_rule
    return False


def allowed_room_ids(join_rules: Mapping[str, Any], room_version: RoomVersion) -> list[str]:
    """The rooms whose members may join a ``restricted``/``knock_restricted`` room."""
    rule = join_rules.get("join_rule")
    if not (
        (rule == "restricted" and room_version.restricted_join_rule)
        or (rule == "knock_restricted" and room_version.knock_restricted_join_rule)
    ):
        return []
    allow = join_rules.get("allow")
    if not isinstance(allow, list):
        return []
    return [
        a["room_id"]
        for a in allow
        if isinstance(a, dict)
        and a.get("type") == "m.room_membership"
        and isinstance(a.get("room_id"), str)
    ]


def validate_remote_child(event: Any) -> None:
    """Raise ValueError unless ``event`` is a usable stripped ``m.space.child`` event from
    another server's hierarchy (as Synapse's ``_validate_hierarchy_event``)."""
    if not isinstance(event, dict):
        raise ValueError("child event is not an object")
    if not isinstance(event.get("type"), str):
        raise ValueError("child event has no type")
    if not isinstance(event.get("state_key"), str):
        raise ValueError("child event has no state_key")
    if not isinstance(event.get("content"), dict):
        raise ValueError("child event has no content")
    via = event["content"].get("via")
    if not isinstance(via, list) or not all(isinstance(v, str) for v in via):
        raise ValueError("child event has an invalid via")
