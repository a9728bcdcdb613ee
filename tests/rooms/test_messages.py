"""Reading history over HTTP: /messages, /context, /event, /timestamp_to_event."""

from __future__ import annotations

from typing import Any

import pytest_twisted
from twisted.internet import reactor, task

from tests.rooms.helpers import (
    V3,
    all_events,
    assert_error,
    bodies,
    create_room,
    join,
    messages,
    put_state,
    room_path,
    send,
    sync,
    user,
)
from tests.support.client import Client, q
from tests.support.server import RunningServer


async def chunk_bodies(client: Client, room_id: str, **params: Any) -> tuple[list[str], Any]:
    resp = await messages(client, room_id, **params)
    assert resp.code == 200, resp
    return bodies(resp.json["chunk"]), resp.json


async def room_with_messages(server: RunningServer, n: int) -> tuple[Client, str, list[str]]:
    alice = await user(server, "alice")
    room_id = await create_room(alice, preset="public_chat")
    ids = [await send(alice, room_id, f"m{i}") for i in range(n)]
    return alice, room_id, ids


@pytest_twisted.ensureDeferred
async def test_messages_backwards_and_forwards_with_limit(server: RunningServer) -> None:
    alice, room_id, _ = await room_with_messages(server, 12)
    got, body = await chunk_bodies(alice, room_id, dir="b", limit=5)
    assert got == ["m11", "m10", "m9", "m8", "m7"]
    got, body = await chunk_bodies(alice, room_id, dir="b", limit=5, **{"from": body["end"]})
    assert got == ["m6", "m5", "m4", "m3", "m2"]

    events = await all_events(alice, room_id, page=4)
    assert bodies(events) == [f"m{i}" for i in range(12)]
    assert events[0]["type"] == "m.room.create"
    assert len({e["event_id"] for e in events}) == len(events)

    # Forwards from the newest backwards token: nothing newer.
    got, body = await chunk_bodies(alice, room_id, dir="b", limit=1)
    newest_end = body["end"]
    got, body = await chunk_bodies(alice, room_id, dir="f", limit=5, **{"from": newest_end})
    assert got == ["m11"]


@pytest_twisted.ensureDeferred
async def test_messages_to_token_bounds_the_page(server: RunningServer) -> None:
    alice, room_id, _ = await room_with_messages(server, 4)
    mid = (await sync(alice))["next_batch"]
    for i in range(4, 8):
        await send(alice, room_id, f"m{i}")
    # Backwards from now to the sync token: exactly what came after it.
    got, body = await chunk_bodies(alice, room_id, dir="b", limit=50, to=mid)
    assert got == ["m7", "m6", "m5", "m4"]
    # Forwards from the token: the same, in order.
    got, body = await chunk_bodies(alice, room_id, dir="f", limit=50, **{"from": mid})
    assert got == ["m4", "m5", "m6", "m7"]
    # Forwards from the start up to the token.
    got, body = await chunk_bodies(alice, room_id, dir="f", limit=50, to=mid)
    assert got == ["m0", "m1", "m2", "m3"]


@pytest_twisted.ensureDeferred
async def test_messages_end_is_omitted_at_the_start_of_the_room(server: RunningServer) -> None:
    alice, room_id, _ = await room_with_messages(server, 1)
    resp = await messages(alice, room_id, dir="b", limit=100)
    assert resp.json["chunk"][-1]["type"] == "m.room.create"
    resp = await messages(alice, room_id, dir="b", limit=100, **{"from": resp.json["end"]})
    assert resp.json["chunk"] == []
    assert "end" not in resp.json
    resp = await messages(alice, room_id, dir="b", limit=0)
    assert resp.json["chunk"] == []


@pytest_twisted.ensureDeferred
async def test_messages_errors(server: RunningServer) -> None:
    alice, room_id, _ = await room_with_messages(server, 1)
    outsider = await user(server, "outsider")
    resp = await messages(alice, room_id, dir="x")
    assert_error(resp, 400, "M_INVALID_PARAM")
    resp = await messages(alice, room_id, **{"from": "garbage"})
    assert_error(resp, 400, "M_INVALID_PARAM")
    resp = await messages(alice, room_id, limit="many")
    assert_error(resp, 400, "M_INVALID_PARAM")
    resp = await messages(alice, room_id, filter="{not json")
    assert_error(resp, 400, "M_BAD_JSON")
    resp = await messages(alice, room_id, filter={"types": "m.room.message"})
    assert_error(resp, 400, "M_BAD_JSON")
    resp = await messages(outsider, room_id)
    assert_error(resp, 403, "M_FORBIDDEN")
    resp = await messages(alice, "!unknown:test.local")
    assert_error(resp, 403, "M_FORBIDDEN")


