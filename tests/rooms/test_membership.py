"""Membership over HTTP: join, invite, leave, forget, kick, ban, unban, knock, restricted."""

from __future__ import annotations

from typing import Any

import pytest
import pytest_twisted

from tests.rooms.helpers import (
    V3,
    assert_error,
    create_room,
    get_state,
    invite,
    join,
    leave,
    room_path,
    send,
    sync,
    user,
)
from tests.support.client import Client, q
from tests.support.server import RunningServer


async def membership(client: Client, room_id: str, user_id: str) -> str | None:
    resp = await get_state(client, room_id, "m.room.member", user_id)
    if resp.code == 404:
        return None
    assert resp.code == 200, resp
    return str(resp.json["membership"])


async def joined_rooms(client: Client) -> list[str]:
    resp = await client.get(f"{V3}/joined_rooms")
    assert resp.code == 200, resp
    return list(resp.json["joined_rooms"])


@pytest_twisted.ensureDeferred
async def test_join_public_room_by_id_alias_and_rooms_join(server: RunningServer) -> None:
    alice = await user(server, "alice")
    bob = await user(server, "bob")
    carol = await user(server, "carol")
    dan = await user(server, "dan")
    room_id = await create_room(alice, preset="public_chat", room_alias_name="pub")

    resp = await join(bob, room_id)
    assert resp.code == 200, resp
    assert resp.json == {"room_id": room_id}
    resp = await join(carol, "#pub:test.local")
    assert resp.code == 200, resp
    assert resp.json == {"room_id": room_id}
    resp = await dan.post(room_path(room_id, "/join"), {"reason": "hello"})
    assert resp.code == 200, resp
    assert resp.json == {"room_id": room_id}

    for c in (bob, carol, dan):
        assert await joined_rooms(c) == [room_id]
    resp = await get_state(alice, room_id, "m.room.member", dan.user_id)
    assert resp.json["reason"] == "hello"
    # Joining again is allowed and writes nothing new (as Synapse).
    before = await get_state(alice, room_id, "m.room.member", bob.user_id, fmt="event")
    resp = await join(bob, room_id)
    assert resp.code == 200, resp
    after = await get_state(alice, room_id, "m.room.member", bob.user_id, fmt="event")
    assert after.json["event_id"] == before.json["event_id"]


@pytest_twisted.ensureDeferred
async def test_join_unknown_room_or_alias_is_404(server: RunningServer) -> None:
    bob = await user(server, "bob")
    resp = await join(bob, "!nope:test.local")
    assert_error(resp, 404, "M_NOT_FOUND")
    resp = await join(bob, "#nope:test.local")
    assert_error(resp, 404, "M_NOT_FOUND")
    resp = await join(bob, "nonsense")
    assert_error(resp, 400, "M_INVALID_PARAM")
    resp = await bob.post(room_path("!nope:test.local", "/join"), {})
    assert_error(resp, 404, "M_NOT_FOUND")


@pytest_twisted.ensureDeferred
async def test_join_invite_only_room_without_invite_is_forbidden(server: RunningServer) -> None:
    alice = await user(server, "alice")
    bob = await user(server, "bob")
    room_id = await create_room(alice, preset="private_chat")
    resp = await join(bob, room_id)
    assert_error(resp, 403, "M_FORBIDDEN")
    assert await joined_rooms(bob) == []
    # With an invite the same join works.
    assert (await invite(alice, room_id, bob.user_id)).code == 200
    resp = await join(bob, room_id)
    assert resp.code == 200, resp
    assert await membership(alice, room_id, bob.user_id) == "join"


@pytest_twisted.ensureDeferred
async def test_invite_needs_invite_power(server: RunningServer) -> None:
    alice = await user(server, "alice")
    bob = await user(server, "bob")
    carol = await user(server, "carol")
    room_id = await create_room(alice, preset="public_chat", room_version="11")
    await join(bob, room_id)
    resp = await invite(bob, room_id, carol.user_id)  # invite level 50, bob has 0
    assert_error(resp, 403, "M_FORBIDDEN")
    assert await membership(alice, room_id, carol.user_id) is None
    resp = await invite(alice, room_id, carol.user_id)
    assert resp.code == 200, resp
    assert resp.json == {}
    assert await membership(alice, room_id, carol.user_id) == "invite"


