"""Synapse's admin API for purging history and deleting rooms, over HTTP:
``/_synapse/admin/v1/purge_history``, ``purge_history_status``,
``DELETE /_synapse/admin/v2/rooms/{roomId}`` and its ``delete_status``, and
``DELETE /_synapse/admin/v1/rooms/{roomId}`` with ``purge``."""

from __future__ import annotations

import time
from typing import Any

import pytest_twisted
from twisted.internet import reactor, task

from storage.admin_jobs import ACTIVE
from tests.api.helpers import register_admin
from tests.rooms.helpers import (
    V3,
    assert_error,
    bodies,
    create_room,
    invite,
    join,
    messages,
    put_state,
    room_path,
    send,
    state_events,
    sync,
    timeline,
    user,
)
from tests.search.helpers import search
from tests.support.client import Client, q
from tests.support.server import RunningServer

ADMIN_V1 = "/_synapse/admin/v1"
ADMIN_V2 = "/_synapse/admin/v2"


def purge_path(room_id: str, event_id: str | None = None) -> str:
    path = f"{ADMIN_V1}/purge_history/{q(room_id)}"
    return path + (f"/{q(event_id)}" if event_id else "")


async def sleep(seconds: float) -> None:
    await task.deferLater(reactor, seconds, lambda: None)


async def wait_purge(admin: Client, purge_id: str) -> dict[str, Any]:
    """The purge's final status body, polling as SyTest does."""
    for _ in range(200):
        resp = await admin.get(f"{ADMIN_V1}/purge_history_status/{q(purge_id)}")
        assert resp.code == 200, resp
        if resp.json["status"] != "active":
            return dict(resp.json)
        await sleep(0.02)
    raise AssertionError("purge did not finish")


async def wait_delete(admin: Client, delete_id: str) -> dict[str, Any]:
    for _ in range(300):
        resp = await admin.get(f"{ADMIN_V2}/rooms/delete_status/{q(delete_id)}")
        assert resp.code == 200, resp
        if resp.json["status"] in ("complete", "failed"):
            return dict(resp.json)
        await sleep(0.02)
    raise AssertionError("room deletion did not finish")


async def purge(admin: Client, room_id: str, event_id: str | None = None, **body: Any) -> str:
    resp = await admin.post(purge_path(room_id, event_id), body)
    assert resp.code == 200, resp
    status = await wait_purge(admin, resp.json["purge_id"])
    assert status == {"status": "complete"}, status
    return str(resp.json["purge_id"])


async def room_with_messages(server: RunningServer, n: int) -> tuple[Client, str, list[str]]:
    alice = await user(server, "alice")
    room_id = await create_room(alice)
    assert (await put_state(alice, room_id, "m.room.name", {"name": "A room name"})).code == 200
    ids = [await send(alice, room_id, f"Message {i}") for i in range(1, n + 1)]
    return alice, room_id, ids


async def back_pages(client: Client, room_id: str, start: str) -> list[dict[str, Any]]:
    """Every event /messages gives going back from ``start``, newest first; it must end."""
    out: list[dict[str, Any]] = []
    token = start
    for _ in range(50):
        resp = await messages(client, room_id, dir="b", limit=5, **{"from": token})
        assert resp.code == 200, resp
        out.extend(resp.json["chunk"])
        if not resp.json["chunk"] or "end" not in resp.json:
            return out
        token = resp.json["end"]
    raise AssertionError("backwards pagination did not stop")


