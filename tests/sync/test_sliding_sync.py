"""Simplified sliding sync (MSC4186): lists, ranges by recency, timelines, required
state, connection positions kept in the database, long-polls (over real HTTP)."""

from __future__ import annotations

import json
import socket
import time
from typing import Any

import pytest_twisted
from twisted.internet import defer, reactor, task

from homeserver.rooms.room_cache import RECENT_EVENTS
from storage.sliding_sync import CONNECTION_TTL_MS
from tests.rooms.helpers import (
    V3,
    assert_error,
    create_room,
    invite,
    join,
    leave,
    put_state,
    send,
    user,
)
from tests.support.client import q
from tests.support.server import RunningServer
from tests.sync.helpers import (
    SLIDING_PATH,
    all_rooms,
    list_ids,
    sliding,
    sliding_raw,
    timeline_ids,
)


async def sleep(seconds: float) -> None:
    await task.deferLater(reactor, seconds, lambda: None)


@pytest_twisted.ensureDeferred
async def test_versions_advertises_simplified_sliding_sync(server: RunningServer) -> None:
    resp = await server.client().get("/_matrix/client/versions")
    assert resp.json["unstable_features"]["org.matrix.simplified_msc3575"] is True


@pytest_twisted.ensureDeferred
async def test_initial_list_is_sorted_by_recency_and_cut_by_range(
    server: RunningServer,
) -> None:
    alice = await user(server, "alice")
    old = await create_room(alice, name="Old")
    new = await create_room(alice, name="New")
    await send(alice, old, "bump the old room")
    last = await send(alice, old, "again")
    body = await sliding(
        alice,
        {
            "lists": {
                "all": all_rooms([[0, 0]], timeline_limit=1, required_state=[["m.room.name", ""]])
            }
        },
    )
    assert body["lists"]["all"]["count"] == 2
    assert list_ids(body) == [old]
    assert set(body["rooms"]) == {old}
    room = body["rooms"][old]
    assert room["initial"] is True
    assert room["name"] == "Old"
    assert timeline_ids(room) == [last]
    assert room["limited"] is True
    assert room["num_live"] == 0
    assert room["joined_count"] == 1
    assert room["invited_count"] == 0
    assert room["notification_count"] == 0
    assert isinstance(room["bump_stamp"], int)
    assert room["prev_batch"].startswith("t")
    assert [(e["type"], e["state_key"]) for e in room["required_state"]] == [("m.room.name", "")]

    # The whole list: newest first, every room.
    body = await sliding(alice, {"lists": {"all": all_rooms(timeline_limit=0)}})
    assert list_ids(body) == [old, new]
    assert body["rooms"][old]["bump_stamp"] > body["rooms"][new]["bump_stamp"]


@pytest_twisted.ensureDeferred
async def test_room_moves_in_and_out_of_the_range(server: RunningServer) -> None:
    alice = await user(server, "alice")
    a = await create_room(alice)
    b = await create_room(alice)
    request = {"lists": {"all": all_rooms([[0, 0]], timeline_limit=5)}}
    first = await sliding(alice, request)
    assert list_ids(first) == [b]

    # A message moves ``a`` to the top: it comes in, whole (never sent before).
    in_a = await send(alice, a, "a moves up")
    second = await sliding(alice, request, first["pos"])
    assert list_ids(second) == [a]
    assert set(second["rooms"]) == {a}
    assert second["rooms"][a]["initial"] is True
    assert timeline_ids(second["rooms"][a])[-1] == in_a
    assert second["rooms"][a]["num_live"] == 1

    # ``b`` comes back: only what it missed, not as a new room.
    missed = await send(alice, b, "b was out of range")
    third = await sliding(alice, request, second["pos"])
    assert list_ids(third) == [b]
    room = third["rooms"][b]
    assert "initial" not in room
    assert timeline_ids(room) == [missed]
    assert room["limited"] is False
    assert room["num_live"] == 1

    # Nothing new: an empty answer (no long-poll asked).
    fourth = await sliding(alice, request, third["pos"])
    assert fourth["rooms"] == {}
    assert fourth["lists"]["all"]["count"] == 2


