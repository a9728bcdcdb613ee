"""U+0000 in strings: PostgreSQL cannot keep it in a text column, so a client's JSON
holding one is 400 M_BAD_JSON at the edge (found by the fuzzer: a UIA session id with
a NUL answered 500 on PostgreSQL), and a PDU holding one is refused on its own, without
failing the rest of its transaction."""

from __future__ import annotations

import pytest_twisted

from tests.security.common import assert_not_stored, create_room, message_auth_events, user
from tests.support.client import q
from tests.support.malicious_server import MaliciousServer
from tests.support.server import RunningServer


@pytest_twisted.ensureDeferred
async def test_nul_in_client_json_is_bad_json(ours: RunningServer) -> None:
    alice = await user(ours, "alice")
    room_id = await create_room(alice, "private_chat")
    sends = [
        ("POST", "/_matrix/client/v3/delete_devices", {"devices": [], "auth": {"session": "\0"}}),
        (
            "PUT",
            f"/_matrix/client/v3/rooms/{q(room_id)}/send/m.room.message/t1",
            {"msgtype": "m.text", "body": "a\0b"},
        ),
        ("PUT", f"/_matrix/client/v3/rooms/{q(room_id)}/state/m.room.topic/a\0", {"topic": "t"}),
        ("PUT", f"/_matrix/client/v3/profile/{q(alice.user_id)}/displayname", {"\0": "x"}),
    ]
    for method, path, body in sends:
        resp = await alice.request(method, path, body)
        if "/state/" in path:  # a NUL in a path segment is refused as a parameter
            assert (resp.code, resp.json["errcode"]) == (400, "M_INVALID_PARAM"), (path, resp)
        else:
            assert (resp.code, resp.json["errcode"]) == (400, "M_BAD_JSON"), (path, resp)
    # The same requests without the NUL still go through: nothing was left half done.
    resp = await alice.put(
        f"/_matrix/client/v3/rooms/{q(room_id)}/send/m.room.message/t2",
        {"msgtype": "m.text", "body": "ab"},
    )
    assert resp.code == 200, resp


@pytest_twisted.ensureDeferred
async def test_pdu_with_nul_is_refused_alone(
    ours: RunningServer, attacker: MaliciousServer
) -> None:
    alice = await user(ours, "alice")
    room_id = await create_room(alice, "public_chat")
    joined = await attacker.join(ours, room_id)
    auth = message_auth_events(joined)
    prev = [joined.event["event_id"]]
    depth = joined.event["depth"] + 1

    def message(body: str) -> dict[str, object]:
        return attacker.build_pdu(
            joined.room_version,
            room_id,
            joined.user_id,
            "m.room.message",
            {"msgtype": "m.text", "body": body},
            prev,
            auth,
            depth,
        )

    good, bad = message("fine"), message("a\0b")
    receipt = {"event_ids": ["$a\0b"], "data": {"ts": 1}}
    edu = {"edu_type": "m.receipt", "content": {room_id: {"m.read": {joined.user_id: receipt}}}}
    status, answer = await attacker.send_pdus(ours, [good, bad], [edu])
    assert status == 200, answer
    assert answer["pdus"][good["event_id"]] == {}, answer
    assert "U+0000" in answer["pdus"][bad["event_id"]].get("error", ""), answer
    await assert_not_stored(alice, room_id, str(bad["event_id"]))
    resp = await alice.get(f"/_matrix/client/v3/rooms/{q(room_id)}/event/{q(good['event_id'])}")
    assert resp.code == 200, resp
