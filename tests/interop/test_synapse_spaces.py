"""Spaces and room upgrades between our server and a real Synapse."""

from __future__ import annotations

from typing import Any

import pytest
import pytest_twisted

from tests.interop.test_synapse import name, sleep, users, wait_joined
from tests.support.client import Client, Response, q
from tests.support.server import RunningServer
from tests.support.synapse import SynapsePeer

V1 = "/_matrix/client/v1"
V3 = "/_matrix/client/v3"


async def create(client: Client, **body: Any) -> str:
    resp = await client.post(f"{V3}/createRoom", body)
    assert resp.code == 200, resp
    return str(resp.json["room_id"])


async def add_child(client: Client, space_id: str, child_id: str, via: str) -> None:
    resp = await client.put(
        f"{V3}/rooms/{q(space_id)}/state/m.space.child/{q(child_id)}", {"via": [via]}
    )
    assert resp.code == 200, resp


async def hierarchy(client: Client, room_id: str, **params: str) -> Response:
    resp = await client.get(f"{V1}/rooms/{q(room_id)}/hierarchy", params=params)
    assert resp.code == 200, resp
    return resp


async def space_tree(
    owner: Client, children_owner: Client, server: str, prefix: str
) -> tuple[str, str, str, str, str]:
    """A public space of ``owner`` whose children (on ``server``) are a public sub-space
    (holding a public room and the private one), a public room and a private room:
    (space, sub-space, deep room, private room, public room)."""
    space = await create(owner, preset="public_chat", creation_content={"type": "m.space"})
    sub = await create(
        children_owner,
        preset="public_chat",
        name=f"{prefix} sub",
        creation_content={"type": "m.space"},
    )
    deep = await create(children_owner, preset="public_chat", name=f"{prefix} deep")
    secret = await create(
        children_owner, name=f"{prefix} secret name", topic=f"{prefix} secret topic"
    )
    open_room = await create(
        children_owner, preset="public_chat", name=f"{prefix} open", topic="come in"
    )
    await add_child(children_owner, sub, deep, server)
    await add_child(children_owner, sub, secret, server)
    for child in (sub, open_room, secret):
        await add_child(owner, space, child, server)
    return space, sub, deep, secret, open_room


async def wait_for_tombstone(client: Client, old: str, new: str) -> None:
    """Until ``client``'s server holds the old room's tombstone, pointing at ``new``."""
    tombstone: Any = None
    for _ in range(75):
        tombstone = await client.get(f"{V3}/rooms/{q(old)}/state/m.room.tombstone/")
        if tombstone.code == 200:
            break
        await sleep(0.2)
    assert tombstone.code == 200, tombstone
    assert tombstone.json["replacement_room"] == new


def room_ids(resp: Response) -> list[str]:
    return [r["room_id"] for r in resp.json["rooms"]]


@pytest_twisted.ensureDeferred
async def test_our_user_walks_a_space_whose_children_live_on_synapse(
    synapse: SynapsePeer, ours: RunningServer
) -> None:
    s_user, o_user = await users(synapse, ours)
    s_name = synapse.server_name
    space, s_sub, s_deep, s_secret, s_open = await space_tree(o_user, s_user, s_name, "S")

    resp = await hierarchy(o_user, space)
    assert room_ids(resp) == [space, s_sub, s_deep, s_open]
    rooms = {r["room_id"]: r for r in resp.json["rooms"]}
    assert rooms[s_open]["name"] == "S open" and rooms[s_open]["topic"] == "come in"
    assert rooms[s_sub]["room_type"] == "m.space"
    assert {e["state_key"] for e in rooms[s_sub]["children_state"]} == {s_deep, s_secret}
    assert "S secret" not in resp.raw.decode()
    assert room_ids(await hierarchy(o_user, space, max_depth="1")) == [space, s_sub, s_open]

    # /room_summary of a room only Synapse holds.
    resp = await o_user.get(f"{V1}/room_summary/{q(s_open)}", params={"via": s_name})
    assert resp.code == 200, resp
    assert resp.json["name"] == "S open"
    assert resp.json["join_rule"] == "public"
    assert resp.json["membership"] == "leave"
    resp = await o_user.get(f"{V1}/room_summary/{q(s_secret)}", params={"via": s_name})
    assert resp.code == 404, resp
    assert "S secret" not in resp.raw.decode()
    # By Synapse's alias: the alias query names the server to ask.
    alias = f"#{name()}:{s_name}"
    resp = await s_user.put(f"{V3}/directory/room/{q(alias)}", {"room_id": s_open})
    assert resp.code == 200, resp
    resp = await o_user.get(f"{V1}/room_summary/{q(alias)}")
    assert resp.code == 200, resp
    assert resp.json["room_id"] == s_open and resp.json["name"] == "S open"


