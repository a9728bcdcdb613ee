"""Remote ``unsigned`` data is not trusted: only stripped state of memberships stays."""

from __future__ import annotations

from federation.event_auth_checks import strip_unsigned


def test_unsigned_is_dropped_from_ordinary_events() -> None:
    pdu = {"type": "m.room.message", "unsigned": {"age": 5, "redacted_because": {}}}
    assert strip_unsigned(pdu) == {"type": "m.room.message"}
    assert "unsigned" in pdu  # the input is not modified


def test_membership_keeps_only_the_stripped_state() -> None:
    state = [{"type": "m.room.name", "state_key": "", "content": {"name": "x"}}]
    pdu = {
        "type": "m.room.member",
        "unsigned": {"invite_room_state": state, "age": 1, "m.relations": {}},
    }
    assert strip_unsigned(pdu) == {
        "type": "m.room.member",
        "unsigned": {"invite_room_state": state},
    }
    assert strip_unsigned({"type": "m.room.member", "unsigned": {"age": 1}}) == {
        "type": "m.room.member"
    }


def test_without_unsigned_the_pdu_is_returned_as_is() -> None:
    pdu = {"type": "m.room.message"}
    assert strip_unsigned(pdu) is pdu
