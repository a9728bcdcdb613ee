"""Authorisation rules for room versions 1 to 12, as pure functions.

Events are plain PDU dicts (``type``, ``state_key``, ``sender``, ``content``,
``room_id``, ``prev_events``, ...). The state the rules consult is a mapping of
``(type, state_key)`` to the event chosen for that key: the event's auth events
when checking "based on its auth events", or the room state before the event /
current state for the later checks on receipt of a PDU. Keys the rules do not
need are ignored, so a full state map may be passed.

Rule numbers in comments follow the room version text. Room version 12 inserted
a new rule 2, so every later rule is one higher in v12 than in v10/v11; comments
read "rule 5.3 (v12) / 4.3 (v10, v11)". Versions 1 to 9 follow the v10 numbering
with these differences, each behind a ``RoomVersion`` flag: v1-v5 have the
``m.room.aliases`` rule (before the membership rules); v1 and v2 have a final
``m.room.redaction`` rule; v1-v9 accept power levels written as strings and do not
check the named levels' types; v1-v5 do not check ``notifications``; knock (v7),
restricted (v8) and knock_restricted (v10) joins.

Things these functions deliberately leave to the caller:

* "Events must be signed by the server denoted by the ``sender``" and rule
  3.3 / 2.3 (auth events that were themselves rejected) belong to the earlier
  checks on receipt of a PDU; the caller must not hand rejected events in.
* v12 rule 2 requires the room ID to be the reference hash of an *accepted*
  create event. When the create event carries an ``event_id`` it is compared
  with the room ID here; computing the reference hash is the caller's job.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Final

from homeserver.events.format import event_reference_ids, is_valid_user_id
from homeserver.events.room_versions import ROOM_VERSIONS, RoomVersion

__all__ = [
    "AuthError",
    "ThirdPartyInviteVerifier",
    "EventSignatureVerifier",
    "auth_types_for_event",
    "check_auth_events",
    "check_auth_rules",
    "get_event_power_level",
    "get_named_level",
    "get_user_power_level",
    "is_valid_user_id",
    "room_creators",
    "verify_third_party_invite_signed",
]

JsonMapping = Mapping[str, Any]
StateKey = tuple[str, str]
AuthState = Mapping[StateKey, Mapping[str, Any]]

# (signed block of content.third_party_invite, the m.room.third_party_invite event) -> ok?
ThirdPartyInviteVerifier = Callable[[dict[str, Any], dict[str, Any]], bool]
# (event, server name) -> is the event validly signed by that server?
EventSignatureVerifier = Callable[[dict[str, Any], str], bool]

CREATE: Final = "m.room.create"
MEMBER: Final = "m.room.member"
JOIN_RULES: Final = "m.room.join_rules"
POWER_LEVELS: Final = "m.room.power_levels"
THIRD_PARTY_INVITE: Final = "m.room.third_party_invite"
ALIASES: Final = "m.room.aliases"
REDACTION: Final = "m.room.redaction"

CREATE_KEY: Final[StateKey] = (CREATE, "")
POWER_LEVELS_KEY: Final[StateKey] = (POWER_LEVELS, "")
JOIN_RULES_KEY: Final[StateKey] = (JOIN_RULES, "")

JOIN: Final = "join"
INVITE: Final = "invite"
LEAVE: Final = "leave"
BAN: Final = "ban"
KNOCK: Final = "knock"

AUTHORISING_USER: Final = "join_authorised_via_users_server"

# Power level properties holding a single level (rule 10.1 / 9.1 and 10.6 / 9.5).
NAMED_LEVELS: Final = (
    "users_default",
    "events_default",
    "state_default",
    "ban",
    "redact",
    "kick",
    "invite",
)
# Defaults from the m.room.power_levels schema (apply with or without the event).
NAMED_LEVEL_DEFAULTS: Final[Mapping[str, int]] = {
    "users_default": 0,
    "events_default": 0,
    "state_default": 50,
    "ban": 50,
    "kick": 50,
    "redact": 50,
    "invite": 0,
}
# Power level with no m.room.power_levels event: creator 100, everyone else 0.
CREATOR_LEVEL_WITHOUT_POWER_LEVELS: Final = 100

# Canonical JSON integers (the event could not be hashed/signed otherwise).
_MAX_SAFE_INT: Final = 2**53 - 1

_LEGACY_INT_RE: Final = re.compile(r"[+-]?[0-9]+")


class AuthError(Exception):
    """The event is not allowed by the authorisation rules (maps to M_FORBIDDEN)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


# ---------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------


def _server_name(user_id: str) -> str:
    """The part of a user ID after the first ``:`` ("" if there is none)."""
    _, sep, server = user_id.partition(":")
    return server if sep else ""