@pytest_twisted.ensureDeferred
async def test_messages_filters(server: RunningServer) -> None:
    alice = await user(server, "alice")
    bob = await user(server, "bob")
    room_id = await create_room(alice, preset="public_chat")
    await join(bob, room_id)
    await send(alice, room_id, "a1")
    await send(bob, room_id, "b1")
    await send(alice, room_id, content={"x": 1}, event_type="com.example.other")
    await send(bob, room_id, "b2")

    resp = await messages(alice, room_id, dir="b", filter={"types": ["m.room.message"]})
    assert bodies(resp.json["chunk"]) == ["b2", "b1", "a1"]
    assert {e["type"] for e in resp.json["chunk"]} == {"m.room.message"}

    resp = await messages(
        alice, room_id, dir="b", filter={"not_types": ["m.room.message", "m.room.member"]}
    )
    types = [e["type"] for e in resp.json["chunk"]]
    assert "m.room.message" not in types and "m.room.member" not in types
    assert types[0] == "com.example.other"

    resp = await messages(
        alice, room_id, dir="b", filter={"senders": [bob.user_id], "types": ["m.room.message"]}
    )
    assert bodies(resp.json["chunk"]) == ["b2", "b1"]
    resp = await messages(alice, room_id, dir="b", filter={"not_senders": [bob.user_id]})
    assert all(e["sender"] == alice.user_id for e in resp.json["chunk"])

    # Wildcards in types.
    resp = await messages(alice, room_id, dir="b", filter={"types": ["com.example.*"]})
    assert [e["type"] for e in resp.json["chunk"]] == ["com.example.other"]

    # The filter's limit caps the page.
    resp = await messages(alice, room_id, dir="b", limit=10, filter={"limit": 2})
    assert len(resp.json["chunk"]) == 2


@pytest_twisted.ensureDeferred
async def test_messages_filter_does_not_stop_pagination_early(server: RunningServer) -> None:
    """A page whose events are all filtered out still hands back an ``end`` to go on."""
    alice = await user(server, "alice")
    room_id = await create_room(alice)
    await send(alice, room_id, "old")
    for i in range(40):
        await send(alice, room_id, content={"i": i}, event_type="com.example.noise")
    found: list[str] = []
    token = None
    for _ in range(20):
        params: dict[str, Any] = {"dir": "b", "limit": 2, "filter": {"types": ["m.room.message"]}}
        if token:
            params["from"] = token
        resp = await messages(alice, room_id, **params)
        assert resp.code == 200, resp
        found += bodies(resp.json["chunk"])
        token = resp.json.get("end")
        if token is None:
            break
    assert found == ["old"]


@pytest_twisted.ensureDeferred
async def test_messages_lazy_load_members_returns_sender_member_state(
    server: RunningServer,
) -> None:
    alice = await user(server, "alice")
    bob = await user(server, "bob")
    carol = await user(server, "carol")
    room_id = await create_room(alice, preset="public_chat")
    await join(bob, room_id)
    await join(carol, room_id)
    for _ in range(3):
        await send(bob, room_id, "from bob")
    resp = await messages(alice, room_id, dir="b", limit=3, filter={"lazy_load_members": True})
    assert resp.code == 200, resp
    assert {e["sender"] for e in resp.json["chunk"]} == {bob.user_id}
    state = resp.json["state"]
    assert [(e["type"], e["state_key"]) for e in state] == [("m.room.member", bob.user_id)]
    # Without lazy loading: no state key at all.
    resp = await messages(alice, room_id, dir="b", limit=3)
    assert "state" not in resp.json


@pytest_twisted.ensureDeferred
async def test_initial_sync_prev_batch_back_paginates_without_gaps(server: RunningServer) -> None:
    alice, room_id, _ = await room_with_messages(server, 15)
    body = await sync(alice, filter={"room": {"timeline": {"limit": 5}}})
    tl = body["rooms"]["join"][room_id]["timeline"]
    assert tl["limited"] is True
    seen = bodies(tl["events"])
    assert seen == ["m10", "m11", "m12", "m13", "m14"]
    older: list[dict[str, Any]] = []
    token = tl["prev_batch"]
    while token:
        resp = await messages(alice, room_id, dir="b", limit=4, **{"from": token})
        older += resp.json["chunk"]
        token = resp.json.get("end")
    assert bodies(list(reversed(older))) + seen == [f"m{i}" for i in range(15)]
    all_ids = [e["event_id"] for e in older] + [e["event_id"] for e in tl["events"]]
    assert len(all_ids) == len(set(all_ids))
    assert older[-1]["type"] == "m.room.create"


