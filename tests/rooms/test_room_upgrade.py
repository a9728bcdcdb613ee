"""POST /rooms/{roomId}/upgrade on one server, over HTTP."""

from __future__ import annotations

from typing import Any

import pytest
import pytest_twisted

from tests.rooms.helpers import (
    V3,
    assert_error,
    create_room,
    get_state,
    join,
    put_state,
    room_path,
    send_raw,
    user,
)
from tests.support.client import Client, Response, q


async def upgrade(client: Client, room_id: str, body: Any) -> Response:
    return await client.post(room_path(room_id, "/upgrade"), body)


async def state_of(client: Client, room_id: str) -> dict[tuple[str, str], dict[str, Any]]:
    resp = await client.get(room_path(room_id, "/state"))
    assert resp.code == 200, resp
    return {(e["type"], e["state_key"]): e for e in resp.json}


@pytest.mark.parametrize(("old_version", "new_version"), [("10", "11"), ("11", "12"), ("12", "12")])
@pytest_twisted.ensureDeferred
async def test_upgrade_carries_state_aliases_bans_and_directory(
    server: Any, old_version: str, new_version: str
) -> None:
    alice = await user(server, "alice")
    bob = await user(server, "bob")
    mallory = await user(server, "mallory")
    old = await create_room(
        alice,
        room_version=old_version,
        preset="public_chat",
        visibility="public",
        room_alias_name="home",
        name="Home",
        topic="our place",
        creation_content={"type": "m.space"},
        power_level_content_override={"users_default": 0},
    )
    resp = await alice.put(f"{V3}/directory/room/{q('#alt:test.local')}", {"room_id": old})
    assert resp.code == 200, resp
    resp = await put_state(
        alice,
        old,
        "m.room.canonical_alias",
        {"alias": "#home:test.local", "alt_aliases": ["#alt:test.local", "#far:elsewhere.example"]},
    )
    assert resp.code == 200, resp
    for event_type, content, key in (
        ("m.room.avatar", {"url": "mxc://test.local/avatar"}, ""),
        ("m.room.encryption", {"algorithm": "m.megolm.v1.aes-sha2"}, ""),
        ("m.room.server_acl", {"allow": ["*"], "deny": ["evil.example"]}, ""),
        ("m.room.guest_access", {"guest_access": "can_join"}, ""),
        ("m.space.child", {"via": ["test.local"]}, "!child:test.local"),
        ("m.space.child", {}, "!removed:test.local"),
        ("m.space.parent", {"via": ["test.local"]}, "!parent:test.local"),
        ("org.example.custom", {"x": 1}, ""),
    ):
        resp = await put_state(alice, old, event_type, content, key)
        assert resp.code == 200, resp
    assert (await join(bob, old)).code == 200
    assert (await join(mallory, old)).code == 200
    resp = await alice.post(room_path(old, "/ban"), {"user_id": mallory.user_id, "reason": "spam"})
    assert resp.code == 200, resp
    pl_before = (await get_state(alice, old, "m.room.power_levels")).json

    resp = await upgrade(alice, old, {"new_version": new_version})
    assert resp.code == 200, resp
    new = resp.json["replacement_room"]
    assert new != old

    old_state = await state_of(alice, old)
    tombstone = old_state[("m.room.tombstone", "")]
    assert tombstone["content"]["replacement_room"] == new
    assert tombstone["sender"] == alice.user_id

    new_state = await state_of(alice, new)
    create = new_state[("m.room.create", "")]["content"]
    assert create["room_version"] == new_version
    assert create["type"] == "m.space"
    assert create["predecessor"]["room_id"] == old
    if new_version == "12":
        assert "event_id" not in create["predecessor"]
    else:
        assert create["predecessor"]["event_id"] == tombstone["event_id"]
    for key in (
        ("m.room.name", ""),
        ("m.room.topic", ""),
        ("m.room.avatar", ""),
        ("m.room.encryption", ""),
        ("m.room.server_acl", ""),
        ("m.room.guest_access", ""),
        ("m.room.join_rules", ""),
        ("m.room.history_visibility", ""),
        ("m.space.child", "!child:test.local"),
        ("m.space.parent", "!parent:test.local"),
    ):
        assert new_state[key]["content"] == old_state[key]["content"], key
    assert ("m.space.child", "!removed:test.local") not in new_state
    assert ("org.example.custom", "") not in new_state
    assert new_state[("m.room.member", mallory.user_id)]["content"]["membership"] == "ban"
    assert new_state[("m.room.member", mallory.user_id)]["content"]["reason"] == "spam"
    assert new_state[("m.room.member", alice.user_id)]["content"]["membership"] == "join"
    assert ("m.room.member", bob.user_id) not in new_state

    # Power levels: the new room gets the old ones back (v12: creators not listed).
    new_pl = new_state[("m.room.power_levels", "")]["content"]
    expected = dict(pl_before)
    if new_version == "12":
        expected["users"] = {u: v for u, v in pl_before["users"].items() if u != alice.user_id}
    assert new_pl == expected
    # The old room: only moderators may speak or invite now.
    old_pl = old_state[("m.room.power_levels", "")]["content"]
    assert old_pl["events_default"] == 50 and old_pl["invite"] == 50
    assert_error(await send_raw(bob, old, "still here?"), 403, "M_FORBIDDEN")

    # Aliases: ours point at the new room; the canonical alias moved with them.
    for alias in ("#home:test.local", "#alt:test.local"):
        resp = await alice.get(f"{V3}/directory/room/{q(alias)}")
        assert resp.json["room_id"] == new, (alias, resp)
    assert new_state[("m.room.canonical_alias", "")]["content"] == {
        "alias": "#home:test.local",
        "alt_aliases": ["#alt:test.local"],
    }
    assert old_state[("m.room.canonical_alias", "")]["content"] == {
        "alt_aliases": ["#far:elsewhere.example"]
    }
    # The directory lists the new room instead of the old one.
    resp = await alice.get(f"{V3}/directory/list/room/{q(old)}")
    assert resp.json["visibility"] == "private"
    resp = await alice.get(f"{V3}/directory/list/room/{q(new)}")
    assert resp.json["visibility"] == "public"
    listed = [r["room_id"] for r in (await alice.get(f"{V3}/publicRooms")).json["chunk"]]
    assert new in listed and old not in listed

    # Others can follow the tombstone.
    assert (await join(bob, new)).code == 200


