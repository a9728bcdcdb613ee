"""Room versions this server understands, as plain data.

Each flag names one behaviour that changed between versions, so rule code asks
``room_version.restricted_join_rule`` rather than comparing version strings.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RoomVersion:
    identifier: str
    # v11+: `creator` is gone from m.room.create; redaction keeps fewer top-level keys.
    implicit_room_creator: bool
    # v11+: redaction algorithm of v11 (keeps `invite` in power levels, `origin` dropped, ...).
    updated_redaction_rules: bool
    # v7+: knock membership and join rule.
    knock: bool
    # v8+: restricted join rule; v10+: `knock_restricted`.
    restricted_join_rule: bool
    knock_restricted_join_rule: bool
    # v10+: power levels must be integers (no strings).
    strict_integer_power_levels: bool
    # v12: room id is derived from the create event; creators have infinite power.
    room_id_is_create_event_hash: bool
    # v12: state resolution v2.1.
    state_res_v2_1: bool


ROOM_VERSIONS: dict[str, RoomVersion] = {
    v.identifier: v
    for v in (
        RoomVersion("10", False, False, True, True, True, True, False, False),
        RoomVersion("11", True, True, True, True, True, True, False, False),
        RoomVersion("12", True, True, True, True, True, True, True, True),
    )
}

DEFAULT_ROOM_VERSION = "12"


def get_room_version(identifier: str) -> RoomVersion | None:
    return ROOM_VERSIONS.get(identifier)