@pytest_twisted.ensureDeferred
async def test_any_member_may_invite_in_private_chat(server: RunningServer) -> None:
    alice = await user(server, "alice")
    bob = await user(server, "bob")
    carol = await user(server, "carol")
    room_id = await create_room(alice, invite=[bob.user_id])
    await join(bob, room_id)
    resp = await invite(bob, room_id, carol.user_id)
    assert resp.code == 200, resp


@pytest_twisted.ensureDeferred
async def test_invite_errors(server: RunningServer) -> None:
    alice = await user(server, "alice")
    bob = await user(server, "bob")
    outsider = await user(server, "outsider")
    room_id = await create_room(alice)
    resp = await invite(alice, room_id, "@ghost:test.local")
    assert_error(resp, 404, "M_NOT_FOUND")
    resp = await invite(alice, room_id, alice.user_id)  # already joined
    assert_error(resp, 403, "M_FORBIDDEN")
    resp = await invite(alice, room_id, "not a user")
    assert_error(resp, 400, "M_INVALID_PARAM")
    resp = await alice.post(room_path(room_id, "/invite"), {})
    assert_error(resp, 400, "M_MISSING_PARAM")
    resp = await invite(outsider, room_id, bob.user_id)  # not in the room
    assert_error(resp, 403, "M_FORBIDDEN")
    resp = await invite(alice, "!unknown:test.local", bob.user_id)
    assert_error(resp, 404, "M_NOT_FOUND")
    await invite(alice, room_id, bob.user_id)
    await join(bob, room_id)
    resp = await invite(alice, room_id, bob.user_id)
    assert_error(resp, 403, "M_FORBIDDEN")


@pytest_twisted.ensureDeferred
async def test_reject_invite_by_leaving(server: RunningServer) -> None:
    alice = await user(server, "alice")
    bob = await user(server, "bob")
    room_id = await create_room(alice, invite=[bob.user_id])
    resp = await leave(bob, room_id)
    assert resp.code == 200, resp
    assert await membership(alice, room_id, bob.user_id) == "leave"
    body = await sync(bob)
    assert room_id not in body["rooms"]["invite"]


@pytest_twisted.ensureDeferred
async def test_leave_then_forget(server: RunningServer) -> None:
    alice = await user(server, "alice")
    bob = await user(server, "bob")
    room_id = await create_room(alice, preset="public_chat")
    await join(bob, room_id)

    resp = await bob.post(room_path(room_id, "/forget"), {})
    assert_error(resp, 400, "M_UNKNOWN")  # still joined

    resp = await leave(bob, room_id)
    assert resp.code == 200, resp
    assert resp.json == {}
    assert await joined_rooms(bob) == []
    assert await membership(alice, room_id, bob.user_id) == "leave"
    resp = await leave(bob, room_id)  # not in the room any more
    assert_error(resp, 403, "M_FORBIDDEN")

    leave_filter: dict[str, Any] = {"room": {"include_leave": True}}
    body = await sync(bob, filter=leave_filter)
    assert room_id in body["rooms"]["leave"]

    resp = await bob.post(room_path(room_id, "/forget"), {})
    assert resp.code == 200, resp
    body = await sync(bob, filter=leave_filter)
    assert room_id not in body["rooms"]["leave"]

    # Forgotten until the membership changes again: rejoining brings it back.
    await join(bob, room_id)
    assert await joined_rooms(bob) == [room_id]


@pytest_twisted.ensureDeferred
async def test_forget_room_never_joined_is_404(server: RunningServer) -> None:
    alice = await user(server, "alice")
    bob = await user(server, "bob")
    room_id = await create_room(alice)
    resp = await bob.post(room_path(room_id, "/forget"), {})
    assert_error(resp, 404, "M_NOT_FOUND")