@pytest_twisted.ensureDeferred
async def test_purge_up_to_an_event_leaves_it_the_first_message_and_keeps_state(
    server: RunningServer,
) -> None:
    admin = await register_admin(server)
    alice, room_id, ids = await room_with_messages(server, 6)
    before = await sync(alice)
    since = before["next_batch"]

    assert_error(await alice.post(purge_path(room_id, ids[-1]), {}), 403, "M_FORBIDDEN")
    await purge(admin, room_id, ids[-1])

    # An incremental sync from before still works; an initial one shows only the last.
    assert (await sync(alice, since))["next_batch"]
    body = await sync(alice)
    tl = timeline(body, room_id)
    assert bodies(tl["events"]) == ["Message 6"], tl
    types = {e["type"] for e in state_events(body, room_id)} | {e["type"] for e in tl["events"]}
    for wanted in ("m.room.create", "m.room.member", "m.room.power_levels", "m.room.name"):
        assert wanted in types, types
    # /messages back stops cleanly at the purge point (a timeline held whole gives
    # "now" as its prev_batch, so it may give the last message again).
    assert bodies(await back_pages(alice, room_id, tl["prev_batch"])) in ([], ["Message 6"])
    everything = await back_pages(alice, room_id, body["next_batch"])
    assert bodies(everything) == ["Message 6"]
    # Search and /context forget them too.
    assert (await search(alice, "Message"))["count"] == 1
    ctx = await alice.get(room_path(room_id, f"/context/{q(ids[-1])}"))
    assert ctx.code == 200 and bodies(ctx.json["events_before"]) == [], ctx
    # Local events are kept (as Synapse: out of the timeline) unless asked.
    kept = await server.hs.storage.events.get_event(ids[0])
    assert kept is not None and kept.outlier

    # The room goes on: a new event, seen by sync and /messages.
    new_id = await send(alice, room_id, "After the purge")
    body = await sync(alice)
    assert bodies(timeline(body, room_id)["events"]) == ["Message 6", "After the purge"]
    assert bodies(await back_pages(alice, room_id, body["next_batch"])) == [
        "After the purge",
        "Message 6",
    ]
    ctx = await alice.get(room_path(room_id, f"/context/{q(new_id)}"))
    assert bodies(ctx.json["events_before"]) == ["Message 6"], ctx


@pytest_twisted.ensureDeferred
async def test_delete_local_events_deletes_them(server: RunningServer) -> None:
    admin = await register_admin(server)
    alice, room_id, ids = await room_with_messages(server, 4)
    await purge(admin, room_id, None, purge_up_to_event_id=ids[2], delete_local_events=True)
    assert await server.hs.storage.events.get_event(ids[0]) is None
    assert await server.hs.storage.events.get_event(ids[1]) is None
    assert await server.hs.storage.events.get_event(ids[2]) is not None
    assert_error(await alice.get(room_path(room_id, f"/event/{q(ids[0])}")), 404, "M_NOT_FOUND")
    # State events stay, whoever sent them: the room's state is whole.
    name = await alice.get(room_path(room_id, "/state/m.room.name/"))
    assert name.code == 200 and name.json["name"] == "A room name", name
    body = await sync(alice)
    assert bodies(timeline(body, room_id)["events"]) == ["Message 3", "Message 4"]


@pytest_twisted.ensureDeferred
async def test_purge_by_ts_removes_what_came_before(server: RunningServer) -> None:
    admin = await register_admin(server)
    alice, room_id, ids = await room_with_messages(server, 3)
    await sleep(0.01)
    cut = int(time.time() * 1000)
    await sleep(0.01)
    last = await send(alice, room_id, "Message 4")
    await purge(admin, room_id, purge_up_to_ts=cut)
    body = await sync(alice)
    assert bodies(timeline(body, room_id)["events"]) == ["Message 4"]
    assert (await server.hs.storage.events.get_event(last)) is not None


