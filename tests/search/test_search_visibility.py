"""Search only returns what the user may read: their rooms, their window of history,
nothing redacted, nothing encrypted."""

from __future__ import annotations

import pytest_twisted

from tests.search.helpers import (
    V3,
    all_pages,
    create_room,
    join,
    leave,
    put_state,
    redact,
    result_ids,
    search,
    send,
    user,
)
from tests.support.client import q
from tests.support.server import RunningServer


@pytest_twisted.ensureDeferred
async def test_no_results_from_rooms_the_user_is_not_in(server: RunningServer) -> None:
    alice = await user(server, "alice")
    eve = await user(server, "eve")
    private = await create_room(alice)
    public = await create_room(alice, preset="public_chat")
    await send(alice, private, "secret banana")
    await send(alice, public, "public banana")
    res = await search(eve, "banana")
    assert res["results"] == [] and res["count"] == 0 and "next_batch" not in res
    # Even naming the rooms in the filter does not let them in.
    res = await search(eve, "banana", filter={"rooms": [private, public]})
    assert res["results"] == []
    # An invite is not membership enough to search.
    resp = await alice.post(f"{V3}/rooms/{q(private)}/invite", {"user_id": eve.user_id})
    assert resp.code == 200, resp
    assert (await search(eve, "banana"))["results"] == []


@pytest_twisted.ensureDeferred
async def test_joined_visibility_hides_events_before_the_join(server: RunningServer) -> None:
    alice = await user(server, "alice")
    bob = await user(server, "bob")
    room = await create_room(alice, preset="public_chat")
    await put_state(alice, room, "m.room.history_visibility", {"history_visibility": "joined"})
    early = [await send(alice, room, f"coconut early {i}") for i in range(7)]
    await join(bob, room)
    late = [await send(alice, room, f"coconut late {i}") for i in range(5)]
    # Pages are filled after filtering: the hidden matches do not shorten them.
    for order in ("recent", "rank"):
        pages = await all_pages(bob, "coconut", order_by=order, filter={"limit": 2})
        flat = [e for p in pages for e in p]
        assert sorted(flat) == sorted(late), order
        assert all(len(p) == 2 for p in pages[:-1])
    assert set(result_ids(await search(alice, "coconut", filter={"limit": 20}))) == set(
        early + late
    )
    # Context around a visible result leaves out what bob could not see.
    res = await search(
        bob, "coconut", order_by="recent", event_context={"before_limit": 10, "after_limit": 0}
    )
    oldest = res["results"][-1]["context"]
    before_ids = {e["event_id"] for e in oldest["events_before"]}
    assert not before_ids & set(early)


@pytest_twisted.ensureDeferred
async def test_shared_visibility_shows_history_from_before_the_join(
    server: RunningServer,
) -> None:
    alice = await user(server, "alice")
    bob = await user(server, "bob")
    room = await create_room(alice, preset="public_chat")
    early = await send(alice, room, "durian early")
    await join(bob, room)
    late = await send(alice, room, "durian late")
    assert result_ids(await search(bob, "durian", order_by="recent")) == [late, early]


@pytest_twisted.ensureDeferred
async def test_left_room_is_searched_up_to_the_leave(server: RunningServer) -> None:
    alice = await user(server, "alice")
    bob = await user(server, "bob")
    room = await create_room(alice, preset="public_chat")
    await join(bob, room)
    seen = await send(alice, room, "guava while bob is here")
    await leave(bob, room)
    await send(alice, room, "guava after bob left")
    await put_state(alice, room, "m.room.topic", {"topic": "guava topic after"})
    res = await search(
        bob,
        "guava",
        include_state=True,
        event_context={"before_limit": 3, "after_limit": 3},
    )
    assert result_ids(res) == [seen]
    assert res["count"] == 1
    ctx = res["results"][0]["context"]
    assert all("after" not in e.get("content", {}).get("body", "") for e in ctx["events_after"])
    # The state shown for a left room is the state at the leave.
    topics = [e for e in res["state"][room] if e["type"] == "m.room.topic"]
    assert topics == []
    own = [
        e
        for e in res["state"][room]
        if e["type"] == "m.room.member" and e["state_key"] == bob.user_id
    ]
    assert own[0]["content"]["membership"] == "leave"
    # Forgetting the room removes it from search.
    resp = await bob.post(f"{V3}/rooms/{q(room)}/forget", {})
    assert resp.code == 200, resp
    assert (await search(bob, "guava"))["results"] == []


@pytest_twisted.ensureDeferred
async def test_redacted_events_disappear_from_results(server: RunningServer) -> None:
    alice = await user(server, "alice")
    room = await create_room(alice)
    keep = await send(alice, room, "melon to keep")
    gone = await send(alice, room, "melon to redact")
    assert set(result_ids(await search(alice, "melon"))) == {keep, gone}
    await redact(alice, room, gone)
    res = await search(alice, "melon")
    assert result_ids(res) == [keep] and res["count"] == 1
    assert (await search(alice, "redact"))["results"] == []
    # State events too.
    name = await put_state(alice, room, "m.room.name", {"name": "Melon room"})
    assert name in result_ids(await search(alice, "melon"))
    await redact(alice, room, name)
    assert name not in result_ids(await search(alice, "melon"))


@pytest_twisted.ensureDeferred
async def test_encrypted_events_are_never_indexed(server: RunningServer) -> None:
    alice = await user(server, "alice")
    room = await create_room(alice)
    await put_state(alice, room, "m.room.encryption", {"algorithm": "m.megolm.v1.aes-sha2"})
    await send(
        alice,
        room,
        "",
        event_type="m.room.encrypted",
        content={
            "algorithm": "m.megolm.v1.aes-sha2",
            "ciphertext": "lychee",
            "body": "lychee",
            "sender_key": "k",
            "session_id": "s",
            "device_id": "D",
        },
    )
    # Other event types with a body are not indexed either.
    await send(
        alice, room, "", event_type="m.sticker", content={"body": "lychee", "url": "mxc://a/b"}
    )
    res = await search(alice, "lychee")
    assert res["results"] == [] and res["count"] == 0
    # Messages without a string body are skipped, not failures.
    await send(alice, room, "", content={"msgtype": "m.text", "body": {"not": "text"}})
    await send(alice, room, "", content={"msgtype": "m.text"})
    assert (await search(alice, "text"))["results"] == []


@pytest_twisted.ensureDeferred
async def test_many_hidden_matches_give_short_pages_that_still_reach_the_end(
    server: RunningServer,
) -> None:
    alice = await user(server, "alice")
    bob = await user(server, "bob")
    room = await create_room(alice, preset="public_chat")
    await put_state(alice, room, "m.room.history_visibility", {"history_visibility": "joined"})
    for i in range(100):
        await send(alice, room, f"nectarine hidden {i}")
    await join(bob, room)
    shown = [await send(alice, room, f"nectarine shown {i}") for i in range(2)]
    pages = await all_pages(bob, "nectarine", order_by="recent", filter={"limit": 1})
    assert [e for p in pages for e in p] == list(reversed(shown))
    # The hidden matches cost a bounded amount of work per request: some pages are
    # empty but carry a next_batch, and the listing still ends.
    assert [] in pages and len(pages) < 10
