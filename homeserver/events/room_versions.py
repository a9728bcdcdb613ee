"""Room versions this server understands (1 to 12), as plain data.

Each flag names one behaviour that changed between versions, so rule code asks
``room_version.restricted_join_rule`` rather than comparing version strings.
See the spec's room version pages (``content/rooms/v1.md`` ... ``v12.md``).
"""

from __future__ import annotations

from dataclasses import dataclass

# Event formats (how event ids are made and how events reference each other).
# v1, v2: ``event_id`` `$opaque:server` is part of the event (hashed and signed), and
# ``prev_events`` / ``auth_events`` are ``[[event_id, {"sha256": hash}], ...]`` pairs.
EVENT_FORMAT_V1 = 1
# v3: event id = ``$`` + the reference hash in standard unpadded base64; id lists.
EVENT_FORMAT_V3 = 2
# v4+: event id = ``$`` + the reference hash in URL-safe unpadded base64.
EVENT_FORMAT_V4 = 3


@dataclass(frozen=True, slots=True, kw_only=True)
class RoomVersion:
    identifier: str
    # See the EVENT_FORMAT_* constants above.
    event_format: int = EVENT_FORMAT_V4
    # v1 only: state resolution version 1 (v2+ use state resolution v2).
    state_res_v1: bool = False
    # v5+: a signing key must be valid (valid_until_ts) at the event's origin_server_ts.
    enforce_key_validity: bool = True
    # v1-v5: the m.room.aliases auth rule (state key is the sender's server), and
    # redaction keeps `aliases`.
    special_case_aliases_auth: bool = False
    # v6+: canonical JSON is enforced (integers in range, no floats) on events.
    strict_canonicaljson: bool = True
    # v6+: the `notifications` power levels are checked by the power levels auth rule.
    limit_notifications_power_levels: bool = True
    # v11+: `creator` is gone from m.room.create; redaction keeps fewer top-level keys.
    implicit_room_creator: bool = False
    # v11+: redaction algorithm of v11 (keeps `invite` in power levels, `origin` dropped, ...).
    updated_redaction_rules: bool = False
    # v7+: knock membership and join rule.
    knock: bool = True
    # v8+: restricted join rule (and redaction keeps join rules' `allow`).
    restricted_join_rule: bool = True
    # v9+: redaction keeps m.room.member's `join_authorised_via_users_server`.
    redaction_keeps_authorising_user: bool = True
    # v10+: `knock_restricted` join rule.
    knock_restricted_join_rule: bool = True
    # v10+: power levels must be integers (no strings).
    strict_integer_power_levels: bool = True
    # v12: room id is derived from the create event; creators have infinite power.
    room_id_is_create_event_hash: bool = False
    # v12: state resolution v2.1.
    state_res_v2_1: bool = False

    @property
    def event_id_in_event(self) -> bool:
        """v1, v2: the event id is a field of the event (and references are pairs)."""
        return self.event_format == EVENT_FORMAT_V1


_V1_TO_V9 = dict(
    knock_restricted_join_rule=False,
    strict_integer_power_levels=False,
)
_V1_TO_V8 = dict(_V1_TO_V9, redaction_keeps_authorising_user=False)
_V1_TO_V7 = dict(_V1_TO_V8, restricted_join_rule=False)
_V1_TO_V6 = dict(_V1_TO_V7, knock=False)
_V1_TO_V5 = dict(
    _V1_TO_V6,
    special_case_aliases_auth=True,
    strict_canonicaljson=False,
    limit_notifications_power_levels=False,
)
_V1_TO_V4 = dict(_V1_TO_V5, enforce_key_validity=False)

ROOM_VERSIONS: dict[str, RoomVersion] = {
    v.identifier: v
    for v in (
        RoomVersion(identifier="1", event_format=EVENT_FORMAT_V1, state_res_v1=True, **_V1_TO_V4),
        RoomVersion(identifier="2", event_format=EVENT_FORMAT_V1, **_V1_TO_V4),
        RoomVersion(identifier="3", event_format=EVENT_FORMAT_V3, **_V1_TO_V4),
        RoomVersion(identifier="4", **_V1_TO_V4),
        RoomVersion(identifier="5", **_V1_TO_V5),
        RoomVersion(identifier="6", **_V1_TO_V6),
        RoomVersion(identifier="7", **_V1_TO_V7),
        RoomVersion(identifier="8", **_V1_TO_V8),
        RoomVersion(identifier="9", **_V1_TO_V9),
        RoomVersion(identifier="10"),
        RoomVersion(identifier="11", implicit_room_creator=True, updated_redaction_rules=True),
        RoomVersion(
            identifier="12",
            implicit_room_creator=True,
            updated_redaction_rules=True,
            room_id_is_create_event_hash=True,
            state_res_v2_1=True,
        ),
    )
}

DEFAULT_ROOM_VERSION = "12"


def get_room_version(identifier: str) -> RoomVersion | None:
    return ROOM_VERSIONS.get(identifier)
