"""Issue #14 item 8: a PDU listing the same auth event twice is refused on every path
(the PDU format checks, which /send, send_join, backfill and get_missing_events share)."""

from __future__ import annotations

from typing import Any

import pytest
import pytest_twisted

from tests.security.common import FED, assert_not_stored, create_room, message_auth_events, user
from tests.support.client import q
from tests.support.malicious_server import MaliciousServer
from tests.support.server import RunningServer

JsonDict = dict[str, Any]


@pytest.mark.parametrize("version", ["10", "11", "12"])
@pytest_twisted.ensureDeferred
async def test_send_refuses_a_pdu_listing_an_auth_event_twice(
    ours: RunningServer, attacker: MaliciousServer, version: str
) -> None:
    alice = await user(ours, "alice")
    room_id = await create_room(alice, "public_chat", version=version)
    joined = await attacker.join(ours, room_id)
    auth = message_auth_events(joined)
    prev = [joined.event["event_id"]]
    depth = joined.event["depth"] + 1
    content = {"msgtype": "m.text", "body": "twice"}
    good = attacker.build_pdu(
        version, room_id, joined.user_id, "m.room.message", {"body": "once"}, prev, auth, depth
    )
    bad = attacker.build_pdu(
        version, room_id, joined.user_id, "m.room.message", content, prev, [*auth, auth[-1]], depth
    )
    status, body = await attacker.send_pdus(ours, [good, bad])
    assert status == 200, body
    assert body["pdus"][good["event_id"]] == {}, body
    assert "more than once" in body["pdus"][bad["event_id"]].get("error", ""), body
    await assert_not_stored(alice, room_id, bad["event_id"])


@pytest_twisted.ensureDeferred
async def test_missing_event_listing_an_auth_event_twice_is_not_stored(
    ours: RunningServer, attacker: MaliciousServer
) -> None:
    alice = await user(ours, "alice")
    room_id = await create_room(alice, "public_chat")
    joined = await attacker.join(ours, room_id)
    auth = message_auth_events(joined)
    depth = joined.event["depth"] + 1
    sender = joined.user_id
    bad = attacker.build_pdu(
        "11",
        room_id,
        sender,
        "m.room.message",
        {"body": "gap"},
        [joined.event["event_id"]],
        [*auth, auth[0]],
        depth,
    )
    tip = attacker.build_pdu(
        "11", room_id, sender, "m.room.message", {"body": "tip"}, [bad["event_id"]], auth, depth + 1
    )

    async def missing(body: Any, query: Any, roomId: str) -> tuple[int, Any]:
        return 200, {"events": [{k: v for k, v in bad.items() if k != "event_id"}]}

    attacker.on("POST", f"{FED}/get_missing_events/{{roomId}}", missing)
    status, body = await attacker.send_pdus(ours, [tip])
    assert status == 200, body
    assert ("POST", f"{FED}/get_missing_events/{q(room_id)}") in attacker.received
    await assert_not_stored(alice, room_id, bad["event_id"])


@pytest_twisted.ensureDeferred
async def test_send_join_refuses_a_join_listing_an_auth_event_twice(
    ours: RunningServer, attacker: MaliciousServer
) -> None:
    alice = await user(ours, "alice")
    room_id = await create_room(alice, "public_chat")
    user_id = attacker.user()
    status, made = await attacker.request(
        ours, "GET", f"{FED}/make_join/{q(room_id)}/{q(user_id)}", query={"ver": "11"}
    )
    assert status == 200, made
    template = dict(made["event"])
    template["auth_events"] = [*template["auth_events"], template["auth_events"][0]]
    pdu = attacker.sign_pdu(template, "11")
    event_id = pdu.pop("event_id")
    status, body = await attacker.request(
        ours, "PUT", f"/_matrix/federation/v2/send_join/{q(room_id)}/{q(event_id)}", pdu
    )
    assert status in (400, 403), body
    resp = await alice.get(f"/_matrix/client/v3/rooms/{q(room_id)}/joined_members")
    assert user_id not in resp.json["joined"], resp
