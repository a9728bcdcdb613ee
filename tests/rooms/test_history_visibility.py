"""History visibility on every read path: /messages, /context, /event, /sync, /members."""

from __future__ import annotations

from typing import Any

import pytest
import pytest_twisted

from tests.rooms.helpers import (
    V3,
    all_events,
    assert_error,
    bodies,
    create_room,
    invite,
    join,
    leave,
    messages,
    room_path,
    send,
    sync,
    user,
)
from tests.support.client import Client, q
from tests.support.server import RunningServer

BIG_TIMELINE = {"room": {"timeline": {"limit": 100}}}


async def room_with_visibility(
    server: RunningServer, visibility: str
) -> tuple[Client, Client, str]:
    alice = await user(server, "alice")
    bob = await user(server, "bob")
    room_id = await create_room(
        alice,
        preset="public_chat",
        initial_state=[
            {"type": "m.room.history_visibility", "content": {"history_visibility": visibility}}
        ],
    )
    return alice, bob, room_id


async def can_get(client: Client, room_id: str, event_id: str) -> bool:
    resp = await client.get(room_path(room_id, f"/event/{q(event_id)}"))
    assert resp.code in (200, 404), resp
    return resp.code == 200


async def context_ok(client: Client, room_id: str, event_id: str) -> bool:
    resp = await client.get(room_path(room_id, f"/context/{q(event_id)}"))
    assert resp.code in (200, 404), resp
    return resp.code == 200


async def initial_sync_bodies(client: Client, room_id: str) -> list[str]:
    body = await sync(client, filter=BIG_TIMELINE)
    return bodies(body["rooms"]["join"][room_id]["timeline"]["events"])


@pytest_twisted.ensureDeferred
async def test_joined_visibility_hides_history_before_join(server: RunningServer) -> None:
    alice, bob, room_id = await room_with_visibility(server, "joined")
    before = await send(alice, room_id, "before")
    await join(bob, room_id)
    after = await send(alice, room_id, "after")

    assert bodies(await all_events(bob, room_id)) == ["after"]
    assert not await can_get(bob, room_id, before)
    assert await can_get(bob, room_id, after)
    assert not await context_ok(bob, room_id, before)
    resp = await bob.get(room_path(room_id, f"/context/{q(after)}"))
    assert bodies(resp.json["events_before"]) == []
    assert await initial_sync_bodies(bob, room_id) == ["after"]
    # Bob sees his own join; the room's set-up before the visibility became `joined`
    # counts as `shared` (the default), as in Synapse; nothing in between.
    events = await all_events(bob, room_id)
    idx = next(
        i
        for i, e in enumerate(events)
        if e["type"] == "m.room.member" and e["state_key"] == bob.user_id
    )
    assert events[idx - 1]["type"] == "m.room.history_visibility"
    assert events[0]["type"] == "m.room.create"
    # Alice, joined all along, sees everything.
    assert bodies(await all_events(alice, room_id)) == ["before", "after"]


@pytest_twisted.ensureDeferred
async def test_shared_visibility_shows_history_before_join(server: RunningServer) -> None:
    alice, bob, room_id = await room_with_visibility(server, "shared")
    before = await send(alice, room_id, "before")
    await join(bob, room_id)
    await send(alice, room_id, "after")
    assert bodies(await all_events(bob, room_id)) == ["before", "after"]
    assert await can_get(bob, room_id, before)
    assert await context_ok(bob, room_id, before)
    assert await initial_sync_bodies(bob, room_id) == ["before", "after"]


@pytest_twisted.ensureDeferred
async def test_invited_visibility_shows_events_from_the_invite(server: RunningServer) -> None:
    alice, bob, room_id = await room_with_visibility(server, "invited")
    before = await send(alice, room_id, "before invite")
    await invite(alice, room_id, bob.user_id)
    between = await send(alice, room_id, "after invite")
    await join(bob, room_id)
    await send(alice, room_id, "after join")
    assert bodies(await all_events(bob, room_id)) == ["after invite", "after join"]
    assert not await can_get(bob, room_id, before)
    assert await can_get(bob, room_id, between)
    assert await initial_sync_bodies(bob, room_id) == ["after invite", "after join"]