@pytest_twisted.ensureDeferred
async def test_incremental_timeline_is_limited_after_a_gap(server: RunningServer) -> None:
    alice = await user(server, "alice")
    a = await create_room(alice)
    request = {"lists": {"all": all_rooms([[0, 9]], timeline_limit=2)}}
    first = await sliding(alice, request)
    sent = [await send(alice, a, f"m{i}") for i in range(5)]
    second = await sliding(alice, request, first["pos"])
    assert timeline_ids(second["rooms"][a]) == sent[-2:]
    assert second["rooms"][a]["limited"] is True


@pytest_twisted.ensureDeferred
async def test_new_invite_arrives_with_its_stripped_state(server: RunningServer) -> None:
    alice = await user(server, "alice")
    bob = await user(server, "bob")
    request = {"lists": {"all": all_rooms([[0, 9]], timeline_limit=5)}}
    first = await sliding(alice, request)
    assert first["lists"]["all"]["count"] == 0
    room_id = await create_room(bob, name="Bob's room")
    assert (await invite(bob, room_id, alice.user_id)).code == 200
    second = await sliding(alice, request, first["pos"])
    assert second["lists"]["all"]["count"] == 1
    room = second["rooms"][room_id]
    assert room["initial"] is True
    assert "timeline" not in room
    state = {(e["type"], e["state_key"]): e for e in room["invite_state"]}
    assert state[("m.room.name", "")]["content"]["name"] == "Bob's room"
    assert state[("m.room.member", alice.user_id)]["content"]["membership"] == "invite"

    # Joining turns it into a joined room, sent whole.
    assert (await join(alice, room_id)).code == 200
    third = await sliding(alice, request, second["pos"])
    joined = third["rooms"][room_id]
    assert joined["initial"] is True
    assert "invite_state" not in joined
    assert joined["joined_count"] == 2


@pytest_twisted.ensureDeferred
async def test_left_room_shows_its_leave_then_drops_out(server: RunningServer) -> None:
    alice = await user(server, "alice")
    bob = await user(server, "bob")
    room_id = await create_room(bob)
    assert (await invite(bob, room_id, alice.user_id)).code == 200
    assert (await join(alice, room_id)).code == 200
    request = {"lists": {"all": all_rooms([[0, 9]], timeline_limit=5)}}
    first = await sliding(alice, request)
    assert room_id in first["rooms"]
    assert (await leave(alice, room_id)).code == 200
    await send(bob, room_id, "after alice left")
    second = await sliding(alice, request, first["pos"])
    room = second["rooms"][room_id]
    events = room["timeline"]
    assert events[-1]["type"] == "m.room.member"
    assert events[-1]["state_key"] == alice.user_id
    assert events[-1]["content"]["membership"] == "leave"
    # Not what happened after the leave.
    assert all(e["type"] != "m.room.message" for e in events)

    # Once told, the room is no longer listed (a new connection does not list it).
    third = await sliding(alice, {**request, "conn_id": "other"})
    assert room_id not in list_ids(third)
    assert third["lists"]["all"]["count"] == 0


