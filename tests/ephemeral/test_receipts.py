"""Receipts (/receipt), read markers (/read_markers) and their delivery through /sync."""

from __future__ import annotations

from typing import Any

import pytest_twisted

from tests.ephemeral.helpers import (
    V3,
    assert_error,
    create_room,
    ephemeral,
    restart,
    room_account_data,
    room_path,
    send,
    shared_room,
    sync,
    user,
)
from tests.support.client import Client, Response, q
from tests.support.server import RunningServer


async def receipt(
    client: Client,
    room_id: str,
    event_id: str,
    receipt_type: str = "m.read",
    body: dict[str, Any] | None = None,
) -> Response:
    path = room_path(room_id, f"/receipt/{q(receipt_type)}/{q(event_id)}")
    return await client.post(path, body if body is not None else {})


def receipt_content(body: dict[str, Any], room_id: str) -> dict[str, Any]:
    """All m.receipt contents of a room in one sync, merged."""
    merged: dict[str, Any] = {}
    for event in ephemeral(body, room_id, "m.receipt"):
        for event_id, by_type in event["content"].items():
            for receipt_type, by_user in by_type.items():
                merged.setdefault(event_id, {}).setdefault(receipt_type, {}).update(by_user)
    return merged


@pytest_twisted.ensureDeferred
async def test_read_receipt_reaches_other_members_through_sync(server: RunningServer) -> None:
    alice, bob = await user(server, "alice"), await user(server, "bob")
    room = await shared_room(alice, bob)
    event_id = await send(bob, room, "read me")
    since = (await sync(bob))["next_batch"]

    resp = await receipt(alice, room, event_id)
    assert resp.code == 200, resp
    assert resp.json == {}

    body = await sync(bob, since, timeout=5000)
    content = receipt_content(body, room)
    assert list(content) == [event_id]
    entry = content[event_id]["m.read"][alice.user_id]
    assert isinstance(entry["ts"], int) and "thread_id" not in entry
    # The next incremental sync does not repeat it.
    again = await sync(bob, body["next_batch"])
    assert receipt_content(again, room) == {}


@pytest_twisted.ensureDeferred
async def test_private_receipt_is_seen_only_by_its_owner(server: RunningServer) -> None:
    alice, bob = await user(server, "alice"), await user(server, "bob")
    room = await shared_room(alice, bob)
    event_id = await send(bob, room)
    bob_since = (await sync(bob))["next_batch"]
    alice_since = (await sync(alice))["next_batch"]

    resp = await receipt(alice, room, event_id, "m.read.private")
    assert resp.code == 200, resp

    mine = receipt_content(await sync(alice, alice_since, timeout=5000), room)
    assert alice.user_id in mine[event_id]["m.read.private"]
    theirs = await sync(bob, bob_since, timeout=300)
    assert receipt_content(theirs, room) == {}
    assert receipt_content(await sync(bob), room) == {}  # not in an initial sync either
    assert "m.read.private" in receipt_content(await sync(alice), room)[event_id]


@pytest_twisted.ensureDeferred
async def test_only_the_latest_receipt_per_user_and_thread_is_kept(
    server: RunningServer,
) -> None:
    alice, bob = await user(server, "alice"), await user(server, "bob")
    room = await shared_room(alice, bob)
    first = await send(bob, room, "one")
    second = await send(bob, room, "two")

    assert (await receipt(alice, room, first)).code == 200
    assert (await receipt(alice, room, second)).code == 200
    # Going back is ignored: receipts only move forward.
    assert (await receipt(alice, room, first)).code == 200
    # A threaded (main timeline) receipt is kept beside the unthreaded one.
    assert (await receipt(alice, room, first, body={"thread_id": "main"})).code == 200

    content = receipt_content(await sync(bob), room)
    assert content[second]["m.read"][alice.user_id].get("thread_id") is None
    assert content[first]["m.read"][alice.user_id]["thread_id"] == "main"
    assert alice.user_id in content[second]["m.read"]
    rows = await server.hs.storage.receipts.get_user_receipts(room, alice.user_id or "")
    assert sorted((r.event_id, r.thread_id) for r in rows) == sorted(
        [(second, None), (first, "main")]
    )


@pytest_twisted.ensureDeferred
async def test_threaded_receipts_must_match_the_events_thread(server: RunningServer) -> None:
    alice = await user(server, "alice")
    room = await create_room(alice)
    root = await send(alice, room, "root")
    reply = await send(
        alice,
        room,
        {
            "msgtype": "m.text",
            "body": "in thread",
            "m.relates_to": {"rel_type": "m.thread", "event_id": root},
        },
    )
    other = await send(alice, room, "elsewhere")

    assert (await receipt(alice, room, reply, body={"thread_id": root})).code == 200
    assert (await receipt(alice, room, root, body={"thread_id": root})).code == 200
    assert (await receipt(alice, room, root, body={"thread_id": "main"})).code == 200
    assert (await receipt(alice, room, other, body={"thread_id": "main"})).code == 200
    for event_id, thread_id in ((reply, "main"), (other, root), (reply, "$nothing")):
        assert_error(
            await receipt(alice, room, event_id, body={"thread_id": thread_id}),
            400,
            "M_INVALID_PARAM",
        )

    content = receipt_content(await sync(alice), room)
    assert content[reply]["m.read"][alice.user_id]["thread_id"] == root