def _is_strict_int(value: object) -> bool:
    """A JSON integer: not a bool, not a float, within canonical JSON range."""
    return type(value) is int and -_MAX_SAFE_INT <= value <= _MAX_SAFE_INT


def _is_level(value: object, room_version: RoomVersion) -> bool:
    """Whether ``value`` is an acceptable power level in this room version."""
    if _is_strict_int(value):
        return True
    if room_version.strict_integer_power_levels:
        return False
    # Room versions before 10 also accepted strings holding an integer.
    return isinstance(value, str) and _LEGACY_INT_RE.fullmatch(value.strip()) is not None


def _as_level(value: object) -> int | None:
    """Read a power level from stored content; ``None`` if it is not one."""
    if type(value) is int:
        return value
    if isinstance(value, str) and _LEGACY_INT_RE.fullmatch(value.strip()):
        return int(value.strip())
    return None


def _content(event: JsonMapping) -> JsonMapping:
    """The event's content, or an empty mapping if it is missing or malformed."""
    content = event.get("content")
    return content if isinstance(content, Mapping) else {}


def _membership(auth_state: AuthState, user_id: str) -> str | None:
    """Current membership of ``user_id`` (``None`` when there is no member event)."""
    member = auth_state.get((MEMBER, user_id))
    if member is None:
        return None
    membership = _content(member).get("membership")
    return membership if isinstance(membership, str) else None


def _join_rule(auth_state: AuthState) -> str:
    """Current join rule; a room without m.room.join_rules is treated as ``invite``."""
    event = auth_state.get(JOIN_RULES_KEY)
    if event is None:
        return INVITE
    rule = _content(event).get("join_rule")
    return rule if isinstance(rule, str) else INVITE


def _power_levels_content(auth_state: AuthState) -> JsonMapping | None:
    event = auth_state.get(POWER_LEVELS_KEY)
    return None if event is None else _content(event)


def _find_create_event(
    auth_state: AuthState, room_version: RoomVersion, create_event: JsonMapping | None
) -> JsonMapping | None:
    """The create event: ``create_event`` first in v12, the state first otherwise."""
    from_state = auth_state.get(CREATE_KEY)
    if room_version.room_id_is_create_event_hash:
        return create_event if create_event is not None else from_state
    return from_state if from_state is not None else create_event


# ---------------------------------------------------------------------------
# Power level helpers
# ---------------------------------------------------------------------------


def room_creators(create_event: JsonMapping, room_version: RoomVersion) -> set[str]:
    """The room's creators.

    v12: the create event's ``sender`` plus ``content.additional_creators``.
    v11: the ``sender``. v10: ``content.creator`` (falling back to ``sender``).
    """
    sender = create_event.get("sender")
    content = _content(create_event)
    if room_version.room_id_is_create_event_hash:
        creators = {sender} if isinstance(sender, str) else set()
        extra = content.get("additional_creators")
        if isinstance(extra, list):
            creators.update(u for u in extra if isinstance(u, str))
        return creators
    if not room_version.implicit_room_creator:
        creator = content.get("creator")
        if isinstance(creator, str):
            return {creator}
    return {sender} if isinstance(sender, str) else set()


def get_named_level(power_levels_content: JsonMapping | None, name: str, default: int) -> int:
    """Level stored under ``name`` (e.g. ``ban``) in power levels content, else ``default``."""
    if power_levels_content is None:
        return default
    level = _as_level(power_levels_content.get(name))
    return default if level is None else level


def get_event_power_level(
    event_type: str, is_state: bool, power_levels_content: JsonMapping | None
) -> int:
    """The *required power level* to send an event of ``event_type``.

    ``events[event_type]`` if set, else ``state_default`` (50) for state events
    or ``events_default`` (0) for other events.
    """
    if power_levels_content is not None:
        events = power_levels_content.get("events")
        if isinstance(events, Mapping):
            level = _as_level(events.get(event_type))
            if level is not None:
                return level
    if is_state:
        return get_named_level(
            power_levels_content, "state_default", NAMED_LEVEL_DEFAULTS["state_default"]
        )
    return get_named_level(
        power_levels_content, "events_default", NAMED_LEVEL_DEFAULTS["events_default"]
    )


def get_user_power_level(
    user_id: str,
    auth_state: AuthState,
    room_version: RoomVersion,
    create_event: JsonMapping | None = None,
) -> int | float:
    """Power level of ``user_id``.

    v12 creators have ``float('inf')``. Otherwise ``users[user_id]`` or
    ``users_default`` from m.room.power_levels; without that event the creator
    has 100 and everyone else 0.
    """
    create = _find_create_event(auth_state, room_version, create_event)
    is_v12_creator = (
        room_version.room_id_is_create_event_hash
        and create is not None
        and user_id in room_creators(create, room_version)
    )
    if is_v12_creator:
        return math.inf
    content = _power_levels_content(auth_state)
    if content is not None:
        users = content.get("users")
        if isinstance(users, Mapping):
            level = _as_level(users.get(user_id))
            if level is not None:
                return level
        return get_named_level(content, "users_default", NAMED_LEVEL_DEFAULTS["users_default"])
    if create is not None and user_id in room_creators(create, room_version):
        return CREATOR_LEVEL_WITHOUT_POWER_LEVELS
    return 0


