"""``/_synapse/admin/v1/event_reports``: the reports clients sent, for server admins."""

from __future__ import annotations

import pytest_twisted

from tests.api.helpers import register_admin
from tests.rooms.helpers import assert_error, create_room, join, room_path, send, user
from tests.support.client import Client, q
from tests.support.server import RunningServer

REPORTS = "/_synapse/admin/v1/event_reports"


async def report(client: Client, room_id: str, event_id: str, reason: str) -> None:
    resp = await client.post(
        room_path(room_id, f"/report/{q(event_id)}"), {"reason": reason, "score": -100}
    )
    assert resp.code == 200, resp


@pytest_twisted.ensureDeferred
async def test_event_reports_list_page_filter_get_and_delete(server: RunningServer) -> None:
    admin = await register_admin(server)
    alice = await user(server, "alice")
    bob = await user(server, "bob")
    room_a = await create_room(alice, name="Room A", preset="public_chat", room_alias_name="ra")
    room_b = await create_room(bob, name="Room B")
    assert (await join(bob, room_a)).code == 200
    bad = await send(alice, room_a, "bad")
    worse = await send(bob, room_b, "worse")
    await report(bob, room_a, bad, "first")
    await report(bob, room_b, worse, "second")
    await report(alice, room_a, bad, "third")

    assert_error(await alice.get(REPORTS), 403, "M_FORBIDDEN")
    resp = await admin.get(REPORTS)
    assert resp.code == 200, resp
    assert resp.json["total"] == 3 and "next_token" not in resp.json
    listed = resp.json["event_reports"]
    assert [r["reason"] for r in listed] == ["third", "second", "first"]  # newest first
    first = listed[2]
    assert first["room_id"] == room_a and first["event_id"] == bad
    assert first["user_id"] == bob.user_id and first["sender"] == alice.user_id
    assert first["score"] == -100
    assert first["name"] == "Room A"
    assert first["canonical_alias"] == f"#ra:{server.hs.server_name}"

    forwards = await admin.get(REPORTS, params={"dir": "f", "limit": "2"})
    assert [r["reason"] for r in forwards.json["event_reports"]] == ["first", "second"]
    assert forwards.json["next_token"] == 2 and forwards.json["total"] == 3
    by_user = await admin.get(REPORTS, params={"user_id": "alice"})
    assert [r["reason"] for r in by_user.json["event_reports"]] == ["third"]
    by_room = await admin.get(REPORTS, params={"room_id": room_b})
    assert [r["reason"] for r in by_room.json["event_reports"]] == ["second"]
    by_sender = await admin.get(REPORTS, params={"event_sender_user_id": bob.user_id})
    assert [r["reason"] for r in by_sender.json["event_reports"]] == ["second"]
    assert (await admin.get(REPORTS, params={"user_id": "%"})).json["total"] == 0

    detail = await admin.get(f"{REPORTS}/{first['id']}")
    assert detail.code == 200, detail
    assert detail.json["reason"] == "first"
    assert detail.json["event_json"]["content"]["body"] == "bad"
    assert_error(await alice.get(f"{REPORTS}/{first['id']}"), 403, "M_FORBIDDEN")
    assert_error(await alice.delete(f"{REPORTS}/{first['id']}"), 403, "M_FORBIDDEN")

    deleted = await admin.delete(f"{REPORTS}/{first['id']}")
    assert deleted.code == 200 and deleted.json == {}, deleted
    assert_error(await admin.get(f"{REPORTS}/{first['id']}"), 404, "M_NOT_FOUND")
    assert_error(await admin.delete(f"{REPORTS}/{first['id']}"), 404, "M_NOT_FOUND")
    assert (await admin.get(REPORTS)).json["total"] == 2

    assert_error(await admin.get(f"{REPORTS}/abc"), 400, "M_INVALID_PARAM")
    assert_error(await admin.get(f"{REPORTS}/-1"), 400, "M_INVALID_PARAM")
    assert_error(await admin.get(REPORTS, params={"from": "-1"}), 400, "M_INVALID_PARAM")
    assert_error(await admin.get(REPORTS, params={"dir": "x"}), 400, "M_INVALID_PARAM")
