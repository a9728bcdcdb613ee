"""The deprecated sync endpoints over HTTP: GET /events, /events/{eventId},
/initialSync and /rooms/{roomId}/initialSync."""

from __future__ import annotations

from typing import Any

import pytest_twisted
from twisted.internet import defer, reactor, task

from tests.api.helpers import register_guest, with_config
from tests.rooms.helpers import (
    V3,
    assert_error,
    create_room,
    invite,
    join,
    leave,
    put_state,
    room_path,
    send,
    sync,
    user,
)
from tests.support.client import Client, Response, q
from tests.support.server import RunningServer


async def events(client: Client, **params: Any) -> Response:
    query = "&".join(f"{k}={q(str(v))}" for k, v in params.items())
    return await client.get(f"{V3}/events?{query}")


async def now_token(client: Client) -> str:
    resp = await events(client, timeout=0)
    assert resp.code == 200, resp
    return str(resp.json["end"])


def of_type(chunk: list[dict[str, Any]], event_type: str) -> list[dict[str, Any]]:
    return [ev for ev in chunk if ev["type"] == event_type]


@pytest_twisted.ensureDeferred
async def test_events_without_from_is_empty_at_now(server: RunningServer) -> None:
    alice = await user(server, "alice")
    await create_room(alice)
    resp = await events(alice, timeout=0)
    assert resp.code == 200, resp
    # Nothing from before the request (other streams may move while it runs).
    assert [ev for ev in resp.json["chunk"] if "event_id" in ev] == []
    assert {"start", "end"} <= set(resp.json)


@pytest_twisted.ensureDeferred
async def test_events_from_token_returns_new_room_events(server: RunningServer) -> None:
    alice = await user(server, "alice")
    room_id = await create_room(alice)
    token = await now_token(alice)
    event_id = await send(alice, room_id, "hello", txn="legacy1")
    resp = await events(alice, timeout=0, **{"from": token})
    assert resp.code == 200, resp
    assert resp.json["start"] == token
    messages = of_type(resp.json["chunk"], "m.room.message")
    assert [ev["event_id"] for ev in messages] == [event_id]
    assert messages[0]["room_id"] == room_id
    assert messages[0]["unsigned"]["transaction_id"] == "legacy1"
    assert messages[0]["user_id"] == alice.user_id  # the v1 format, as Synapse
    # Continuing from `end`: nothing is repeated.
    again = await events(alice, timeout=0, **{"from": resp.json["end"]})
    assert of_type(again.json["chunk"], "m.room.message") == []


@pytest_twisted.ensureDeferred
async def test_events_limit_pages_in_order_and_is_validated(
    server: RunningServer,
) -> None:
    # As Synapse (SyTest 30rooms/09eventstream.pl): the oldest first, and paging from
    # ``end`` catches up with every event, in order, across rooms.
    alice = await user(server, "alice")
    room_id = await create_room(alice)
    other = await create_room(alice)
    token = await now_token(alice)
    ids = []
    for i in range(7):
        ids.append(await send(alice, room_id, f"m{i}"))
        if i % 3 == 0:
            ids.append(await send(alice, other, f"o{i}"))
    seen: list[str] = []
    for _ in range(10):
        resp = await events(alice, timeout=0, limit=2, **{"from": token})
        assert resp.code == 200, resp
        page = [ev["event_id"] for ev in of_type(resp.json["chunk"], "m.room.message")]
        if not page:
            break
        assert len([e for e in page if e in ids]) <= 4
        seen += page
        token = resp.json["end"]
    assert seen == ids
    for bad in ("hello", "-2"):
        resp = await events(alice, timeout=0, limit=bad, **{"from": token})
        assert_error(resp, 400, "M_INVALID_PARAM")


@pytest_twisted.ensureDeferred
async def test_events_long_poll_wakes_on_new_event(server: RunningServer) -> None:
    alice = await user(server, "alice")
    room_id = await create_room(alice)
    token = await now_token(alice)
    pending = defer.ensureDeferred(events(alice, timeout=10_000, **{"from": token}))
    await task.deferLater(reactor, 0.2, lambda: None)
    assert not pending.called
    event_id = await send(alice, room_id, "wake up")
    resp = await pending
    assert resp.code == 200, resp
    assert event_id in [ev["event_id"] for ev in resp.json["chunk"]]


@pytest_twisted.ensureDeferred
async def test_events_bad_from_token_is_400(server: RunningServer) -> None:
    alice = await user(server, "alice")
    resp = await events(alice, timeout=0, **{"from": "not-a-token"})
    assert_error(resp, 400, "M_INVALID_PARAM")