# ---------------------------------------------------------------------------
# Auth events selection
# ---------------------------------------------------------------------------


def auth_types_for_event(event: JsonMapping, room_version: RoomVersion) -> set[StateKey]:
    """The ``(type, state_key)`` pairs to select as ``auth_events`` (server-server API)."""
    event_type = event.get("type")
    if event_type == CREATE:
        return set()  # the create event has no auth events
    wanted: set[StateKey] = {POWER_LEVELS_KEY}
    if not room_version.room_id_is_create_event_hash:
        wanted.add(CREATE_KEY)  # v12: the create event MUST NOT be selected
    sender = event.get("sender")
    if isinstance(sender, str):
        wanted.add((MEMBER, sender))
    if event_type != MEMBER:
        return wanted

    content = _content(event)
    membership = content.get("membership")
    state_key = event.get("state_key")
    if isinstance(state_key, str):
        wanted.add((MEMBER, state_key))
    if membership in (JOIN, INVITE, KNOCK):
        wanted.add(JOIN_RULES_KEY)
    if membership == INVITE and "third_party_invite" in content:
        invite = content["third_party_invite"]
        signed = invite.get("signed") if isinstance(invite, Mapping) else None
        token = signed.get("token") if isinstance(signed, Mapping) else None
        if isinstance(token, str):
            wanted.add((THIRD_PARTY_INVITE, token))
    if membership == JOIN and room_version.restricted_join_rule:
        authoriser = content.get(AUTHORISING_USER)
        if isinstance(authoriser, str):
            wanted.add((MEMBER, authoriser))
    return wanted


def check_auth_events(
    event: JsonMapping, auth_events: Sequence[JsonMapping], room_version: RoomVersion
) -> None:
    """Rules about the event's own list of auth events (rule 3 (v12) / 2 (v10, v11)).

    ``auth_events`` are the events the PDU's ``auth_events`` IDs refer to.
    Raises :class:`AuthError` on duplicates, unexpected entries, a missing
    (v10/11) or present (v12) create event, or entries from another room.
    """
    allowed = auth_types_for_event(event, room_version)
    seen: set[StateKey] = set()
    for auth_event in auth_events:
        key = (auth_event.get("type"), auth_event.get("state_key"))
        if not (isinstance(key[0], str) and isinstance(key[1], str)):
            raise AuthError("auth event is not a state event")
        state_key: StateKey = (key[0], key[1])
        # Rule 3.1 / 2.1: no duplicate (type, state_key) pairs.
        if state_key in seen:
            raise AuthError(f"duplicate auth event for {state_key}")
        seen.add(state_key)
        # Rule 3.2 / 2.2: only entries the auth events selection algorithm picks.
        if state_key not in allowed:
            raise AuthError(f"unexpected auth event {state_key}")
        # Rule 3.5 / 2.5: every auth event belongs to this room.
        if auth_event.get("room_id") != event.get("room_id"):
            raise AuthError("auth event belongs to another room")
    # Rule 2.4 (v10, v11): the create event must be among the auth events.
    if not room_version.room_id_is_create_event_hash and CREATE_KEY not in seen:
        raise AuthError("no m.room.create event among the auth events")


# ---------------------------------------------------------------------------
# The rules
# ---------------------------------------------------------------------------