@pytest_twisted.ensureDeferred
async def test_lazy_members_are_the_timeline_senders(server: RunningServer) -> None:
    alice = await user(server, "alice")
    bob = await user(server, "bob")
    carol = await user(server, "carol")
    room_id = await create_room(alice, preset="public_chat")
    assert (await join(bob, room_id)).code == 200
    assert (await join(carol, room_id)).code == 200
    await send(bob, room_id, "from bob")
    request = {
        "lists": {
            "all": all_rooms(
                [[0, 0]],
                timeline_limit=1,
                required_state=[["m.room.member", "$LAZY"], ["m.room.create", ""]],
            )
        }
    }
    body = await sliding(alice, request)
    keys = {(e["type"], e["state_key"]) for e in body["rooms"][room_id]["required_state"]}
    assert keys == {("m.room.create", ""), ("m.room.member", bob.user_id)}

    # Incremental: carol speaks, her member event comes along.
    await send(carol, room_id, "from carol")
    body = await sliding(alice, request, body["pos"])
    keys = {(e["type"], e["state_key"]) for e in body["rooms"][room_id]["required_state"]}
    assert keys == {("m.room.member", carol.user_id)}

    # Bob again: his member event was sent already and has not changed.
    await send(bob, room_id, "bob again")
    body = await sliding(alice, request, body["pos"])
    assert "required_state" not in body["rooms"][room_id]
    # A new display name is a change: sent again.
    resp = await bob.put(
        f"/_matrix/client/v3/profile/{bob.user_id}/displayname", {"displayname": "Bobby"}
    )
    assert resp.code == 200, resp
    await send(bob, room_id, "renamed")
    body = await sliding(alice, request, body["pos"])
    state = body["rooms"][room_id]["required_state"]
    assert [(e["state_key"], e["content"].get("displayname")) for e in state] == [
        (bob.user_id, "Bobby")
    ]
    # A new connection holds none of them.
    body = await sliding(alice, {**request, "conn_id": "new"})
    keys = {(e["type"], e["state_key"]) for e in body["rooms"][room_id]["required_state"]}
    assert ("m.room.member", bob.user_id) in keys


@pytest_twisted.ensureDeferred
async def test_required_state_wildcards_and_me(server: RunningServer) -> None:
    alice = await user(server, "alice")
    room_id = await create_room(alice, name="R", topic="T")
    await put_state(alice, room_id, "x.state", {"k": 1}, state_key="a")
    await put_state(alice, room_id, "x.state", {"k": 2}, state_key="b")

    async def keys(required: list[list[str]]) -> set[tuple[str, str]]:
        body = await sliding(
            alice,
            {"lists": {"all": all_rooms([[0, 0]], timeline_limit=0, required_state=required)}},
        )
        return {(e["type"], e["state_key"]) for e in body["rooms"][room_id]["required_state"]}

    assert await keys([["x.state", "*"]]) == {("x.state", "a"), ("x.state", "b")}
    assert await keys([["m.room.member", "$ME"]]) == {("m.room.member", alice.user_id)}
    everything = await keys([["*", "*"]])
    assert {("m.room.topic", ""), ("m.room.name", ""), ("x.state", "a")} <= everything
    # A state change later comes as an update of required_state.
    body = await sliding(
        alice, {"lists": {"all": all_rooms([[0, 0]], required_state=[["x.state", "*"]])}}
    )
    await put_state(alice, room_id, "x.state", {"k": 3}, state_key="a")
    body = await sliding(
        alice,
        {"lists": {"all": all_rooms([[0, 0]], required_state=[["x.state", "*"]])}},
        body["pos"],
    )
    state = body["rooms"][room_id]["required_state"]
    assert [(e["state_key"], e["content"]) for e in state] == [("a", {"k": 3})]


@pytest_twisted.ensureDeferred
async def test_unknown_and_malformed_positions(server: RunningServer) -> None:
    alice = await user(server, "alice")
    request = {"lists": {"all": all_rooms([[0, 9]])}}
    first = await sliding(alice, request)
    position, token = first["pos"].split("/")
    assert_error(
        await sliding_raw(alice, request, f"{int(position) + 1000}/{token}"), 400, "M_UNKNOWN_POS"
    )
    assert_error(await sliding_raw(alice, request, "garbage"), 400, "M_INVALID_PARAM")
    # The same through a long-poll.
    assert_error(
        await sliding_raw(alice, request, f"{int(position) + 1000}/{token}", timeout=5000),
        400,
        "M_UNKNOWN_POS",
    )
    # Another device cannot use it.
    other = server.client()
    assert (await other.login("alice")).code == 200
    assert_error(await sliding_raw(other, request, first["pos"]), 400, "M_UNKNOWN_POS")
    # A new connection of the same conn_id replaces the old one: its positions expire.
    await sliding(alice, request)
    assert_error(await sliding_raw(alice, request, first["pos"]), 400, "M_UNKNOWN_POS")


