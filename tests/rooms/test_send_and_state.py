"""Sending events and state over HTTP: idempotent transactions, state, permissions, size."""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet import defer

from tests.rooms.helpers import (
    V3,
    all_events,
    assert_error,
    bodies,
    create_room,
    get_state,
    join,
    put_state,
    room_path,
    send,
    send_raw,
    sync,
    user,
)
from tests.support.client import q
from tests.support.server import RunningServer


@pytest_twisted.ensureDeferred
async def test_send_is_idempotent_per_transaction_id(server: RunningServer) -> None:
    alice = await user(server, "alice")
    room_id = await create_room(alice)
    first = await send(alice, room_id, "once", txn="abc")
    count = len(await all_events(alice, room_id))
    again = await send(alice, room_id, "once", txn="abc")
    assert again == first
    # Even with a different body, the transaction id wins (a retry, not a new message).
    third = await send(alice, room_id, "changed", txn="abc")
    assert third == first
    events = await all_events(alice, room_id)
    assert len(events) == count
    assert bodies(events) == ["once"]
    # The transaction id is echoed to the sending device only.
    sent = next(e for e in events if e["event_id"] == first)
    assert sent["unsigned"]["transaction_id"] == "abc"


@pytest_twisted.ensureDeferred
async def test_concurrent_duplicate_sends_create_one_event(server: RunningServer) -> None:
    alice = await user(server, "alice")
    room_id = await create_room(alice)
    before = len(await all_events(alice, room_id))
    results = await defer.gatherResults(
        [defer.ensureDeferred(send_raw(alice, room_id, "dup", txn="same")) for _ in range(5)]
    )
    assert all(r.code == 200 for r in results), results
    ids = {r.json["event_id"] for r in results}
    assert len(ids) == 1
    events = await all_events(alice, room_id)
    assert len(events) == before + 1
    assert bodies(events) == ["dup"]


@pytest_twisted.ensureDeferred
async def test_same_transaction_id_on_another_device_is_a_new_event(
    server: RunningServer,
) -> None:
    alice = await user(server, "alice")
    phone = server.client()
    resp = await phone.login("alice")
    assert resp.code == 200, resp
    assert phone.device_id != alice.device_id
    room_id = await create_room(alice)
    a = await send(alice, room_id, "from laptop", txn="t1")
    b = await send(phone, room_id, "from phone", txn="t1")
    assert a != b
    assert bodies(await all_events(alice, room_id)) == ["from laptop", "from phone"]
    # Each device sees its own transaction id, not the other's.
    events = {e["event_id"]: e for e in await all_events(alice, room_id)}
    assert events[a]["unsigned"]["transaction_id"] == "t1"
    assert "transaction_id" not in events[b].get("unsigned", {})


@pytest_twisted.ensureDeferred
async def test_same_transaction_id_in_another_room_is_a_new_event(server: RunningServer) -> None:
    alice = await user(server, "alice")
    r1 = await create_room(alice)
    r2 = await create_room(alice)
    assert await send(alice, r1, "a", txn="t") != await send(alice, r2, "b", txn="t")
    assert bodies(await all_events(alice, r2)) == ["b"]


@pytest_twisted.ensureDeferred
async def test_transaction_id_is_not_shown_to_other_users(server: RunningServer) -> None:
    alice = await user(server, "alice")
    bob = await user(server, "bob")
    room_id = await create_room(alice, preset="public_chat")
    await join(bob, room_id)
    event_id = await send(alice, room_id, "x", txn="secret")
    body = await sync(bob)
    ev = next(
        e for e in body["rooms"]["join"][room_id]["timeline"]["events"] if e["event_id"] == event_id
    )
    assert "transaction_id" not in ev.get("unsigned", {})
    resp = await bob.get(room_path(room_id, f"/event/{q(event_id)}"))
    assert "transaction_id" not in resp.json.get("unsigned", {})
    resp = await alice.get(room_path(room_id, f"/event/{q(event_id)}"))
    assert resp.json["unsigned"]["transaction_id"] == "secret"


@pytest_twisted.ensureDeferred
async def test_send_by_non_member_is_forbidden(server: RunningServer) -> None:
    alice = await user(server, "alice")
    bob = await user(server, "bob")
    room_id = await create_room(alice, preset="public_chat")
    resp = await send_raw(bob, room_id, "hi")
    assert_error(resp, 403, "M_FORBIDDEN")
    resp = await send_raw(bob, "!unknown:test.local", "hi")
    assert resp.code in (403, 404), resp
    resp = await put_state(bob, room_id, "m.room.topic", {"topic": "x"})
    assert_error(resp, 403, "M_FORBIDDEN")


