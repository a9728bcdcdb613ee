"""/sync over HTTP: filters, limits, sections (join/invite/leave/knock), summary, data."""

from __future__ import annotations

from typing import Any

import pytest_twisted

from tests.rooms.helpers import (
    V3,
    assert_error,
    bodies,
    create_room,
    invite,
    join,
    leave,
    put_state,
    room_path,
    send,
    state_events,
    sync,
    sync_raw,
    timeline,
    user,
)
from tests.support.client import Client, q
from tests.support.server import RunningServer


def state_keys(events: list[dict[str, Any]]) -> set[tuple[str, str]]:
    return {(e["type"], e["state_key"]) for e in events}


async def post_filter(client: Client, body: Any, user_id: str | None = None) -> Any:
    return await client.post(f"{V3}/user/{q(user_id or client.user_id or '')}/filter", body)


# Filters -----------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_filter_upload_download_and_use_by_id(server: RunningServer) -> None:
    alice = await user(server, "alice")
    bob = await user(server, "bob")
    room_id = await create_room(alice)
    for i in range(4):
        await send(alice, room_id, f"m{i}")
    flt = {"room": {"timeline": {"limit": 2, "types": ["m.room.message"]}}}
    resp = await post_filter(alice, flt)
    assert resp.code == 200, resp
    filter_id = resp.json["filter_id"]
    assert isinstance(filter_id, str)
    resp = await alice.get(f"{V3}/user/{q(alice.user_id or '')}/filter/{filter_id}")
    assert resp.code == 200, resp
    assert resp.json == flt

    body = await sync(alice, filter=filter_id)
    tl = timeline(body, room_id)
    assert bodies(tl["events"]) == ["m2", "m3"]
    assert tl["limited"] is True
    # The same filter inline.
    body = await sync(alice, filter=flt)
    assert bodies(timeline(body, room_id)["events"]) == ["m2", "m3"]

    # Someone else's filters are off limits, both ways.
    resp = await bob.get(f"{V3}/user/{q(alice.user_id or '')}/filter/{filter_id}")
    assert_error(resp, 403, "M_FORBIDDEN")
    resp = await post_filter(bob, flt, user_id=alice.user_id)
    assert_error(resp, 403, "M_FORBIDDEN")
    # Bob has no filter with that id: using it in /sync is a 400.
    resp = await sync_raw(bob, filter=filter_id)
    assert_error(resp, 400, "M_INVALID_PARAM")
    resp = await bob.get(f"{V3}/user/{q(bob.user_id or '')}/filter/{filter_id}")
    assert_error(resp, 404, "M_NOT_FOUND")
    resp = await bob.get(f"{V3}/user/{q(bob.user_id or '')}/filter/abc")
    assert_error(resp, 404, "M_NOT_FOUND")


@pytest_twisted.ensureDeferred
async def test_invalid_filters_are_400(server: RunningServer) -> None:
    alice = await user(server, "alice")
    resp = await post_filter(alice, {"room": {"timeline": {"limit": "ten"}}})
    assert_error(resp, 400, "M_BAD_JSON")
    resp = await post_filter(alice, {"event_format": "xml"})
    assert_error(resp, 400, "M_BAD_JSON")
    resp = await alice.post(f"{V3}/user/{q(alice.user_id or '')}/filter", raw=b"nope")
    assert_error(resp, 400, "M_NOT_JSON")
    resp = await sync_raw(alice, filter="{broken")
    assert_error(resp, 400, "M_NOT_JSON")
    resp = await sync_raw(alice, filter={"room": {"rooms": "!notalist:x"}})
    assert_error(resp, 400, "M_BAD_JSON")
    resp = await sync_raw(alice, filter="not-an-id")
    assert_error(resp, 400, "M_INVALID_PARAM")