@pytest_twisted.ensureDeferred
async def test_receipt_errors(server: RunningServer) -> None:
    alice, bob, eve = [await user(server, n) for n in ("alice", "bob", "eve")]
    room = await shared_room(alice, bob)
    other_room = await create_room(alice)
    event_id = await send(alice, room)
    foreign_event = await send(alice, other_room)

    assert_error(await receipt(alice, room, event_id, "m.unknown"), 400, "M_INVALID_PARAM")
    assert_error(await receipt(eve, room, event_id), 403, "M_FORBIDDEN")
    assert_error(await receipt(alice, room, "$missing"), 404, "M_NOT_FOUND")
    assert_error(await receipt(bob, room, foreign_event), 404, "M_NOT_FOUND")
    assert_error(await receipt(alice, "!nope:test.local", event_id), 404, "M_NOT_FOUND")
    assert_error(await receipt(alice, "not-a-room", event_id), 400, "M_INVALID_PARAM")
    assert_error(await receipt(alice, room, "no-sigil"), 400, "M_INVALID_PARAM")
    for bad in ("", 5, None):
        resp = await receipt(alice, room, event_id, body={"thread_id": bad})
        assert_error(resp, 400, "M_INVALID_PARAM")
    resp = await receipt(alice, room, event_id, "m.fully_read", body={"thread_id": "main"})
    assert_error(resp, 400, "M_INVALID_PARAM")
    path = room_path(room, f"/receipt/m.read/{q(event_id)}")
    assert_error(await alice.post(path, {}, token=False), 401, "M_MISSING_TOKEN")
    resp = await alice.request("POST", path, raw=b"[1]")
    assert_error(resp, 400, "M_BAD_JSON")
    # A member who left may no longer send receipts.
    assert (await bob.post(room_path(room, "/leave"), {})).code == 200
    assert_error(await receipt(bob, room, event_id), 403, "M_FORBIDDEN")


@pytest_twisted.ensureDeferred
async def test_fully_read_receipt_sets_room_account_data_and_only_moves_forward(
    server: RunningServer,
) -> None:
    alice = await user(server, "alice")
    room = await create_room(alice)
    first = await send(alice, room, "one")
    second = await send(alice, room, "two")
    since = (await sync(alice))["next_batch"]

    assert (await receipt(alice, room, second, "m.fully_read")).code == 200
    body = await sync(alice, since, timeout=5000)
    assert room_account_data(body, room)["m.fully_read"] == {"event_id": second}
    assert receipt_content(body, room) == {}  # a marker is not a receipt

    assert (await receipt(alice, room, first, "m.fully_read")).code == 200
    path = f"{V3}/user/{q(alice.user_id or '')}/rooms/{q(room)}/account_data/m.fully_read"
    resp = await alice.get(path)
    assert resp.code == 200 and resp.json == {"event_id": second}, resp


@pytest_twisted.ensureDeferred
async def test_read_markers_set_marker_and_both_receipts(server: RunningServer) -> None:
    alice, bob = await user(server, "alice"), await user(server, "bob")
    room = await shared_room(alice, bob)
    first = await send(bob, room, "one")
    second = await send(bob, room, "two")
    bob_since = (await sync(bob))["next_batch"]

    resp = await alice.post(
        room_path(room, "/read_markers"),
        {"m.fully_read": first, "m.read": first, "m.read.private": second},
    )
    assert resp.code == 200 and resp.json == {}, resp

    mine = await sync(alice)
    assert room_account_data(mine, room)["m.fully_read"] == {"event_id": first}
    content = receipt_content(mine, room)
    assert alice.user_id in content[first]["m.read"]
    assert alice.user_id in content[second]["m.read.private"]
    theirs = receipt_content(await sync(bob, bob_since, timeout=5000), room)
    assert theirs == {first: {"m.read": {alice.user_id: theirs[first]["m.read"][alice.user_id]}}}


@pytest_twisted.ensureDeferred
async def test_read_markers_errors_store_nothing(server: RunningServer) -> None:
    alice, eve = await user(server, "alice"), await user(server, "eve")
    room = await create_room(alice)
    event_id = await send(alice, room)
    path = room_path(room, "/read_markers")

    assert_error(await alice.post(path, {"m.read": 5}), 400, "M_BAD_JSON")
    assert_error(await alice.post(path, {"m.read": ""}), 400, "M_INVALID_PARAM")
    resp = await alice.post(path, {"m.fully_read": event_id, "m.read": "$missing"})
    assert_error(resp, 404, "M_NOT_FOUND")
    assert_error(await eve.post(path, {"m.read": event_id}), 403, "M_FORBIDDEN")
    assert_error(await alice.request("POST", path, raw=b"nope"), 400, "M_NOT_JSON")

    body = await sync(alice)
    assert "m.fully_read" not in room_account_data(body, room)
    assert receipt_content(body, room) == {}
    # Nothing to set is fine.
    assert (await alice.post(path, {})).code == 200


@pytest_twisted.ensureDeferred
async def test_receipts_survive_a_restart(
    server: RunningServer, tmp_path: Any, database: dict[str, Any]
) -> None:
    alice, bob = await user(server, "alice"), await user(server, "bob")
    room = await shared_room(alice, bob)
    first = await send(bob, room, "one")
    second = await send(bob, room, "two")
    assert (await receipt(alice, room, first)).code == 200
    since = (await sync(bob))["next_batch"]

    restarted = await restart(server, str(tmp_path), database)
    try:
        bob.base_url = alice.base_url = restarted.base_url
        content = receipt_content(await sync(bob), room)
        assert alice.user_id in content[first]["m.read"]
        # A token from before the restart still yields exactly the new receipt.
        assert (await receipt(alice, room, second)).code == 200
        content = receipt_content(await sync(bob, since, timeout=5000), room)
        assert list(content) == [second]
    finally:
        await restarted.stop()
