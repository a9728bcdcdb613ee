"""POST /createRoom over HTTP: presets, aliases, initial state, versions, event order."""

from __future__ import annotations

from typing import Any

import pytest
import pytest_twisted

from tests.rooms.helpers import (
    V3,
    all_events,
    assert_error,
    create_room,
    get_state,
    sync,
    user,
)
from tests.support.client import Client, q
from tests.support.server import RunningServer


async def state_content(client: Client, room_id: str, event_type: str, key: str = "") -> Any:
    resp = await get_state(client, room_id, event_type, key)
    assert resp.code == 200, resp
    return resp.json


@pytest.mark.parametrize(
    ("preset", "join_rule", "history", "guest", "invite_level"),
    [
        ("private_chat", "invite", "shared", "can_join", 0),
        ("trusted_private_chat", "invite", "shared", "can_join", 0),
        ("public_chat", "public", "shared", None, 50),
    ],
)
@pytest_twisted.ensureDeferred
async def test_preset_sets_join_rules_history_guest_access_and_power_levels(
    server: RunningServer,
    preset: str,
    join_rule: str,
    history: str,
    guest: str | None,
    invite_level: int,
) -> None:
    alice = await user(server, "alice")
    room_id = await create_room(alice, preset=preset, room_version="11")
    assert (await state_content(alice, room_id, "m.room.join_rules"))["join_rule"] == join_rule
    hv = await state_content(alice, room_id, "m.room.history_visibility")
    assert hv["history_visibility"] == history
    if guest is None:
        # "forbidden", the default without the event: none is sent (as Synapse).
        resp = await get_state(alice, room_id, "m.room.guest_access")
        assert resp.code == 404, resp
    else:
        ga = await state_content(alice, room_id, "m.room.guest_access")
        assert ga["guest_access"] == guest
    pl = await state_content(alice, room_id, "m.room.power_levels")
    assert pl["invite"] == invite_level
    assert pl["users"] == {alice.user_id: 100}
    assert pl["events"]["m.room.power_levels"] == 100
    assert pl["events"]["m.room.tombstone"] == 100
    assert pl["state_default"] == 50 and pl["events_default"] == 0


@pytest.mark.parametrize("room_version", ["10", "11"])
@pytest_twisted.ensureDeferred
async def test_trusted_private_chat_gives_invitees_creator_power(
    server: RunningServer, room_version: str
) -> None:
    alice = await user(server, "alice")
    bob = await user(server, "bob")
    room_id = await create_room(
        alice, preset="trusted_private_chat", invite=[bob.user_id], room_version=room_version
    )
    pl = await state_content(alice, room_id, "m.room.power_levels")
    assert pl["users"] == {alice.user_id: 100, bob.user_id: 100}


@pytest_twisted.ensureDeferred
async def test_trusted_private_chat_v12_makes_invitees_additional_creators(
    server: RunningServer,
) -> None:
    alice = await user(server, "alice")
    bob = await user(server, "bob")
    room_id = await create_room(
        alice, preset="trusted_private_chat", invite=[bob.user_id], room_version="12"
    )
    create = await state_content(alice, room_id, "m.room.create")
    assert create["additional_creators"] == [bob.user_id]
    pl = await state_content(alice, room_id, "m.room.power_levels")
    assert pl["users"] == {}


@pytest_twisted.ensureDeferred
async def test_default_preset_follows_visibility(server: RunningServer) -> None:
    alice = await user(server, "alice")
    for visibility, join_rule in (("public", "public"), ("private", "invite"), (None, "invite")):
        body: dict[str, Any] = {}
        if visibility is not None:
            body["visibility"] = visibility
        room_id = await create_room(alice, **body)
        rules = await state_content(alice, room_id, "m.room.join_rules")
        assert rules["join_rule"] == join_rule
        resp = await alice.get(f"{V3}/directory/list/room/{q(room_id)}")
        assert resp.code == 200, resp
        assert resp.json == {"visibility": visibility or "private"}
        public = await alice.get(f"{V3}/publicRooms")
        assert public.code == 200, public
        listed = [r["room_id"] for r in public.json["chunk"]]
        assert (room_id in listed) == (visibility == "public")