@pytest_twisted.ensureDeferred
async def test_purge_input_errors(server: RunningServer) -> None:
    admin = await register_admin(server)
    alice, room_id, ids = await room_with_messages(server, 2)
    other_room = await create_room(alice)
    path = purge_path(room_id)
    assert_error(await alice.post(path, {"purge_up_to_ts": 1}), 403, "M_FORBIDDEN")
    assert_error(await admin.post(path, {}), 400, "M_BAD_JSON")
    assert_error(await admin.post(path, {"purge_up_to_ts": "1"}), 400, "M_BAD_JSON")
    assert_error(await admin.post(path, {"purge_up_to_ts": True}), 400, "M_BAD_JSON")
    assert_error(
        await admin.post(path, {"purge_up_to_event_id": ids[0], "delete_local_events": "yes"}),
        400,
        "M_BAD_JSON",
    )
    assert_error(await admin.post(purge_path(other_room, ids[0]), {}), 400, "M_UNKNOWN")
    assert_error(await admin.post(purge_path(room_id, "$nope"), {}), 404, "M_NOT_FOUND")
    assert_error(
        await admin.post(purge_path("!unknown:test"), {"purge_up_to_ts": 10**13}),
        404,
        "M_NOT_FOUND",
    )
    assert_error(await admin.get(f"{ADMIN_V1}/purge_history_status/nope"), 404, "M_NOT_FOUND")
    resp = await admin.post(path, {"purge_up_to_event_id": ids[1]})
    purge_id = resp.json["purge_id"]
    assert_error(await alice.get(f"{ADMIN_V1}/purge_history_status/{purge_id}"), 403, "M_FORBIDDEN")
    await wait_purge(admin, purge_id)
    # A purge id is not a delete id.
    assert_error(await admin.get(f"{ADMIN_V2}/rooms/delete_status/{purge_id}"), 404, "M_NOT_FOUND")


@pytest_twisted.ensureDeferred
async def test_purge_job_survives_a_restart(server: RunningServer) -> None:
    admin = await register_admin(server)
    alice, room_id, ids = await room_with_messages(server, 4)
    done_id = await purge(admin, room_id, ids[1])
    # A job the server was running when it stopped (its row says so).
    depth = (await server.hs.storage.events.get_event(ids[3])).depth  # type: ignore[union-attr]
    jobs = server.hs.storage.admin_jobs
    await jobs.create(
        "cutshort", "purge_history", room_id, {"depth": depth, "delete_local_events": True}, 0
    )
    await jobs.update("cutshort", 1, status=ACTIVE)
    await server.restart()
    admin.base_url = alice.base_url = server.base_url
    assert (await wait_purge(admin, "cutshort")) == {"status": "complete"}
    assert (await wait_purge(admin, done_id)) == {"status": "complete"}
    assert await server.hs.storage.events.get_event(ids[2]) is None
    body = await sync(alice)
    assert bodies(timeline(body, room_id)["events"]) == ["Message 4"]


@pytest_twisted.ensureDeferred
async def test_delete_room_v2_shuts_down_then_purges(server: RunningServer) -> None:
    admin = await register_admin(server)
    alice, room_id, ids = await room_with_messages(server, 3)
    bob = await user(server, "bob")
    assert (await invite(alice, room_id, bob.user_id)).code == 200
    assert (await join(bob, room_id)).code == 200
    path = f"{ADMIN_V2}/rooms/{q(room_id)}"

    assert_error(await alice.delete(path, {}), 403, "M_FORBIDDEN")
    assert_error(await admin.delete(path, {"purge": "yes"}), 400, "M_BAD_JSON")
    assert_error(await admin.delete(f"{ADMIN_V2}/rooms/nope", {}), 400, "M_INVALID_PARAM")
    assert_error(
        await admin.get(f"{ADMIN_V2}/rooms/{q(room_id)}/delete_status"), 404, "M_NOT_FOUND"
    )
    resp = await admin.delete(path, {"block": True})
    assert resp.code == 200, resp
    delete_id = resp.json["delete_id"]
    done = await wait_delete(admin, delete_id)
    assert done["status"] == "complete", done
    assert done["room_id"] == room_id and done["delete_id"] == delete_id
    shutdown = done["shutdown_room"]
    assert sorted(shutdown["kicked_users"]) == sorted([alice.user_id, bob.user_id])
    assert shutdown["new_room_id"] is None
    by_room = await admin.get(f"{ADMIN_V2}/rooms/{q(room_id)}/delete_status")
    assert by_room.code == 200 and by_room.json["results"] == [done], by_room

    # Gone from the database and from memory; still blocked.
    events = server.hs.storage.events
    assert await server.hs.storage.rooms.get_version(room_id) is None
    assert await events.get_event(ids[0]) is None
    assert room_id not in (await sync(alice))["rooms"]["join"]
    assert_error(await join(alice, room_id), 403, "M_FORBIDDEN")
    # A room deletion's status is not a purge's.
    assert_error(
        await admin.get(f"{ADMIN_V1}/purge_history_status/{delete_id}"), 404, "M_NOT_FOUND"
    )


