"""Unread notification counts in /sync (per room and per thread) and /notifications."""

from __future__ import annotations

from typing import Any

import pytest_twisted

from tests.ephemeral.helpers import (
    V3,
    assert_error,
    create_room,
    join,
    restart,
    room_path,
    send,
    shared_room,
    sync,
    user,
)
from tests.relations.helpers import react, send_ok, thread_reply
from tests.support.client import Client, q
from tests.support.server import RunningServer

THREADED = {"room": {"timeline": {"unread_thread_notifications": True}}}


def counts(notifications: int, highlights: int = 0) -> dict[str, int]:
    return {"notification_count": notifications, "highlight_count": highlights}


async def unread(client: Client, room_id: str) -> dict[str, Any]:
    body = await sync(client)
    return dict(body["rooms"]["join"][room_id]["unread_notifications"])


async def receipt(
    client: Client, room_id: str, event_id: str, rtype: str = "m.read", thread: str | None = None
) -> None:
    body = {"thread_id": thread} if thread is not None else {}
    resp = await client.post(room_path(room_id, f"/receipt/{rtype}/{q(event_id)}"), body)
    assert resp.code == 200, resp


async def mention(client: Client, room_id: str, target: Client) -> str:
    return await send_ok(
        client,
        room_id,
        "m.room.message",
        {
            "msgtype": "m.text",
            "body": "hey you",
            "m.mentions": {"user_ids": [target.user_id]},
        },
    )


@pytest_twisted.ensureDeferred
async def test_messages_count_and_a_read_receipt_clears_them(server: RunningServer) -> None:
    alice, bob, carol = [await user(server, n) for n in ("alice", "bob", "carol")]
    room_id = await shared_room(alice, bob, carol)  # three members: .m.rule.message
    await send(alice, room_id, "one")
    second = await send(alice, room_id, "two")
    third = await send(alice, room_id, "three")
    assert await unread(bob, room_id) == counts(3)
    assert await unread(alice, room_id) == counts(0)  # own messages never count

    await receipt(bob, room_id, second)
    assert await unread(bob, room_id) == counts(1)
    await receipt(bob, room_id, third, "m.read.private")
    assert await unread(bob, room_id) == counts(0)
    # An older public receipt does not bring notifications back.
    await receipt(bob, room_id, second)
    assert await unread(bob, room_id) == counts(0)


@pytest_twisted.ensureDeferred
async def test_an_accepted_invite_is_not_unread(server: RunningServer) -> None:
    """With no read receipt, the user's join is their read position (as Synapse): the
    invite notified them, but it is not unread in the room they joined."""
    alice, bob, carol = [await user(server, n) for n in ("alice", "bob", "carol")]
    room_id = await create_room(alice, invite=[bob.user_id, carol.user_id])
    await sync(bob)  # Bob's counts are in memory before he joins; Carol's are not.
    await join(bob, room_id)
    await join(carol, room_id)
    assert await unread(bob, room_id) == counts(0)
    assert await unread(carol, room_id) == counts(0)
    await send(alice, room_id, "one")
    await send(alice, room_id, "two")
    assert await unread(bob, room_id) == counts(2)
    assert await unread(carol, room_id) == counts(2)


@pytest_twisted.ensureDeferred
async def test_count_arrives_in_the_same_sync_as_the_event(server: RunningServer) -> None:
    alice, bob = await user(server, "alice"), await user(server, "bob")
    room_id = await shared_room(alice, bob)
    first = await sync(bob)
    event_id = await send(alice, room_id, "ping")
    nxt = await sync(bob, first["next_batch"], timeout=3000)
    section = nxt["rooms"]["join"][room_id]
    assert [e["event_id"] for e in section["timeline"]["events"]] == [event_id]
    assert section["unread_notifications"] == counts(1)
    # The receipt reaches the next sync together with the cleared count.
    await receipt(bob, room_id, event_id)
    after = await sync(bob, nxt["next_batch"], timeout=3000)
    assert after["rooms"]["join"][room_id]["unread_notifications"] == counts(0)


@pytest_twisted.ensureDeferred
async def test_mentions_highlight_and_reactions_do_not_count(server: RunningServer) -> None:
    alice, bob, carol = [await user(server, n) for n in ("alice", "bob", "carol")]
    room_id = await shared_room(alice, bob, carol)
    target = await mention(alice, room_id, bob)
    await react(alice, room_id, target, "👍")
    assert await unread(bob, room_id) == counts(1, 1)
    assert await unread(carol, room_id) == counts(1, 0)