@pytest_twisted.ensureDeferred
async def test_send_bad_bodies(server: RunningServer) -> None:
    alice = await user(server, "alice")
    room_id = await create_room(alice)
    resp = await alice.put(room_path(room_id, "/send/m.room.message/t1"), raw=b"{bad")
    assert_error(resp, 400, "M_NOT_JSON")
    resp = await alice.put(room_path(room_id, "/send/m.room.message/t2"), [1, 2])
    assert_error(resp, 400, "M_BAD_JSON")


@pytest_twisted.ensureDeferred
async def test_event_too_large_is_413(server: RunningServer) -> None:
    alice = await user(server, "alice")
    room_id = await create_room(alice)
    before = len(await all_events(alice, room_id))
    resp = await send_raw(alice, room_id, "x" * 70000)
    assert_error(resp, 413, "M_TOO_LARGE")
    resp = await put_state(alice, room_id, "com.example.big", {"v": "y" * 70000})
    assert_error(resp, 413, "M_TOO_LARGE")
    assert len(await all_events(alice, room_id)) == before
    # Just under the limit still works.
    assert (await send_raw(alice, room_id, "x" * 60000)).code == 200


@pytest_twisted.ensureDeferred
async def test_put_and_get_state_with_and_without_state_key(server: RunningServer) -> None:
    alice = await user(server, "alice")
    room_id = await create_room(alice)
    resp = await put_state(alice, room_id, "m.room.topic", {"topic": "one"})
    assert resp.code == 200, resp
    topic_id = resp.json["event_id"]
    # Trailing-slash form (empty state key) is the same state.
    resp = await alice.put(room_path(room_id, "/state/m.room.topic/"), {"topic": "two"})
    assert resp.code == 200, resp
    assert resp.json["event_id"] != topic_id
    resp = await alice.get(room_path(room_id, "/state/m.room.topic"))
    assert resp.code == 200 and resp.json == {"topic": "two"}, resp
    resp = await alice.get(room_path(room_id, "/state/m.room.topic/"))
    assert resp.json == {"topic": "two"}

    resp = await put_state(alice, room_id, "com.example.thing", {"n": 1}, state_key="k/1")
    assert resp.code == 200, resp
    event_id = resp.json["event_id"]
    resp = await get_state(alice, room_id, "com.example.thing", "k/1")
    assert resp.json == {"n": 1}
    resp = await get_state(alice, room_id, "com.example.thing", "k/1", fmt="event")
    assert resp.json["event_id"] == event_id
    assert resp.json["state_key"] == "k/1"
    assert resp.json["type"] == "com.example.thing"
    assert resp.json["room_id"] == room_id
    assert "prev_events" not in resp.json and "signatures" not in resp.json

    # Identical state from the same sender is not sent again.
    resp = await put_state(alice, room_id, "com.example.thing", {"n": 1}, state_key="k/1")
    assert resp.json["event_id"] == event_id


@pytest_twisted.ensureDeferred
async def test_get_state_errors(server: RunningServer) -> None:
    alice = await user(server, "alice")
    bob = await user(server, "bob")
    room_id = await create_room(alice)
    resp = await get_state(alice, room_id, "m.room.topic")
    assert_error(resp, 404, "M_NOT_FOUND")
    resp = await get_state(alice, room_id, "m.room.member", "@nobody:test.local")
    assert_error(resp, 404, "M_NOT_FOUND")
    resp = await get_state(bob, room_id, "m.room.create")
    assert_error(resp, 403, "M_FORBIDDEN")
    resp = await bob.get(room_path(room_id, "/state"))
    assert_error(resp, 403, "M_FORBIDDEN")
    resp = await get_state(alice, "!unknown:test.local", "m.room.create")
    assert_error(resp, 404, "M_NOT_FOUND")
    resp = await get_state(alice, room_id, "m.room.create", fmt="xml")
    assert_error(resp, 400, "M_INVALID_PARAM")