def check_auth_rules(
    event: JsonMapping,
    auth_state: AuthState,
    room_version: RoomVersion,
    *,
    create_event: JsonMapping | None = None,
    auth_event_list: Sequence[JsonMapping] | None = None,
    verify_third_party_invite_signature: ThirdPartyInviteVerifier | None = None,
    verify_event_signature: EventSignatureVerifier | None = None,
) -> None:
    """Raise :class:`AuthError` unless ``event`` passes the authorisation rules.

    ``auth_state`` maps ``(type, state_key)`` to the event used for that key.
    In v12 the create event is passed as ``create_event`` (``auth_state`` is
    consulted as a fallback); in v10/v11 it must be in ``auth_state``.

    ``auth_event_list``: if given, the events listed in the PDU's
    ``auth_events``, checked with :func:`check_auth_events` (duplicates and
    selection). ``verify_third_party_invite_signature(signed, invite_event)``
    replaces the default ed25519 check of third-party invites.
    ``verify_event_signature(event, server_name)`` replaces the default
    check that the event carries a signature from the server of
    ``join_authorised_via_users_server`` (the default only checks presence,
    cryptographic verification being part of the signature checks on receipt).
    """
    event_type = event.get("type")
    sender = event.get("sender")
    if not isinstance(event_type, str) or not isinstance(sender, str):
        raise AuthError("event has no type or sender")

    # Rule 1: m.room.create.
    if event_type == CREATE:
        _check_create_event(event, room_version)
        return

    create = _check_room_and_auth_state(event, auth_state, room_version, create_event)
    if auth_event_list is not None:
        check_auth_events(event, auth_event_list, room_version)

    # Rule 4 (v12) / 3 (v10, v11): m.federate false keeps other servers out.
    create_sender = create.get("sender")
    create_server = _server_name(create_sender) if isinstance(create_sender, str) else None
    if _content(create).get("m.federate") is False and _server_name(sender) != create_server:
        raise AuthError("room is not federated and sender is on another server")

    # v1-v5 rule 4: m.room.aliases; the state key names the sender's server.
    if event_type == ALIASES and room_version.special_case_aliases_auth:
        state_key = event.get("state_key")
        if not isinstance(state_key, str):
            raise AuthError("m.room.aliases event has no state_key")
        if state_key != _server_name(sender):
            raise AuthError("m.room.aliases state_key must be the sender's server")
        return

    # Rule 5 (v12) / 4 (v10, v11): m.room.member.
    if event_type == MEMBER:
        _check_member_event(
            event,
            sender,
            auth_state,
            room_version,
            create,
            verify_third_party_invite_signature,
            verify_event_signature,
        )
        return

    # Rule 6 (v12) / 5 (v10, v11): the sender must be joined.
    if _membership(auth_state, sender) != JOIN:
        raise AuthError(f"{sender} is not in the room")

    pl_content = _power_levels_content(auth_state)
    sender_level = get_user_power_level(sender, auth_state, room_version, create)

    # Rule 7 (v12) / 6 (v10, v11): m.room.third_party_invite needs the invite level.
    if event_type == THIRD_PARTY_INVITE:
        if sender_level >= get_named_level(pl_content, "invite", NAMED_LEVEL_DEFAULTS["invite"]):
            return
        raise AuthError(f"{sender} may not send third-party invites")

    # Rule 8 (v12) / 7 (v10, v11): the event type's required power level.
    # (m.room.redaction and m.room.aliases have no special rules in v10+:
    # only this level applies; the `redact` level is not considered here.)
    state_key = event.get("state_key")
    required = get_event_power_level(event_type, state_key is not None, pl_content)
    if required > sender_level:
        raise AuthError(f"{sender} needs power level {required} to send {event_type}")

    # Rule 9 (v12) / 8 (v10, v11): state keys naming a user belong to that user.
    if isinstance(state_key, str) and state_key.startswith("@") and state_key != sender:
        raise AuthError("state_key starting with '@' must be the sender")

    # Rule 10 (v12) / 9 (v10, v11): m.room.power_levels.
    if event_type == POWER_LEVELS:
        _check_power_levels(event, sender, sender_level, auth_state, room_version, create)

    # v1, v2 rule 11: m.room.redaction needs the redact level, or the redacted event
    # comes from the redaction's own server (both ids name their server).
    if event_type == REDACTION and room_version.event_id_in_event:
        redact_level = get_named_level(pl_content, "redact", NAMED_LEVEL_DEFAULTS["redact"])
        if sender_level >= redact_level:
            return
        redacts, event_id = event.get("redacts"), event.get("event_id")
        if (
            isinstance(redacts, str)
            and isinstance(event_id, str)
            and _server_name(redacts) == _server_name(event_id)
        ):
            return
        raise AuthError(f"{sender} may not redact events of other servers")

    # Rule 11 (v12) / 10 (v10, v11): otherwise, allow.


def _check_create_event(event: JsonMapping, room_version: RoomVersion) -> None:
    """Rule 1: m.room.create."""
    content = _content(event)
    sender = event.get("sender")
    # Rule 1.1: no prev_events.
    if event.get("prev_events"):
        raise AuthError("m.room.create must not have prev_events")
    if room_version.room_id_is_create_event_hash:
        # Rule 1.2 (v12): the room ID is derived from this event, so none is given.
        if "room_id" in event:
            raise AuthError("m.room.create must not have a room_id")
    else:
        # Rule 1.2 (v10, v11): room_id domain matches sender domain.
        room_id = event.get("room_id")
        if not isinstance(room_id, str) or not isinstance(sender, str):
            raise AuthError("m.room.create has no room_id or sender")
        if _server_name(room_id) != _server_name(sender):
            raise AuthError("m.room.create room_id domain does not match the sender")
    # Rule 1.3: content.room_version, if present, must be a recognised version.
    if "room_version" in content:
        version = content["room_version"]
        if not isinstance(version, str) or version not in ROOM_VERSIONS:
            raise AuthError(f"unrecognised room version {version!r}")
    if room_version.room_id_is_create_event_hash:
        # Rule 1.4 (v12): additional_creators is an array of valid user IDs.
        if "additional_creators" in content:
            extra = content["additional_creators"]
            if not isinstance(extra, list) or not all(is_valid_user_id(u) for u in extra):
                raise AuthError("additional_creators must be an array of user IDs")
    elif not room_version.implicit_room_creator and "creator" not in content:
        # Rule 1.4 (v10): content.creator is required.
        raise AuthError("m.room.create has no creator")
    # Rule 1.5 / 1.4 (v11): otherwise, allow.