@pytest_twisted.ensureDeferred
async def test_bad_visibility_and_preset_are_rejected(server: RunningServer) -> None:
    alice = await user(server, "alice")
    resp = await alice.post(f"{V3}/createRoom", {"visibility": "everyone"})
    assert_error(resp, 400, "M_BAD_JSON")
    resp = await alice.post(f"{V3}/createRoom", {"preset": "party"})
    assert_error(resp, 400, "M_BAD_JSON")
    resp = await alice.post(f"{V3}/createRoom", {"name": 5})
    assert_error(resp, 400, "M_BAD_JSON")
    resp = await alice.post(f"{V3}/createRoom", {"invite": ["not-a-user"]})
    assert_error(resp, 400, "M_INVALID_PARAM")
    resp = await alice.post(f"{V3}/createRoom", {"initial_state": [{"type": "x"}]})
    assert_error(resp, 400, "M_BAD_JSON")
    resp = await alice.post(f"{V3}/createRoom", raw=b"not json")
    assert_error(resp, 400, "M_NOT_JSON")
    resp = await server.client().post(f"{V3}/createRoom", {})
    assert_error(resp, 401, "M_MISSING_TOKEN")


@pytest_twisted.ensureDeferred
async def test_room_alias_name_creates_alias_and_canonical_alias(server: RunningServer) -> None:
    alice = await user(server, "alice")
    resp = await alice.post(f"{V3}/createRoom", {"room_alias_name": "lounge"})
    assert resp.code == 200, resp
    room_id = resp.json["room_id"]
    assert resp.json["room_alias"] == "#lounge:test.local"
    resp = await alice.get(f"{V3}/directory/room/{q('#lounge:test.local')}")
    assert resp.code == 200, resp
    assert resp.json["room_id"] == room_id
    assert resp.json["servers"] == ["test.local"]
    canonical = await state_content(alice, room_id, "m.room.canonical_alias")
    assert canonical == {"alias": "#lounge:test.local"}


@pytest_twisted.ensureDeferred
async def test_room_alias_name_reuse_is_room_in_use_and_creates_no_room(
    server: RunningServer,
) -> None:
    alice = await user(server, "alice")
    await create_room(alice, room_alias_name="taken")
    resp = await alice.get(f"{V3}/joined_rooms")
    before = resp.json["joined_rooms"]
    resp = await alice.post(f"{V3}/createRoom", {"room_alias_name": "taken"})
    assert_error(resp, 400, "M_ROOM_IN_USE")
    resp = await alice.get(f"{V3}/joined_rooms")
    assert resp.json["joined_rooms"] == before


@pytest_twisted.ensureDeferred
async def test_concurrent_creates_with_one_alias_name_give_one_room(
    server: RunningServer,
) -> None:
    from twisted.internet import defer

    alice = await user(server, "alice")
    results = await defer.gatherResults(
        [
            defer.ensureDeferred(alice.post(f"{V3}/createRoom", {"room_alias_name": "race"}))
            for _ in range(3)
        ]
    )
    codes = sorted(r.code for r in results)
    assert codes == [200, 400, 400], results
    winner = next(r for r in results if r.code == 200)
    resp = await alice.get(f"{V3}/directory/room/{q('#race:test.local')}")
    assert resp.json["room_id"] == winner.json["room_id"]


@pytest_twisted.ensureDeferred
async def test_room_alias_name_with_invalid_characters_is_rejected(server: RunningServer) -> None:
    alice = await user(server, "alice")
    for bad in ["a:b", "a b", "#a", "a\tb", "x" * 300]:
        resp = await alice.post(f"{V3}/createRoom", {"room_alias_name": bad})
        assert_error(resp, 400, "M_INVALID_PARAM")
    resp = await alice.get(f"{V3}/joined_rooms")
    assert resp.json["joined_rooms"] == []


@pytest_twisted.ensureDeferred
async def test_name_topic_invite_and_is_direct(server: RunningServer) -> None:
    alice = await user(server, "alice")
    bob = await user(server, "bob")
    room_id = await create_room(
        alice, name="Room name", topic="About things", invite=[bob.user_id], is_direct=True
    )
    assert await state_content(alice, room_id, "m.room.name") == {"name": "Room name"}
    topic = await state_content(alice, room_id, "m.room.topic")
    assert topic == {
        "topic": "About things",
        "m.topic": {"m.text": [{"body": "About things", "mimetype": "text/plain"}]},
    }
    member = await state_content(alice, room_id, "m.room.member", bob.user_id)
    assert member["membership"] == "invite"
    assert member["is_direct"] is True
    body = await sync(bob)
    assert room_id in body["rooms"]["invite"]
    stripped = body["rooms"]["invite"][room_id]["invite_state"]["events"]
    mine = [e for e in stripped if e["type"] == "m.room.member" and e["state_key"] == bob.user_id]
    assert mine and mine[0]["content"]["is_direct"] is True


