"""When a redaction takes effect (events/redaction.py): the target field per room version,
the ``redact`` power level at the redaction, the same-server rule, never across rooms.

Table-driven cases pin the spec's examples; Hypothesis checks the rule against a small
independent model over random power levels, senders, servers and room versions.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from homeserver.events.redaction import has_redact_power, redaction_applies, redaction_target
from homeserver.events.room_versions import ROOM_VERSIONS, RoomVersion

ROOM = "!room:a"
OTHER_ROOM = "!other:a"
CREATOR = "@creator:a"


def version(identifier: str) -> RoomVersion:
    return ROOM_VERSIONS[identifier]


def redaction(
    sender: str, target: str, room_version: RoomVersion, room_id: str = ROOM
) -> dict[str, Any]:
    """A redaction in the room version's own format."""
    ev: dict[str, Any] = {
        "event_id": "$redaction",
        "type": "m.room.redaction",
        "room_id": room_id,
        "sender": sender,
        "content": {},
    }
    if room_version.updated_redaction_rules:
        ev["content"]["redacts"] = target
    else:
        ev["redacts"] = target
    return ev


def message(sender: str, event_id: str = "$target", room_id: str = ROOM) -> dict[str, Any]:
    return {"event_id": event_id, "type": "m.room.message", "room_id": room_id, "sender": sender}


def create_event(room_version: RoomVersion) -> dict[str, Any]:
    content: dict[str, Any] = {"room_version": room_version.identifier}
    if not room_version.implicit_room_creator:
        content["creator"] = CREATOR
    return {
        "event_id": "$create",
        "type": "m.room.create",
        "state_key": "",
        "room_id": ROOM,
        "sender": CREATOR,
        "content": content,
    }


def auth_state(
    room_version: RoomVersion, pl_content: dict[str, Any] | None
) -> dict[tuple[str, str], dict[str, Any]]:
    state = {("m.room.create", ""): create_event(room_version)}
    if pl_content is not None:
        state[("m.room.power_levels", "")] = {
            "type": "m.room.power_levels",
            "state_key": "",
            "sender": CREATOR,
            "content": pl_content,
        }
    return state


# --- the target field --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("identifier", "top_level", "in_content", "expected"),
    [
        ("10", "$top", None, "$top"),
        ("10", None, "$content", None),  # v10: content.redacts means nothing
        ("10", "$top", "$content", "$top"),
        ("11", "$top", None, None),  # v11+: the top-level key left the format
        ("11", None, "$content", "$content"),
        ("12", "$top", "$content", "$content"),
        ("12", None, 5, None),
    ],
)
def test_target_is_read_from_the_room_versions_own_field(
    identifier: str, top_level: str | None, in_content: object, expected: str | None
) -> None:
    ev: dict[str, Any] = {"type": "m.room.redaction", "sender": "@u:a", "content": {}}
    if top_level is not None:
        ev["redacts"] = top_level
    if in_content is not None:
        ev["content"]["redacts"] = in_content
    assert redaction_target(ev, version(identifier)) == expected
    assert redaction_target({**ev, "type": "m.room.message"}, version(identifier)) is None


# --- table: the spec's cases -------------------------------------------------------------


@pytest.mark.parametrize("identifier", ["10", "11", "12"])
@pytest.mark.parametrize(
    ("redacter", "target_sender", "redacter_level", "applies"),
    [
        ("@mallory:evil", "@alice:a", 0, False),  # power 0, another server's event
        ("@mallory:evil", "@alice:a", 49, False),
        ("@mallory:evil", "@alice:a", 50, True),  # redact level (default 50)
        ("@mallory:evil", "@mallory:evil", 0, True),  # own event
        ("@eve:evil", "@mallory:evil", 0, True),  # same server: the server's own call
        ("@bob:a", "@alice:a", 0, True),  # same server as the target's sender
    ],
)
def test_power_or_same_server(
    identifier: str, redacter: str, target_sender: str, redacter_level: int, applies: bool
) -> None:
    rv = version(identifier)
    state = auth_state(rv, {"users": {redacter: redacter_level}})
    r = redaction(redacter, "$target", rv)
    power = has_redact_power(r, state, rv, create_event(rv))
    assert power == (redacter_level >= 50)
    assert redaction_applies(r, message(target_sender), rv, sender_had_power=power) is applies