@pytest_twisted.ensureDeferred
async def test_upgrade_raises_the_upgrader_temporarily_and_restores_levels(
    server: Any,
) -> None:
    alice = await user(server, "alice")
    bob = await user(server, "bob")
    # Bob may send the tombstone (level 60) but not m.room.encryption (100).
    old = await create_room(
        alice,
        room_version="11",
        preset="public_chat",
        power_level_content_override={"events": {"m.room.tombstone": 60, "m.room.encryption": 100}},
    )
    resp = await put_state(alice, old, "m.room.encryption", {"algorithm": "m.megolm.v1.aes-sha2"})
    assert resp.code == 200, resp
    assert (await join(bob, old)).code == 200
    pl = (await get_state(alice, old, "m.room.power_levels")).json
    pl["users"][bob.user_id] = 60
    assert (await put_state(alice, old, "m.room.power_levels", pl)).code == 200

    resp = await upgrade(bob, old, {"new_version": "11"})
    assert resp.code == 200, resp
    new = resp.json["replacement_room"]
    state = await state_of(bob, new)
    assert state[("m.room.encryption", "")]["content"]["algorithm"] == "m.megolm.v1.aes-sha2"
    assert state[("m.room.power_levels", "")]["content"]["users"] == pl["users"]
    assert state[("m.room.power_levels", "")]["content"]["users"][bob.user_id] == 60


@pytest_twisted.ensureDeferred
async def test_upgrade_with_additional_creators_to_v12(server: Any) -> None:
    alice = await user(server, "alice")
    bob = await user(server, "bob")
    old = await create_room(alice, room_version="11", preset="public_chat")
    resp = await upgrade(alice, old, {"new_version": "12", "additional_creators": [bob.user_id]})
    assert resp.code == 200, resp
    new = resp.json["replacement_room"]
    create = (await state_of(alice, new))[("m.room.create", "")]["content"]
    assert create["additional_creators"] == [bob.user_id]
    pl = (await get_state(alice, new, "m.room.power_levels")).json
    assert alice.user_id not in pl["users"] and bob.user_id not in pl["users"]
    assert_error(
        await upgrade(alice, new, {"new_version": "12", "additional_creators": ["nope"]}),
        400,
        "M_INVALID_PARAM",
    )