@pytest_twisted.ensureDeferred
async def test_a_position_can_be_retried_but_not_one_left_behind(server: RunningServer) -> None:
    alice = await user(server, "alice")
    room_id = await create_room(alice)
    request = {"lists": {"all": all_rooms([[0, 9]])}}
    first = await sliding(alice, request)
    event_id = await send(alice, room_id, "hello")
    second = await sliding(alice, request, first["pos"])
    # The answer was lost: the client retries from the first position and gets it again.
    again = await sliding(alice, request, first["pos"])
    assert timeline_ids(again["rooms"][room_id]) == [event_id]
    # The position of the lost answer is gone.
    assert_error(await sliding_raw(alice, request, second["pos"]), 400, "M_UNKNOWN_POS")
    assert (await sliding(alice, request, again["pos"]))["rooms"] == {}


@pytest_twisted.ensureDeferred
async def test_bad_bodies_are_refused(server: RunningServer) -> None:
    alice = await user(server, "alice")
    for body in (
        {"lists": {"all": {"ranges": [[0, 9]], "required_state": []}}},
        {"lists": {"all": {"timeline_limit": 1}}},
        {"lists": {"all": all_rooms([[5, 1]])}},
        {"lists": {"all": all_rooms([[0, "x"]])}},  # type: ignore[list-item]
        {"lists": {"all": {**all_rooms(), "required_state": [["only one"]]}}},
        {"lists": {"all": {**all_rooms(), "timeline_limit": 1001}}},
        {"room_subscriptions": {"not a room": all_rooms()}},
        {"lists": []},
    ):
        assert_error(await sliding_raw(alice, body), 400, "M_BAD_JSON")
    resp = await alice.post(
        "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync", {}, token=False
    )
    assert resp.code == 401


@pytest_twisted.ensureDeferred
async def test_long_poll_wakes_on_a_new_event(server: RunningServer) -> None:
    alice = await user(server, "alice")
    bob = await user(server, "bob")
    room_id = await create_room(alice, preset="public_chat")
    assert (await join(bob, room_id)).code == 200
    request = {"lists": {"all": all_rooms([[0, 9]])}}
    first = await sliding(bob, request)
    pending: defer.Deferred[dict[str, Any]] = defer.ensureDeferred(
        sliding(bob, request, first["pos"], timeout=10_000)
    )
    event_id = await send(alice, room_id, "wake up")
    body = await pending
    assert timeline_ids(body["rooms"][room_id]) == [event_id]

    # With nothing new, the answer comes at the timeout, empty, still a valid position.
    started = time.monotonic()
    body2 = await sliding(bob, request, body["pos"], timeout=300)
    assert time.monotonic() - started >= 0.25
    assert body2["rooms"] == {}
    assert (await sliding(bob, request, body2["pos"]))["rooms"] == {}

    # Woken by something that is not news for this request (typing, no extension):
    # it waits on, and answers with the next event.
    pending = defer.ensureDeferred(sliding(bob, request, body2["pos"], timeout=10_000))
    resp = await alice.put(
        f"/_matrix/client/v3/rooms/{room_id}/typing/{alice.user_id}",
        {"typing": True, "timeout": 30000},
    )
    assert resp.code == 200, resp
    await sleep(0.2)
    assert not pending.called
    later = await send(alice, room_id, "later")
    body3 = await pending
    assert timeline_ids(body3["rooms"][room_id]) == [later]