@pytest_twisted.ensureDeferred
async def test_get_full_state(server: RunningServer) -> None:
    alice = await user(server, "alice")
    room_id = await create_room(alice, name="N", room_version="11")
    await put_state(alice, room_id, "com.example.x", {"a": 1}, state_key="s")
    resp = await alice.get(room_path(room_id, "/state"))
    assert resp.code == 200, resp
    keys = {(e["type"], e["state_key"]) for e in resp.json}
    assert keys == {
        ("m.room.create", ""),
        ("m.room.member", alice.user_id),
        ("m.room.power_levels", ""),
        ("m.room.join_rules", ""),
        ("m.room.history_visibility", ""),
        ("m.room.guest_access", ""),
        ("m.room.name", ""),
        ("com.example.x", "s"),
    }
    assert all("event_id" in e and "sender" in e for e in resp.json)


@pytest_twisted.ensureDeferred
async def test_state_without_power_is_forbidden(server: RunningServer) -> None:
    alice = await user(server, "alice")
    bob = await user(server, "bob")
    room_id = await create_room(alice, preset="public_chat")
    await join(bob, room_id)
    resp = await put_state(bob, room_id, "m.room.name", {"name": "mine"})
    assert_error(resp, 403, "M_FORBIDDEN")
    resp = await put_state(bob, room_id, "m.room.power_levels", {"users": {bob.user_id: 100}})
    assert_error(resp, 403, "M_FORBIDDEN")
    resp = await get_state(alice, room_id, "m.room.name")
    assert resp.code == 404
    # Messages need only events_default (0).
    assert (await send_raw(bob, room_id, "ok")).code == 200


@pytest_twisted.ensureDeferred
async def test_member_state_cannot_be_set_for_others(server: RunningServer) -> None:
    alice = await user(server, "alice")
    bob = await user(server, "bob")
    room_id = await create_room(alice, preset="public_chat")
    await join(bob, room_id)
    resp = await put_state(
        bob, room_id, "m.room.member", {"membership": "join"}, state_key=alice.user_id
    )
    assert_error(resp, 403, "M_FORBIDDEN")
    resp = await put_state(bob, room_id, "m.room.member", {"no": "membership"}, bob.user_id)
    assert_error(resp, 400, "M_BAD_JSON")
    # Own member event with a new display name is fine.
    resp = await put_state(
        bob, room_id, "m.room.member", {"membership": "join", "displayname": "B"}, bob.user_id
    )
    assert resp.code == 200, resp


@pytest.mark.parametrize("room_version", ["10", "11", "12"])
@pytest_twisted.ensureDeferred
async def test_redact_permissions_and_stripped_content_everywhere(
    server: RunningServer, room_version: str
) -> None:
    alice = await user(server, "alice")
    bob = await user(server, "bob")
    room_id = await create_room(alice, preset="public_chat", room_version=room_version)
    await join(bob, room_id)
    since = (await sync(alice))["next_batch"]
    mine = await send(bob, room_id, "bob's secret")
    other = await send(alice, room_id, "alice's message")

    # Bob (level 0) may redact his own message but not alice's.
    resp = await bob.put(room_path(room_id, f"/redact/{q(other)}/r1"), {})
    assert_error(resp, 403, "M_FORBIDDEN")
    resp = await bob.put(room_path(room_id, f"/redact/{q(mine)}/r2"), {"reason": "oops"})
    assert resp.code == 200, resp
    redaction_id = resp.json["event_id"]
    # Same transaction id: same redaction event.
    resp = await bob.put(room_path(room_id, f"/redact/{q(mine)}/r2"), {"reason": "oops"})
    assert resp.json["event_id"] == redaction_id
    # Alice (100 >= redact 50) may redact bob's.
    resp = await alice.put(room_path(room_id, f"/redact/{q(mine)}/r3"), {})
    assert resp.code == 200, resp
    resp = await alice.put(room_path(room_id, f"/redact/{q('$nope')}/r4"), {})
    assert_error(resp, 404, "M_NOT_FOUND")

    def check(ev: dict[str, object]) -> None:
        assert ev["content"] == {}, ev
        unsigned = ev["unsigned"]
        assert isinstance(unsigned, dict)
        assert unsigned["redacted_because"]["event_id"] == redaction_id
        assert unsigned["redacted_because"]["type"] == "m.room.redaction"

    resp = await alice.get(room_path(room_id, f"/event/{q(mine)}"))
    assert resp.code == 200, resp
    check(resp.json)
    events = {e["event_id"]: e for e in await all_events(alice, room_id)}
    check(events[mine])
    assert events[other]["content"]["body"] == "alice's message"
    redaction = events[redaction_id]
    assert redaction["content"].get("reason") == "oops"
    # The redacted id is given both in content (v11+) and at the top level.
    assert redaction["redacts"] == mine
    if room_version != "10":
        assert redaction["content"]["redacts"] == mine

    body = await sync(alice, since)
    tl = {e["event_id"]: e for e in body["rooms"]["join"][room_id]["timeline"]["events"]}
    check(tl[mine])
    body = await sync(bob, filter={"room": {"timeline": {"limit": 50}}})
    tl = {e["event_id"]: e for e in body["rooms"]["join"][room_id]["timeline"]["events"]}
    check(tl[mine])
    resp = await bob.get(room_path(room_id, "/messages"), params={"dir": "b", "limit": "5"})
    check(next(e for e in resp.json["chunk"] if e["event_id"] == mine))


