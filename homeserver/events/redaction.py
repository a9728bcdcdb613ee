"""The redaction algorithm ("pruning") for the room versions we support.

Room version 10 uses the v9 rules; 11 and 12 use the v11 rules
(``RoomVersion.updated_redaction_rules``). See the spec's room version pages.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from homeserver.events.room_versions import RoomVersion

__all__ = ["prune_event"]

# Top-level keys kept by every supported version.
_KEPT_KEYS = frozenset(
    {
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
)
# Extra top-level keys kept before v11.
_KEPT_KEYS_PRE_V11 = _KEPT_KEYS | {"prev_state", "origin", "membership"}

_POWER_LEVEL_KEYS = (
    "ban",
    "events",
    "events_default",
    "kick",
    "redact",
    "state_default",
    "users",
    "users_default",
)


def _pruned_content(
    event_type: Any, content: Mapping[str, Any], room_version: RoomVersion
) -> dict[str, Any]:
    """The part of ``content`` that survives redaction for this event type."""
    v11 = room_version.updated_redaction_rules
    keep: tuple[str, ...] = ()
    out: dict[str, Any] = {}

    if event_type == "m.room.member":
        keep = ("membership", "join_authorised_via_users_server")
        if v11:
            # Only the `signed` part of a third-party invite survives.
            tpi = content.get("third_party_invite")
            if isinstance(tpi, Mapping):
                out["third_party_invite"] = {"signed": tpi["signed"]} if "signed" in tpi else {}
    elif event_type == "m.room.create":
        if v11:
            return dict(content)
        keep = ("creator",)
    elif event_type == "m.room.join_rules":
        keep = ("join_rule", "allow") if room_version.restricted_join_rule else ("join_rule",)
    elif event_type == "m.room.power_levels":
        keep = _POWER_LEVEL_KEYS + ("invite",) if v11 else _POWER_LEVEL_KEYS
    elif event_type == "m.room.history_visibility":
        keep = ("history_visibility",)
    elif event_type == "m.room.redaction" and v11:
        keep = ("redacts",)

    for key in keep:
        if key in content:
            out[key] = content[key]
    return out


def prune_event(event: Mapping[str, Any], room_version: RoomVersion) -> dict[str, Any]:
    """Return a redacted deep copy of ``event`` (federation format) for ``room_version``.

    ``content`` is always present in the result (``{}`` if absent or not an object);
    ``unsigned`` is dropped entirely: callers add ``redacted_because`` themselves.
    """
    kept_keys = _KEPT_KEYS if room_version.updated_redaction_rules else _KEPT_KEYS_PRE_V11
    pruned: dict[str, Any] = {k: v for k, v in event.items() if k in kept_keys}
    content = event.get("content")
    if not isinstance(content, Mapping):
        content = {}
    pruned["content"] = _pruned_content(event.get("type"), content, room_version)
    return copy.deepcopy(pruned)
