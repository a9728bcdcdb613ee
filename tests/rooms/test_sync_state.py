"""/sync: which state a room section carries, and filtered timelines (as Synapse does,
the behaviour SyTest's 31sync/04timeline.pl, 06state.pl and 09archived.pl check)."""

from __future__ import annotations

from typing import Any

import pytest_twisted

from tests.rooms.helpers import (
    PASSWORD,
    create_room,
    invite,
    join,
    leave,
    put_state,
    send,
    sync,
    user,
)
from tests.support.server import RunningServer

STATE_ONLY = {
    "room": {
        "timeline": {"types": []},
        "state": {"types": ["x.state"]},
        "ephemeral": {"types": []},
        "include_leave": True,
    },
    "presence": {"types": []},
}


def joined(body: dict[str, Any], room_id: str) -> dict[str, Any]:
    return dict(body["rooms"]["join"][room_id])


def contents(events: list[dict[str, Any]]) -> list[Any]:
    return [(e["type"], e.get("state_key"), e["content"]) for e in events]


@pytest_twisted.ensureDeferred
async def test_filtered_timeline_reaches_its_limit(server: RunningServer) -> None:
    alice = await user(server, "alice")
    room_id = await create_room(alice)
    wanted = await send(alice, room_id, "My message")
    for i in range(12):
        await send(alice, room_id, event_type="x.filler", content={"i": i})
    flt = {"room": {"timeline": {"limit": 1, "types": ["m.room.message"]}, "state": {"types": []}}}
    room = joined(await sync(alice, filter=flt), room_id)
    assert [e["event_id"] for e in room["timeline"]["events"]] == [wanted]
    # Nothing older matches: the timeline is whole.
    assert room["timeline"]["limited"] is False
    assert room["state"]["events"] == []

    # More matching events than the limit: the newest, limited.
    newest = await send(alice, room_id, "newer")
    room = joined(await sync(alice, filter=flt), room_id)
    assert [e["event_id"] for e in room["timeline"]["events"]] == [newest]
    assert room["timeline"]["limited"] is True


@pytest_twisted.ensureDeferred
async def test_empty_filtered_timeline_gets_the_current_state(server: RunningServer) -> None:
    alice = await user(server, "alice")
    room_id = await create_room(alice)
    await put_state(alice, room_id, "x.state", {"k": 1}, state_key="a")
    await put_state(alice, room_id, "x.state", {"k": 1}, state_key="b")
    flt = {
        "room": {
            "timeline": {"types": ["x.filler"], "limit": 1},
            "state": {"types": ["x.state"]},
        }
    }
    body = await sync(alice, filter=flt)
    room = joined(body, room_id)
    assert room["timeline"]["events"] == []
    assert {e["state_key"] for e in room["state"]["events"]} == {"a", "b"}

    # A gap: only what changed, even though the timeline shows none of it.
    await put_state(alice, room_id, "x.state", {"k": 2}, state_key="a")
    for i in range(3):
        await send(alice, room_id, event_type="x.filler", content={"i": i})
    room = joined(await sync(alice, body["next_batch"], filter=flt), room_id)
    assert room["timeline"]["limited"] is True
    assert contents(room["state"]["events"]) == [("x.state", "a", {"k": 2})]


@pytest_twisted.ensureDeferred
async def test_profile_change_is_not_a_fresh_start(server: RunningServer) -> None:
    alice = await user(server, "alice")
    room_id = await create_room(alice)
    await put_state(alice, room_id, "x.state", {"k": 1})
    since = (await sync(alice, filter=STATE_ONLY))["next_batch"]
    member = {"membership": "join", "displayname": "boris"}
    resp = await put_state(alice, room_id, "m.room.member", member, state_key=alice.user_id or "")
    assert resp.code == 200, resp
    message = await send(alice, room_id, "after")
    # The member event is filtered out, and no full state comes down.
    body = await sync(alice, since, filter=STATE_ONLY)
    assert room_id not in body["rooms"]["join"], body
    # Unfiltered: the two new events, not the room's whole history.
    room = joined(await sync(alice, since), room_id)
    events = room["timeline"]["events"]
    assert [e["event_id"] for e in events] == [resp.json["event_id"], message]
    assert room["state"]["events"] == []