@pytest_twisted.ensureDeferred
async def test_kick_needs_kick_power_and_higher_level(server: RunningServer) -> None:
    alice = await user(server, "alice")
    bob = await user(server, "bob")
    carol = await user(server, "carol")
    mod = await user(server, "mod")
    room_id = await create_room(
        alice,
        preset="public_chat",
        room_version="11",
        power_level_content_override={
            "users": {alice.user_id: 100, mod.user_id: 50, carol.user_id: 50}
        },
    )
    for c in (bob, carol, mod):
        assert (await join(c, room_id)).code == 200

    kick = "/kick"
    resp = await bob.post(room_path(room_id, kick), {"user_id": carol.user_id})
    assert_error(resp, 403, "M_FORBIDDEN")  # bob has 0 < kick 50
    resp = await mod.post(room_path(room_id, kick), {"user_id": carol.user_id})
    assert_error(resp, 403, "M_FORBIDDEN")  # equal level (50) cannot kick
    resp = await mod.post(room_path(room_id, kick), {"user_id": alice.user_id})
    assert_error(resp, 403, "M_FORBIDDEN")  # lower cannot kick higher
    resp = await mod.post(room_path(room_id, kick), {"user_id": bob.user_id, "reason": "spam"})
    assert resp.code == 200, resp
    resp = await get_state(alice, room_id, "m.room.member", bob.user_id)
    assert resp.json == {"membership": "leave", "reason": "spam"}
    ev = await get_state(alice, room_id, "m.room.member", bob.user_id, fmt="event")
    assert ev.json["sender"] == mod.user_id
    # Kicking someone not in the room.
    resp = await alice.post(room_path(room_id, kick), {"user_id": bob.user_id})
    assert_error(resp, 403, "M_FORBIDDEN")
    # A kicked user may rejoin a public room.
    assert (await join(bob, room_id)).code == 200


@pytest_twisted.ensureDeferred
async def test_ban_prevents_rejoin_until_unban(server: RunningServer) -> None:
    alice = await user(server, "alice")
    bob = await user(server, "bob")
    room_id = await create_room(alice, preset="public_chat")
    await join(bob, room_id)

    resp = await bob.post(room_path(room_id, "/ban"), {"user_id": alice.user_id})
    assert_error(resp, 403, "M_FORBIDDEN")
    resp = await alice.post(room_path(room_id, "/ban"), {"user_id": bob.user_id, "reason": "r"})
    assert resp.code == 200, resp
    assert await membership(alice, room_id, bob.user_id) == "ban"
    assert await joined_rooms(bob) == []

    resp = await join(bob, room_id)
    assert_error(resp, 403, "M_FORBIDDEN")
    resp = await bob.post(f"{V3}/knock/{q(room_id)}", {})
    assert_error(resp, 403, "M_FORBIDDEN")
    resp = await invite(alice, room_id, bob.user_id)
    assert_error(resp, 403, "M_FORBIDDEN")

    resp = await alice.post(room_path(room_id, "/unban"), {"user_id": alice.user_id})
    assert_error(resp, 403, "M_FORBIDDEN")  # not banned
    resp = await alice.post(room_path(room_id, "/unban"), {"user_id": bob.user_id})
    assert resp.code == 200, resp
    assert await membership(alice, room_id, bob.user_id) == "leave"
    assert (await join(bob, room_id)).code == 200


@pytest_twisted.ensureDeferred
async def test_banned_user_may_not_read_the_room_state(server: RunningServer) -> None:
    # As Synapse (SyTest 30rooms/07ban waits for this 403): a user who left may read
    # the state as it was when they left; a banned one may not read it at all.
    alice = await user(server, "alice")
    bob = await user(server, "bob")
    room_id = await create_room(alice, preset="public_chat")
    await join(bob, room_id)
    resp = await alice.post(room_path(room_id, "/ban"), {"user_id": bob.user_id})
    assert resp.code == 200, resp

    resp = await get_state(bob, room_id, "m.room.member", bob.user_id)
    assert_error(resp, 403, "M_FORBIDDEN")
    assert_error(await bob.get(room_path(room_id, "/state")), 403, "M_FORBIDDEN")

    resp = await alice.post(room_path(room_id, "/unban"), {"user_id": bob.user_id})
    assert resp.code == 200, resp
    assert await membership(bob, room_id, bob.user_id) == "leave"
    assert (await bob.get(room_path(room_id, "/state"))).code == 200


