"""Typing, receipts and presence between two of our servers over real HTTPS."""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

import pytest_twisted
from twisted.internet import reactor, task

from crypto.signing_key import load_or_generate_signing_key
from federation.x_matrix import sign_request
from tests.federation.test_transport_auth import _put
from tests.federation.test_two_servers import wait_for_message
from tests.support.client import Client, q
from tests.support.server import RunningServer

JsonDict = dict[str, Any]


_since: weakref.WeakKeyDictionary[Client, str] = weakref.WeakKeyDictionary()


async def sync_until(
    client: Client, found: Callable[[JsonDict], Any], what: str, timeout: float = 20.0
) -> Any:
    """Incremental syncs (going on from the client's last one) until ``found(response)``
    is truthy; returns its value."""
    since = _since.get(client)
    deadline = reactor.seconds() + timeout
    while reactor.seconds() < deadline:
        params = {"timeout": "500"}
        if since:
            params["since"] = since
        resp = await client.get("/_matrix/client/v3/sync", params=params)
        assert resp.code == 200, resp
        since = _since[client] = resp.json["next_batch"]
        value = found(resp.json)
        if value:
            return value
    raise AssertionError(f"never saw {what}")


def ephemeral(sync: JsonDict, room_id: str, event_type: str) -> list[JsonDict]:
    room = sync.get("rooms", {}).get("join", {}).get(room_id, {})
    return [e for e in room.get("ephemeral", {}).get("events", []) if e["type"] == event_type]


def typing_users(sync: JsonDict, room_id: str) -> list[str] | None:
    events = ephemeral(sync, room_id, "m.typing")
    return events[-1]["content"]["user_ids"] if events else None


def receipts_of(sync: JsonDict, room_id: str, user_id: str) -> dict[str, JsonDict]:
    """event id -> receipt type -> data, for ``user_id``'s receipts in this sync."""
    out: dict[str, JsonDict] = {}
    for ev in ephemeral(sync, room_id, "m.receipt"):
        for event_id, by_type in ev["content"].items():
            for receipt_type, users in by_type.items():
                if user_id in users:
                    out.setdefault(event_id, {})[receipt_type] = users[user_id]
    return out


async def shared_room(a: RunningServer, b: RunningServer) -> tuple[Client, Client, str]:
    """alice on A creates a public room; bob on B joins it."""
    alice = a.client()
    await alice.register("alice")
    bob = b.client()
    await bob.register("bob")
    resp = await alice.post(
        "/_matrix/client/v3/createRoom", {"preset": "public_chat", "room_alias_name": "edus"}
    )
    assert resp.code == 200, resp
    room_id = resp.json["room_id"]
    resp = await bob.post(f"/_matrix/client/v3/join/{q(resp.json['room_alias'])}", {})
    assert resp.code == 200, resp
    return alice, bob, room_id


async def send_text(client: Client, room_id: str, body: str) -> str:
    resp = await client.put(
        f"/_matrix/client/v3/rooms/{q(room_id)}/send/m.room.message/{body}",
        {"msgtype": "m.text", "body": body},
    )
    assert resp.code == 200, resp
    return str(resp.json["event_id"])


async def set_typing(client: Client, room_id: str, typing: bool) -> None:
    resp = await client.put(
        f"/_matrix/client/v3/rooms/{q(room_id)}/typing/{q(client.user_id)}",
        {"typing": typing, "timeout": 30000},
    )
    assert resp.code == 200, resp


async def send_receipt(
    client: Client, room_id: str, receipt_type: str, event_id: str, body: JsonDict
) -> None:
    resp = await client.post(
        f"/_matrix/client/v3/rooms/{q(room_id)}/receipt/{receipt_type}/{q(event_id)}", body
    )
    assert resp.code == 200, resp


async def send_as(
    origin: RunningServer, dest: RunningServer, txn: str, edus: list[JsonDict]
) -> None:
    """A /send transaction signed with ``origin``'s real key (its X-Matrix is valid)."""
    key = load_or_generate_signing_key(origin.hs.config.signing_key_path)
    path = f"/_matrix/federation/v1/send/{txn}"
    body = {"origin": origin.hs.server_name, "origin_server_ts": 0, "pdus": [], "edus": edus}
    auth = sign_request(key, "PUT", path, origin.hs.server_name, dest.hs.server_name, body)
    code, resp = await _put(dest, path, body, auth)
    assert code == 200, resp