@pytest_twisted.ensureDeferred
async def test_delete_room_v2_without_purge_keeps_history(server: RunningServer) -> None:
    admin = await register_admin(server)
    alice, room_id, ids = await room_with_messages(server, 2)
    resp = await admin.delete(f"{ADMIN_V2}/rooms/{q(room_id)}", {"purge": False})
    done = await wait_delete(admin, resp.json["delete_id"])
    assert done["status"] == "complete", done
    assert await server.hs.storage.events.get_event(ids[0]) is not None


@pytest_twisted.ensureDeferred
async def test_delete_room_v1_purges_unless_told_not_to(server: RunningServer) -> None:
    admin = await register_admin(server)
    alice, room_id, ids = await room_with_messages(server, 2)
    kept_room = await create_room(alice)
    path = f"{ADMIN_V1}/rooms"
    resp = await admin.delete(f"{path}/{q(kept_room)}", {"purge": False})
    assert resp.code == 200, resp
    assert await server.hs.storage.rooms.get_version(kept_room) is not None
    resp = await admin.delete(f"{path}/{q(room_id)}", {})
    assert resp.code == 200 and resp.json["kicked_users"] == [alice.user_id], resp
    assert await server.hs.storage.rooms.get_version(room_id) is None
    assert await server.hs.storage.events.get_event(ids[0]) is None
    # Alice can make new rooms and sync as before.
    assert room_id not in (await sync(alice))["rooms"]["join"]
    new_room = await create_room(alice)
    await send(alice, new_room, "still here")
    resp = await alice.get(f"{V3}/joined_rooms")
    assert resp.json["joined_rooms"] == [new_room], resp


@pytest_twisted.ensureDeferred
async def test_unread_counts_forget_purged_events(server: RunningServer) -> None:
    admin = await register_admin(server)
    alice, room_id, ids = await room_with_messages(server, 1)
    assert (await invite(alice, room_id, admin.user_id)).code == 200
    assert (await join(admin, room_id)).code == 200
    first = await send(alice, room_id, "First message")
    resp = await admin.post(room_path(room_id, f"/receipt/m.read/{q(first)}"), {})
    assert resp.code == 200, resp
    sent = [await send(alice, room_id, f"Unread {i}") for i in range(5)]
    body = await sync(admin)
    unread = body["rooms"]["join"][room_id]["unread_notifications"]
    assert unread["notification_count"] == 5, unread
    await purge(admin, room_id, sent[-1])
    await send(alice, room_id, "New message")
    body = await sync(admin)
    unread = body["rooms"]["join"][room_id]["unread_notifications"]
    assert unread["notification_count"] == 2, unread


@pytest_twisted.ensureDeferred
async def test_a_purge_that_cannot_run_is_reported_failed(server: RunningServer) -> None:
    admin = await register_admin(server)
    alice, room_id, ids = await room_with_messages(server, 2)
    # Past the room's newest event: nothing would be left to build on (as Synapse,
    # refused when the job runs). Such a job is only made here, and found at start-up.
    jobs = server.hs.storage.admin_jobs
    params = {"depth": 10**6, "delete_local_events": True}
    await jobs.create("toofar", "purge_history", room_id, params, 0)
    await server.restart()
    admin.base_url = alice.base_url = server.base_url
    status = await wait_purge(admin, "toofar")
    assert status == {
        "status": "failed",
        "error": "topological_ordering is greater than forward extremities",
    }
    # Nothing was touched.
    body = await sync(alice)
    assert bodies(timeline(body, room_id)["events"]) == ["Message 1", "Message 2"]