@pytest_twisted.ensureDeferred
async def test_ban_of_user_never_in_room(server: RunningServer) -> None:
    alice = await user(server, "alice")
    bob = await user(server, "bob")
    room_id = await create_room(alice, preset="public_chat")
    resp = await alice.post(room_path(room_id, "/ban"), {"user_id": bob.user_id})
    assert resp.code == 200, resp
    resp = await join(bob, room_id)
    assert_error(resp, 403, "M_FORBIDDEN")


@pytest_twisted.ensureDeferred
async def test_knock_then_invite_then_join(server: RunningServer) -> None:
    alice = await user(server, "alice")
    bob = await user(server, "bob")
    room_id = await create_room(
        alice,
        room_alias_name="knocky",
        initial_state=[{"type": "m.room.join_rules", "content": {"join_rule": "knock"}}],
    )
    resp = await join(bob, room_id)
    assert_error(resp, 403, "M_FORBIDDEN")

    resp = await bob.post(f"{V3}/knock/{q('#knocky:test.local')}", {"reason": "let me in"})
    assert resp.code == 200, resp
    assert resp.json == {"room_id": room_id}
    member = await get_state(alice, room_id, "m.room.member", bob.user_id)
    assert member.json["membership"] == "knock"
    assert member.json["reason"] == "let me in"

    body = await sync(bob)
    assert room_id in body["rooms"]["knock"]
    knock_state = body["rooms"]["knock"][room_id]["knock_state"]["events"]
    assert any(e["type"] == "m.room.join_rules" for e in knock_state)
    assert any(e["type"] == "m.room.member" and e["state_key"] == bob.user_id for e in knock_state)
    # Knocking again is allowed by the auth rules (knock -> knock).
    resp = await bob.post(f"{V3}/knock/{q(room_id)}", {"reason": "let me in"})
    assert resp.code == 200, resp

    assert (await invite(alice, room_id, bob.user_id)).code == 200
    body = await sync(bob)
    assert room_id in body["rooms"]["invite"]
    assert room_id not in body["rooms"]["knock"]
    assert (await join(bob, room_id)).code == 200
    assert await joined_rooms(bob) == [room_id]


@pytest_twisted.ensureDeferred
async def test_knock_refused_unless_join_rule_is_knock(server: RunningServer) -> None:
    alice = await user(server, "alice")
    bob = await user(server, "bob")
    private = await create_room(alice, preset="private_chat")
    public = await create_room(alice, preset="public_chat")
    resp = await bob.post(f"{V3}/knock/{q(private)}", {})
    assert_error(resp, 403, "M_FORBIDDEN")
    await join(bob, public)
    resp = await bob.post(f"{V3}/knock/{q(public)}", {})
    assert_error(resp, 403, "M_FORBIDDEN")  # already joined
    resp = await bob.post(f"{V3}/knock/{q('#missing:test.local')}", {})
    assert_error(resp, 404, "M_NOT_FOUND")


@pytest_twisted.ensureDeferred
async def test_knock_withdrawn_by_leaving(server: RunningServer) -> None:
    alice = await user(server, "alice")
    bob = await user(server, "bob")
    room_id = await create_room(
        alice, initial_state=[{"type": "m.room.join_rules", "content": {"join_rule": "knock"}}]
    )
    assert (await bob.post(f"{V3}/knock/{q(room_id)}", {})).code == 200
    resp = await leave(bob, room_id)
    assert resp.code == 200, resp
    assert await membership(alice, room_id, bob.user_id) == "leave"


@pytest.mark.parametrize("room_version", ["10", "12"])
@pytest_twisted.ensureDeferred
async def test_restricted_join_rule_admits_members_of_allowed_room(
    server: RunningServer, room_version: str
) -> None:
    alice = await user(server, "alice")
    member = await user(server, "member")
    stranger = await user(server, "stranger")
    space = await create_room(alice, preset="public_chat", room_version=room_version)
    assert (await join(member, space)).code == 200
    room_id = await create_room(
        alice,
        room_version=room_version,
        initial_state=[
            {
                "type": "m.room.join_rules",
                "content": {
                    "join_rule": "restricted",
                    "allow": [{"type": "m.room_membership", "room_id": space}],
                },
            }
        ],
    )
    resp = await join(stranger, room_id)
    assert_error(resp, 403, "M_FORBIDDEN")
    resp = await join(member, room_id)
    assert resp.code == 200, resp
    ev = await get_state(alice, room_id, "m.room.member", member.user_id)
    assert ev.json["join_authorised_via_users_server"] == alice.user_id
    # After leaving the allowed room, a later join is refused again.
    await leave(member, room_id)
    await leave(member, space)
    resp = await join(member, room_id)
    assert_error(resp, 403, "M_FORBIDDEN")


