"""Issue #14 item 6: a server denied by the room's m.room.server_acl takes no part in it.

Its room-scoped EDUs (typing, receipts) never reach our users, and every room-scoped
request it makes (invites, membership handshakes, reads) answers 403 M_FORBIDDEN.
"""

from __future__ import annotations

from typing import Any

import pytest_twisted

from tests.security.common import FED, room_of_two, send_state, send_text, user
from tests.support.client import Client, q
from tests.support.malicious_server import MaliciousServer
from tests.support.server import RunningServer

JsonDict = dict[str, Any]


async def _sync_ephemeral(client: Client, room_id: str) -> list[JsonDict]:
    resp = await client.get("/_matrix/client/v3/sync", params={"timeout": "0"})
    assert resp.code == 200, resp
    room = resp.json.get("rooms", {}).get("join", {}).get(room_id, {})
    return list(room.get("ephemeral", {}).get("events", []))


@pytest_twisted.ensureDeferred
async def test_denied_server_edus_invites_and_requests_are_refused(
    ours: RunningServer, attacker: MaliciousServer
) -> None:
    alice = await user(ours, "alice")
    bob = await user(ours, "bob")
    room_id = await room_of_two("public_chat", alice, bob)
    joined = await attacker.join(ours, room_id)
    message = await send_text(alice, room_id, "hello")
    await send_state(alice, room_id, "m.room.server_acl", {"allow": ["*"], "deny": ["localhost"]})

    mallory = joined.user_id
    status, body = await attacker.send_pdus(
        ours,
        [],
        [
            {
                "edu_type": "m.typing",
                "content": {"room_id": room_id, "user_id": mallory, "typing": True},
            },
            {
                "edu_type": "m.receipt",
                "content": {
                    room_id: {"m.read": {mallory: {"event_ids": [message], "data": {"ts": 1}}}}
                },
            },
        ],
    )
    assert status == 200, body
    # /send handles EDUs before answering: anything applied is in /sync already.
    for ev in await _sync_ephemeral(alice, room_id):
        assert mallory not in ev["content"].get("user_ids", []), ev
        assert mallory not in str(ev["content"]), ev

    invite = attacker.build_pdu(
        joined.room_version,
        room_id,
        mallory,
        "m.room.member",
        {"membership": "invite"},
        [joined.event["event_id"]],
        joined.event["auth_events"],
        joined.event["depth"] + 1,
        state_key=bob.user_id,
    )
    event_id = invite.pop("event_id")
    status, body = await attacker.request(
        ours,
        "PUT",
        f"/_matrix/federation/v2/invite/{q(room_id)}/{q(event_id)}",
        {"room_version": joined.room_version, "event": invite, "invite_room_state": []},
    )
    assert (status, body.get("errcode")) == (403, "M_FORBIDDEN"), body

    carol = attacker.user("carol")
    requests: list[tuple[str, str, Any, Any]] = [
        ("GET", f"{FED}/make_join/{q(room_id)}/{q(carol)}", None, {"ver": "11"}),
        ("GET", f"{FED}/make_leave/{q(room_id)}/{q(mallory)}", None, None),
        ("GET", f"{FED}/make_knock/{q(room_id)}/{q(carol)}", None, {"ver": "11"}),
        ("PUT", f"/_matrix/federation/v2/send_leave/{q(room_id)}/{q(event_id)}", {}, None),
        ("PUT", f"/_matrix/federation/v2/send_join/{q(room_id)}/{q(event_id)}", {}, None),
        ("PUT", f"{FED}/send_knock/{q(room_id)}/{q(event_id)}", {}, None),
        ("GET", f"{FED}/backfill/{q(room_id)}", None, {"v": message, "limit": "10"}),
        (
            "POST",
            f"{FED}/get_missing_events/{q(room_id)}",
            {"earliest_events": [], "latest_events": [message]},
            None,
        ),
        ("GET", f"{FED}/event/{q(message)}", None, None),
        ("GET", f"{FED}/state/{q(room_id)}", None, {"event_id": message}),
        ("GET", f"{FED}/state_ids/{q(room_id)}", None, {"event_id": message}),
        ("GET", f"{FED}/event_auth/{q(room_id)}/{q(message)}", None, None),
        ("GET", f"{FED}/timestamp_to_event/{q(room_id)}", None, {"ts": "0", "dir": "f"}),
    ]
    for method, path, content, query in requests:
        status, body = await attacker.request(ours, method, path, content, query)
        assert (status, body.get("errcode")) == (403, "M_FORBIDDEN"), (path, status, body)