@pytest.mark.parametrize("visibility", ["shared", "invited"])
@pytest_twisted.ensureDeferred
async def test_invitee_cannot_read_history_before_joining(
    server: RunningServer, visibility: str
) -> None:
    alice, bob, room_id = await room_with_visibility(server, visibility)
    event_id = await send(alice, room_id, "secret")
    await invite(alice, room_id, bob.user_id)
    resp = await messages(bob, room_id)
    assert_error(resp, 403, "M_FORBIDDEN")
    resp = await bob.get(room_path(room_id, f"/event/{q(event_id)}"))
    assert resp.code in (403, 404), resp
    resp = await bob.get(room_path(room_id, "/members"))
    assert_error(resp, 403, "M_FORBIDDEN")
    resp = await bob.get(room_path(room_id, "/state"))
    assert_error(resp, 403, "M_FORBIDDEN")


@pytest.mark.parametrize("visibility", ["shared", "joined"])
@pytest_twisted.ensureDeferred
async def test_user_who_left_sees_history_only_up_to_the_leave(
    server: RunningServer, visibility: str
) -> None:
    alice, bob, room_id = await room_with_visibility(server, visibility)
    await join(bob, room_id)
    seen = await send(alice, room_id, "while joined")
    since = (await sync(bob))["next_batch"]
    await leave(bob, room_id)
    later = await send(alice, room_id, "after leave")
    from tests.rooms.helpers import put_state

    await put_state(alice, room_id, "m.room.topic", {"topic": "after leave"})

    assert bodies(await all_events(bob, room_id)) == ["while joined"]
    resp = await messages(bob, room_id, dir="b", limit=50)
    assert resp.code == 200, resp
    assert bodies(resp.json["chunk"]) == ["while joined"]
    assert resp.json["chunk"][0]["type"] == "m.room.member"  # his leave is the newest
    assert await can_get(bob, room_id, seen)
    assert not await can_get(bob, room_id, later)
    assert not await context_ok(bob, room_id, later)
    resp = await bob.get(room_path(room_id, f"/context/{q(seen)}"), params={"limit": "10"})
    assert resp.code == 200, resp
    assert bodies(resp.json["events_after"]) == []
    topics = [e for e in resp.json["state"] if e["type"] == "m.room.topic"]
    assert topics == []
    # GET /state shows the state at his leave, not the later topic.
    resp = await bob.get(room_path(room_id, "/state"))
    assert resp.code == 200, resp
    assert all(e["type"] != "m.room.topic" for e in resp.json)
    resp = await bob.get(room_path(room_id, "/state/m.room.topic"))
    assert_error(resp, 404, "M_NOT_FOUND")
    # timestamp_to_event cannot find events after the leave either.
    resp = await bob.get(
        f"/_matrix/client/v1/rooms/{q(room_id)}/timestamp_to_event",
        params={"ts": str(2**40), "dir": "b"},
    )
    assert resp.code in (200, 404), resp
    if resp.code == 200:
        assert resp.json["event_id"] not in (later,)

    # /sync: the room moves to leave with the leave event, nothing after it.
    body = await sync(bob, since)
    left = body["rooms"]["leave"][room_id]
    tl = left["timeline"]["events"]
    assert tl[-1]["type"] == "m.room.member" and tl[-1]["content"]["membership"] == "leave"
    assert "after leave" not in bodies(tl)
    # A members list at "now" for him stops at his leave.
    resp = await bob.get(room_path(room_id, "/members"), params={"at": body["next_batch"]})
    assert resp.code == 200, resp
    memberships = {e["state_key"]: e["content"]["membership"] for e in resp.json["chunk"]}
    assert memberships[bob.user_id] == "leave"


@pytest_twisted.ensureDeferred
async def test_kicked_user_sees_history_up_to_the_kick(server: RunningServer) -> None:
    alice, bob, room_id = await room_with_visibility(server, "shared")
    await join(bob, room_id)
    await send(alice, room_id, "before kick")
    resp = await alice.post(room_path(room_id, "/kick"), {"user_id": bob.user_id})
    assert resp.code == 200, resp
    await send(alice, room_id, "after kick")
    assert bodies(await all_events(bob, room_id)) == ["before kick"]


@pytest_twisted.ensureDeferred
async def test_banned_user_sees_history_up_to_the_ban(server: RunningServer) -> None:
    alice, bob, room_id = await room_with_visibility(server, "shared")
    await join(bob, room_id)
    await send(alice, room_id, "before ban")
    resp = await alice.post(room_path(room_id, "/ban"), {"user_id": bob.user_id})
    assert resp.code == 200, resp
    later = await send(alice, room_id, "after ban")
    assert bodies(await all_events(bob, room_id)) == ["before ban"]
    assert not await can_get(bob, room_id, later)


