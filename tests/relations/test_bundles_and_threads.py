"""Bundled aggregations in /event, /messages, /context, /sync, /relations; /threads."""

from __future__ import annotations

from typing import Any

import pytest_twisted

from tests.ephemeral.helpers import (
    assert_error,
    create_room,
    room_path,
    send,
    shared_room,
    sync,
    user,
)
from tests.relations.helpers import (
    edit,
    get_event,
    m_relations,
    next_txn,
    react,
    send_ok,
    thread_reply,
    threads,
)
from tests.support.client import q
from tests.support.server import RunningServer


def timeline(body: dict[str, Any], room_id: str) -> dict[str, dict[str, Any]]:
    events = body["rooms"]["join"][room_id]["timeline"]["events"]
    return {e["event_id"]: e for e in events}


@pytest_twisted.ensureDeferred
async def test_latest_edit_is_bundled_and_content_is_left_alone(server: RunningServer) -> None:
    alice, bob = await user(server, "alice"), await user(server, "bob")
    room_id = await shared_room(alice, bob)
    original = await send(alice, room_id, "helo")
    await edit(alice, room_id, original, "hello")
    latest = await edit(alice, room_id, original, "hello!")

    resp = await get_event(bob, room_id, original)
    assert resp.code == 200, resp
    assert resp.json["content"]["body"] == "helo"
    bundled = m_relations(resp.json)
    assert set(bundled) == {"m.replace"}
    assert bundled["m.replace"]["event_id"] == latest
    assert bundled["m.replace"]["content"]["m.new_content"]["body"] == "hello!"
    assert bundled["m.replace"]["sender"] == alice.user_id


@pytest_twisted.ensureDeferred
async def test_reactions_are_not_bundled_and_references_are(server: RunningServer) -> None:
    alice = await user(server, "alice")
    room_id = await create_room(alice)
    target = await send(alice, room_id, "target")
    await react(alice, room_id, target, "👍")
    ref = await send_ok(
        alice,
        room_id,
        "org.example.note",
        {"m.relates_to": {"rel_type": "m.reference", "event_id": target}},
    )
    bundled = m_relations((await get_event(alice, room_id, target)).json)
    assert bundled == {"m.reference": {"chunk": [{"event_id": ref}]}}


@pytest_twisted.ensureDeferred
async def test_redacted_original_has_no_edit_bundled(server: RunningServer) -> None:
    alice = await user(server, "alice")
    room_id = await create_room(alice)
    original = await send(alice, room_id, "oops")
    await edit(alice, room_id, original, "still oops")
    resp = await alice.put(room_path(room_id, f"/redact/{q(original)}/{q(next_txn())}"), {})
    assert resp.code == 200, resp
    got = (await get_event(alice, room_id, original)).json
    assert got["content"] == {}
    assert "m.relations" not in got.get("unsigned", {})


@pytest_twisted.ensureDeferred
async def test_thread_summary_is_per_viewer(server: RunningServer) -> None:
    alice, bob, carol = [await user(server, n) for n in ("alice", "bob", "carol")]
    room_id = await shared_room(alice, bob, carol)
    root = await send(alice, room_id, "root")
    await thread_reply(bob, room_id, root, "one")
    latest = await thread_reply(bob, room_id, root, "two")
    latest_edit = await edit(bob, room_id, latest, "two (edited)")

    summaries = {}
    for client in (alice, bob, carol):
        resp = await get_event(client, room_id, root)
        summaries[client.user_id] = m_relations(resp.json)["m.thread"]
    for summary in summaries.values():
        assert summary["count"] == 2
        assert summary["latest_event"]["event_id"] == latest
        # The latest event carries its own bundled edit.
        assert m_relations(summary["latest_event"])["m.replace"]["event_id"] == latest_edit
    assert summaries[alice.user_id]["current_user_participated"] is True  # the root's sender
    assert summaries[bob.user_id]["current_user_participated"] is True  # replied
    assert summaries[carol.user_id]["current_user_participated"] is False


@pytest_twisted.ensureDeferred
async def test_redacting_the_latest_thread_reply_updates_the_summary(
    server: RunningServer,
) -> None:
    alice = await user(server, "alice")
    room_id = await create_room(alice)
    root = await send(alice, room_id, "root")
    first = await thread_reply(alice, room_id, root, "one")
    second = await thread_reply(alice, room_id, root, "two")
    resp = await alice.put(room_path(room_id, f"/redact/{q(second)}/{q(next_txn())}"), {})
    assert resp.code == 200, resp
    summary = m_relations((await get_event(alice, room_id, root)).json)["m.thread"]
    assert summary["count"] == 1
    assert summary["latest_event"]["event_id"] == first