@pytest_twisted.ensureDeferred
async def test_events_shows_invite_but_not_rooms_one_is_not_in(server: RunningServer) -> None:
    alice = await user(server, "alice")
    bob = await user(server, "bob")
    token = await now_token(bob)
    private = await create_room(alice)
    await send(alice, private, "secret")
    room_id = await create_room(alice)
    assert (await invite(alice, room_id, bob.user_id)).code == 200
    resp = await events(bob, timeout=0, **{"from": token})
    assert resp.code == 200, resp
    assert of_type(resp.json["chunk"], "m.room.message") == []
    members = of_type(resp.json["chunk"], "m.room.member")
    assert [(m["room_id"], m["content"]["membership"]) for m in members] == [(room_id, "invite")]


@pytest_twisted.ensureDeferred
async def test_events_typing_and_receipts_carry_room_id(server: RunningServer) -> None:
    alice = await user(server, "alice")
    room_id = await create_room(alice)
    event_id = await send(alice, room_id, "read me")
    token = await now_token(alice)
    resp = await alice.put(
        room_path(room_id, f"/typing/{q(alice.user_id)}"), {"typing": True, "timeout": 10000}
    )
    assert resp.code == 200, resp
    resp = await alice.post(room_path(room_id, f"/receipt/m.read/{q(event_id)}"), {})
    assert resp.code == 200, resp
    resp = await events(alice, timeout=0, **{"from": token})
    typing = of_type(resp.json["chunk"], "m.typing")
    assert typing and typing[0]["room_id"] == room_id
    assert typing[0]["content"]["user_ids"] == [alice.user_id]
    receipts = of_type(resp.json["chunk"], "m.receipt")
    assert receipts and receipts[0]["room_id"] == room_id
    assert event_id in receipts[0]["content"]


@with_config(allow_guest_access=True)
@pytest_twisted.ensureDeferred
async def test_events_guest_needs_room_id_and_may_peek_world_readable(
    server: RunningServer,
) -> None:
    alice = await user(server, "alice")
    room_id = await create_room(alice, preset="public_chat")
    await put_state(alice, room_id, "m.room.history_visibility", {"history_visibility": "shared"})
    guest = await register_guest(server)
    resp = await events(guest, timeout=0)
    assert_error(resp, 400, "M_MISSING_PARAM")
    resp = await events(guest, timeout=0, room_id=room_id)
    assert_error(resp, 403, "M_FORBIDDEN")
    await put_state(
        alice, room_id, "m.room.history_visibility", {"history_visibility": "world_readable"}
    )
    token = (await events(guest, timeout=0, room_id=room_id)).json["end"]
    event_id = await send(alice, room_id, "for everyone")
    resp = await events(guest, timeout=0, room_id=room_id, **{"from": token})
    assert resp.code == 200, resp
    assert [ev["event_id"] for ev in of_type(resp.json["chunk"], "m.room.message")] == [event_id]


@pytest_twisted.ensureDeferred
async def test_get_event_by_id_and_hidden_event_is_404(server: RunningServer) -> None:
    alice = await user(server, "alice")
    bob = await user(server, "bob")
    room_id = await create_room(alice)
    event_id = await send(alice, room_id, "mine")
    resp = await alice.get(f"{V3}/events/{q(event_id)}")
    assert resp.code == 200, resp
    assert resp.json["content"]["body"] == "mine"
    assert_error(await bob.get(f"{V3}/events/{q(event_id)}"), 404, "M_NOT_FOUND")
    assert_error(await alice.get(f"{V3}/events/{q('$nope')}"), 404, "M_NOT_FOUND")


@pytest_twisted.ensureDeferred
async def test_room_initial_sync_for_a_member(server: RunningServer) -> None:
    alice = await user(server, "alice")
    room_id = await create_room(alice, preset="public_chat", visibility="public")
    ids = [await send(alice, room_id, f"m{i}") for i in range(3)]
    resp = await alice.put(
        f"{V3}/user/{q(alice.user_id)}/rooms/{q(room_id)}/account_data/org.example",
        {"k": 1},
    )
    assert resp.code == 200, resp
    resp = await alice.get(room_path(room_id, "/initialSync?limit=2"))
    assert resp.code == 200, resp
    body = resp.json
    assert body["room_id"] == room_id
    assert body["membership"] == "join"
    assert body["visibility"] == "public"
    assert [ev["event_id"] for ev in body["messages"]["chunk"]] == ids[1:]
    assert {"start", "end"} <= set(body["messages"])
    types = {ev["type"] for ev in body["state"]}
    members = {ev["user_id"] for ev in body["state"] if ev["type"] == "m.room.member"}
    assert members == {alice.user_id}
    assert {"m.room.create", "m.room.member", "m.room.power_levels"} <= types
    assert {"type": "org.example", "content": {"k": 1}} in body["account_data"]
    assert isinstance(body["presence"], list) and isinstance(body["receipts"], list)
    # `start` pages further back with /messages.
    older = await alice.get(
        room_path(room_id, f"/messages?dir=b&limit=1&from={q(body['messages']['start'])}")
    )
    assert [ev["event_id"] for ev in older.json["chunk"]] == [ids[0]]


