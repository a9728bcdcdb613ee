"""Relations over real HTTP: checks on send, /relations, redactions breaking relations."""

from __future__ import annotations

import pytest_twisted

from tests.ephemeral.helpers import (
    assert_error,
    create_room,
    room_path,
    send,
    shared_room,
    user,
)
from tests.relations.helpers import (
    edit,
    edit_content,
    next_txn,
    react,
    reaction_content,
    relations,
    send_event,
    thread_content,
    thread_reply,
)
from tests.support.client import q
from tests.support.server import RunningServer


async def redact(client, room_id: str, event_id: str) -> str:  # type: ignore[no-untyped-def]
    resp = await client.put(room_path(room_id, f"/redact/{q(event_id)}/{q(next_txn())}"), {})
    assert resp.code == 200, resp
    return str(resp.json["event_id"])


# Checks on send --------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_edit_of_own_message_is_accepted(server: RunningServer) -> None:
    alice = await user(server, "alice")
    room_id = await create_room(alice)
    original = await send(alice, room_id, "helo")
    resp = await send_event(alice, room_id, "m.room.message", edit_content(original, "hello"))
    assert resp.code == 200, resp


@pytest_twisted.ensureDeferred
async def test_edit_of_another_users_message_is_refused(server: RunningServer) -> None:
    alice, bob = await user(server, "alice"), await user(server, "bob")
    room_id = await shared_room(alice, bob)
    original = await send(alice, room_id, "alice's words")
    resp = await send_event(bob, room_id, "m.room.message", edit_content(original, "bob's"))
    assert_error(resp, 400, "M_UNKNOWN")


@pytest_twisted.ensureDeferred
async def test_edit_must_keep_the_event_type(server: RunningServer) -> None:
    alice = await user(server, "alice")
    room_id = await create_room(alice)
    original = await send(alice, room_id, "hi")
    resp = await send_event(alice, room_id, "org.example.other", edit_content(original, "x"))
    assert_error(resp, 400, "M_UNKNOWN")


@pytest_twisted.ensureDeferred
async def test_state_events_and_edits_cannot_be_edited(server: RunningServer) -> None:
    alice = await user(server, "alice")
    room_id = await create_room(alice, name="A room")
    state = await alice.get(room_path(room_id, "/state/m.room.name/"), params={"format": "event"})
    assert state.code == 200, state
    name_event = state.json["event_id"]
    resp = await send_event(alice, room_id, "m.room.name", edit_content(name_event, "x"))
    assert_error(resp, 400, "M_UNKNOWN")

    original = await send(alice, room_id, "one")
    first_edit = await edit(alice, room_id, original, "two")
    resp = await send_event(alice, room_id, "m.room.message", edit_content(first_edit, "three"))
    assert_error(resp, 400, "M_UNKNOWN")


@pytest_twisted.ensureDeferred
async def test_edit_without_new_content_is_bad_json(server: RunningServer) -> None:
    alice = await user(server, "alice")
    room_id = await create_room(alice)
    original = await send(alice, room_id, "hi")
    content = edit_content(original, "x")
    del content["m.new_content"]
    resp = await send_event(alice, room_id, "m.room.message", content)
    assert_error(resp, 400, "M_BAD_JSON")


@pytest_twisted.ensureDeferred
async def test_relations_to_foreign_events_and_edits_of_unknown_ones_are_refused(
    server: RunningServer,
) -> None:
    alice = await user(server, "alice")
    room_id = await create_room(alice)
    other_room = await create_room(alice)
    foreign = await send(alice, other_room, "elsewhere")
    resp = await send_event(alice, room_id, "m.reaction", reaction_content(foreign, "👍"))
    assert_error(resp, 400, "M_UNKNOWN")
    resp = await send_event(alice, room_id, "m.room.message", edit_content("$nope", "x"))
    assert_error(resp, 400, "M_UNKNOWN")
    # Other relations to an event this server does not hold are accepted.
    resp = await send_event(alice, room_id, "m.reaction", reaction_content("$nope", "👍"))
    assert resp.code == 200, resp