@pytest_twisted.ensureDeferred
async def test_connection_survives_a_restart(server: RunningServer) -> None:
    alice = await user(server, "alice")
    room_id = await create_room(alice)
    request = {"lists": {"all": all_rooms([[0, 9]], timeline_limit=3)}}
    first = await sliding(alice, request)
    await server.restart()
    alice.base_url = server.base_url
    event_id = await send(alice, room_id, "after the restart")
    body = await sliding(alice, request, first["pos"])
    room = body["rooms"][room_id]
    assert "initial" not in room
    assert timeline_ids(room) == [event_id]


@pytest_twisted.ensureDeferred
async def test_room_subscription_and_counts(server: RunningServer) -> None:
    alice = await user(server, "alice")
    bob = await user(server, "bob")
    room_id = await create_room(alice, preset="public_chat")
    assert (await join(bob, room_id)).code == 200
    await send(alice, room_id, "one")
    await send(alice, room_id, "two")
    other = await create_room(bob)
    body = await sliding(
        bob,
        {
            "lists": {"all": all_rooms([[0, 0]], timeline_limit=0)},
            "room_subscriptions": {
                room_id: {"timeline_limit": 1, "required_state": []},
                "!unknown:test": {"timeline_limit": 1, "required_state": []},
            },
        },
    )
    assert list_ids(body) == [other]
    assert set(body["rooms"]) == {other, room_id}
    assert body["rooms"][room_id]["notification_count"] == 2
    assert len(body["rooms"][room_id]["timeline"]) == 1


@pytest_twisted.ensureDeferred
async def test_subscription_to_a_private_room_one_is_not_in_is_ignored(
    server: RunningServer,
) -> None:
    alice = await user(server, "alice")
    bob = await user(server, "bob")
    private = await create_room(
        alice, preset="private_chat", name="secret plans", topic="not for bob"
    )
    await send(alice, private, "the secret")
    body = await sliding(
        bob,
        {
            "lists": {"all": all_rooms([[0, 9]], timeline_limit=5)},
            "room_subscriptions": {
                private: {"timeline_limit": 5, "required_state": [["*", "*"]]},
            },
        },
    )
    assert body["rooms"] == {}
    assert body["lists"]["all"]["count"] == 0
    assert "secret" not in json.dumps(body)
    # Alice, in it, gets it through the same subscription.
    mine = await sliding(
        alice,
        {"lists": {}, "room_subscriptions": {private: {"timeline_limit": 1, "required_state": []}}},
    )
    assert set(mine["rooms"]) == {private}


@pytest_twisted.ensureDeferred
async def test_is_dm_marks_the_rooms_of_m_direct(server: RunningServer) -> None:
    alice = await user(server, "alice")
    bob = await user(server, "bob")
    dm = await create_room(alice)
    other = await create_room(alice)
    direct_path = f"{V3}/user/{q(alice.user_id or '')}/account_data/m.direct"
    assert (await alice.put(direct_path, {bob.user_id: [dm]})).code == 200
    request = {"lists": {"all": all_rooms([[0, 9]], timeline_limit=1)}}
    body = await sliding(alice, request)
    assert body["rooms"][dm]["is_dm"] is True
    assert "is_dm" not in body["rooms"][other]  # absent, not false (as Synapse)
    # m.direct changes: the next response follows it.
    assert (await alice.put(direct_path, {bob.user_id: [other]})).code == 200
    body = await sliding(alice, request)
    assert body["rooms"][other]["is_dm"] is True
    assert "is_dm" not in body["rooms"][dm]


@pytest_twisted.ensureDeferred
async def test_connections_die_with_their_device(server: RunningServer) -> None:
    alice = await user(server, "alice")
    body = await sliding(alice, {"lists": {"all": all_rooms([[0, 9]])}})
    position = int(body["pos"].split("/")[0])
    store = server.hs.storage.sliding_sync
    assert alice.user_id is not None and alice.device_id is not None
    assert await store.load(alice.user_id, alice.device_id, "", position, 0) is not None
    assert (await alice.post("/_matrix/client/v3/logout", {})).code == 200
    assert await store.load(alice.user_id, alice.device_id, "", position, 0) is None


