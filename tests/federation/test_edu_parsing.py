"""Inbound EDU parsing and outbound EDU shapes, as plain functions, with Synapse's own
EDUs (``federation-samples``) as test vectors."""

from __future__ import annotations

import json
from typing import Any

import pytest

from federation.edus import (
    PresenceUpdate,
    RemoteReceipt,
    TypingUpdate,
    parse_presence,
    parse_receipts,
    parse_typing,
    presence_push_item,
    receipt_edu_content,
    typing_content,
)
from storage.presence import PresenceState
from storage.receipts import Receipt
from tests.support.samples import SAMPLES, samples_missing_reason

ROOM = "!room:a.example"
EVENT = "$" + "A" * 43


def sample(name: str) -> dict[str, Any]:
    reason = samples_missing_reason()
    if reason:
        pytest.skip(reason)
    data: dict[str, Any] = json.loads((SAMPLES / name).read_text())
    return data


# Synapse's EDUs --------------------------------------------------------------------------


def test_synapse_typing_edu_parses() -> None:
    s = sample("edu_m_typing.json")
    update = parse_typing(s["transaction_origin"], s["edu"]["content"])
    c = s["edu"]["content"]
    assert update == TypingUpdate(c["room_id"], c["user_id"], True)
    # Our outbound shape is Synapse's, key for key.
    assert typing_content(c["room_id"], c["user_id"], True) == c


def test_synapse_receipt_edu_parses_and_ours_has_its_shape() -> None:
    s = sample("edu_m_receipt.json")
    content = s["edu"]["content"]
    [receipt] = parse_receipts(s["transaction_origin"], content)
    [(room_id, by_type)] = content.items()
    [(user_id, entry)] = by_type["m.read"].items()
    assert receipt == RemoteReceipt(
        room_id, user_id, entry["event_ids"][0], None, entry["data"]["ts"]
    )
    ours = receipt_edu_content(
        Receipt(room_id, "m.read", user_id, None, entry["event_ids"][0], entry["data"], 7)
    )
    assert ours == content


def test_synapse_presence_edu_parses() -> None:
    s = sample("edu_m_presence.json")
    [item] = s["edu"]["content"]["push"]
    updates = parse_presence(s["transaction_origin"], s["edu"]["content"])
    assert updates == [
        PresenceUpdate(item["user_id"], "online", item["last_active_ago"], True, None)
    ]


def test_synapse_edus_from_another_origin_are_refused() -> None:
    for name, parse in (
        ("edu_m_typing.json", parse_typing),
        ("edu_m_receipt.json", parse_receipts),
        ("edu_m_presence.json", parse_presence),
    ):
        s = sample(name)
        assert not parse("evil.example", s["edu"]["content"]), name


# Typing ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content",
    [
        {"room_id": ROOM, "user_id": "@bob:b.example", "typing": "yes"},
        {"room_id": "room", "user_id": "@bob:b.example", "typing": True},
        {"room_id": ROOM, "user_id": "bob", "typing": True},
        {"room_id": ROOM, "user_id": "@bob:a.example", "typing": True},  # forged
        {"room_id": ROOM, "typing": False},
        {"room_id": 5, "user_id": "@bob:b.example", "typing": True},
    ],
)
def test_bad_typing_is_dropped(content: dict[str, Any]) -> None:
    assert parse_typing("b.example", content) is None


def test_typing_stop() -> None:
    content = {"room_id": ROOM, "user_id": "@bob:b.example", "typing": False}
    assert parse_typing("b.example", content) == TypingUpdate(ROOM, "@bob:b.example", False)


def test_typing_origin_with_port_matches_user_domain() -> None:
    content = {"room_id": ROOM, "user_id": "@bob:127.0.0.1:8448", "typing": True}
    assert parse_typing("127.0.0.1:8448", content) is not None
    assert parse_typing("127.0.0.1", content) is None


# Receipts --------------------------------------------------------------------------------


def test_receipts_keep_only_origin_users_and_public_reads() -> None:
    def entry(**data: Any) -> dict[str, Any]:
        return {"event_ids": [EVENT], "data": {"ts": 5, **data}}

    content = {
        ROOM: {
            "m.read": {
                "@bob:b.example": entry(thread_id="$root"),
                "@alice:a.example": entry(),  # not a user of the sender
                "@carol:b.example": {"event_ids": EVENT, "data": {}},  # malformed
                "@dan:b.example": entry(thread_id=7),  # a bad thread id counts as none
            },
            "m.read.private": {"@erin:b.example": entry()},  # never over federation
        },
        "not-a-room": {"m.read": {"@bob:b.example": entry()}},
        "!other:a.example": "junk",
    }
    assert parse_receipts("b.example", content) == [
        RemoteReceipt(ROOM, "@bob:b.example", EVENT, "$root", 5),
        RemoteReceipt(ROOM, "@dan:b.example", EVENT, None, 5),
    ]


def test_receipt_without_ts_counts_as_zero() -> None:
    content = {ROOM: {"m.read": {"@bob:b.example": {"event_ids": [EVENT], "data": {}}}}}
    assert parse_receipts("b.example", content) == [
        RemoteReceipt(ROOM, "@bob:b.example", EVENT, None, 0)
    ]


def test_outbound_threaded_receipt_carries_thread_id_in_data() -> None:
    receipt = Receipt(ROOM, "m.read", "@a:a.example", "$root", EVENT, {"ts": 9}, 3)
    assert receipt_edu_content(receipt) == {
        ROOM: {
            "m.read": {
                "@a:a.example": {"event_ids": [EVENT], "data": {"ts": 9, "thread_id": "$root"}}
            }
        }
    }


# Presence --------------------------------------------------------------------------------


def test_presence_entries_are_checked_one_by_one() -> None:
    content = {
        "push": [
            {
                "user_id": "@bob:b.example",
                "presence": "unavailable",
                "status_msg": "away",
                "last_active_ago": 1000,
            },
            {"user_id": "@alice:a.example", "presence": "online"},  # forged
            {"user_id": "@carol:b.example", "presence": "busy"},  # unknown state
            {
                "user_id": "@dan:b.example",
                "presence": "online",
                "last_active_ago": -5,
                "currently_active": "yes",
                "status_msg": 3,
            },
            "junk",
        ]
    }
    assert parse_presence("b.example", content) == [
        PresenceUpdate("@bob:b.example", "unavailable", 1000, False, "away"),
        PresenceUpdate("@dan:b.example", "online", 0, False, None),
    ]
    assert parse_presence("b.example", {"push": "x"}) == []
    assert parse_presence("b.example", {}) == []


def test_outbound_presence_item() -> None:
    state = PresenceState("@a:a.example", "online", "hi", 1000, 0, True, 4)
    assert presence_push_item(state, 1500) == {
        "user_id": "@a:a.example",
        "presence": "online",
        "currently_active": True,
        "last_active_ago": 500,
        "status_msg": "hi",
    }
    offline = PresenceState("@a:a.example", "offline", None, 0, 0, True, 5)
    assert presence_push_item(offline, 1500) == {
        "user_id": "@a:a.example",
        "presence": "offline",
        "currently_active": False,
    }