@pytest_twisted.ensureDeferred
async def test_default_rule_users_share_an_evaluation_but_not_their_mentions(
    server: RunningServer,
) -> None:
    """Members with only the default rules are evaluated once per event and kind of
    target (mentioned or not); a member with rules of their own is evaluated alone."""
    alice, bob, carol, dave, erin = [
        await user(server, n) for n in ("alice", "bob", "carol", "dave", "erin")
    ]
    room_id = await shared_room(alice, bob, carol, dave, erin)
    # dave: this room muted; erin: every message highlights (a content rule on "e").
    resp = await dave.put(f"{V3}/pushrules/global/room/{q(room_id)}", {"actions": []})
    assert resp.code == 200, resp
    resp = await erin.put(
        f"{V3}/pushrules/global/content/everything",
        {"pattern": "*", "actions": ["notify", {"set_tweak": "highlight"}]},
    )
    assert resp.code == 200, resp
    await send(alice, room_id, "plain")
    await mention(alice, room_id, carol)
    await send(alice, room_id, "plain again")
    assert await unread(bob, room_id) == counts(3, 0)
    assert await unread(carol, room_id) == counts(3, 1)
    assert await unread(dave, room_id) == counts(0, 0)
    assert await unread(erin, room_id) == counts(3, 3)


@pytest_twisted.ensureDeferred
async def test_thread_counts_and_threaded_receipts(server: RunningServer) -> None:
    alice, bob, carol = [await user(server, n) for n in ("alice", "bob", "carol")]
    room_id = await shared_room(alice, bob, carol)
    root = await send(alice, room_id, "root")
    await thread_reply(alice, room_id, root, "t1")
    t2 = await thread_reply(alice, room_id, root, "t2")
    main = await mention(alice, room_id, bob)
    # A reaction to a thread reply belongs to the thread but does not notify.
    await react(alice, room_id, t2, "👍")

    body = await sync(bob, filter=THREADED)
    section = body["rooms"]["join"][room_id]
    assert section["unread_notifications"] == counts(2, 1)  # root + mention
    assert section["unread_thread_notifications"] == {root: counts(2)}
    # Without the filter: everything together, no per-thread object.
    assert await unread(bob, room_id) == counts(4, 1)
    assert "unread_thread_notifications" not in (await sync(bob))["rooms"]["join"][room_id]

    await receipt(bob, room_id, t2, thread=root)
    section = (await sync(bob, filter=THREADED))["rooms"]["join"][room_id]
    assert section["unread_notifications"] == counts(2, 1)
    assert section["unread_thread_notifications"] == {}
    await receipt(bob, room_id, main, thread="main")
    section = (await sync(bob, filter=THREADED))["rooms"]["join"][room_id]
    assert section["unread_notifications"] == counts(0)

    # An unthreaded receipt clears the threads too.
    await thread_reply(alice, room_id, root, "t3")
    last = await send(alice, room_id, "main again")
    assert await unread(carol, room_id) == counts(6)
    await receipt(carol, room_id, last)
    assert await unread(carol, room_id) == counts(0)


@pytest_twisted.ensureDeferred
async def test_counts_are_right_after_a_restart(
    server: RunningServer, tmp_path: Any, database: dict[str, Any]
) -> None:
    alice, bob = await user(server, "alice"), await user(server, "bob")
    room_id = await shared_room(alice, bob)
    first = await send(alice, room_id, "one")
    await send(alice, room_id, "two")
    await receipt(bob, room_id, first)
    assert await unread(bob, room_id) == counts(1)
    server = await restart(server, str(tmp_path), database)
    try:
        alice, bob = server.client(), server.client()
        await alice.login("alice")
        await bob.login("bob")
        assert await unread(bob, room_id) == counts(1)
        third = await mention(alice, room_id, bob)
        assert await unread(bob, room_id) == counts(2, 1)
        await receipt(bob, room_id, third)
        assert await unread(bob, room_id) == counts(0)
    finally:
        await server.stop()


# /notifications ----------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_notifications_list_with_read_flag_filter_and_pages(server: RunningServer) -> None:
    alice, bob = await user(server, "alice"), await user(server, "bob")
    room_id = await shared_room(alice, bob)
    first = await send(alice, room_id, "one")
    highlighted = await mention(alice, room_id, bob)
    third = await send(alice, room_id, "three")
    await receipt(bob, room_id, first)

    resp = await bob.get(f"{V3}/notifications")
    assert resp.code == 200, resp
    notes = resp.json["notifications"]
    assert [n["event"]["event_id"] for n in notes] == [third, highlighted, first]
    assert [n["read"] for n in notes] == [False, False, True]
    assert all(n["room_id"] == room_id and isinstance(n["ts"], int) for n in notes)
    assert "room_id" not in notes[0]["event"]
    assert all("profile_tag" in n and n["profile_tag"] is None for n in notes)
    assert "notify" in notes[1]["actions"]
    assert {"set_tweak": "highlight"} in notes[1]["actions"]
    assert "next_token" not in resp.json

    only = await bob.get(f"{V3}/notifications", params={"only": "highlight"})
    assert [n["event"]["event_id"] for n in only.json["notifications"]] == [highlighted]

    page = await bob.get(f"{V3}/notifications", params={"limit": "2"})
    assert len(page.json["notifications"]) == 2
    rest = await bob.get(
        f"{V3}/notifications", params={"limit": "2", "from": page.json["next_token"]}
    )
    assert [n["event"]["event_id"] for n in rest.json["notifications"]] == [first]

    assert (await alice.get(f"{V3}/notifications")).json == {"notifications": []}
    assert_error(await bob.get(f"{V3}/notifications", params={"from": "x"}), 400, "M_INVALID_PARAM")