@pytest_twisted.ensureDeferred
async def test_typing_reaches_the_other_server_and_stops(
    two_servers: tuple[RunningServer, RunningServer],
) -> None:
    a, b = two_servers
    alice, bob, room_id = await shared_room(a, b)

    await set_typing(alice, room_id, True)
    await sync_until(
        bob, lambda s: typing_users(s, room_id) == [alice.user_id], "alice typing on B"
    )
    await set_typing(alice, room_id, False)
    await sync_until(bob, lambda s: typing_users(s, room_id) == [], "alice stopped on B")

    await set_typing(bob, room_id, True)
    await sync_until(alice, lambda s: typing_users(s, room_id) == [bob.user_id], "bob on A")


@pytest_twisted.ensureDeferred
async def test_receipts_both_ways_with_threads_and_private_ones_stay_home(
    two_servers: tuple[RunningServer, RunningServer],
) -> None:
    a, b = two_servers
    alice, bob, room_id = await shared_room(a, b)
    first = await send_text(alice, room_id, "one")
    second = await send_text(alice, room_id, "two")
    await wait_for_message(bob, room_id, "two")

    # Private first: were it sent, it would travel before the public one below.
    await send_receipt(bob, room_id, "m.read.private", second, {})
    await send_receipt(bob, room_id, "m.read", first, {"thread_id": "main"})
    seen = await sync_until(
        alice, lambda s: receipts_of(s, room_id, bob.user_id), "bob's receipt on A"
    )
    assert list(seen) == [first]
    assert set(seen[first]) == {"m.read"}
    assert seen[first]["m.read"]["thread_id"] == "main"
    assert isinstance(seen[first]["m.read"]["ts"], int)

    reply = await send_text(bob, room_id, "three")
    await wait_for_message(alice, room_id, "three")
    await send_receipt(alice, room_id, "m.read", reply, {})
    seen = await sync_until(
        bob, lambda s: receipts_of(s, room_id, alice.user_id), "alice's receipt on B"
    )
    assert seen[reply]["m.read"].get("thread_id") is None

    # A remote receipt persists: the initial sync on A (from the database) still has it.
    resp = await alice.get("/_matrix/client/v3/sync")
    stored = receipts_of(resp.json, room_id, bob.user_id)
    assert set(stored[first]) == {"m.read"}, stored
    assert "m.read.private" not in str(stored)


@pytest_twisted.ensureDeferred
async def test_presence_change_is_seen_by_the_other_server(
    two_servers: tuple[RunningServer, RunningServer],
) -> None:
    a, b = two_servers
    alice, bob, room_id = await shared_room(a, b)
    resp = await alice.put(
        f"/_matrix/client/v3/presence/{q(alice.user_id)}/status",
        {"presence": "unavailable", "status_msg": "at lunch"},
    )
    assert resp.code == 200, resp

    def alice_presence(sync: JsonDict) -> JsonDict | None:
        for ev in sync.get("presence", {}).get("events", []):
            if ev["sender"] == alice.user_id and ev["content"].get("status_msg") == "at lunch":
                return dict(ev["content"])
        return None

    content = await sync_until(bob, alice_presence, "alice's presence on B")
    assert content["presence"] == "unavailable"
    resp = await bob.get(f"/_matrix/client/v3/presence/{q(alice.user_id)}/status")
    assert resp.code == 200, resp
    assert resp.json["presence"] == "unavailable"
    assert resp.json["status_msg"] == "at lunch"