def _check_room_and_auth_state(
    event: JsonMapping,
    auth_state: AuthState,
    room_version: RoomVersion,
    create_event: JsonMapping | None,
) -> JsonMapping:
    """v12 rule 2 and the parts of rule 3 / 2 checkable on a state map; returns the create event."""
    room_id = event.get("room_id")
    if not isinstance(room_id, str):
        raise AuthError("event has no room_id")
    if room_version.room_id_is_create_event_hash:
        create = create_event if create_event is not None else auth_state.get(CREATE_KEY)
        if create is None:
            raise AuthError("no m.room.create event given for the room")
    else:
        # Rule 2.4 (v10, v11): the create event must be among the auth events.
        create = auth_state.get(CREATE_KEY)
        if create is None:
            raise AuthError("no m.room.create event in the auth events")
    if create.get("type") != CREATE:
        raise AuthError("create event is not an m.room.create event")

    if room_version.room_id_is_create_event_hash:
        # Rule 2 (v12): the room ID is the create event's ID with '!' for '$'.
        if not room_id.startswith("!"):
            raise AuthError("invalid room_id")
        create_id = create.get("event_id")
        if create_id is not None and create_id != "$" + room_id[1:]:
            raise AuthError("room_id is not derived from the m.room.create event")
        if create.get("room_id", room_id) != room_id:
            raise AuthError("m.room.create event belongs to another room")

    for key, auth_event in auth_state.items():
        # An entry must really be the state it is filed under.
        if (auth_event.get("type"), auth_event.get("state_key")) != key:
            raise AuthError(f"auth event filed under the wrong key {key}")
        if key == CREATE_KEY and room_version.room_id_is_create_event_hash:
            continue  # v12 create events have no room_id (checked above)
        # Rule 3.5 (v12) / 2.5 (v10, v11): auth events must be for this room.
        if auth_event.get("room_id") != room_id:
            raise AuthError("auth event belongs to another room")
    return create