@pytest_twisted.ensureDeferred
async def test_invite_without_is_direct_has_no_flag(server: RunningServer) -> None:
    alice = await user(server, "alice")
    bob = await user(server, "bob")
    room_id = await create_room(alice, invite=[bob.user_id])
    member = await state_content(alice, room_id, "m.room.member", bob.user_id)
    assert "is_direct" not in member


@pytest_twisted.ensureDeferred
async def test_invite_of_unknown_local_user_fails_create(server: RunningServer) -> None:
    alice = await user(server, "alice")
    resp = await alice.post(f"{V3}/createRoom", {"invite": ["@ghost:test.local"]})
    assert_error(resp, 404, "M_NOT_FOUND")
    resp = await alice.get(f"{V3}/joined_rooms")
    assert resp.json["joined_rooms"] == []  # no half-made room left behind


@pytest_twisted.ensureDeferred
async def test_initial_state_overrides_preset_and_is_overridden_by_name(
    server: RunningServer,
) -> None:
    alice = await user(server, "alice")
    room_id = await create_room(
        alice,
        preset="private_chat",
        name="From name",
        initial_state=[
            {"type": "m.room.join_rules", "content": {"join_rule": "public"}},
            {"type": "m.room.name", "state_key": "", "content": {"name": "From initial_state"}},
            {"type": "com.example.custom", "state_key": "k1", "content": {"n": 1}},
            {"type": "com.example.custom", "state_key": "k2", "content": {"n": 2}},
        ],
    )
    assert (await state_content(alice, room_id, "m.room.join_rules"))["join_rule"] == "public"
    assert await state_content(alice, room_id, "m.room.name") == {"name": "From name"}
    assert await state_content(alice, room_id, "com.example.custom", "k2") == {"n": 2}
    events = await all_events(alice, room_id)
    types = [(e["type"], e.get("state_key")) for e in events]
    # The preset's join rules event is replaced by the initial_state one, not sent too.
    assert types.count(("m.room.join_rules", "")) == 1
    # initial_state in its order, then name.
    i1 = types.index(("m.room.name", ""))
    k1 = types.index(("com.example.custom", "k1"))
    k2 = types.index(("com.example.custom", "k2"))
    assert i1 < k1 < k2
    assert types[-1] == ("m.room.name", "")


@pytest_twisted.ensureDeferred
async def test_initial_state_history_visibility_overrides_preset(server: RunningServer) -> None:
    alice = await user(server, "alice")
    room_id = await create_room(
        alice,
        preset="public_chat",
        initial_state=[
            {"type": "m.room.history_visibility", "content": {"history_visibility": "joined"}},
            {"type": "m.room.guest_access", "content": {"guest_access": "can_join"}},
        ],
    )
    hv = await state_content(alice, room_id, "m.room.history_visibility")
    assert hv == {"history_visibility": "joined"}
    ga = await state_content(alice, room_id, "m.room.guest_access")
    assert ga == {"guest_access": "can_join"}


@pytest_twisted.ensureDeferred
async def test_creation_content_is_merged_but_cannot_set_version(server: RunningServer) -> None:
    alice = await user(server, "alice")
    room_id = await create_room(
        alice,
        room_version="10",
        creation_content={"m.federate": False, "room_version": "1", "creator": "@x:y"},
    )
    create = await state_content(alice, room_id, "m.room.create")
    assert create["m.federate"] is False
    assert create["room_version"] == "10"
    assert create["creator"] == alice.user_id


@pytest_twisted.ensureDeferred
async def test_creation_content_type_makes_a_space(server: RunningServer) -> None:
    alice = await user(server, "alice")
    room_id = await create_room(alice, creation_content={"type": "m.space"}, visibility="public")
    create = await state_content(alice, room_id, "m.room.create")
    assert create["type"] == "m.space"
    assert "creator" not in create  # v11+ (default 12) has no creator key
    public = await alice.get(f"{V3}/publicRooms")
    entry = next(r for r in public.json["chunk"] if r["room_id"] == room_id)
    assert entry["room_type"] == "m.space"