@pytest_twisted.ensureDeferred
async def test_sync_query_errors(server: RunningServer) -> None:
    alice = await user(server, "alice")
    for bad in ("garbage", "s", "s1_x", "12", "t1-2"):
        resp = await sync_raw(alice, since=bad)
        assert_error(resp, 400, "M_INVALID_PARAM")
    resp = await sync_raw(alice, since="s999999999")
    assert_error(resp, 400, "M_INVALID_PARAM")  # from the future
    resp = await alice.get(f"{V3}/sync", params={"timeout": "soon"})
    assert_error(resp, 400, "M_INVALID_PARAM")
    resp = await alice.get(f"{V3}/sync", params={"full_state": "maybe"})
    assert_error(resp, 400, "M_INVALID_PARAM")
    resp = await alice.get(f"{V3}/sync", params={"set_presence": "asleep"})
    assert_error(resp, 400, "M_INVALID_PARAM")
    resp = await server.client().get(f"{V3}/sync")
    assert_error(resp, 401, "M_MISSING_TOKEN")


# Timelines and state -----------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_initial_sync_shape(server: RunningServer) -> None:
    alice = await user(server, "alice")
    room_id = await create_room(alice, name="Named")
    await send(alice, room_id, "hello")
    body = await sync(alice)
    assert isinstance(body["next_batch"], str)
    room = body["rooms"]["join"][room_id]
    assert set(room) >= {"timeline", "state", "account_data", "ephemeral", "unread_notifications"}
    assert room["unread_notifications"] == {"notification_count": 0, "highlight_count": 0}
    tl = room["timeline"]
    assert bodies(tl["events"]) == ["hello"]
    assert isinstance(tl["prev_batch"], str)
    # Timeline (limit 10) plus state hold the room's whole current state, no overlap.
    ids_tl = {e["event_id"] for e in tl["events"]}
    ids_state = {e["event_id"] for e in room["state"]["events"]}
    assert not ids_tl & ids_state
    keys = state_keys(room["state"]["events"]) | {
        (e["type"], e["state_key"]) for e in tl["events"] if "state_key" in e
    }
    assert ("m.room.create", "") in keys and ("m.room.name", "") in keys
    assert body["rooms"]["invite"] == {} and body["rooms"]["leave"] == {}


@pytest_twisted.ensureDeferred
async def test_incremental_sync_returns_only_new_events(server: RunningServer) -> None:
    alice = await user(server, "alice")
    room_id = await create_room(alice)
    first = await sync(alice)
    await send(alice, room_id, "new")
    body = await sync(alice, first["next_batch"])
    tl = timeline(body, room_id)
    assert bodies(tl["events"]) == ["new"]
    assert len(tl["events"]) == 1
    assert tl["limited"] is False
    assert state_events(body, room_id) == []
    # Nothing new: the room is absent.
    again = await sync(alice, body["next_batch"])
    assert room_id not in again["rooms"]["join"]


@pytest_twisted.ensureDeferred
async def test_limited_incremental_sync_sends_state_changed_in_the_gap(
    server: RunningServer,
) -> None:
    alice = await user(server, "alice")
    bob = await user(server, "bob")
    room_id = await create_room(alice, preset="public_chat")
    since = (await sync(alice))["next_batch"]
    await join(bob, room_id)
    await put_state(alice, room_id, "m.room.topic", {"topic": "gap topic"})
    for i in range(8):
        await send(alice, room_id, f"m{i}")
    body = await sync(alice, since, filter={"room": {"timeline": {"limit": 3}}})
    tl = timeline(body, room_id)
    assert tl["limited"] is True
    assert bodies(tl["events"]) == ["m5", "m6", "m7"]
    keys = state_keys(state_events(body, room_id))
    assert keys == {("m.room.member", bob.user_id), ("m.room.topic", "")}