@pytest_twisted.ensureDeferred
async def test_invites_from_ignored_users_are_not_listed(server: RunningServer) -> None:
    alice = await user(server, "alice")
    bob = await user(server, "bob")
    resp = await alice.put(
        f"/_matrix/client/v3/user/{alice.user_id}/account_data/m.ignored_user_list",
        {"ignored_users": {bob.user_id: {}}},
    )
    assert resp.code == 200, resp
    room_id = await create_room(bob)
    assert (await invite(bob, room_id, alice.user_id)).code == 200
    body = await sliding(alice, {"lists": {"all": all_rooms([[0, 9]])}})
    assert body["lists"]["all"]["count"] == 0
    assert body["rooms"] == {}


@pytest_twisted.ensureDeferred
async def test_a_wider_required_state_sends_what_was_not_sent(server: RunningServer) -> None:
    alice = await user(server, "alice")
    room_id = await create_room(alice, name="N", topic="T")

    def request(required: list[list[str]]) -> dict[str, Any]:
        return {"lists": {"all": all_rooms([[0, 0]], timeline_limit=1, required_state=required)}}

    body = await sliding(alice, request([["m.room.name", ""]]))
    assert [e["type"] for e in body["rooms"][room_id]["required_state"]] == ["m.room.name"]
    # The same config again: nothing to send.
    body = await sliding(alice, request([["m.room.name", ""]]), body["pos"])
    assert body["rooms"] == {}
    body = await sliding(alice, request([["m.room.name", ""], ["m.room.topic", ""]]), body["pos"])
    room = body["rooms"][room_id]
    assert "initial" not in room
    assert "timeline" not in room  # no new events
    # Only what the old config did not ask for (as Synapse).
    assert [e["type"] for e in room["required_state"]] == ["m.room.topic"]


@pytest_twisted.ensureDeferred
async def test_a_larger_timeline_limit_expands_the_timeline(server: RunningServer) -> None:
    alice = await user(server, "alice")
    room_id = await create_room(alice)
    sent = [await send(alice, room_id, f"m{i}") for i in range(5)]

    def request(limit: int) -> dict[str, Any]:
        return {"lists": {"all": all_rooms([[0, 0]], timeline_limit=limit)}}

    body = await sliding(alice, request(1))
    assert timeline_ids(body["rooms"][room_id]) == sent[-1:]
    body = await sliding(alice, request(3), body["pos"])
    room = body["rooms"][room_id]
    assert room["unstable_expanded_timeline"] is True
    assert "initial" not in room
    assert timeline_ids(room) == sent[-3:]
    # Down and up again without a gap: the client holds those already.
    body = await sliding(alice, request(1), body["pos"])
    assert body["rooms"] == {}
    body = await sliding(alice, request(3), body["pos"])
    assert body["rooms"] == {}
    # New events come as usual, not expanded.
    newer = await send(alice, room_id, "newer")
    body = await sliding(alice, request(3), body["pos"])
    assert timeline_ids(body["rooms"][room_id]) == [newer]
    assert "unstable_expanded_timeline" not in body["rooms"][room_id]


@pytest_twisted.ensureDeferred
async def test_kicked_room_stays_listed(server: RunningServer) -> None:
    alice = await user(server, "alice")
    bob = await user(server, "bob")
    room_id = await create_room(bob, preset="public_chat")
    assert (await join(alice, room_id)).code == 200
    request = {"lists": {"all": all_rooms([[0, 9]], timeline_limit=5)}}
    first = await sliding(alice, request)
    resp = await bob.post(
        f"/_matrix/client/v3/rooms/{room_id}/kick", {"user_id": alice.user_id, "reason": "x"}
    )
    assert resp.code == 200, resp
    second = await sliding(alice, request, first["pos"])
    kick = second["rooms"][room_id]["timeline"][-1]
    assert (kick["type"], kick["content"]["membership"]) == ("m.room.member", "leave")
    # Unlike a room one left oneself, a kick stays in the list (as Synapse).
    fresh = await sliding(alice, {**request, "conn_id": "fresh"})
    assert list_ids(fresh) == [room_id]
    assert fresh["rooms"][room_id]["initial"] is True