@pytest_twisted.ensureDeferred
async def test_world_readable_room_can_be_read_by_anyone(server: RunningServer) -> None:
    alice, bob, room_id = await room_with_visibility(server, "world_readable")
    event_id = await send(alice, room_id, "public words")
    assert bodies(await all_events(bob, room_id)) == ["public words"]
    assert await can_get(bob, room_id, event_id)
    resp = await bob.get(room_path(room_id, "/state"))
    assert resp.code == 200, resp
    resp = await bob.get(room_path(room_id, "/members"))
    assert resp.code == 200, resp
    resp = await bob.get(room_path(room_id, "/aliases"))
    assert resp.code == 200, resp
    # Reading is not joining.
    resp = await bob.get(f"{V3}/joined_rooms")
    assert resp.json["joined_rooms"] == []
    resp = await bob.put(room_path(room_id, "/send/m.room.message/x"), {"body": "no"})
    assert_error(resp, 403, "M_FORBIDDEN")


@pytest_twisted.ensureDeferred
async def test_visibility_change_applies_from_the_change(server: RunningServer) -> None:
    alice, bob, room_id = await room_with_visibility(server, "shared")
    await send(alice, room_id, "shared era")
    from tests.rooms.helpers import put_state

    resp = await put_state(
        alice, room_id, "m.room.history_visibility", {"history_visibility": "joined"}
    )
    assert resp.code == 200, resp
    await send(alice, room_id, "joined era")
    await join(bob, room_id)
    await send(alice, room_id, "member era")
    assert bodies(await all_events(bob, room_id)) == ["shared era", "member era"]


@pytest_twisted.ensureDeferred
async def test_rejoined_user_does_not_see_the_gap_under_joined(server: RunningServer) -> None:
    alice, bob, room_id = await room_with_visibility(server, "joined")
    await join(bob, room_id)
    await send(alice, room_id, "first stay")
    await leave(bob, room_id)
    await send(alice, room_id, "while away")
    await join(bob, room_id)
    await send(alice, room_id, "second stay")
    assert bodies(await all_events(bob, room_id)) == ["first stay", "second stay"]


def _types(events: list[dict[str, Any]]) -> list[str]:
    return [e["type"] for e in events]


@pytest_twisted.ensureDeferred
async def test_lazy_members_for_user_who_left_are_as_of_the_leave(server: RunningServer) -> None:
    alice, bob, room_id = await room_with_visibility(server, "shared")
    await join(bob, room_id)
    await send(alice, room_id, "hi bob")
    await leave(bob, room_id)
    await alice.put(f"{V3}/profile/{q(alice.user_id or '')}/displayname", {"displayname": "New"})
    resp = await messages(bob, room_id, dir="b", limit=5, filter={"lazy_load_members": True})
    assert resp.code == 200, resp
    alices = [e for e in resp.json["state"] if e["state_key"] == alice.user_id]
    assert len(alices) == 1
    assert alices[0]["content"]["displayname"] != "New"  # not the rename after bob left


@pytest_twisted.ensureDeferred
async def test_erased_users_events_are_redacted_for_later_joiners(server: RunningServer) -> None:
    # As Synapse (SyTest 30rooms/32erasure.pl): after a deactivation with erase, only
    # those joined when an event was sent still see its content.
    from tests.api.helpers import uia_password
    from tests.rooms.helpers import create_room, join, send, sync, user

    message = ""

    member, joiner = [await user(server, n) for n in ("member", "joiner")]
    wide = {"room": {"timeline": {"limit": 50}}}

    def content_of(body: dict[str, Any]) -> Any:
        events = body["rooms"]["join"][room_id]["timeline"]["events"]
        return next(e["content"] for e in events if e["event_id"] == message)

    other = await user(server, "other")
    room2 = await create_room(other, preset="public_chat")
    erased = await user(server, "erased")
    assert (await join(erased, room2)).code == 200
    assert (await join(member, room2)).code == 200
    message = await send(erased, room2, "body2")
    assert (await join(joiner, room2)).code == 200
    resp = await uia_password(
        erased, "POST", "/_matrix/client/v3/account/deactivate", {"erase": True}
    )
    assert resp.code == 200, resp
    room_id = room2
    assert content_of(await sync(member, filter=wide))["body"] == "body2"
    assert content_of(await sync(joiner, filter=wide)) == {}
