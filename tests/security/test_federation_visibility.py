"""Issue #14 items 1 and 2: what a server may read of a room over federation.

A server with no user in the room reads nothing of it; a server that joined reads the
history the visibility at each event allows it (by its users' membership *at that
event*), the rest redacted (/backfill, /get_missing_events) or not found (/event).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import pytest_twisted

from crypto.event_hashing import sign_event
from homeserver.events.room_versions import ROOM_VERSIONS
from tests.security.common import (
    FED,
    create_room,
    get_missing_events,
    room_of_two,
    send_text,
    user,
)
from tests.support.client import q
from tests.support.malicious_server import MaliciousServer
from tests.support.server import RunningServer

JsonDict = dict[str, Any]


@pytest_twisted.ensureDeferred
async def test_server_not_in_room_reads_nothing_of_a_private_room(
    ours: RunningServer, attacker: MaliciousServer
) -> None:
    alice = await user(ours, "alice")
    bob = await user(ours, "bob")
    room_id = await room_of_two("private_chat", alice, bob)
    secret = await send_text(alice, room_id, "the secret plan")

    status, body = await attacker.request(
        ours,
        "GET",
        f"{FED}/timestamp_to_event/{q(room_id)}",
        query={"ts": "9999999999999", "dir": "b"},
    )
    assert status == 403, body
    status, body = await attacker.request(ours, "GET", f"{FED}/event/{q(secret)}")
    assert status in (403, 404), body
    assert "secret plan" not in json.dumps(body)
    reads: list[tuple[str, str, Any, Any]] = [
        ("GET", f"{FED}/backfill/{q(room_id)}", None, {"v": secret, "limit": "50"}),
        (
            "POST",
            f"{FED}/get_missing_events/{q(room_id)}",
            {"earliest_events": [], "latest_events": [secret], "limit": 20},
            None,
        ),
        ("GET", f"{FED}/state/{q(room_id)}", None, {"event_id": secret}),
        ("GET", f"{FED}/state_ids/{q(room_id)}", None, {"event_id": secret}),
        ("GET", f"{FED}/event_auth/{q(room_id)}/{q(secret)}", None, None),
    ]
    for method, path, content, query in reads:
        status, body = await attacker.request(ours, method, path, content, query)
        assert status == 403, (path, body)
        assert body["errcode"] == "M_FORBIDDEN", (path, body)


@pytest_twisted.ensureDeferred
async def test_backfill_cannot_start_from_another_rooms_event(
    ours: RunningServer, attacker: MaliciousServer
) -> None:
    alice = await user(ours, "alice")
    public = await create_room(alice, "public_chat")
    private = await create_room(alice, "private_chat")
    secret = await send_text(alice, private, "the secret plan")
    await attacker.join(ours, public)

    status, body = await attacker.request(
        ours, "GET", f"{FED}/backfill/{q(public)}", query={"v": secret, "limit": "50"}
    )
    assert status == 200, body
    assert "secret plan" not in json.dumps(body)
    assert all(p["room_id"] == public for p in body["pdus"])
    status, body = await get_missing_events(attacker, ours, public, secret)
    assert status == 200, body
    assert "secret plan" not in json.dumps(body)


def _bodies(pdus: list[JsonDict]) -> dict[str, str | None]:
    """message text -> as served (None when redacted), keyed by the text we sent."""
    return {
        p["content"].get("body", f"redacted {p['depth']}"): p["content"].get("body")
        for p in pdus
        if p["type"] == "m.room.message"
    }


async def _answer_invites(attacker: MaliciousServer) -> None:
    """The attacker co-signs invites of its users, as a server must."""

    async def on_invite(body: Any, query: Any, roomId: str, eventId: str) -> tuple[int, Any]:
        version = ROOM_VERSIONS[body["room_version"]]
        event = sign_event(body["event"], attacker.server_name, attacker.signing_key, version)
        return 200, {"event": event}

    attacker.on("PUT", "/_matrix/federation/v2/invite/{roomId}/{eventId}", on_invite)


@pytest.mark.parametrize(
    ("visibility", "visible_before"),
    [
        ("joined", set()),
        ("invited", {"after invite"}),
        ("shared", {"before invite", "after invite"}),
        ("world_readable", {"before invite", "after invite"}),
    ],
)
@pytest_twisted.ensureDeferred
async def test_history_before_a_server_joined_follows_visibility_at_each_event(
    ours: RunningServer, attacker: MaliciousServer, visibility: str, visible_before: set[str]
) -> None:
    await _answer_invites(attacker)
    alice = await user(ours, "alice")
    room_id = await create_room(alice, "public_chat", visibility)
    before_invite = await send_text(alice, room_id, "before invite")
    resp = await alice.post(
        f"/_matrix/client/v3/rooms/{q(room_id)}/invite", {"user_id": attacker.user()}
    )
    assert resp.code == 200, resp
    await send_text(alice, room_id, "after invite")
    joined = await attacker.join(ours, room_id)
    after_join = await send_text(alice, room_id, "after join")

    status, body = await attacker.request(
        ours, "GET", f"{FED}/backfill/{q(room_id)}", query={"v": after_join, "limit": "50"}
    )
    assert status == 200, body
    served = _bodies(body["pdus"])
    assert served.get("after join") == "after join"
    for text in ("before invite", "after invite"):
        assert (text in served) == (text in visible_before), (text, served)
    redacted = [p for p in body["pdus"] if p["type"] == "m.room.message" and not p["content"]]
    assert len(redacted) == 2 - len(visible_before)  # redacted, not dropped

    status, body = await get_missing_events(attacker, ours, room_id, after_join)
    assert status == 200, body
    served = _bodies(body["events"])
    for text in ("before invite", "after invite"):
        assert (text in served) == (text in visible_before), (text, served)

    status, body = await attacker.request(ours, "GET", f"{FED}/event/{q(before_invite)}")
    if "before invite" in visible_before:
        assert status == 200 and body["pdus"][0]["content"]["body"] == "before invite", body
    else:
        assert status == 404, body
        assert "before invite" not in json.dumps(body)
    # Its own join, and what follows it, it always sees.
    status, body = await attacker.request(ours, "GET", f"{FED}/event/{q(joined.event['event_id'])}")
    assert status == 200, body