def _check_member_event(
    event: JsonMapping,
    sender: str,
    auth_state: AuthState,
    room_version: RoomVersion,
    create: JsonMapping,
    verify_third_party_invite_signature: ThirdPartyInviteVerifier | None,
    verify_event_signature: EventSignatureVerifier | None,
) -> None:
    """Rule 5 (v12) / 4 (v10, v11): m.room.member; returns only if allowed."""
    content = _content(event)
    target = event.get("state_key")
    membership = content.get("membership")
    # Rule 5.1 / 4.1: state_key and membership are required.
    if not isinstance(target, str) or not isinstance(membership, str):
        raise AuthError("m.room.member needs a state_key and content.membership")

    # Rule 5.2 / 4.2: join_authorised_via_users_server must have signed the event.
    if room_version.restricted_join_rule and AUTHORISING_USER in content:
        _check_authoriser_signature(event, content[AUTHORISING_USER], verify_event_signature)

    pl_content = _power_levels_content(auth_state)

    def level_of(user_id: str) -> int | float:
        return get_user_power_level(user_id, auth_state, room_version, create)

    def named(name: str) -> int:
        return get_named_level(pl_content, name, NAMED_LEVEL_DEFAULTS[name])

    sender_membership = _membership(auth_state, sender)
    target_membership = _membership(auth_state, target)

    if membership == JOIN:
        _check_join(
            event, sender, target, content, auth_state, room_version, create, level_of, named
        )
        return

    if membership == INVITE:
        # Rule 5.4.1 / 4.4.1: third-party invites.
        if "third_party_invite" in content:
            _check_third_party_invite(
                event,
                sender,
                target,
                content,
                auth_state,
                target_membership,
                verify_third_party_invite_signature,
            )
            return
        # Rule 5.4.2 / 4.4.2: the sender must be joined.
        if sender_membership != JOIN:
            raise AuthError(f"{sender} is not in the room")
        # Rule 5.4.3 / 4.4.3: cannot invite someone joined or banned.
        if target_membership in (JOIN, BAN):
            raise AuthError(f"{target} is already {target_membership}")
        # Rule 5.4.4 / 4.4.4 and 5.4.5 / 4.4.5: sender needs the invite level.
        if level_of(sender) >= named("invite"):
            return
        raise AuthError(f"{sender} may not invite")

    if membership == LEAVE:
        # Rule 5.5.1 / 4.5.1: leaving (or rejecting an invite / rescinding a knock).
        if sender == target:
            allowed = (INVITE, JOIN, KNOCK) if room_version.knock else (INVITE, JOIN)
            if target_membership in allowed:
                return
            raise AuthError(f"{sender} cannot leave a room they are not in")
        # Rule 5.5.2 / 4.5.2: kicker must be joined.
        if sender_membership != JOIN:
            raise AuthError(f"{sender} is not in the room")
        sender_level = level_of(sender)
        # Rule 5.5.3 / 4.5.3: unbanning needs the ban level.
        if target_membership == BAN and sender_level < named("ban"):
            raise AuthError(f"{sender} may not unban")
        # Rule 5.5.4 / 4.5.4 and 5.5.5 / 4.5.5: kick level and outranking the target.
        if sender_level >= named("kick") and level_of(target) < sender_level:
            return
        raise AuthError(f"{sender} may not kick {target}")

    if membership == BAN:
        # Rule 5.6.1 / 4.6.1: banner must be joined.
        if sender_membership != JOIN:
            raise AuthError(f"{sender} is not in the room")
        # Rule 5.6.2 / 4.6.2 and 5.6.3 / 4.6.3: ban level and outranking the target.
        sender_level = level_of(sender)
        if sender_level >= named("ban") and level_of(target) < sender_level:
            return
        raise AuthError(f"{sender} may not ban {target}")

    if membership == KNOCK and room_version.knock:
        # Rule 5.7.1 / 4.7.1: the join rule must allow knocking.
        join_rule = _join_rule(auth_state)
        knock_rules = (
            (KNOCK, "knock_restricted") if room_version.knock_restricted_join_rule else (KNOCK,)
        )
        if join_rule not in knock_rules:
            raise AuthError("room does not allow knocking")
        # Rule 5.7.2 / 4.7.2: only for oneself.
        if sender != target:
            raise AuthError("cannot knock on behalf of another user")
        # Rule 5.7.3 / 4.7.3 and 5.7.4 / 4.7.4: not banned, invited or joined.
        if sender_membership not in (BAN, INVITE, JOIN):
            return
        raise AuthError(f"{sender} cannot knock while {sender_membership}")

    # Rule 5.8 / 4.8: unknown membership.
    raise AuthError(f"unknown membership {membership!r}")


def _check_authoriser_signature(
    event: JsonMapping, authoriser: object, verify_event_signature: EventSignatureVerifier | None
) -> None:
    """Rule 5.2.1 / 4.2.1: signed by the homeserver of join_authorised_via_users_server."""
    if not isinstance(authoriser, str) or not is_valid_user_id(authoriser):
        raise AuthError(f"{AUTHORISING_USER} is not a user ID")
    server = _server_name(authoriser)
    if verify_event_signature is not None:
        if not verify_event_signature(dict(event), server):
            raise AuthError(f"event is not validly signed by {server}")
        return
    signatures = event.get("signatures")
    server_sigs = signatures.get(server) if isinstance(signatures, Mapping) else None
    if not isinstance(server_sigs, Mapping) or not server_sigs:
        raise AuthError(f"event is not signed by {server}")


def _check_join(
    event: JsonMapping,
    sender: str,
    target: str,
    content: JsonMapping,
    auth_state: AuthState,
    room_version: RoomVersion,
    create: JsonMapping,
    level_of: Callable[[str], int | float],
    named: Callable[[str], int],
) -> None:
    """Rule 5.3 (v12) / 4.3 (v10, v11): joins; returns only if allowed."""
    # Rule 5.3.1 / 4.3.1: the creator's join straight after the create event.
    if _is_creator_first_join(event, target, auth_state, room_version, create):
        return
    # Rule 5.3.2 / 4.3.2: only the user themselves can join.
    if sender != target:
        raise AuthError("cannot join on behalf of another user")
    membership = _membership(auth_state, sender)
    # Rule 5.3.3 / 4.3.3: banned users cannot join.
    if membership == BAN:
        raise AuthError(f"{sender} is banned")
    join_rule = _join_rule(auth_state)
    invite_like = (INVITE, KNOCK) if room_version.knock else (INVITE,)
    restricted_like: tuple[str, ...] = ()
    if room_version.restricted_join_rule:
        restricted_like += ("restricted",)
    if room_version.knock_restricted_join_rule:
        restricted_like += ("knock_restricted",)
    # Rule 5.3.4 / 4.3.4: invite (and knock) rooms need an invite (or existing join).
    if join_rule in invite_like:
        if membership in (INVITE, JOIN):
            return
        raise AuthError(f"{sender} is not invited")
    # Rule 5.3.5 / 4.3.5: restricted and knock_restricted rooms.
    if join_rule in restricted_like:
        if membership in (INVITE, JOIN):
            return  # 5.3.5.1
        authoriser = content.get(AUTHORISING_USER)
        # 5.3.5.2: the authorising user must be joined and able to invite.
        if (
            not isinstance(authoriser, str)
            or _membership(auth_state, authoriser) != JOIN
            or level_of(authoriser) < named("invite")
        ):
            raise AuthError("join is not authorised by a joined user with invite power")
        return  # 5.3.5.3
    # Rule 5.3.6 / 4.3.6: public rooms.
    if join_rule == "public":
        return
    # Rule 5.3.7 / 4.3.7: otherwise, reject.
    raise AuthError(f"cannot join a room with join rule {join_rule!r}")