@pytest_twisted.ensureDeferred
async def test_incremental_limited_sync_gap_fills_exactly_with_to(server: RunningServer) -> None:
    alice, room_id, _ = await room_with_messages(server, 3)
    first = await sync(alice, filter={"room": {"timeline": {"limit": 5}}})
    since = first["next_batch"]
    for i in range(3, 20):
        await send(alice, room_id, f"m{i}")
    body = await sync(alice, since, filter={"room": {"timeline": {"limit": 5}}})
    tl = body["rooms"]["join"][room_id]["timeline"]
    assert tl["limited"] is True
    assert bodies(tl["events"]) == ["m15", "m16", "m17", "m18", "m19"]
    # Fill the gap between the previous sync and this timeline.
    gap: list[dict[str, Any]] = []
    token = tl["prev_batch"]
    while token:
        resp = await messages(alice, room_id, dir="b", limit=5, to=since, **{"from": token})
        assert resp.code == 200, resp
        gap += resp.json["chunk"]
        token = resp.json.get("end") if resp.json["chunk"] else None
    assert bodies(list(reversed(gap))) == [f"m{i}" for i in range(3, 15)]


@pytest_twisted.ensureDeferred
async def test_context_returns_surrounding_events_and_tokens(server: RunningServer) -> None:
    alice, room_id, ids = await room_with_messages(server, 10)
    resp = await alice.get(room_path(room_id, f"/context/{q(ids[5])}"), params={"limit": "4"})
    assert resp.code == 200, resp
    ctx = resp.json
    assert ctx["event"]["event_id"] == ids[5]
    assert bodies(ctx["events_before"]) == ["m4", "m3"]
    assert bodies(ctx["events_after"]) == ["m6", "m7"]
    state_keys = {(e["type"], e["state_key"]) for e in ctx["state"]}
    assert ("m.room.create", "") in state_keys
    assert ("m.room.member", alice.user_id) in state_keys
    # start paginates backwards from the oldest returned, end forwards from the newest.
    got, _ = await chunk_bodies(alice, room_id, dir="b", limit=2, **{"from": ctx["start"]})
    assert got == ["m2", "m1"]
    got, _ = await chunk_bodies(alice, room_id, dir="f", limit=2, **{"from": ctx["end"]})
    assert got == ["m8", "m9"]


@pytest_twisted.ensureDeferred
async def test_context_state_is_at_the_last_event_returned(server: RunningServer) -> None:
    alice = await user(server, "alice")
    room_id = await create_room(alice)
    target = await send(alice, room_id, "target")
    await put_state(alice, room_id, "m.room.topic", {"topic": "later"})
    resp = await alice.get(room_path(room_id, f"/context/{q(target)}"), params={"limit": "4"})
    topics = [e for e in resp.json["state"] if e["type"] == "m.room.topic"]
    assert [t["content"]["topic"] for t in topics] == ["later"]
    resp = await alice.get(room_path(room_id, f"/context/{q(target)}"), params={"limit": "0"})
    assert [e for e in resp.json["state"] if e["type"] == "m.room.topic"] == []
    assert resp.json["events_before"] == [] and resp.json["events_after"] == []


@pytest_twisted.ensureDeferred
async def test_context_with_filter(server: RunningServer) -> None:
    alice, room_id, ids = await room_with_messages(server, 4)
    await put_state(alice, room_id, "m.room.topic", {"topic": "t"})
    last = await send(alice, room_id, "m4")
    resp = await alice.get(
        room_path(room_id, f"/context/{q(last)}"),
        params={"limit": "6", "filter": '{"types": ["m.room.message"]}'},
    )
    assert resp.code == 200, resp
    assert {e["type"] for e in resp.json["events_before"]} <= {"m.room.message"}


