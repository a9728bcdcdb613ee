"""Redactions: the redaction algorithm ("pruning") and when a redaction applies.

Room versions 1-5 keep ``m.room.aliases``' ``aliases``; 8+ keep join rules' ``allow``;
9+ keep ``join_authorised_via_users_server``; 11 and 12 use the v11 rules
(``RoomVersion.updated_redaction_rules``). See the spec's room version pages.

When a redaction applies (the spec's "Handling redactions", room versions 3+): the
auth rules accept any ``m.room.redaction`` its sender may send, whatever it targets.
The redaction then takes effect on its target only if both are known, they are in
the same room, and either the redaction's sender held the ``redact`` power level in
the state the redaction was authorised against, or the target's sender is on the
same server as the redaction's sender. Otherwise the redaction is kept but changes
nothing (as Synapse's ``recheck_redaction``). The power check needs the state at the
redaction, which is at hand only when the redaction is accepted, while the target may
arrive later: so it is made once (:func:`has_redact_power`) and its answer kept with
the redaction, and :func:`redaction_applies` takes that answer.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any, Protocol

from homeserver.events.auth_rules import (
    NAMED_LEVEL_DEFAULTS,
    AuthState,
    get_named_level,
    get_user_power_level,
)
from homeserver.events.room_versions import RoomVersion

__all__ = ["has_redact_power", "prune_event", "redaction_applies", "redaction_target"]

REDACTION = "m.room.redaction"


class EventFields(Protocol):
    """Mapping-style read of an event: a PDU dict (with ``event_id``) or an ``Event``."""

    def get(self, key: str, default: Any = None, /) -> Any: ...


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
        if room_version.redaction_keeps_authorising_user:
            keep = ("membership", "join_authorised_via_users_server")
        else:
            keep = ("membership",)
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
    elif event_type == "m.room.aliases" and room_version.special_case_aliases_auth:
        keep = ("aliases",)
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


def redaction_target(event: EventFields, room_version: RoomVersion) -> str | None:
    """The event id ``event`` redacts, or None when it is no redaction.

    Before v11 the target is the top-level ``redacts``; v11 moved it into
    ``content.redacts`` and dropped the top-level key from the event format. Each
    version reads only its own field, so a v10 redaction naming its target only in
    ``content`` redacts nothing.
    """
    if event.get("type") != REDACTION:
        return None
    if room_version.updated_redaction_rules:
        content = event.get("content")
        target = content.get("redacts") if isinstance(content, Mapping) else None
    else:
        target = event.get("redacts")
    return target if isinstance(target, str) else None


def has_redact_power(
    redaction: EventFields,
    auth_state: AuthState,
    room_version: RoomVersion,
    create_event: Mapping[str, Any] | None = None,
) -> bool:
    """Whether the redaction's sender holds the ``redact`` level in ``auth_state``
    (the state the redaction is authorised against: its auth events, or the room's
    state for a local event). False for anything that is not a redaction."""
    sender = redaction.get("sender")
    if redaction.get("type") != REDACTION or not isinstance(sender, str):
        return False
    pl = auth_state.get(("m.room.power_levels", ""))
    pl_content = pl.get("content") if pl is not None else None
    redact_level = get_named_level(
        pl_content if isinstance(pl_content, Mapping) else None,
        "redact",
        NAMED_LEVEL_DEFAULTS["redact"],
    )
    level = get_user_power_level(sender, auth_state, room_version, create_event)
    return level >= redact_level


def _server_of(user_id: object) -> str | None:
    if not isinstance(user_id, str):
        return None
    _, sep, server = user_id.partition(":")
    return server if sep else None


def _room_of(event: EventFields) -> object:
    room_id = event.get("room_id")
    event_id = event.get("event_id")
    if room_id is None and event.get("type") == "m.room.create" and isinstance(event_id, str):
        return "!" + event_id[1:]  # a v12 create event's room id is its own hash
    return room_id


def redaction_applies(
    redaction: EventFields,
    target: EventFields,
    room_version: RoomVersion,
    *,
    sender_had_power: bool,
) -> bool:
    """Whether ``redaction`` takes effect on ``target`` (both known, both accepted).

    ``sender_had_power``: :func:`has_redact_power` at the redaction. The redaction
    must name ``target`` in this room version's field and be in the same room; then
    it applies if its sender had the power, or is on the target sender's server.
    """
    target_id = target.get("event_id")
    if target_id is None or redaction_target(redaction, room_version) != target_id:
        return False
    room_id = _room_of(redaction)
    if room_id is None or room_id != _room_of(target):
        return False
    if sender_had_power:
        return True
    server = _server_of(redaction.get("sender"))
    return server is not None and server == _server_of(target.get("sender"))