@pytest_twisted.ensureDeferred
async def test_join_then_state_whole_and_leave_sections(server: RunningServer) -> None:
    alice, bob = await user(server, "alice"), await user(server, "bob")
    room_id = await create_room(alice)
    await put_state(alice, room_id, "x.state", {"k": 1})
    assert (await invite(alice, room_id, bob.user_id)).code == 200
    since = (await sync(bob, filter=STATE_ONLY))["next_batch"]

    # Joined and left within one window: the leave section carries the state whole.
    assert (await join(bob, room_id)).code == 200
    assert (await leave(bob, room_id)).code == 200
    body = await sync(bob, since, filter=STATE_ONLY)
    left = body["rooms"]["leave"][room_id]
    assert contents(left["state"]["events"]) == [("x.state", "", {"k": 1})]

    # Joined at the last sync, then left: the leave only, no state.
    assert (await invite(alice, room_id, bob.user_id)).code == 200
    assert (await join(bob, room_id)).code == 200
    since = (await sync(bob))["next_batch"]
    assert (await leave(bob, room_id)).code == 200
    left = (await sync(bob, since))["rooms"]["leave"][room_id]
    assert left["state"]["events"] == []
    assert [(e["type"], e["content"]["membership"]) for e in left["timeline"]["events"]] == [
        ("m.room.member", "leave")
    ]


@pytest_twisted.ensureDeferred
async def test_current_state_shows_despite_private_history(server: RunningServer) -> None:
    creator, syncer, invitee = [await user(server, n) for n in ("creator", "syncer", "invitee")]
    room_id = await create_room(creator, preset="public_chat")
    assert (await join(syncer, room_id)).code == 200
    vis = {"history_visibility": "joined"}
    assert (await put_state(creator, room_id, "m.room.history_visibility", vis)).code == 200
    assert (await invite(creator, room_id, invitee.user_id)).code == 200
    since = (await sync(syncer))["next_batch"]
    assert (await leave(syncer, room_id)).code == 200
    assert await send(creator, room_id, "unseen")
    assert (await join(invitee, room_id)).code == 200
    for i in range(15):  # more than the timeline's limit, all hidden from the syncer
        await send(creator, room_id, f"hidden {i}")
    assert (await join(syncer, room_id)).code == 200

    events = joined(await sync(syncer, since), room_id)["timeline"]["events"]
    # The invitee's join is current state: shown, though set while the syncer was out.
    assert any(
        e["type"] == "m.room.member"
        and e["state_key"] == invitee.user_id
        and e["content"]["membership"] == "join"
        for e in events
    ), events
    # Messages from then are not.
    assert not [e for e in events if e["type"] == "m.room.message"], events


LAZY = {"room": {"timeline": {"limit": 10}, "state": {"lazy_load_members": True}}}


def members(body: dict[str, Any], room_id: str) -> dict[str, str]:
    room = body["rooms"]["join"].get(room_id, {})
    return {
        e["state_key"]: e["content"]["membership"]
        for e in room.get("state", {}).get("events", [])
        if e["type"] == "m.room.member"
    }


@pytest_twisted.ensureDeferred
async def test_lazy_members_are_not_sent_twice_to_a_device(server: RunningServer) -> None:
    alice, bob, carol = [await user(server, n) for n in ("alice", "bob", "carol")]
    room_id = await create_room(alice, preset="public_chat", name="named")
    for client in (bob, carol):
        assert (await join(client, room_id)).code == 200
    for i in range(10):
        await send(bob, room_id, f"b{i}")
    await send(carol, room_id, "c0")
    body = await sync(alice, filter=LAZY)
    assert set(members(body, room_id)) == {alice.user_id, bob.user_id, carol.user_id}

    await send(bob, room_id, "again")
    await send(carol, room_id, "again")
    body = await sync(alice, body["next_batch"], filter=LAZY)
    assert members(body, room_id) == {}  # the device holds both already
    # Asked for: sent again.
    redundant = {"room": {"state": {"lazy_load_members": True, "include_redundant_members": True}}}
    since = body["next_batch"]
    await send(bob, room_id, "once more")
    body = await sync(alice, since, filter=redundant)
    assert set(members(body, room_id)) == {bob.user_id}
    # Another device of alice's holds none of them.
    other = server.client()
    assert (await other.login("alice", PASSWORD)).code == 200
    body = await sync(other, filter=LAZY)
    assert bob.user_id in members(body, room_id)