@pytest_twisted.ensureDeferred
async def test_forged_users_and_non_members_are_ignored(
    two_servers: tuple[RunningServer, RunningServer],
) -> None:
    a, b = two_servers
    alice, bob, room_id = await shared_room(a, b)
    carol = b.client()
    await carol.register("carol")  # on B, never joins the room
    event_id = await send_text(alice, room_id, "read me")
    await wait_for_message(bob, room_id, "read me")

    def typing(user_id: str) -> JsonDict:
        return {
            "edu_type": "m.typing",
            "content": {"room_id": room_id, "user_id": user_id, "typing": True},
        }

    def receipt(user_id: str) -> JsonDict:
        data = {"event_ids": [event_id], "data": {"ts": 1}}
        return {"edu_type": "m.receipt", "content": {room_id: {"m.read": {user_id: data}}}}

    def presence(user_id: str) -> JsonDict:
        item = {"user_id": user_id, "presence": "online", "status_msg": "forged"}
        return {"edu_type": "m.presence", "content": {"push": [item]}}

    # B speaks for alice (a user of A) and for carol (not in the room); then, last,
    # for bob legitimately, so once bob shows up the others have been handled.
    await send_as(
        b,
        a,
        "forged1",
        [
            typing(alice.user_id),
            typing(carol.user_id),
            receipt(alice.user_id),
            receipt(carol.user_id),
            presence(alice.user_id),
            typing(bob.user_id),
            receipt(bob.user_id),
        ],
    )
    seen: dict[str, Any] = {}

    def both(sync: JsonDict) -> bool:
        users = typing_users(sync, room_id)
        if users is not None:
            seen["typing"] = users
        seen.update(receipts=seen.get("receipts", {}))
        for user in (alice.user_id, bob.user_id, carol.user_id):
            if receipts_of(sync, room_id, user):
                seen["receipts"][user] = receipts_of(sync, room_id, user)
        return seen.get("typing") == [bob.user_id] and bob.user_id in seen["receipts"]

    await sync_until(alice, both, "bob's genuine typing and receipt on A")
    assert seen["typing"] == [bob.user_id]
    assert set(seen["receipts"]) == {bob.user_id}
    resp = await alice.get(f"/_matrix/client/v3/presence/{q(alice.user_id)}/status")
    assert resp.code == 200, resp
    assert resp.json.get("status_msg") != "forged"


@pytest_twisted.ensureDeferred
async def test_a_server_joining_a_room_learns_the_members_presence(
    two_servers: tuple[RunningServer, RunningServer],
) -> None:
    a, b = two_servers
    alice = a.client()
    await alice.register("alice")
    resp = await alice.put(
        f"/_matrix/client/v3/presence/{q(alice.user_id)}/status",
        {"presence": "online", "status_msg": "set before anyone came"},
    )
    assert resp.code == 200, resp
    resp = await alice.post(
        "/_matrix/client/v3/createRoom", {"preset": "public_chat", "room_alias_name": "late"}
    )
    assert resp.code == 200, resp
    bob = b.client()
    await bob.register("bob")
    resp = await bob.post(f"/_matrix/client/v3/join/{q(resp.json['room_alias'])}", {})
    assert resp.code == 200, resp

    async def alice_status() -> str | None:
        resp = await bob.get(f"/_matrix/client/v3/presence/{q(alice.user_id)}/status")
        assert resp.code == 200, resp
        return resp.json.get("status_msg")

    deadline = reactor.seconds() + 20
    while await alice_status() != "set before anyone came":
        assert reactor.seconds() < deadline, "alice's presence never reached B"
        await task.deferLater(reactor, 0.1, lambda: None)


@pytest_twisted.ensureDeferred
async def test_receipt_for_an_event_not_yet_held_is_kept_and_ordered_once_it_arrives(
    two_servers: tuple[RunningServer, RunningServer],
) -> None:
    """As Synapse: a receipt for an event we do not hold is stored (and synced) rather
    than dropped; once the event arrives, an older receipt does not replace it."""
    a, b = two_servers
    alice, bob, room_id = await shared_room(a, b)
    older = await send_text(bob, room_id, "older")
    await wait_for_message(alice, room_id, "older")

    assert b.hs.federation is not None
    b.hs.federation.sender.stop()  # A gets nothing from B until B restarts
    newer = await send_text(bob, room_id, "newer")
    assert await a.hs.storage.events.get_event(newer) is None

    def receipt(event_id: str, ts: int) -> JsonDict:
        data = {"event_ids": [event_id], "data": {"ts": ts}}
        return {"edu_type": "m.receipt", "content": {room_id: {"m.read": {bob.user_id: data}}}}

    await send_as(b, a, "unheld1", [receipt(newer, 2)])
    seen = await sync_until(
        alice, lambda s: receipts_of(s, room_id, bob.user_id), "bob's receipt for an unheld event"
    )
    assert list(seen) == [newer]

    await b.restart()  # B's outbox delivers "newer" to A
    await wait_for_message(alice, room_id, "newer")
    await send_as(b, a, "unheld2", [receipt(older, 3)])  # late and out of order: ignored
    await send_as(b, a, "unheld3", [receipt(newer, 4)])  # same event: not later either
    resp = await alice.get("/_matrix/client/v3/sync")
    assert resp.code == 200, resp
    stored = receipts_of(resp.json, room_id, bob.user_id)
    assert list(stored) == [newer], stored
    assert stored[newer]["m.read"]["ts"] == 2