@pytest_twisted.ensureDeferred
async def test_messages_and_context_bundle_aggregations(server: RunningServer) -> None:
    alice = await user(server, "alice")
    room_id = await create_room(alice)
    root = await send(alice, room_id, "root")
    reply = await thread_reply(alice, room_id, root, "reply")
    edited = await edit(alice, room_id, root, "root!")

    resp = await alice.get(room_path(room_id, "/messages"), params={"dir": "b", "limit": "10"})
    assert resp.code == 200, resp
    by_id = {e["event_id"]: e for e in resp.json["chunk"]}
    bundled = m_relations(by_id[root])
    assert bundled["m.thread"]["latest_event"]["event_id"] == reply
    assert bundled["m.replace"]["event_id"] == edited
    assert m_relations(by_id[reply]) == {}

    ctx = await alice.get(room_path(room_id, f"/context/{q(reply)}"), params={"limit": "4"})
    assert ctx.code == 200, ctx
    before = {e["event_id"]: e for e in ctx.json["events_before"]}
    assert m_relations(before[root])["m.thread"]["count"] == 1


@pytest_twisted.ensureDeferred
async def test_sync_bundles_aggregations_in_limited_and_initial_timelines(
    server: RunningServer,
) -> None:
    alice, bob = await user(server, "alice"), await user(server, "bob")
    room_id = await shared_room(alice, bob)
    root = await send(alice, room_id, "root")
    reply = await thread_reply(bob, room_id, root, "reply")
    edited = await edit(alice, room_id, root, "root (edited)")

    initial = await sync(bob, filter={"room": {"timeline": {"limit": 10}}})
    bundled = m_relations(timeline(initial, room_id)[root])
    assert bundled["m.thread"]["latest_event"]["event_id"] == reply
    assert bundled["m.thread"]["current_user_participated"] is True
    assert bundled["m.replace"]["event_id"] == edited

    # The shared client form of the event is not changed by per-user bundles.
    alice_view = await sync(alice, filter={"room": {"timeline": {"limit": 10}}})
    assert (
        m_relations(timeline(alice_view, room_id)[root])["m.thread"]["current_user_participated"]
        is True
    )
    assert "m.relations" not in (timeline(alice_view, room_id)[reply].get("unsigned") or {})


# /threads --------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_threads_lists_roots_by_latest_activity(server: RunningServer) -> None:
    alice, bob = await user(server, "alice"), await user(server, "bob")
    room_id = await shared_room(alice, bob)
    first = await send(alice, room_id, "first root")
    second = await send(alice, room_id, "second root")
    third = await send(bob, room_id, "third root")
    await thread_reply(alice, room_id, first, "a")
    await thread_reply(alice, room_id, second, "b")
    await thread_reply(alice, room_id, third, "c")
    await thread_reply(bob, room_id, first, "d")  # first is the most recently active

    resp = await threads(bob, room_id)
    assert resp.code == 200, resp
    assert [e["event_id"] for e in resp.json["chunk"]] == [first, third, second]
    assert m_relations(resp.json["chunk"][0])["m.thread"]["count"] == 2

    mine = await threads(bob, room_id, include="participated")
    # Bob replied in `first` and started `third`.
    assert [e["event_id"] for e in mine.json["chunk"]] == [first, third]

    page1 = await threads(bob, room_id, limit=2)
    assert [e["event_id"] for e in page1.json["chunk"]] == [first, third]
    page2 = await threads(bob, room_id, limit=2, **{"from": page1.json["next_batch"]})
    assert [e["event_id"] for e in page2.json["chunk"]] == [second]
    assert "next_batch" not in page2.json


@pytest_twisted.ensureDeferred
async def test_threads_errors(server: RunningServer) -> None:
    alice, eve = await user(server, "alice"), await user(server, "eve")
    room_id = await create_room(alice)
    assert_error(await threads(eve, room_id), 403, "M_FORBIDDEN")
    assert_error(await threads(alice, room_id, include="mine"), 400, "M_INVALID_PARAM")
    assert_error(await threads(alice, room_id, limit=0), 400, "M_INVALID_PARAM")
    assert_error(await threads(alice, room_id, **{"from": "nonsense"}), 400, "M_INVALID_PARAM")
    assert_error(await threads(alice, "!unknown:test.local"), 403, "M_FORBIDDEN")
    empty = await threads(alice, room_id)
    assert empty.code == 200 and empty.json == {"chunk": []}, empty