@pytest_twisted.ensureDeferred
async def test_gapped_lazy_sync_keeps_member_changes_of_the_gap(server: RunningServer) -> None:
    alice, bob, carol, dave = [await user(server, n) for n in ("alice", "bob", "carol", "dave")]
    room_id = await create_room(alice, preset="public_chat", name="named")
    for client in (bob, carol):
        assert (await join(client, room_id)).code == 200
    for i in range(10):
        await send(bob, room_id, f"b{i}")
    body = await sync(alice, filter=LAZY)
    assert set(members(body, room_id)) == {alice.user_id, bob.user_id}

    assert (await join(dave, room_id)).code == 200
    for i in range(20):
        await send(carol, room_id, f"c{i}")
    body = await sync(alice, body["next_batch"], filter=LAZY)
    # Dave said nothing, but joined in the gap.
    assert members(body, room_id) == {carol.user_id: "join", dave.user_id: "join"}

    assert (await leave(dave, room_id)).code == 200
    for i in range(20):
        await send(carol, room_id, f"d{i}")
    body = await sync(alice, body["next_batch"], filter=LAZY)
    assert members(body, room_id) == {dave.user_id: "leave"}


@pytest_twisted.ensureDeferred
async def test_timeline_limit_zero_gives_state_only(server: RunningServer) -> None:
    # SyTest 31sync/13filtered_sync.pl passes this inline (Synapse takes a limit of 0).
    alice = await user(server, "alice")
    room_id = await create_room(alice)
    flt = {"room": {"state": {"types": ["m.room.member"]}, "timeline": {"limit": 0}}}
    room = joined(await sync(alice, filter=flt), room_id)
    assert room["timeline"]["events"] == []
    assert [(e["type"], e["state_key"]) for e in room["state"]["events"]] == [
        ("m.room.member", alice.user_id)
    ]


@pytest_twisted.ensureDeferred
async def test_initial_sync_of_rooms_read_from_the_database_is_whole(
    server: RunningServer,
) -> None:
    # A room not wholly in memory, with fewer events than the limit, was cut to its
    # newest (limit - count) events (a negative slice; SyTest 10apidoc/30room-create.pl).
    alice = await user(server, "alice")
    first = await create_room(alice)
    second = await create_room(alice, name="n", topic="t")
    body = await sync(alice)
    for room_id in (first, second):
        events = joined(body, room_id)["timeline"]["events"]
        assert events[0]["type"] == "m.room.create", [e["type"] for e in events]
        assert joined(body, room_id)["timeline"]["limited"] is False


@pytest_twisted.ensureDeferred
async def test_prev_batch_of_a_whole_room_and_a_newly_joined_room(server: RunningServer) -> None:
    """As Synapse (SyTest 10apidoc/34room-messages, 31sync/03joined): an initial sync
    holding a room whole pages back from now (its events again, then an ``end``-less
    empty page), and a room newly joined in an incremental sync is always limited."""
    alice, bob = await user(server, "alice"), await user(server, "bob")
    room_id = await create_room(alice, preset="public_chat")
    await send(alice, room_id, "one")
    timeline = joined(await sync(alice), room_id)["timeline"]
    assert timeline["limited"] is False
    assert timeline["events"][0]["type"] == "m.room.create"
    page = (
        await alice.get(
            f"/_matrix/client/v3/rooms/{room_id}/messages",
            params={"dir": "b", "from": timeline["prev_batch"]},
        )
    ).json
    assert [e["event_id"] for e in reversed(page["chunk"])] == [
        e["event_id"] for e in timeline["events"]
    ]
    last = (
        await alice.get(
            f"/_matrix/client/v3/rooms/{room_id}/messages",
            params={"dir": "b", "from": page["end"]},
        )
    ).json
    assert last["chunk"] == [] and "end" not in last, last

    messages_only = {"room": {"timeline": {"types": ["m.room.message"], "limit": 10}}}
    since = (await sync(bob, filter=messages_only))["next_batch"]
    assert (await join(bob, room_id)).code == 200
    await send(alice, room_id, "two")
    timeline = joined(await sync(bob, since, filter=messages_only), room_id)["timeline"]
    assert [e["content"]["body"] for e in timeline["events"]] == ["one", "two"]
    assert timeline["limited"] is True