@pytest_twisted.ensureDeferred
async def test_full_state_resends_all_state(server: RunningServer) -> None:
    alice = await user(server, "alice")
    room_id = await create_room(alice, name="N")
    since = (await sync(alice))["next_batch"]
    await send(alice, room_id, "one")
    body = await sync(alice, since, full_state=True)
    keys = state_keys(state_events(body, room_id))
    assert ("m.room.create", "") in keys and ("m.room.name", "") in keys
    assert bodies(timeline(body, room_id)["events"]) == ["one"]
    # Even with nothing new, full_state returns every room at once.
    body2 = await sync(alice, body["next_batch"], full_state=True, timeout=5000)
    assert room_id in body2["rooms"]["join"]
    assert ("m.room.create", "") in state_keys(state_events(body2, room_id))


@pytest_twisted.ensureDeferred
async def test_timeline_and_state_filters(server: RunningServer) -> None:
    alice = await user(server, "alice")
    bob = await user(server, "bob")
    room_id = await create_room(alice, preset="public_chat", name="N")
    await join(bob, room_id)
    await send(alice, room_id, "from alice")
    await send(bob, room_id, "from bob")
    await send(bob, room_id, content={"k": 1}, event_type="com.example.custom")

    body = await sync(alice, filter={"room": {"timeline": {"types": ["m.room.message"]}}})
    tl = timeline(body, room_id)["events"]
    assert {e["type"] for e in tl} == {"m.room.message"}
    body = await sync(alice, filter={"room": {"timeline": {"not_types": ["m.room.message"]}}})
    assert "m.room.message" not in {e["type"] for e in timeline(body, room_id)["events"]}
    body = await sync(
        alice,
        filter={"room": {"timeline": {"senders": [bob.user_id], "types": ["m.room.message"]}}},
    )
    assert bodies(timeline(body, room_id)["events"]) == ["from bob"]
    body = await sync(alice, filter={"room": {"timeline": {"types": ["com.example.*"]}}})
    assert [e["type"] for e in timeline(body, room_id)["events"]] == ["com.example.custom"]

    body = await sync(
        alice,
        filter={"room": {"timeline": {"limit": 1}, "state": {"types": ["m.room.name"]}}},
    )
    assert state_keys(state_events(body, room_id)) == {("m.room.name", "")}
    body = await sync(
        alice,
        filter={"room": {"timeline": {"limit": 1}, "state": {"not_types": ["m.room.member"]}}},
    )
    assert all(e["type"] != "m.room.member" for e in state_events(body, room_id))
    body = await sync(
        alice,
        filter={"room": {"timeline": {"limit": 1}, "state": {"senders": [bob.user_id]}}},
    )
    assert {e["sender"] for e in state_events(body, room_id)} <= {bob.user_id}
    # rooms / not_rooms
    body = await sync(alice, filter={"room": {"not_rooms": [room_id]}})
    assert room_id not in body["rooms"]["join"]
    body = await sync(alice, filter={"room": {"rooms": [room_id]}})
    assert room_id in body["rooms"]["join"]


@pytest_twisted.ensureDeferred
async def test_lazy_load_members_only_sends_timeline_senders(server: RunningServer) -> None:
    alice = await user(server, "alice")
    room_id = await create_room(alice, preset="public_chat", name="Big room")
    others = [await user(server, f"u{i}") for i in range(4)]
    for other in others:
        await join(other, room_id)
    await send(others[0], room_id, "only u0 talks")
    for _ in range(3):
        await send(alice, room_id, "alice talks")
    flt = {"room": {"timeline": {"limit": 2}, "state": {"lazy_load_members": True}}}
    body = await sync(others[1], filter=flt)
    members = {e["state_key"] for e in state_events(body, room_id) if e["type"] == "m.room.member"}
    # Timeline senders (alice) and the syncing user; not u0, u2, u3.
    assert members == {alice.user_id, others[1].user_id}
    # Without lazy loading: everyone.
    body = await sync(others[1], filter={"room": {"timeline": {"limit": 2}}})
    members = {e["state_key"] for e in state_events(body, room_id) if e["type"] == "m.room.member"}
    assert members == {alice.user_id} | {o.user_id for o in others}

    # Incrementally, a new sender's member event arrives with their message.
    since = (await sync(others[1], filter=flt))["next_batch"]
    await send(others[2], room_id, "u2 speaks")
    body = await sync(others[1], since, filter=flt)
    members = {e["state_key"] for e in state_events(body, room_id) if e["type"] == "m.room.member"}
    assert members == {others[2].user_id}