@pytest_twisted.ensureDeferred
async def test_restricted_room_invited_user_may_join(server: RunningServer) -> None:
    alice = await user(server, "alice")
    bob = await user(server, "bob")
    space = await create_room(alice)
    room_id = await create_room(
        alice,
        initial_state=[
            {
                "type": "m.room.join_rules",
                "content": {
                    "join_rule": "restricted",
                    "allow": [{"type": "m.room_membership", "room_id": space}],
                },
            }
        ],
    )
    await invite(alice, room_id, bob.user_id)
    resp = await join(bob, room_id)
    assert resp.code == 200, resp
    ev = await get_state(alice, room_id, "m.room.member", bob.user_id)
    assert "join_authorised_via_users_server" not in ev.json


@pytest_twisted.ensureDeferred
async def test_joined_rooms_lists_only_joined(server: RunningServer) -> None:
    alice = await user(server, "alice")
    bob = await user(server, "bob")
    r1 = await create_room(alice, preset="public_chat")
    r2 = await create_room(alice, preset="public_chat")
    r3 = await create_room(alice, invite=[bob.user_id])
    await join(bob, r1)
    await join(bob, r2)
    assert sorted(await joined_rooms(bob)) == sorted([r1, r2])
    await leave(bob, r1)
    assert await joined_rooms(bob) == [r2]
    assert r3 not in await joined_rooms(bob)
    assert sorted(await joined_rooms(alice)) == sorted([r1, r2, r3])
    resp = await server.client().get(f"{V3}/joined_rooms")
    assert_error(resp, 401, "M_MISSING_TOKEN")


@pytest_twisted.ensureDeferred
async def test_members_with_filters_and_at(server: RunningServer) -> None:
    alice = await user(server, "alice")
    bob = await user(server, "bob")
    carol = await user(server, "carol")
    dan = await user(server, "dan")
    room_id = await create_room(alice, preset="public_chat")
    await join(bob, room_id)
    await invite(alice, room_id, dan.user_id)
    body = await sync(alice)
    token = body["next_batch"]
    prev_batch = body["rooms"]["join"][room_id]["timeline"]["prev_batch"]
    await join(carol, room_id)
    await leave(bob, room_id)

    async def members(**params: str) -> dict[str, str]:
        resp = await alice.get(room_path(room_id, "/members"), params=params)
        assert resp.code == 200, resp
        return {e["state_key"]: e["content"]["membership"] for e in resp.json["chunk"]}

    assert await members() == {
        alice.user_id: "join",
        bob.user_id: "leave",
        carol.user_id: "join",
        dan.user_id: "invite",
    }
    assert await members(membership="join") == {alice.user_id: "join", carol.user_id: "join"}
    assert await members(not_membership="leave") == {
        alice.user_id: "join",
        carol.user_id: "join",
        dan.user_id: "invite",
    }
    assert await members(membership="invite") == {dan.user_id: "invite"}
    # At the earlier sync token: carol not there yet, bob still joined.
    assert await members(at=token) == {
        alice.user_id: "join",
        bob.user_id: "join",
        dan.user_id: "invite",
    }
    assert await members(at=token, membership="join") == {
        alice.user_id: "join",
        bob.user_id: "join",
    }
    # prev_batch of an initial sync is before the whole room: only the creator... or
    # less; it never includes carol.
    early = await members(at=prev_batch)
    assert carol.user_id not in early

    resp = await alice.get(room_path(room_id, "/members"), params={"membership": "bogus"})
    assert_error(resp, 400, "M_INVALID_PARAM")
    resp = await alice.get(room_path(room_id, "/members"), params={"at": "garbage"})
    assert_error(resp, 400, "M_INVALID_PARAM")


@pytest_twisted.ensureDeferred
async def test_members_and_joined_members_forbidden_to_outsiders(
    server: RunningServer,
) -> None:
    alice = await user(server, "alice")
    outsider = await user(server, "outsider")
    room_id = await create_room(alice)
    resp = await outsider.get(room_path(room_id, "/members"))
    assert_error(resp, 403, "M_FORBIDDEN")
    resp = await outsider.get(room_path(room_id, "/joined_members"))
    assert_error(resp, 403, "M_FORBIDDEN")


