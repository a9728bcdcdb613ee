"""The client's view of the other server, both ways between us and a real Synapse:
profiles, aliases, public room lists and the user directory."""

from __future__ import annotations

import uuid
from typing import Any

import pytest_twisted

from tests.federation.test_two_servers import wait_for_invite
from tests.interop.test_synapse import name, sleep, users, wait_joined
from tests.support.client import Client, q
from tests.support.server import RunningServer
from tests.support.synapse import SynapsePeer

V3 = "/_matrix/client/v3"


async def set_profile(client: Client, key: str, value: str) -> None:
    resp = await client.put(f"{V3}/profile/{q(client.user_id or '')}/{key}", {key: value})
    assert resp.code == 200, resp


async def get_json(client: Client, path: str, **kw: Any) -> Any:
    resp = await client.get(path, **kw)
    assert resp.code == 200, resp
    return resp.json


@pytest_twisted.ensureDeferred
async def test_profiles_both_ways(synapse: SynapsePeer, ours: RunningServer) -> None:
    s_user, o_user = await users(synapse, ours)
    await set_profile(s_user, "displayname", "Sam from Synapse")
    await set_profile(s_user, "avatar_url", "mxc://synapse/sam")
    await set_profile(o_user, "displayname", "Olga from ours")
    await set_profile(o_user, "avatar_url", "mxc://ours/olga")

    # Ours asks Synapse.
    profile = await get_json(o_user, f"{V3}/profile/{q(s_user.user_id or '')}")
    assert profile["displayname"] == "Sam from Synapse"
    assert profile["avatar_url"] == "mxc://synapse/sam"
    name_only = await get_json(o_user, f"{V3}/profile/{q(s_user.user_id or '')}/displayname")
    assert name_only == {"displayname": "Sam from Synapse"}
    nobody = f"@nobody-{uuid.uuid4().hex[:6]}:{synapse.server_name}"
    resp = await o_user.get(f"{V3}/profile/{q(nobody)}")
    assert resp.code == 404 and resp.json["errcode"] == "M_NOT_FOUND", resp

    # Synapse asks us.
    profile = await get_json(s_user, f"{V3}/profile/{q(o_user.user_id or '')}")
    assert profile["displayname"] == "Olga from ours"
    assert profile["avatar_url"] == "mxc://ours/olga"
    for key, value in (("displayname", "Olga from ours"), ("avatar_url", "mxc://ours/olga")):
        got = await get_json(s_user, f"{V3}/profile/{q(o_user.user_id or '')}/{key}")
        assert got == {key: value}
    nobody = f"@nobody:{ours.hs.server_name}"
    resp = await s_user.get(f"{V3}/profile/{q(nobody)}")
    assert resp.code == 404, resp


@pytest_twisted.ensureDeferred
async def test_aliases_both_ways(synapse: SynapsePeer, ours: RunningServer) -> None:
    s_user, o_user = await users(synapse, ours)
    s_local, o_local = name(), name()
    resp = await s_user.post(
        f"{V3}/createRoom", {"preset": "public_chat", "room_alias_name": s_local}
    )
    assert resp.code == 200, resp
    s_room, s_alias = resp.json["room_id"], f"#{s_local}:{synapse.server_name}"
    resp = await o_user.post(
        f"{V3}/createRoom", {"preset": "public_chat", "room_alias_name": o_local}
    )
    assert resp.code == 200, resp
    o_room, o_alias = resp.json["room_id"], resp.json["room_alias"]

    got = await get_json(o_user, f"{V3}/directory/room/{q(s_alias)}")
    assert got["room_id"] == s_room and synapse.server_name in got["servers"]
    got = await get_json(s_user, f"{V3}/directory/room/{q(o_alias)}")
    assert got["room_id"] == o_room and ours.hs.server_name in got["servers"]
    missing = f"#missing-{name()}:{synapse.server_name}"
    resp = await o_user.get(f"{V3}/directory/room/{q(missing)}")
    assert resp.code == 404 and resp.json["errcode"] == "M_NOT_FOUND", resp


@pytest_twisted.ensureDeferred
async def test_public_room_lists_both_ways(synapse: SynapsePeer, ours: RunningServer) -> None:
    s_user, o_user = await users(synapse, ours)
    tag = name()
    resp = await s_user.post(
        f"{V3}/createRoom", {"visibility": "public", "name": f"Synapse lobby {tag}"}
    )
    assert resp.code == 200, resp
    s_room = resp.json["room_id"]
    resp = await s_user.post(
        f"{V3}/createRoom",
        {
            "visibility": "public",
            "name": f"Synapse space {tag}",
            "creation_content": {"type": "m.space"},
        },
    )
    s_space = resp.json["room_id"]
    resp = await o_user.post(
        f"{V3}/createRoom", {"visibility": "public", "name": f"Our lobby {tag}", "topic": "t"}
    )
    assert resp.code == 200, resp
    o_room = resp.json["room_id"]

    # Ours lists Synapse's rooms (GET, then POST with a filter: MSC2197 on Synapse's side).
    listed = await get_json(o_user, f"{V3}/publicRooms", params={"server": synapse.server_name})
    assert {s_room, s_space} <= {r["room_id"] for r in listed["chunk"]}
    resp = await o_user.post(
        f"{V3}/publicRooms",
        {"filter": {"generic_search_term": f"lobby {tag}"}},
        params={"server": synapse.server_name},
    )
    assert resp.code == 200, resp
    assert [r["room_id"] for r in resp.json["chunk"]] == [s_room]
    resp = await o_user.post(
        f"{V3}/publicRooms",
        {"filter": {"room_types": ["m.space"], "generic_search_term": tag}},
        params={"server": synapse.server_name},
    )
    assert [r["room_id"] for r in resp.json["chunk"]] == [s_space], resp

    # Synapse lists ours.
    listed = await get_json(s_user, f"{V3}/publicRooms", params={"server": ours.hs.server_name})
    ours_entry = next(r for r in listed["chunk"] if r["room_id"] == o_room)
    assert ours_entry["name"] == f"Our lobby {tag}" and ours_entry["topic"] == "t"
    resp = await s_user.post(
        f"{V3}/publicRooms",
        {"filter": {"generic_search_term": tag}, "limit": 5},
        params={"server": ours.hs.server_name},
    )
    assert resp.code == 200, resp
    assert [r["room_id"] for r in resp.json["chunk"]] == [o_room]


@pytest_twisted.ensureDeferred
async def test_user_directory_shows_a_synapse_room_mate(
    synapse: SynapsePeer, ours: RunningServer
) -> None:
    s_user, o_user = await users(synapse, ours)
    word = "zq" + uuid.uuid4().hex[:6]
    await set_profile(s_user, "displayname", f"Sam {word}")
    resp = await o_user.post(f"{V3}/user_directory/search", {"search_term": word})
    assert resp.json["results"] == [], resp

    resp = await o_user.post(
        f"{V3}/createRoom", {"preset": "private_chat", "invite": [s_user.user_id]}
    )
    assert resp.code == 200, resp
    room_id = resp.json["room_id"]
    await wait_for_invite(s_user, room_id)
    resp = await s_user.post(f"{V3}/rooms/{q(room_id)}/join", {})
    assert resp.code == 200, resp
    await wait_joined(o_user, room_id, s_user.user_id or "")
    for _ in range(50):
        resp = await o_user.post(f"{V3}/user_directory/search", {"search_term": word})
        assert resp.code == 200, resp
        if resp.json["results"]:
            break
        await sleep(0.2)
    assert resp.json["results"] == [{"user_id": s_user.user_id, "display_name": f"Sam {word}"}]