@pytest_twisted.ensureDeferred
async def test_second_identical_reaction_is_a_duplicate_annotation(server: RunningServer) -> None:
    alice, bob = await user(server, "alice"), await user(server, "bob")
    room_id = await shared_room(alice, bob)
    target = await send(alice, room_id, "react to me")
    first = await react(bob, room_id, target, "👍")
    resp = await send_event(bob, room_id, "m.reaction", reaction_content(target, "👍"))
    assert_error(resp, 400, "M_DUPLICATE_ANNOTATION")
    # Another key, another user: fine.
    await react(bob, room_id, target, "🎉")
    await react(alice, room_id, target, "👍")
    # Once the first is redacted the same reaction may be sent again.
    await redact(bob, room_id, first)
    await react(bob, room_id, target, "👍")


@pytest_twisted.ensureDeferred
async def test_retried_reaction_transaction_returns_the_first_event(server: RunningServer) -> None:
    alice = await user(server, "alice")
    room_id = await create_room(alice)
    target = await send(alice, room_id, "hi")
    txn = next_txn()
    first = await send_event(alice, room_id, "m.reaction", reaction_content(target, "x"), txn)
    again = await send_event(alice, room_id, "m.reaction", reaction_content(target, "x"), txn)
    assert first.code == again.code == 200, (first, again)
    assert first.json["event_id"] == again.json["event_id"]


@pytest_twisted.ensureDeferred
async def test_reaction_needs_a_key(server: RunningServer) -> None:
    alice = await user(server, "alice")
    room_id = await create_room(alice)
    target = await send(alice, room_id, "hi")
    content = reaction_content(target, "x")
    del content["m.relates_to"]["key"]
    assert_error(await send_event(alice, room_id, "m.reaction", content), 400, "M_UNKNOWN")
    long_key = reaction_content(target, "k" * 501)
    assert_error(await send_event(alice, room_id, "m.reaction", long_key), 400, "M_UNKNOWN")


@pytest_twisted.ensureDeferred
async def test_threads_cannot_start_from_an_event_with_a_relation(server: RunningServer) -> None:
    alice = await user(server, "alice")
    room_id = await create_room(alice)
    root = await send(alice, room_id, "root")
    in_thread = await thread_reply(alice, room_id, root, "first")
    resp = await send_event(alice, room_id, "m.room.message", thread_content(in_thread, "x"))
    assert_error(resp, 400, "M_UNKNOWN")
    reaction = await react(alice, room_id, root, "👍")
    resp = await send_event(alice, room_id, "m.room.message", thread_content(reaction, "x"))
    assert_error(resp, 400, "M_UNKNOWN")
    # A reply inside the thread (m.in_reply_to with the thread relation) is fine.
    await thread_reply(alice, room_id, root, "reply", reply_to=in_thread)


# /relations ------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_relations_lists_children_newest_first_and_filters(server: RunningServer) -> None:
    alice, bob = await user(server, "alice"), await user(server, "bob")
    room_id = await shared_room(alice, bob)
    parent = await send(alice, room_id, "parent")
    reaction = await react(bob, room_id, parent, "👍")
    reply = await thread_reply(bob, room_id, parent, "in thread")
    edited = await edit(alice, room_id, parent, "parent!")
    await send(alice, room_id, "unrelated")

    resp = await relations(bob, room_id, parent)
    assert resp.code == 200, resp
    assert [e["event_id"] for e in resp.json["chunk"]] == [edited, reply, reaction]
    assert "next_batch" not in resp.json and "recursion_depth" not in resp.json

    by_type = await relations(bob, room_id, parent, "m.annotation")
    assert [e["event_id"] for e in by_type.json["chunk"]] == [reaction]
    by_event_type = await relations(bob, room_id, parent, "m.thread", "m.room.message")
    assert [e["event_id"] for e in by_event_type.json["chunk"]] == [reply]
    none = await relations(bob, room_id, parent, "m.thread", "m.reaction")
    assert none.json["chunk"] == []