@pytest.mark.parametrize("identifier", ["10", "11", "12"])
def test_never_across_rooms_nor_to_another_target(identifier: str) -> None:
    rv = version(identifier)
    r = redaction("@alice:a", "$target", rv)
    assert not redaction_applies(
        r, message("@alice:a", room_id=OTHER_ROOM), rv, sender_had_power=True
    )
    assert not redaction_applies(
        r, message("@alice:a", event_id="$else"), rv, sender_had_power=True
    )
    assert not redaction_applies(
        {**r, "type": "m.room.message"}, message("@alice:a"), rv, sender_had_power=True
    )


def test_v12_creator_has_infinite_power_without_being_listed() -> None:
    rv = version("12")
    state = auth_state(rv, {"users": {}, "redact": 100, "users_default": 0})
    r = redaction(CREATOR, "$target", rv)
    assert has_redact_power(r, state, rv, create_event(rv))
    assert not has_redact_power(redaction("@bob:a", "$target", rv), state, rv, create_event(rv))


def test_without_power_levels_only_the_creator_has_power() -> None:
    for identifier in ("10", "11"):
        rv = version(identifier)
        state = auth_state(rv, None)
        assert has_redact_power(redaction(CREATOR, "$t", rv), state, rv)
        assert not has_redact_power(redaction("@bob:a", "$t", rv), state, rv)


# --- property: the rule against an independent model -------------------------------------

SERVERS = ["a", "b", "evil"]
LOCALPARTS = ["creator", "alice", "bob", "mallory"]
user_ids = st.builds(
    lambda lp, srv: f"@{lp}:{srv}", st.sampled_from(LOCALPARTS), st.sampled_from(SERVERS)
)
levels = st.integers(min_value=-10, max_value=110)


@st.composite
def power_levels(draw: st.DrawFn) -> dict[str, Any] | None:
    if draw(st.booleans()):
        return None  # no m.room.power_levels event yet
    content: dict[str, Any] = {"users": draw(st.dictionaries(user_ids, levels, max_size=4))}
    if draw(st.booleans()):
        content["redact"] = draw(levels)
    if draw(st.booleans()):
        content["users_default"] = draw(levels)
    return content


def model_level(user: str, rv: RoomVersion, pl: dict[str, Any] | None) -> float:
    """The spec's power level of ``user`` (creator ``@creator:a``), written out again."""
    if rv.room_id_is_create_event_hash and user == CREATOR:
        return math.inf
    if pl is None:
        return 100 if user == CREATOR else 0
    if user in pl["users"]:
        return float(pl["users"][user])
    return float(pl.get("users_default", 0))


def server(user: str) -> str:
    return user.split(":", 1)[1]


@settings(max_examples=400, deadline=None)
@given(
    identifier=st.sampled_from(sorted(ROOM_VERSIONS)),
    pl=power_levels(),
    redacter=user_ids,
    target_sender=user_ids,
    same_room=st.booleans(),
    field=st.sampled_from(["own", "other", "both"]),
)
def test_applies_iff_power_or_same_server_in_the_same_room(
    identifier: str,
    pl: dict[str, Any] | None,
    redacter: str,
    target_sender: str,
    same_room: bool,
    field: str,
) -> None:
    rv = version(identifier)
    if rv.room_id_is_create_event_hash and pl is not None:
        pl["users"].pop(CREATOR, None)  # v12: creators cannot be listed
    state = auth_state(rv, pl)
    r = redaction(redacter, "$target", rv)
    own_field_names_target = field != "other"
    if field == "other":
        # The target named only in the field this room version does not read.
        r = {k: v for k, v in r.items() if k != "redacts"}
        r["content"] = {}
        if rv.updated_redaction_rules:
            r["redacts"] = "$target"
        else:
            r["content"]["redacts"] = "$target"
    elif field == "both":
        r["redacts"] = "$target"
        r["content"] = {**r["content"], "redacts": "$target"}
    target = message(target_sender, room_id=ROOM if same_room else OTHER_ROOM)

    power = has_redact_power(r, state, rv, create_event(rv))
    redact_level = (pl or {}).get("redact", 50)
    assert power == (model_level(redacter, rv, pl) >= redact_level)

    expected = (
        same_room
        and own_field_names_target
        and (power or server(redacter) == server(target_sender))
    )
    assert redaction_applies(r, target, rv, sender_had_power=power) is expected
