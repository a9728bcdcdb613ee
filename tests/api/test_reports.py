"""Reporting content over HTTP: events, rooms and users (stored for the admins)."""

from __future__ import annotations

import pytest_twisted

from tests.api.helpers import with_config
from tests.rooms.helpers import (
    V3,
    assert_error,
    create_room,
    join,
    leave,
    room_path,
    send,
    user,
)
from tests.support.client import q
from tests.support.server import RunningServer


@pytest_twisted.ensureDeferred
async def test_report_event_is_stored(server: RunningServer) -> None:
    alice = await user(server, "alice")
    room_id = await create_room(alice)
    event_id = await send(alice, room_id, "bad")
    body = {"reason": "spam", "score": -100}
    resp = await alice.post(room_path(room_id, f"/report/{q(event_id)}"), body)
    assert resp.code == 200, resp
    assert resp.json == {}
    reports = await server.hs.storage.reports.get_event_reports(room_id)
    assert [(r.event_id, r.user_id, r.reason, r.content) for r in reports] == [
        (event_id, alice.user_id, "spam", body)
    ]


@pytest_twisted.ensureDeferred
async def test_report_event_the_reporter_cannot_see_is_404(server: RunningServer) -> None:
    alice = await user(server, "alice")
    bob = await user(server, "bob")
    room_id = await create_room(alice)
    event_id = await send(alice, room_id, "private")
    path = room_path(room_id, f"/report/{q(event_id)}")
    assert_error(await bob.post(path, {"reason": "x"}), 404, "M_NOT_FOUND")
    missing = room_path(room_id, f"/report/{q('$missing')}")
    assert_error(await alice.post(missing, {"reason": "x"}), 404, "M_NOT_FOUND")
    assert await server.hs.storage.reports.get_event_reports() == []


@pytest_twisted.ensureDeferred
async def test_report_redacted_event_is_404(server: RunningServer) -> None:
    alice = await user(server, "alice")
    room_id = await create_room(alice)
    event_id = await send(alice, room_id, "oops")
    resp = await alice.put(room_path(room_id, f"/redact/{q(event_id)}/r1"), {})
    assert resp.code == 200, resp
    resp = await alice.post(room_path(room_id, f"/report/{q(event_id)}"), {"reason": "x"})
    assert_error(resp, 404, "M_NOT_FOUND")


@pytest_twisted.ensureDeferred
async def test_report_event_with_bad_fields_is_400(server: RunningServer) -> None:
    alice = await user(server, "alice")
    room_id = await create_room(alice)
    event_id = await send(alice, room_id, "bad")
    path = room_path(room_id, f"/report/{q(event_id)}")
    assert_error(await alice.post(path, {"reason": 5}), 400, "M_BAD_JSON")
    assert_error(await alice.post(path, {"score": "high"}), 400, "M_BAD_JSON")
    resp = await alice.request("POST", path, raw=b"{")
    assert_error(resp, 400, "M_NOT_JSON")


@pytest_twisted.ensureDeferred
async def test_report_room_is_stored_without_being_a_member(server: RunningServer) -> None:
    alice = await user(server, "alice")
    bob = await user(server, "bob")
    room_id = await create_room(alice, preset="public_chat")
    assert (await join(bob, room_id)).code == 200
    assert (await leave(bob, room_id)).code == 200
    resp = await bob.post(room_path(room_id, "/report"), {"reason": "abusive room"})
    assert resp.code == 200, resp
    reports = await server.hs.storage.reports.get_room_reports()
    assert [(r.target, r.user_id, r.reason) for r in reports] == [
        (room_id, bob.user_id, "abusive room")
    ]


@pytest_twisted.ensureDeferred
async def test_report_unknown_room_is_404_and_reason_is_required(server: RunningServer) -> None:
    alice = await user(server, "alice")
    room_id = await create_room(alice)
    resp = await alice.post(room_path("!nowhere:test", "/report"), {"reason": "x"})
    assert_error(resp, 404, "M_NOT_FOUND")
    assert_error(await alice.post(room_path(room_id, "/report"), {}), 400, "M_MISSING_PARAM")


@pytest_twisted.ensureDeferred
async def test_report_user_is_stored_and_unknown_users_are_hidden(server: RunningServer) -> None:
    alice = await user(server, "alice")
    bob = await user(server, "bob")
    path = f"{V3}/users/{q(bob.user_id)}/report"
    resp = await alice.post(path, {"reason": "harassment"})
    assert resp.code == 200, resp
    # Unknown local users and remote users: accepted, nothing stored, nothing revealed.
    for target in ("@nobody:" + bob.user_id.split(":", 1)[1], "@someone:elsewhere.example"):
        resp = await alice.post(f"{V3}/users/{q(target)}/report", {"reason": "x"})
        assert resp.code == 200, resp
    reports = await server.hs.storage.reports.get_user_reports()
    assert [(r.target, r.user_id, r.reason) for r in reports] == [
        (bob.user_id, alice.user_id, "harassment")
    ]
    assert_error(await alice.post(path, {"reason": "x" * 1001}), 400, "M_BAD_JSON")
    assert_error(await alice.post(path, {}), 400, "M_MISSING_PARAM")


@with_config(rc_reports={"per_second": 0.001, "burst_count": 2})
@pytest_twisted.ensureDeferred
async def test_reports_are_rate_limited(server: RunningServer) -> None:
    alice = await user(server, "alice")
    bob = await user(server, "bob")
    path = f"{V3}/users/{q(bob.user_id)}/report"
    for _ in range(2):
        assert (await alice.post(path, {"reason": "x"})).code == 200
    resp = await alice.post(path, {"reason": "x"})
    assert_error(resp, 429, "M_LIMIT_EXCEEDED")