@pytest_twisted.ensureDeferred
async def test_redacted_state_event_keeps_allowed_keys(server: RunningServer) -> None:
    alice = await user(server, "alice")
    room_id = await create_room(alice, room_version="11")
    resp = await put_state(alice, room_id, "m.room.topic", {"topic": "rude"})
    topic_id = resp.json["event_id"]
    resp = await alice.put(room_path(room_id, f"/redact/{q(topic_id)}/r"), {})
    assert resp.code == 200, resp
    resp = await alice.get(room_path(room_id, f"/event/{q(topic_id)}"))
    assert resp.json["content"] == {}
    assert resp.json["state_key"] == ""
    # The current state shows the redacted content too.
    resp = await get_state(alice, room_id, "m.room.topic")
    assert resp.code == 200 and resp.json == {}, resp


@pytest_twisted.ensureDeferred
async def test_redact_by_non_member_is_forbidden(server: RunningServer) -> None:
    alice = await user(server, "alice")
    bob = await user(server, "bob")
    room_id = await create_room(alice)
    event_id = await send(alice, room_id, "x")
    resp = await bob.put(room_path(room_id, f"/redact/{q(event_id)}/t"), {})
    assert_error(resp, 403, "M_FORBIDDEN")


@pytest_twisted.ensureDeferred
async def test_redact_event_of_another_room_is_400(server: RunningServer) -> None:
    # As Synapse (SyTest 30rooms/10redactions.pl): 400, and nothing is redacted.
    alice = await user(server, "alice")
    r1 = await create_room(alice)
    r2 = await create_room(alice)
    event_id = await send(alice, r1, "x")
    resp = await alice.put(room_path(r2, f"/redact/{q(event_id)}/t"), {})
    assert_error(resp, 400, "M_UNKNOWN")
    resp = await alice.get(room_path(r1, f"/event/{q(event_id)}"))
    assert resp.json["content"]["body"] == "x"


@pytest_twisted.ensureDeferred
async def test_send_state_on_unknown_room(server: RunningServer) -> None:
    alice = await user(server, "alice")
    resp = await put_state(alice, "!unknown:test.local", "m.room.topic", {"topic": "x"})
    assert resp.code in (403, 404), resp
    resp = await alice.put(f"{V3}/rooms/{q('not-a-room')}/state/m.room.topic", {"topic": "x"})
    assert resp.code == 400 or resp.code == 404, resp


@pytest_twisted.ensureDeferred
async def test_state_events_carry_prev_content(server: RunningServer) -> None:
    alice = await user(server, "alice")
    room_id = await create_room(alice)
    first = (await put_state(alice, room_id, "m.room.topic", {"topic": "one"})).json["event_id"]
    resp = await put_state(alice, room_id, "m.room.topic", {"topic": "two"})
    second = resp.json["event_id"]
    resp = await alice.get(room_path(room_id, f"/event/{q(second)}"))
    unsigned = resp.json["unsigned"]
    assert unsigned["prev_content"] == {"topic": "one"}
    assert unsigned["replaces_state"] == first
    assert unsigned["prev_sender"] == alice.user_id
    resp = await alice.get(room_path(room_id, f"/event/{q(first)}"))
    assert "prev_content" not in resp.json.get("unsigned", {})


@pytest_twisted.ensureDeferred
async def test_large_state_can_replace_large_state(server: RunningServer) -> None:
    """prev_content does not count towards the sender's 64 KiB."""
    alice = await user(server, "alice")
    room_id = await create_room(alice)
    resp = await put_state(alice, room_id, "com.example.big", {"v": "a" * 50000})
    assert resp.code == 200, resp
    resp = await put_state(alice, room_id, "com.example.big", {"v": "b" * 50000})
    assert resp.code == 200, resp
    resp = await get_state(alice, room_id, "com.example.big")
    assert resp.json == {"v": "b" * 50000}