@pytest_twisted.ensureDeferred
async def test_lazy_load_incremental_sends_a_joining_members_event_in_state(
    server: RunningServer,
) -> None:
    """As Synapse: a joiner's member event is in the state block as well as in the
    timeline (Hydrogen names the joiner from the state block, else by user id)."""
    alice = await user(server, "alice")
    bob = await user(server, "bob")
    room_id = await create_room(alice, preset="public_chat")
    flt = {"room": {"state": {"lazy_load_members": True}}}
    since = (await sync(alice, filter=flt))["next_batch"]
    await join(bob, room_id)
    await send(bob, room_id, "hi")
    body = await sync(alice, since, filter=flt)
    room = body["rooms"]["join"][room_id]
    join_event = room["timeline"]["events"][0]
    assert (join_event["type"], join_event["state_key"]) == ("m.room.member", bob.user_id)
    state = [e for e in room["state"]["events"] if e["type"] == "m.room.member"]
    assert [e["event_id"] for e in state] == [join_event["event_id"]]
    # Without lazy loading the state block stays free of what the timeline carries.
    since = (await sync(alice))["next_batch"]
    await send(bob, room_id, "again")
    body = await sync(alice, since)
    assert body["rooms"]["join"][room_id]["state"]["events"] == []


@pytest_twisted.ensureDeferred
async def test_lazy_load_members_includes_heroes(server: RunningServer) -> None:
    alice = await user(server, "alice")
    bob = await user(server, "bob")
    carol = await user(server, "carol")
    room_id = await create_room(alice, preset="public_chat")  # no name: heroes
    await join(bob, room_id)
    await join(carol, room_id)
    for _ in range(3):
        await send(alice, room_id, "alice talks")
    flt = {"room": {"timeline": {"limit": 2}, "state": {"lazy_load_members": True}}}
    body = await sync(bob, filter=flt)
    room = body["rooms"]["join"][room_id]
    heroes = room["summary"]["m.heroes"]
    assert set(heroes) == {alice.user_id, carol.user_id}
    members = {e["state_key"] for e in room["state"]["events"] if e["type"] == "m.room.member"}
    assert set(heroes) <= members


# Sections ------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_invite_section_has_stripped_state(server: RunningServer) -> None:
    alice = await user(server, "alice")
    bob = await user(server, "bob")
    room_id = await create_room(alice, name="Invite me", topic="t")
    since = (await sync(bob))["next_batch"]
    await invite(alice, room_id, bob.user_id)
    body = await sync(bob, since)
    assert room_id in body["rooms"]["invite"]
    assert room_id not in body["rooms"]["join"]
    stripped = body["rooms"]["invite"][room_id]["invite_state"]["events"]
    keys = state_keys(stripped)
    assert {("m.room.create", ""), ("m.room.join_rules", ""), ("m.room.name", "")} <= keys
    assert ("m.room.member", bob.user_id) in keys
    for e in stripped:
        assert set(e) == {"type", "state_key", "content", "sender"}
    # The invite stays in an initial sync, and goes once joined.
    assert room_id in (await sync(bob))["rooms"]["invite"]
    await join(bob, room_id)
    body = await sync(bob)
    assert room_id not in body["rooms"]["invite"] and room_id in body["rooms"]["join"]