@pytest_twisted.ensureDeferred
async def test_power_level_content_override(server: RunningServer) -> None:
    alice = await user(server, "alice")
    bob = await user(server, "bob")
    room_id = await create_room(
        alice,
        room_version="11",
        power_level_content_override={
            "users": {alice.user_id: 100, bob.user_id: 50},
            "events_default": 20,
            "kick": 75,
        },
    )
    pl = await state_content(alice, room_id, "m.room.power_levels")
    assert pl["users"] == {alice.user_id: 100, bob.user_id: 50}
    assert pl["events_default"] == 20
    assert pl["kick"] == 75
    assert pl["ban"] == 50  # untouched default


@pytest_twisted.ensureDeferred
async def test_power_level_override_that_locks_out_creator_is_rejected(
    server: RunningServer,
) -> None:
    alice = await user(server, "alice")
    resp = await alice.post(
        f"{V3}/createRoom",
        {
            "room_version": "11",
            "name": "x",
            "power_level_content_override": {"users": {alice.user_id: 0}},
        },
    )
    assert resp.code in (400, 403), resp


@pytest_twisted.ensureDeferred
async def test_supported_room_versions(server: RunningServer) -> None:
    alice = await user(server, "alice")
    for room_version in ("10", "11", "12"):
        room_id = await create_room(alice, room_version=room_version)
        create = await state_content(alice, room_id, "m.room.create")
        assert create["room_version"] == room_version
        if room_version == "10":
            assert create["creator"] == alice.user_id
        else:
            assert "creator" not in create


@pytest_twisted.ensureDeferred
async def test_default_room_version_is_12(server: RunningServer) -> None:
    alice = await user(server, "alice")
    room_id = await create_room(alice)
    create = await state_content(alice, room_id, "m.room.create")
    assert create["room_version"] == "12"


@pytest_twisted.ensureDeferred
async def test_unsupported_room_version(server: RunningServer) -> None:
    alice = await user(server, "alice")
    for room_version in ("0", "13", "banana", "1.0"):
        resp = await alice.post(f"{V3}/createRoom", {"room_version": room_version})
        assert_error(resp, 400, "M_UNSUPPORTED_ROOM_VERSION")
    resp = await alice.post(f"{V3}/createRoom", {"room_version": 11})
    assert_error(resp, 400, "M_BAD_JSON")


@pytest.mark.parametrize("room_version", ["10", "12"])
@pytest_twisted.ensureDeferred
async def test_initial_events_are_in_the_spec_order(
    server: RunningServer, room_version: str
) -> None:
    alice = await user(server, "alice")
    bob = await user(server, "bob")
    room_id = await create_room(
        alice,
        room_version=room_version,
        room_alias_name="ordered",
        preset="public_chat",
        initial_state=[{"type": "m.room.avatar", "content": {"url": "mxc://a/b"}}],
        name="N",
        topic="T",
        invite=[bob.user_id],
    )
    expected = [
        ("m.room.create", ""),
        ("m.room.member", alice.user_id),
        ("m.room.power_levels", ""),
        ("m.room.canonical_alias", ""),
        ("m.room.join_rules", ""),
        ("m.room.history_visibility", ""),
        # (no m.room.guest_access: public_chat's "forbidden" is the default, as Synapse)
        ("m.room.avatar", ""),
        ("m.room.name", ""),
        ("m.room.topic", ""),
        ("m.room.member", bob.user_id),
    ]
    events = await all_events(alice, room_id)
    assert [(e["type"], e.get("state_key")) for e in events] == expected
    # The same order in the creator's initial /sync timeline (large enough limit).
    body = await sync(alice, filter={"room": {"timeline": {"limit": 50}}})
    tl = body["rooms"]["join"][room_id]["timeline"]
    assert [(e["type"], e.get("state_key")) for e in tl["events"]] == expected
    assert tl["limited"] is False
    # Depths strictly increase: one line of events.
    fed = await sync(
        alice, filter={"event_format": "federation", "room": {"timeline": {"limit": 50}}}
    )
    pdus = fed["rooms"]["join"][room_id]["timeline"]["events"]
    depths = [p["depth"] for p in pdus]
    assert depths == sorted(depths) and len(set(depths)) == len(depths)
    for prev, nxt in zip(pdus, pdus[1:], strict=False):
        assert nxt["prev_events"] == [prev["event_id"]]