@pytest_twisted.ensureDeferred
async def test_context_and_event_errors(server: RunningServer) -> None:
    alice, room_id, ids = await room_with_messages(server, 2)
    other_room = await create_room(alice)
    outsider = await user(server, "outsider")
    for path in ("/context/", "/event/"):
        resp = await alice.get(room_path(room_id, path + q("$unknown")))
        assert_error(resp, 404, "M_NOT_FOUND")
        resp = await alice.get(room_path(other_room, path + q(ids[0])))
        assert_error(resp, 404, "M_NOT_FOUND")
        resp = await outsider.get(room_path(room_id, path + q(ids[0])))
        assert resp.code in (403, 404), resp
        assert resp.json["errcode"] in ("M_FORBIDDEN", "M_NOT_FOUND")
    # /event/ for someone not in the room: not found (as Synapse; SyTest 30rooms/51event.pl).
    resp = await outsider.get(room_path(room_id, "/event/" + q(ids[0])))
    assert_error(resp, 404, "M_NOT_FOUND")
    # Redacting, through /redact, an event of another room: 400 (as Synapse).
    resp = await alice.put(room_path(other_room, f"/redact/{q(ids[0])}/elsewhere"), {})
    assert resp.code == 400, resp
    resp = await alice.put(room_path(other_room, f"/redact/{q('$unknown')}/unknown"), {})
    assert_error(resp, 404, "M_NOT_FOUND")


@pytest_twisted.ensureDeferred
async def test_get_event(server: RunningServer) -> None:
    alice, room_id, ids = await room_with_messages(server, 1)
    resp = await alice.get(room_path(room_id, f"/event/{q(ids[0])}"))
    assert resp.code == 200, resp
    ev = resp.json
    assert ev["event_id"] == ids[0]
    assert ev["room_id"] == room_id
    assert ev["sender"] == alice.user_id
    assert ev["content"] == {"msgtype": "m.text", "body": "m0"}
    assert isinstance(ev["origin_server_ts"], int)
    for key in ("auth_events", "prev_events", "hashes", "signatures", "depth"):
        assert key not in ev


async def _tick() -> None:
    await task.deferLater(reactor, 0.005, lambda: None)


@pytest_twisted.ensureDeferred
async def test_timestamp_to_event_both_directions(server: RunningServer) -> None:
    alice = await user(server, "alice")
    room_id = await create_room(alice)
    ids: list[str] = []
    for i in range(3):
        await _tick()
        ids.append(await send(alice, room_id, f"t{i}"))
    stamps = []
    for event_id in ids:
        resp = await alice.get(room_path(room_id, f"/event/{q(event_id)}"))
        stamps.append(resp.json["origin_server_ts"])
    assert stamps == sorted(stamps) and len(set(stamps)) == 3

    async def lookup(ts: int, direction: str) -> Any:
        return await alice.get(
            f"/_matrix/client/v1/rooms/{q(room_id)}/timestamp_to_event",
            params={"ts": str(ts), "dir": direction},
        )

    resp = await lookup(stamps[1], "f")
    assert resp.code == 200, resp
    assert resp.json == {"event_id": ids[1], "origin_server_ts": stamps[1]}
    resp = await lookup(stamps[1] + 1, "f")
    assert resp.json["event_id"] == ids[2]
    resp = await lookup(stamps[1] + 1, "b")
    assert resp.json["event_id"] == ids[1]
    resp = await lookup(stamps[2] + 10_000, "f")
    assert_error(resp, 404, "M_NOT_FOUND")
    resp = await lookup(0, "b")
    assert_error(resp, 404, "M_NOT_FOUND")
    resp = await lookup(0, "f")
    assert resp.code == 200
    create = await alice.get(
        room_path(room_id, "/state/m.room.create/"), params={"format": "event"}
    )
    assert resp.json["event_id"] == create.json["event_id"]

    resp = await alice.get(
        f"/_matrix/client/v1/rooms/{q(room_id)}/timestamp_to_event", params={"ts": "1"}
    )
    assert_error(resp, 400, "M_MISSING_PARAM")
    resp = await alice.get(
        f"/_matrix/client/v1/rooms/{q(room_id)}/timestamp_to_event",
        params={"ts": "1", "dir": "sideways"},
    )
    assert_error(resp, 400, "M_INVALID_PARAM")
    outsider = await user(server, "outsider")
    resp = await outsider.get(
        f"/_matrix/client/v1/rooms/{q(room_id)}/timestamp_to_event",
        params={"ts": str(stamps[0]), "dir": "f"},
    )
    assert_error(resp, 403, "M_FORBIDDEN")


@pytest_twisted.ensureDeferred
async def test_messages_over_v3_and_r0_agree(server: RunningServer) -> None:
    alice, room_id, _ = await room_with_messages(server, 3)
    a = await alice.get(room_path(room_id, "/messages"), params={"dir": "b", "limit": "3"})
    b = await alice.get(
        f"/_matrix/client/r0/rooms/{q(room_id)}/messages", params={"dir": "b", "limit": "3"}
    )
    assert a.json["chunk"] == b.json["chunk"]
    assert V3  # keep the import used