@pytest_twisted.ensureDeferred
async def test_members_for_user_who_left_stop_at_their_leave(server: RunningServer) -> None:
    alice = await user(server, "alice")
    bob = await user(server, "bob")
    carol = await user(server, "carol")
    room_id = await create_room(alice, preset="public_chat")
    await join(bob, room_id)
    await leave(bob, room_id)
    await join(carol, room_id)
    resp = await bob.get(room_path(room_id, "/members"))
    assert resp.code == 200, resp
    members = {e["state_key"]: e["content"]["membership"] for e in resp.json["chunk"]}
    assert members == {alice.user_id: "join", bob.user_id: "leave"}


@pytest_twisted.ensureDeferred
async def test_joined_members(server: RunningServer) -> None:
    alice = await user(server, "alice")
    bob = await user(server, "bob")
    carol = await user(server, "carol")
    await alice.put(f"{V3}/profile/{q(alice.user_id)}/displayname", {"displayname": "Alice"})
    room_id = await create_room(alice, preset="public_chat", invite=[carol.user_id])
    await join(bob, room_id)
    resp = await bob.get(room_path(room_id, "/joined_members"))
    assert resp.code == 200, resp
    joined = resp.json["joined"]
    assert set(joined) == {alice.user_id, bob.user_id}
    assert joined[alice.user_id]["display_name"] == "Alice"
    await send(alice, room_id, "x")


@pytest_twisted.ensureDeferred
async def test_join_body_keys_go_into_the_member_event(server: RunningServer) -> None:
    # As Synapse (SyTest 10apidoc/33room-members.pl): the client's keys are kept, the
    # server's (membership, the restricted-join authoriser) are not taken from it.
    alice, bob, carol = [await user(server, n) for n in ("alice", "bob", "carol")]
    room_id = await create_room(alice, preset="public_chat", room_alias_name="custom")
    body = {"foo": "bar", "membership": "leave", "join_authorised_via_users_server": "@x:y"}
    resp = await bob.post(f"{V3}/join/{room_id}", body)
    assert resp.code == 200, resp
    resp = await get_state(alice, room_id, "m.room.member", bob.user_id or "")
    assert resp.code == 200, resp
    assert resp.json["foo"] == "bar" and resp.json["membership"] == "join"
    assert "join_authorised_via_users_server" not in resp.json
    resp = await carol.post(f"{V3}/join/{'%23custom:test.local'}", {"foo": "baz"})
    assert resp.code == 200, resp
    resp = await get_state(alice, room_id, "m.room.member", carol.user_id or "")
    assert resp.json["foo"] == "baz" and resp.json["membership"] == "join"


@pytest_twisted.ensureDeferred
async def test_put_own_member_state_join_joins(server: RunningServer) -> None:
    # As Synapse (SyTest 30rooms/14override-per-room.pl): PUT of one's own member event
    # with "join" joins the room, keeping the event's keys (a per-room displayname).
    alice, bob, carol = [await user(server, n) for n in ("alice", "bob", "carol")]
    room_id = await create_room(alice, preset="public_chat")
    path = room_path(room_id, f"/state/m.room.member/{q(bob.user_id or '')}")
    resp = await bob.put(path, {"membership": "join", "displayname": "Overridden"})
    assert resp.code == 200, resp
    resp = await get_state(alice, room_id, "m.room.member", bob.user_id or "")
    assert resp.json["membership"] == "join" and resp.json["displayname"] == "Overridden"
    # Joining still needs what a join needs: not for someone else, not an invite-only room.
    private = await create_room(alice, preset="private_chat")
    path = room_path(private, f"/state/m.room.member/{q(carol.user_id or '')}")
    resp = await carol.put(path, {"membership": "join"})
    assert_error(resp, 403, "M_FORBIDDEN")
    path = room_path(room_id, f"/state/m.room.member/{q(carol.user_id or '')}")
    resp = await bob.put(path, {"membership": "join"})
    assert_error(resp, 403, "M_FORBIDDEN")