@pytest_twisted.ensureDeferred
async def test_upgrade_refusals(server: Any) -> None:
    alice = await user(server, "alice")
    bob = await user(server, "bob")
    old = await create_room(alice, room_version="11", preset="public_chat", name="Keep")
    assert (await join(bob, old)).code == 200
    # Power: bob may not send m.room.tombstone. Nothing is created, nothing changes.
    before = await state_of(alice, old)
    assert_error(await upgrade(bob, old, {"new_version": "12"}), 403, "M_FORBIDDEN")
    assert await state_of(alice, old) == before
    rooms = (await bob.get(f"{V3}/joined_rooms")).json["joined_rooms"]
    assert rooms == [old]
    # Not in the room / unknown room.
    carol = await user(server, "carol")
    assert_error(await upgrade(carol, old, {"new_version": "12"}), 403, "M_FORBIDDEN")
    assert_error(
        await upgrade(alice, "!nope:test.local", {"new_version": "12"}), 404, "M_NOT_FOUND"
    )
    # Versions and body.
    assert_error(
        await upgrade(alice, old, {"new_version": "13"}), 400, "M_UNSUPPORTED_ROOM_VERSION"
    )
    assert_error(
        await upgrade(alice, old, {"new_version": "banana"}), 400, "M_UNSUPPORTED_ROOM_VERSION"
    )
    assert_error(await upgrade(alice, old, {}), 400, "M_MISSING_PARAM")
    assert_error(await upgrade(alice, old, {"new_version": 12}), 400, "M_BAD_JSON")
    assert_error(
        await upgrade(alice, old, {"new_version": "12", "additional_creators": "x"}),
        400,
        "M_BAD_JSON",
    )
    assert await state_of(alice, old) == before


@pytest_twisted.ensureDeferred
async def test_upgrade_carries_local_members_tags_and_direct_chats(server: Any) -> None:
    alice = await user(server, "alice")
    bob = await user(server, "bob")
    old = await create_room(alice, preset="public_chat")
    assert (await join(bob, old)).code == 200
    for client, tag in ((alice, "m.favourite"), (bob, "u.work")):
        resp = await client.put(
            f"{V3}/user/{q(client.user_id)}/rooms/{q(old)}/tags/{q(tag)}", {"order": 0.5}
        )
        assert resp.code == 200, resp
    direct = {bob.user_id: ["!other:test.local", old]}
    resp = await alice.put(f"{V3}/user/{q(alice.user_id)}/account_data/m.direct", direct)
    assert resp.code == 200, resp

    resp = await upgrade(alice, old, {"new_version": "12"})
    assert resp.code == 200, resp
    new = resp.json["replacement_room"]
    for client, tag in ((alice, "m.favourite"), (bob, "u.work")):
        resp = await client.get(f"{V3}/user/{q(client.user_id)}/rooms/{q(new)}/tags")
        assert resp.json == {"tags": {tag: {"order": 0.5}}}, resp
    resp = await alice.get(f"{V3}/user/{q(alice.user_id)}/account_data/m.direct")
    assert resp.json == {bob.user_id: ["!other:test.local", old, new]}


@pytest_twisted.ensureDeferred
async def test_upgrade_out_of_v12_leaves_the_creator_in_charge(server: Any) -> None:
    alice = await user(server, "alice")
    bob = await user(server, "bob")
    old = await create_room(alice, room_version="12", preset="private_chat")
    resp = await upgrade(alice, old, {"new_version": "11"})
    assert resp.code == 200, resp
    new = resp.json["replacement_room"]
    # v11 has no creator power: without a level alice could do nothing in her room.
    levels = (await get_state(alice, new, "m.room.power_levels")).json
    assert levels["users"][alice.user_id] >= 100
    assert (await put_state(alice, new, "m.room.topic", {"topic": "still mine"})).code == 200
    resp = await alice.post(room_path(new, "/invite"), {"user_id": bob.user_id})
    assert resp.code == 200, resp


@pytest_twisted.ensureDeferred
async def test_upgrade_copies_push_rules_about_the_room(server: Any) -> None:
    alice = await user(server, "alice")
    old = await create_room(alice, preset="public_chat")
    rules = f"{V3}/pushrules/global"
    resp = await alice.put(f"{rules}/room/{q(old)}", {"actions": ["notify"]})
    assert resp.code == 200, resp
    condition = {"kind": "event_match", "key": "room_id", "pattern": old}
    resp = await alice.put(
        f"{rules}/override/loud", {"actions": ["notify"], "conditions": [condition]}
    )
    assert resp.code == 200, resp
    resp = await alice.put(
        f"{rules}/override/off", {"actions": ["notify"], "conditions": [condition]}
    )
    assert resp.code == 200, resp
    resp = await alice.put(f"{rules}/override/off/enabled", {"enabled": False})
    assert resp.code == 200, resp

    resp = await upgrade(alice, old, {"new_version": "12"})
    assert resp.code == 200, resp
    new = resp.json["replacement_room"]
    resp = await alice.get(f"{rules}/room/{q(new)}")
    assert resp.code == 200, resp
    assert resp.json["actions"] == ["notify"]
    resp = await alice.get(f"{rules}/override/{q(f'loud-{new}')}")
    assert resp.code == 200, resp
    assert resp.json["conditions"] == [{**condition, "pattern": new}]
    assert (await alice.get(f"{rules}/override/{q(f'off-{new}')}")).code == 404
    # The old room's rules stay.
    assert (await alice.get(f"{rules}/room/{q(old)}")).code == 200