def _is_creator_first_join(
    event: JsonMapping,
    target: str,
    auth_state: AuthState,
    room_version: RoomVersion,
    create: JsonMapping,
) -> bool:
    """Rule 5.3.1 / 4.3.1: the only prev event is the create event and the target created the room.

    The create event's ID is ``create['event_id']`` if present, or derived
    from the room ID in v12. Without either (v10/11 PDU without an ID), the
    prev event is taken to be the create event when the state holds no power
    levels, join rules or membership for the target, i.e. nothing but the
    create event could precede this event.
    """
    prev_events = event_reference_ids(event.get("prev_events"))
    if len(prev_events) != 1:
        return False
    if room_version.room_id_is_create_event_hash:
        creator = create.get("sender")  # v12: only the sender, not additional_creators
    elif room_version.implicit_room_creator:
        creator = create.get("sender")
    else:
        creator = _content(create).get("creator")
    if not isinstance(creator, str) or target != creator:
        return False
    create_id = create.get("event_id")
    if create_id is None and room_version.room_id_is_create_event_hash:
        room_id = event.get("room_id")
        create_id = "$" + room_id[1:] if isinstance(room_id, str) else None
    if isinstance(create_id, str):
        return bool(prev_events[0] == create_id)
    return (
        POWER_LEVELS_KEY not in auth_state
        and JOIN_RULES_KEY not in auth_state
        and (MEMBER, target) not in auth_state
    )


def _check_third_party_invite(
    event: JsonMapping,
    sender: str,
    target: str,
    content: JsonMapping,
    auth_state: AuthState,
    target_membership: str | None,
    verify: ThirdPartyInviteVerifier | None,
) -> None:
    """Rule 5.4.1 (v12) / 4.4.1 (v10, v11): invites from a third-party invite."""
    # 5.4.1.1: target must not be banned.
    if target_membership == BAN:
        raise AuthError(f"{target} is banned")
    invite = content.get("third_party_invite")
    # 5.4.1.2: a `signed` property is required.
    signed = invite.get("signed") if isinstance(invite, Mapping) else None
    if not isinstance(signed, Mapping):
        raise AuthError("third_party_invite has no signed block")
    # 5.4.1.3: `signed` needs mxid and token.
    mxid = signed.get("mxid")
    token = signed.get("token")
    if not isinstance(mxid, str) or not isinstance(token, str):
        raise AuthError("third_party_invite.signed needs mxid and token")
    # 5.4.1.4: mxid must be the invitee.
    if mxid != target:
        raise AuthError("third_party_invite mxid does not match state_key")
    # 5.4.1.5: a matching m.room.third_party_invite must exist.
    invite_event = auth_state.get((THIRD_PARTY_INVITE, token))
    if invite_event is None:
        raise AuthError("no m.room.third_party_invite for this token")
    # 5.4.1.6: sent by the same user.
    if invite_event.get("sender") != sender:
        raise AuthError("sender does not match the m.room.third_party_invite sender")
    # 5.4.1.7 and 5.4.1.8: a signature from one of the invite's public keys.
    verifier = verify if verify is not None else verify_third_party_invite_signed
    if not verifier(dict(signed), dict(invite_event)):
        raise AuthError("third_party_invite signature does not match any public key")


def _third_party_public_keys(invite_event: JsonMapping) -> list[str]:
    """Public keys of an m.room.third_party_invite (``public_key`` and ``public_keys``)."""
    content = _content(invite_event)
    keys: list[str] = []
    single = content.get("public_key")
    if isinstance(single, str):
        keys.append(single)
    many = content.get("public_keys")
    if isinstance(many, list):
        for entry in many:
            key = entry.get("public_key") if isinstance(entry, Mapping) else None
            if isinstance(key, str):
                keys.append(key)
    return keys