@pytest_twisted.ensureDeferred
async def test_room_initial_sync_refuses_non_members(server: RunningServer) -> None:
    alice = await user(server, "alice")
    bob = await user(server, "bob")
    room_id = await create_room(alice, preset="public_chat")
    assert_error(await bob.get(room_path(room_id, "/initialSync")), 403, "M_FORBIDDEN")
    assert_error(await bob.get(room_path("!nope:test", "/initialSync")), 403, "M_FORBIDDEN")
    await put_state(
        alice, room_id, "m.room.history_visibility", {"history_visibility": "world_readable"}
    )
    resp = await bob.get(room_path(room_id, "/initialSync"))
    assert resp.code == 200, resp
    assert resp.json["membership"] == "join"  # as Synapse answers a reader


@pytest_twisted.ensureDeferred
async def test_room_initial_sync_after_leaving_stops_at_the_leave(server: RunningServer) -> None:
    alice = await user(server, "alice")
    bob = await user(server, "bob")
    room_id = await create_room(alice, preset="public_chat")
    assert (await join(bob, room_id)).code == 200
    before = await send(alice, room_id, "before")
    assert (await leave(bob, room_id)).code == 200
    await send(alice, room_id, "after")
    resp = await bob.get(room_path(room_id, "/initialSync"))
    assert resp.code == 200, resp
    assert resp.json["membership"] == "leave"
    chunk = resp.json["messages"]["chunk"]
    assert before in [ev["event_id"] for ev in chunk]
    assert "after" not in [ev["content"].get("body") for ev in chunk]


@pytest_twisted.ensureDeferred
async def test_global_initial_sync(server: RunningServer) -> None:
    alice = await user(server, "alice")
    bob = await user(server, "bob")
    joined = await create_room(bob)
    await send(bob, joined, "hi")
    invited = await create_room(alice)
    assert (await invite(alice, invited, bob.user_id)).code == 200
    left = await create_room(alice, preset="public_chat")
    assert (await join(bob, left)).code == 200
    assert (await leave(bob, left)).code == 200

    resp = await bob.get(f"{V3}/initialSync?limit=1")
    assert resp.code == 200, resp
    assert {"end", "rooms", "presence", "account_data"} <= set(resp.json)
    rooms = {r["room_id"]: r for r in resp.json["rooms"]}
    assert set(rooms) == {joined, invited}
    assert rooms[joined]["membership"] == "join"
    assert [ev["content"]["body"] for ev in rooms[joined]["messages"]["chunk"]] == ["hi"]
    assert rooms[invited]["membership"] == "invite"
    assert rooms[invited]["invite"]["sender"] == alice.user_id
    assert rooms[invited]["inviter"] == alice.user_id

    archived = await bob.get(f"{V3}/initialSync?archived=true")
    rooms = {r["room_id"]: r for r in archived.json["rooms"]}
    assert rooms[left]["membership"] == "leave"
    # The token continues at /events.
    more = await events(bob, timeout=0, **{"from": resp.json["end"]})
    assert more.code == 200, more


@with_config(presence={"enabled": True})
@pytest_twisted.ensureDeferred
async def test_room_initial_sync_shows_every_members_presence(server: RunningServer) -> None:
    alice = await user(server, "alice")
    bob = await user(server, "bob")
    room_id = await create_room(alice, preset="public_chat")
    assert (await join(bob, room_id)).code == 200
    resp = await alice.put(f"{V3}/presence/{q(alice.user_id)}/status", {"presence": "online"})
    assert resp.code == 200, resp
    resp = await alice.get(room_path(room_id, "/initialSync"))
    assert resp.code == 200, resp
    presence = {p["content"]["user_id"]: p for p in resp.json["presence"]}
    assert presence[alice.user_id]["content"]["presence"] == "online"
    # Every member is listed, not only those whose presence changed lately.
    assert presence[bob.user_id]["type"] == "m.presence"
    assert presence[bob.user_id]["content"]["presence"] in ("online", "offline", "unavailable")


@pytest_twisted.ensureDeferred
async def test_global_initial_sync_lists_stored_account_data_without_push_rules(
    server: RunningServer,
) -> None:
    alice = await user(server, "alice")
    room_id = await create_room(alice)
    await sync(alice)  # writes m.push_rules account data
    path = f"{V3}/user/{q(alice.user_id or '')}"
    for animal in ("frogs", "cats"):
        resp = await alice.put(f"{path}/account_data/my.test.type", {"cats_or_rats": animal})
        assert resp.code == 200, resp
    resp = await alice.put(
        f"{path}/rooms/{q(room_id)}/account_data/my.test.type", {"cats_or_rats": "rats"}
    )
    assert resp.code == 200, resp
    resp = await alice.get(f"{V3}/initialSync")
    assert resp.code == 200, resp
    assert resp.json["account_data"] == [
        {"type": "my.test.type", "content": {"cats_or_rats": "cats"}}
    ]
    (room,) = resp.json["rooms"]
    assert room["account_data"] == [{"type": "my.test.type", "content": {"cats_or_rats": "rats"}}]