@pytest_twisted.ensureDeferred
async def test_only_bump_event_types_move_a_room_up(server: RunningServer) -> None:
    alice = await user(server, "alice")
    a = await create_room(alice)
    b = await create_room(alice)
    request = {"lists": {"all": all_rooms([[0, 9]], timeline_limit=1)}}
    body = await sliding(alice, request)
    assert list_ids(body) == [b, a]
    # State changes and other event types do not bump (Synapse's list of types).
    await put_state(alice, a, "m.room.topic", {"topic": "new"})
    await send(alice, a, event_type="x.custom", content={"k": 1})
    body = await sliding(alice, request, body["pos"])
    assert list_ids(body) == [b, a]
    assert a in body["rooms"]  # (it was sent, with its new events)
    await send(alice, a, event_type="m.room.encrypted", content={"algorithm": "x"})
    body = await sliding(alice, request, body["pos"])
    assert list_ids(body) == [a, b]


@pytest_twisted.ensureDeferred
async def test_order_after_a_restart_comes_from_the_database(server: RunningServer) -> None:
    alice = await user(server, "alice")
    a = await create_room(alice)
    b = await create_room(alice)
    await send(alice, a, "a is newest")
    for i in range(3):
        await put_state(alice, a, "x.state", {"i": i})  # not bumps, newer than the message
    await server.restart()
    alice.base_url = server.base_url
    body = await sliding(alice, {"lists": {"all": all_rooms([[0, 9]], timeline_limit=0)}})
    assert list_ids(body) == [a, b]
    stamps = {r: body["rooms"][r]["bump_stamp"] for r in (a, b)}
    assert stamps[a] > stamps[b]


@pytest_twisted.ensureDeferred
async def test_a_bump_older_than_the_events_held_in_memory_still_orders(
    server: RunningServer,
) -> None:
    alice = await user(server, "alice")
    a = await create_room(alice)
    b = await create_room(alice)
    await send(alice, a, "a's message")
    await send(alice, b, "b's message, the newest bump")
    request = {"lists": {"all": all_rooms([[0, 9]], timeline_limit=0)}}
    before = await sliding(alice, request)
    stamps = {r: before["rooms"][r]["bump_stamp"] for r in (a, b)}
    # More non-bump events in a than memory holds of a room: its message leaves them.
    for i in range(RECENT_EVENTS + 5):
        assert (await put_state(alice, a, "x.state", {"i": i}, state_key=str(i))).code == 200
    body = await sliding(alice, request)
    assert list_ids(body) == [b, a]
    assert {r: body["rooms"][r]["bump_stamp"] for r in (a, b)} == stamps
    # The same from the database after a restart.
    await server.restart()
    alice.base_url = server.base_url
    body = await sliding(alice, request)
    assert list_ids(body) == [b, a]
    assert {r: body["rooms"][r]["bump_stamp"] for r in (a, b)} == stamps


@pytest_twisted.ensureDeferred
async def test_connections_are_bounded_per_device(server: RunningServer) -> None:
    alice = await user(server, "alice")
    request: dict[str, Any] = {"lists": {"all": all_rooms([[0, 9]])}}
    first = await sliding(alice, {**request, "conn_id": "c0"})
    later = [await sliding(alice, {**request, "conn_id": f"c{i}"}) for i in range(1, 11)]
    # Ten connections a device: the least recently used went.
    assert_error(
        await sliding_raw(alice, {**request, "conn_id": "c0"}, first["pos"]), 400, "M_UNKNOWN_POS"
    )
    await sliding(alice, {**request, "conn_id": "c1"}, later[0]["pos"])