@pytest_twisted.ensureDeferred
async def test_synapse_user_walks_our_space_whose_children_live_here(
    synapse: SynapsePeer, ours: RunningServer
) -> None:
    s_user, o_user = await users(synapse, ours)
    o_name = ours.hs.server_name
    space, sub, deep, secret, open_room = await space_tree(o_user, o_user, o_name, "O")
    resp = await s_user.post(f"{V3}/join/{q(space)}", {}, params={"server_name": o_name})
    assert resp.code == 200, resp
    await wait_joined(o_user, space, s_user.user_id)

    ids: list[str] = []
    for _ in range(50):
        resp = await hierarchy(s_user, space)
        ids = room_ids(resp)
        if len(ids) >= 4:
            break
        await sleep(0.2)
    assert ids == [space, sub, deep, open_room], resp.json
    rooms = {r["room_id"]: r for r in resp.json["rooms"]}
    assert rooms[open_room]["name"] == "O open" and rooms[open_room]["topic"] == "come in"
    assert "O secret" not in resp.raw.decode()

    resp = await s_user.get(f"{V1}/room_summary/{q(open_room)}", params={"via": o_name})
    assert resp.code == 200, resp
    assert resp.json["name"] == "O open"
    resp = await s_user.get(f"{V1}/room_summary/{q(secret)}", params={"via": o_name})
    assert resp.code == 404, resp
    assert "O secret" not in resp.raw.decode()


@pytest.mark.parametrize(("old_version", "new_version"), [("10", "11"), ("11", "12")])
@pytest_twisted.ensureDeferred
async def test_synapse_user_follows_our_room_upgrade(
    synapse: SynapsePeer, ours: RunningServer, old_version: str, new_version: str
) -> None:
    s_user, o_user = await users(synapse, ours)
    o_name = ours.hs.server_name
    old = await create(o_user, room_version=old_version, preset="public_chat", name="Before")
    resp = await s_user.post(f"{V3}/join/{q(old)}", {}, params={"server_name": o_name})
    assert resp.code == 200, resp
    await wait_joined(o_user, old, s_user.user_id)

    resp = await o_user.post(f"{V3}/rooms/{q(old)}/upgrade", {"new_version": new_version})
    assert resp.code == 200, resp
    new = resp.json["replacement_room"]

    await wait_for_tombstone(s_user, old, new)
    # Synapse sees the old room restricted to moderators too.
    pl = await s_user.get(f"{V3}/rooms/{q(old)}/state/m.room.power_levels/")
    assert pl.json["events_default"] == 50

    resp = await s_user.post(f"{V3}/join/{q(new)}", {}, params={"server_name": o_name})
    assert resp.code == 200, resp
    await wait_joined(o_user, new, s_user.user_id)
    create_event = await s_user.get(f"{V3}/rooms/{q(new)}/state/m.room.create/")
    assert create_event.code == 200, create_event
    predecessor = create_event.json["predecessor"]
    assert predecessor["room_id"] == old
    if new_version == "12":
        assert "event_id" not in predecessor
    else:
        full = await s_user.get(f"{V3}/rooms/{q(old)}/state/m.room.tombstone/")
        assert full.code == 200
        state = await s_user.get(f"{V3}/rooms/{q(old)}/state")
        ids = [e["event_id"] for e in state.json if e["type"] == "m.room.tombstone"]
        assert predecessor["event_id"] == ids[0]
    name = await s_user.get(f"{V3}/rooms/{q(new)}/state/m.room.name/")
    assert name.json == {"name": "Before"}
    resp = await s_user.put(
        f"{V3}/rooms/{q(new)}/send/m.room.message/t1", {"msgtype": "m.text", "body": "moved"}
    )
    assert resp.code == 200, resp


@pytest_twisted.ensureDeferred
async def test_our_user_follows_a_synapse_room_upgrade(
    synapse: SynapsePeer, ours: RunningServer
) -> None:
    s_user, o_user = await users(synapse, ours)
    s_name = synapse.server_name
    old = await create(s_user, room_version="11", preset="public_chat", name="Theirs")
    resp = await o_user.post(f"{V3}/join/{q(old)}", {}, params={"via": s_name})
    assert resp.code == 200, resp
    resp = await s_user.post(f"{V3}/rooms/{q(old)}/upgrade", {"new_version": "12"})
    assert resp.code == 200, resp
    new = resp.json["replacement_room"]

    await wait_for_tombstone(o_user, old, new)
    # Our user can see a summary of the new room before joining it, then join it.
    resp = await o_user.get(f"{V1}/room_summary/{q(new)}", params={"via": s_name})
    assert resp.code == 200, resp
    assert resp.json["name"] == "Theirs" and resp.json["room_version"] == "12"
    resp = await o_user.post(f"{V3}/join/{q(new)}", {}, params={"via": s_name})
    assert resp.code == 200, resp
    create_event = await o_user.get(f"{V3}/rooms/{q(new)}/state/m.room.create/")
    assert create_event.json["predecessor"]["room_id"] == old
