"""Strings a database or a decoder cannot take (found by the fuzzer).

U+0000: PostgreSQL cannot keep it in a text column, so a client's JSON holding one is
400 M_BAD_JSON at the edge (a UIA session id with a NUL answered 500 on PostgreSQL),
and a PDU holding one is refused on its own, without failing the rest of its
transaction. Invalid UTF-8 in a repeated federation query value is 400."""

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


@pytest_twisted.ensureDeferred
async def test_invalid_utf8_in_repeated_federation_query_values_is_400(
    ours: RunningServer, attacker: MaliciousServer
) -> None:
    # backfill's ?v= and make_join's ?ver= were decoded by hand: invalid UTF-8 was a 500.
    alice = await user(ours, "alice")
    room_id = await create_room(alice, "public_chat")
    joined = await attacker.join(ours, room_id)
    paths = [
        f"/_matrix/federation/v1/backfill/{q(room_id)}?v=%FF&limit=5",
        f"/_matrix/federation/v1/make_join/{q(room_id)}/{q(joined.user_id)}?ver=%FF",
    ]
    for path in paths:
        status, answer = await attacker.request(ours, "GET", path)
        assert (status, answer["errcode"]) == (400, "M_INVALID_PARAM"), (path, answer)