@pytest_twisted.ensureDeferred
async def test_idle_connections_expire(server: RunningServer) -> None:
    alice = await user(server, "alice")
    request: dict[str, Any] = {"lists": {"all": all_rooms([[0, 9]])}}
    old = await sliding(alice, {**request, "conn_id": "old"})
    # A week and a moment later the device opens another connection: the idle one goes.
    store = server.hs.storage.sliding_sync
    assert alice.user_id is not None and alice.device_id is not None
    week_later = int(time.time() * 1000) + CONNECTION_TTL_MS + 60_000
    await store.persist(alice.user_id, alice.device_id, "new", None, {}, week_later)
    assert_error(
        await sliding_raw(alice, {**request, "conn_id": "old"}, old["pos"]), 400, "M_UNKNOWN_POS"
    )


@pytest_twisted.ensureDeferred
async def test_initial_timeline_carries_bundled_aggregations(server: RunningServer) -> None:
    alice = await user(server, "alice")
    room_id = await create_room(alice)
    original = await send(alice, room_id, "tpyo")
    edit = await send(
        alice,
        room_id,
        content={
            "msgtype": "m.text",
            "body": "* typo",
            "m.new_content": {"msgtype": "m.text", "body": "typo"},
            "m.relates_to": {"rel_type": "m.replace", "event_id": original},
        },
    )
    body = await sliding(alice, {"lists": {"all": all_rooms([[0, 0]], timeline_limit=5)}})
    events = {e["event_id"]: e for e in body["rooms"][room_id]["timeline"]}
    relations = events[original]["unsigned"]["m.relations"]
    assert relations["m.replace"]["event_id"] == edit


@pytest_twisted.ensureDeferred
async def test_client_going_away_ends_its_long_poll(server: RunningServer) -> None:
    """A parked long-poll (no coroutine while it waits) whose client disconnects leaves
    the notifier: its waiter and its deadline."""
    alice = await user(server, "alice")
    bob = await user(server, "bob")
    room_id = await create_room(alice, preset="public_chat")
    assert (await join(bob, room_id)).code == 200
    request = {"lists": {"all": all_rooms([[0, 9]])}}
    first = await sliding(bob, request)
    assert server.hs.sliding_sync is not None
    notifier = server.hs.sliding_sync.notifier
    assert notifier.waiting_count() == 0

    host, port = server.base_url.removeprefix("http://").split(":")
    payload = json.dumps(request).encode()
    sock = socket.create_connection((host, int(port)))
    try:
        sock.sendall(
            f"POST {SLIDING_PATH}?pos={first['pos']}&timeout=60000 HTTP/1.1\r\n"
            f"Host: {host}\r\nAuthorization: Bearer {bob.access_token}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n".encode()
            + payload
        )
        await until(lambda: notifier.waiting_count() == 1, "the long-poll is parked")
        assert sum(len(b) for b in notifier._buckets.values()) == 1  # its deadline
    finally:
        sock.close()
    await until(lambda: notifier.waiting_count() == 0, "the long-poll leaves the notifier")
    assert sum(len(b) for b in notifier._buckets.values()) == 0
    # The next event finds nobody waiting and no error; a new long-poll still works.
    pending = defer.ensureDeferred(sliding(bob, request, first["pos"], timeout=10_000))
    event_id = await send(alice, room_id, "still here")
    assert timeline_ids((await pending)["rooms"][room_id]) == [event_id]


async def until(condition: Any, what: str, seconds: float = 5.0) -> None:
    for _ in range(int(seconds / 0.02)):
        if condition():
            return
        await sleep(0.02)
    raise AssertionError(f"timed out waiting until {what}")