def verify_third_party_invite_signed(signed: dict[str, Any], invite_event: dict[str, Any]) -> bool:
    """Default check for rule 5.4.1.7: any ed25519 signature in ``signed`` by any public key.

    Keys are unpadded base64 (standard or URL-safe). Key revocation
    (``key_validity_url``) is not consulted. No public keys means reject.
    """
    from signedjson.key import decode_verify_key_bytes
    from signedjson.sign import verify_signed_json
    from unpaddedbase64 import decode_base64

    signatures = signed.get("signatures")
    if not isinstance(signatures, Mapping):
        return False
    for public_key in _third_party_public_keys(invite_event):
        try:
            key_bytes = decode_base64(public_key)
        except Exception:  # malformed base64
            continue
        for server, by_key in signatures.items():
            if not isinstance(server, str) or not isinstance(by_key, Mapping):
                continue
            for key_id in by_key:
                if not isinstance(key_id, str) or not key_id.startswith("ed25519:"):
                    continue
                try:
                    verify_key = decode_verify_key_bytes(key_id, key_bytes)
                    verify_signed_json(signed, server, verify_key)
                except Exception:  # wrong key, bad signature, malformed data
                    continue
                return True
    return False


def _check_power_levels(
    event: JsonMapping,
    sender: str,
    sender_level: int | float,
    auth_state: AuthState,
    room_version: RoomVersion,
    create: JsonMapping,
) -> None:
    """Rule 10 (v12) / 9 (v10, v11): m.room.power_levels."""
    new = _content(event)
    strict = room_version.strict_integer_power_levels
    if strict:
        # Rule 10.1 / 9.1: single levels are integers.
        for name in NAMED_LEVELS:
            if name in new and not _is_strict_int(new[name]):
                raise AuthError(f"power level {name!r} is not an integer")
        # Rule 10.2 / 9.2: events and notifications map to integers.
        for name in ("events", "notifications"):
            if name in new:
                value = new[name]
                if not isinstance(value, Mapping) or not all(
                    _is_strict_int(v) for v in value.values()
                ):
                    raise AuthError(f"power levels {name!r} must be an object of integers")
    # Rule 10.3 / 9.3: users maps valid user IDs to integers.
    if "users" in new:
        users = new["users"]
        if not isinstance(users, Mapping):
            raise AuthError("power levels 'users' must be an object")
        for user_id, level in users.items():
            if not is_valid_user_id(user_id):
                raise AuthError(f"power levels 'users' key {user_id!r} is not a user ID")
            if not _is_level(level, room_version):
                raise AuthError(f"power level for {user_id} is not an integer")
    # Rule 10.4 (v12): creators cannot be listed in users.
    if room_version.room_id_is_create_event_hash:
        listed = set(new.get("users") or {}) & room_creators(create, room_version)
        if listed:
            raise AuthError(f"room creators cannot be given a power level: {sorted(listed)}")

    # Rule 10.5 / 9.4: the first power levels event is allowed.
    previous = auth_state.get(POWER_LEVELS_KEY)
    if previous is None:
        return
    old = _content(previous)

    def check_change(
        label: str,
        old_map: JsonMapping,
        new_map: JsonMapping,
        keys: Iterable[str],
        *,
        skip_current_for: str | None = None,
        current_at_or_above: bool = False,
    ) -> None:
        for key in keys:
            in_old, in_new = key in old_map, key in new_map
            old_value = _as_level(old_map[key]) if in_old else None
            new_value = _as_level(new_map[key]) if in_new else None
            if in_old == in_new and old_value == new_value:
                continue  # unchanged
            if in_old and old_value is not None and key != skip_current_for:
                too_high = (
                    old_value >= sender_level if current_at_or_above else old_value > sender_level
                )
                if too_high:
                    raise AuthError(f"{sender} cannot change {label}{key!r} from {old_value}")
            if in_new and new_value is not None and new_value > sender_level:
                raise AuthError(f"{sender} cannot set {label}{key!r} to {new_value}")

    def sub(content: JsonMapping, name: str) -> JsonMapping:
        value = content.get(name)
        return value if isinstance(value, Mapping) else {}

    # Rule 10.6 / 9.5: users_default, events_default, ... (current and new vs sender).
    check_change("", old, new, NAMED_LEVELS)
    # Rules 10.7, 10.8 / 9.6, 9.7: entries of events and notifications (v6+).
    mapped = (
        ("events", "notifications")
        if room_version.limit_notifications_power_levels
        else ("events",)
    )
    for name in mapped:
        old_map, new_map = sub(old, name), sub(new, name)
        check_change(f"{name} ", old_map, new_map, sorted(set(old_map) | set(new_map)))
    # Rules 10.9, 10.10 / 9.8, 9.9: users; others' current level must be below the sender's.
    old_users, new_users = sub(old, "users"), sub(new, "users")
    check_change(
        "users ",
        old_users,
        new_users,
        sorted(set(old_users) | set(new_users)),
        skip_current_for=sender,
        current_at_or_above=True,
    )
    # Rule 10.11 / 9.10: otherwise, allow.