@pytest_twisted.ensureDeferred
async def test_leave_section_after_leaving(server: RunningServer) -> None:
    alice = await user(server, "alice")
    bob = await user(server, "bob")
    room_id = await create_room(alice, preset="public_chat")
    await join(bob, room_id)
    since = (await sync(bob))["next_batch"]
    await send(alice, room_id, "before")
    await leave(bob, room_id)
    await send(alice, room_id, "after")
    body = await sync(bob, since)
    assert room_id not in body["rooms"]["join"]
    left = body["rooms"]["leave"][room_id]
    events = left["timeline"]["events"]
    assert bodies(events) == ["before"]
    last = events[-1]
    assert last["type"] == "m.room.member" and last["state_key"] == bob.user_id
    assert last["content"]["membership"] == "leave"
    # Next incremental sync: nothing more about that room.
    again = await sync(bob, body["next_batch"])
    assert room_id not in again["rooms"]["leave"]
    # Initial sync: left rooms only with include_leave.
    assert room_id not in (await sync(bob))["rooms"]["leave"]
    body = await sync(bob, filter={"room": {"include_leave": True}})
    assert room_id in body["rooms"]["leave"]


@pytest_twisted.ensureDeferred
async def test_kicked_user_gets_leave_section(server: RunningServer) -> None:
    alice = await user(server, "alice")
    bob = await user(server, "bob")
    room_id = await create_room(alice, preset="public_chat")
    await join(bob, room_id)
    since = (await sync(bob))["next_batch"]
    await alice.post(room_path(room_id, "/kick"), {"user_id": bob.user_id, "reason": "bye"})
    body = await sync(bob, since)
    events = body["rooms"]["leave"][room_id]["timeline"]["events"]
    assert events[-1]["sender"] == alice.user_id
    assert events[-1]["content"] == {"membership": "leave", "reason": "bye"}
    # Being kicked is shown in an initial sync too (not the user's own doing).
    body = await sync(bob)
    assert room_id in body["rooms"]["leave"]


@pytest_twisted.ensureDeferred
async def test_knock_section(server: RunningServer) -> None:
    alice = await user(server, "alice")
    bob = await user(server, "bob")
    room_id = await create_room(
        alice,
        name="Knock knock",
        initial_state=[{"type": "m.room.join_rules", "content": {"join_rule": "knock"}}],
    )
    since = (await sync(bob))["next_batch"]
    resp = await bob.post(f"{V3}/knock/{q(room_id)}", {})
    assert resp.code == 200, resp
    body = await sync(bob, since)
    knock_state = body["rooms"]["knock"][room_id]["knock_state"]["events"]
    assert ("m.room.name", "") in state_keys(knock_state)
    assert ("m.room.member", bob.user_id) in state_keys(knock_state)
    # Alice sees the knock in her timeline.
    body = await sync(alice, filter={"room": {"timeline": {"limit": 1}}})
    ev = timeline(body, room_id)["events"][-1]
    assert ev["content"]["membership"] == "knock"


@pytest_twisted.ensureDeferred
async def test_summary_counts_and_heroes(server: RunningServer) -> None:
    alice = await user(server, "alice")
    bob = await user(server, "bob")
    carol = await user(server, "carol")
    dan = await user(server, "dan")
    room_id = await create_room(alice, preset="public_chat")
    await join(dan, room_id)
    await join(bob, room_id)
    await invite(alice, room_id, carol.user_id)
    body = await sync(alice)
    summary = body["rooms"]["join"][room_id]["summary"]
    assert summary["m.joined_member_count"] == 3
    assert summary["m.invited_member_count"] == 1
    # Heroes: joined or invited, by stream order (dan joined before bob), never oneself.
    assert summary["m.heroes"] == [dan.user_id, bob.user_id, carol.user_id]

    # With a name, heroes are not needed.
    await put_state(alice, room_id, "m.room.name", {"name": "Named"})
    body = await sync(alice)
    assert "m.heroes" not in body["rooms"]["join"][room_id]["summary"]