@pytest_twisted.ensureDeferred
async def test_relations_paginate_both_ways(server: RunningServer) -> None:
    alice = await user(server, "alice")
    room_id = await create_room(alice)
    root = await send(alice, room_id, "root")
    replies = [await thread_reply(alice, room_id, root, f"r{i}") for i in range(5)]

    page1 = await relations(alice, room_id, root, "m.thread", limit=2)
    assert [e["event_id"] for e in page1.json["chunk"]] == [replies[4], replies[3]]
    page2 = await relations(
        alice, room_id, root, "m.thread", limit=2, **{"from": page1.json["next_batch"]}
    )
    assert [e["event_id"] for e in page2.json["chunk"]] == [replies[2], replies[1]]
    assert page2.json["prev_batch"] == page1.json["next_batch"]
    page3 = await relations(
        alice, room_id, root, "m.thread", limit=2, **{"from": page2.json["next_batch"]}
    )
    assert [e["event_id"] for e in page3.json["chunk"]] == [replies[0]]
    assert "next_batch" not in page3.json

    forward = await relations(alice, room_id, root, dir="f", limit=3)
    assert [e["event_id"] for e in forward.json["chunk"]] == replies[:3]
    rest = await relations(alice, room_id, root, dir="f", **{"from": forward.json["next_batch"]})
    assert [e["event_id"] for e in rest.json["chunk"]] == replies[3:]

    bounded = await relations(
        alice, room_id, root, **{"from": page1.json["next_batch"], "to": page2.json["next_batch"]}
    )
    assert [e["event_id"] for e in bounded.json["chunk"]] == [replies[2], replies[1]]


@pytest_twisted.ensureDeferred
async def test_relations_recurse_includes_indirect_children(server: RunningServer) -> None:
    alice = await user(server, "alice")
    room_id = await create_room(alice)
    root = await send(alice, room_id, "root")
    reply = await thread_reply(alice, room_id, root, "reply")
    reaction_to_reply = await react(alice, room_id, reply, "👀")

    direct = await relations(alice, room_id, root, recurse="false")
    assert [e["event_id"] for e in direct.json["chunk"]] == [reply]
    assert direct.json["recursion_depth"] == 1
    deep = await relations(alice, room_id, root, recurse="true")
    assert [e["event_id"] for e in deep.json["chunk"]] == [reaction_to_reply, reply]
    assert deep.json["recursion_depth"] == 3
    only_reactions = await relations(alice, room_id, root, "m.annotation", recurse="true")
    assert [e["event_id"] for e in only_reactions.json["chunk"]] == [reaction_to_reply]


@pytest_twisted.ensureDeferred
async def test_relations_errors(server: RunningServer) -> None:
    alice, eve = await user(server, "alice"), await user(server, "eve")
    room_id = await create_room(alice)
    parent = await send(alice, room_id, "secret")
    assert_error(await relations(alice, room_id, "$missing"), 404, "M_NOT_FOUND")
    assert_error(await relations(eve, room_id, parent), 403, "M_FORBIDDEN")
    assert_error(await relations(alice, room_id, parent, dir="x"), 400, "M_INVALID_PARAM")
    assert_error(
        await relations(alice, room_id, parent, **{"from": "junk"}), 400, "M_INVALID_PARAM"
    )
    unauthenticated = await alice.get(
        f"/_matrix/client/v1/rooms/{q(room_id)}/relations/{q(parent)}", token=False
    )
    assert_error(unauthenticated, 401, "M_MISSING_TOKEN")


@pytest_twisted.ensureDeferred
async def test_relations_apply_history_visibility(server: RunningServer) -> None:
    alice, bob = await user(server, "alice"), await user(server, "bob")
    room_id = await create_room(alice, preset="public_chat")
    resp = await alice.put(
        room_path(room_id, "/state/m.room.history_visibility/"), {"history_visibility": "joined"}
    )
    assert resp.code == 200, resp
    before = await send(alice, room_id, "before bob")
    await react(alice, room_id, before, "1")
    join = await bob.post(f"/_matrix/client/v3/join/{q(room_id)}", {})
    assert join.code == 200, join
    assert_error(await relations(bob, room_id, before), 404, "M_NOT_FOUND")
    after = await send(alice, room_id, "after bob")
    early = await thread_reply(alice, room_id, after, "seen")
    visible = await relations(bob, room_id, after)
    assert [e["event_id"] for e in visible.json["chunk"]] == [early]


@pytest_twisted.ensureDeferred
async def test_redacting_a_child_breaks_the_relation(server: RunningServer) -> None:
    alice = await user(server, "alice")
    room_id = await create_room(alice)
    parent = await send(alice, room_id, "parent")
    reaction = await react(alice, room_id, parent, "👍")
    kept = await react(alice, room_id, parent, "🎉")
    await redact(alice, room_id, reaction)
    resp = await relations(alice, room_id, parent)
    assert [e["event_id"] for e in resp.json["chunk"]] == [kept]