@pytest_twisted.ensureDeferred
async def test_v12_room_id_is_the_create_event_hash(server: RunningServer) -> None:
    alice = await user(server, "alice")
    room_id = await create_room(alice, room_version="12")
    assert room_id.startswith("!") and ":" not in room_id
    resp = await get_state(alice, room_id, "m.room.create", fmt="event")
    assert resp.code == 200, resp
    create = resp.json
    assert create["event_id"] == "$" + room_id[1:]
    # Clients always get a room_id (ClientEvent requires it), the derived one.
    assert create["room_id"] == room_id
    assert create["sender"] == alice.user_id
    # The PDU itself has no room_id; no event lists the create event as an auth event.
    fed = await sync(
        alice, filter={"event_format": "federation", "room": {"timeline": {"limit": 50}}}
    )
    pdus = fed["rooms"]["join"][room_id]["timeline"]["events"]
    create_pdu = next(p for p in pdus if p["type"] == "m.room.create")
    assert "room_id" not in create_pdu
    for pdu in pdus:
        if pdu["type"] != "m.room.create":
            assert pdu["room_id"] == room_id
            assert create["event_id"] not in pdu["auth_events"]


@pytest_twisted.ensureDeferred
async def test_v11_room_id_has_server_part_and_create_event_has_room_id(
    server: RunningServer,
) -> None:
    alice = await user(server, "alice")
    room_id = await create_room(alice, room_version="11")
    assert room_id.endswith(":test.local")
    resp = await get_state(alice, room_id, "m.room.create", fmt="event")
    assert resp.json["room_id"] == room_id
    assert resp.json["event_id"] != "$" + room_id[1:]


@pytest_twisted.ensureDeferred
async def test_v12_creator_not_in_power_levels_and_tombstone_above_state_default(
    server: RunningServer,
) -> None:
    alice = await user(server, "alice")
    room_id = await create_room(alice, room_version="12")
    pl = await state_content(alice, room_id, "m.room.power_levels")
    assert alice.user_id not in pl["users"]
    assert pl["events"]["m.room.tombstone"] == 150
    assert pl["events"]["m.room.tombstone"] > pl["state_default"]
    # The creator still has power (infinite): may change power levels.
    resp = await alice.put(f"{V3}/rooms/{q(room_id)}/state/m.room.power_levels", {**pl, "kick": 60})
    assert resp.code == 200, resp


@pytest_twisted.ensureDeferred
async def test_create_room_response_and_creator_membership(server: RunningServer) -> None:
    alice = await user(server, "alice")
    await alice.put(f"{V3}/profile/{q(alice.user_id)}/displayname", {"displayname": "Alice A"})
    room_id = await create_room(alice)
    member = await state_content(alice, room_id, "m.room.member", alice.user_id)
    assert member == {"membership": "join", "displayname": "Alice A"}
    resp = await alice.get(f"{V3}/joined_rooms")
    assert room_id in resp.json["joined_rooms"]


@pytest_twisted.ensureDeferred
async def test_power_levels_in_initial_state_replace_the_defaults(server: RunningServer) -> None:
    alice = await user(server, "alice")
    pl = {
        "users": {alice.user_id: 100},
        "events_default": 10,
        "state_default": 60,
        "invite": 30,
    }
    room_id = await create_room(
        alice,
        room_version="11",
        initial_state=[{"type": "m.room.power_levels", "state_key": "", "content": pl}],
        power_level_content_override={"kick": 70},
    )
    got = await state_content(alice, room_id, "m.room.power_levels")
    assert got == {**pl, "kick": 70}
    events = await all_events(alice, room_id)
    assert [e["type"] for e in events].count("m.room.power_levels") == 1


@pytest_twisted.ensureDeferred
async def test_preset_state_only_replaced_by_empty_state_key(server: RunningServer) -> None:
    alice = await user(server, "alice")
    room_id = await create_room(
        alice,
        preset="public_chat",
        initial_state=[
            {"type": "m.room.join_rules", "state_key": "odd", "content": {"join_rule": "invite"}}
        ],
    )
    assert (await state_content(alice, room_id, "m.room.join_rules"))["join_rule"] == "public"