@pytest_twisted.ensureDeferred
async def test_summary_heroes_fall_back_to_departed_members(server: RunningServer) -> None:
    alice = await user(server, "alice")
    bob = await user(server, "bob")
    room_id = await create_room(alice, preset="public_chat")
    await join(bob, room_id)
    await leave(bob, room_id)
    body = await sync(alice)
    summary = body["rooms"]["join"][room_id]["summary"]
    assert summary["m.joined_member_count"] == 1
    assert summary["m.heroes"] == [bob.user_id]


@pytest_twisted.ensureDeferred
async def test_account_data_global_and_per_room(server: RunningServer) -> None:
    alice = await user(server, "alice")
    room_id = await create_room(alice)
    since = (await sync(alice))["next_batch"]
    uid = q(alice.user_id or "")
    resp = await alice.put(f"{V3}/user/{uid}/account_data/com.example.global", {"g": 1})
    assert resp.code == 200, resp
    resp = await alice.put(
        f"{V3}/user/{uid}/rooms/{q(room_id)}/account_data/com.example.room", {"r": 2}
    )
    assert resp.code == 200, resp
    body = await sync(alice, since)
    assert {"type": "com.example.global", "content": {"g": 1}} in body["account_data"]["events"]
    room = body["rooms"]["join"][room_id]
    assert room["account_data"]["events"] == [{"type": "com.example.room", "content": {"r": 2}}]
    # Both again in an initial sync.
    body = await sync(alice)
    assert any(e["type"] == "com.example.global" for e in body["account_data"]["events"])
    assert body["rooms"]["join"][room_id]["account_data"]["events"] == [
        {"type": "com.example.room", "content": {"r": 2}}
    ]


@pytest_twisted.ensureDeferred
async def test_federation_event_format(server: RunningServer) -> None:
    alice = await user(server, "alice")
    room_id = await create_room(alice)
    await send(alice, room_id, "x")
    body = await sync(alice, filter={"event_format": "federation"})
    ev = timeline(body, room_id)["events"][-1]
    assert {"auth_events", "prev_events", "depth", "hashes", "signatures"} <= set(ev)
    body = await sync(alice, filter={"event_fields": ["type", "content.body"]})
    ev = timeline(body, room_id)["events"][-1]
    assert ev == {"type": "m.room.message", "content": {"body": "x"}}


@pytest_twisted.ensureDeferred
async def test_account_data_filters_apply_to_sync(server: RunningServer) -> None:
    """``account_data`` and ``room.account_data`` filters pick the account data /sync
    returns (m.push_rules included in what they can leave out)."""
    alice = await user(server, "alice")
    room_id = await create_room(alice)
    path = f"{V3}/user/{q(alice.user_id or '')}"
    for sub in ("", f"/rooms/{q(room_id)}"):
        for data_type in ("my.test.type", "my.other.type"):
            resp = await alice.put(f"{path}{sub}/account_data/{data_type}", {"k": data_type})
            assert resp.code == 200, resp
    unfiltered = await sync(alice)
    assert "m.push_rules" in {e["type"] for e in unfiltered["account_data"]["events"]}
    wanted = {"account_data": {"types": ["my.test.type"]}}
    body = await sync(alice, filter={**wanted, "room": {"account_data": {"types": ["my.*"]}}})
    assert body["account_data"]["events"] == [
        {"type": "my.test.type", "content": {"k": "my.test.type"}}
    ]
    room_types = {e["type"] for e in body["rooms"]["join"][room_id]["account_data"]["events"]}
    assert room_types == {"my.test.type", "my.other.type"}
    body = await sync(alice, filter={"room": {"account_data": {"not_types": ["my.other.type"]}}})
    room_data = body["rooms"]["join"][room_id]["account_data"]["events"]
    assert room_data == [{"type": "my.test.type", "content": {"k": "my.test.type"}}]
