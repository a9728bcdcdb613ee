"""Spaces across two of our servers: /hierarchy and /room_summary follow children (and
rooms) we are not in over federation, and show only what the requester may see."""

from __future__ import annotations

from typing import Any

import pytest_twisted

from tests.federation.test_two_servers import sleep
from tests.rooms.helpers import assert_error, create_room, invite, put_state
from tests.support.client import Client, q
from tests.support.server import RunningServer

V1 = "/_matrix/client/v1"


async def hierarchy_ids(client: Client, room_id: str, **params: str) -> list[str]:
    resp = await client.get(f"{V1}/rooms/{q(room_id)}/hierarchy", params=params)
    assert resp.code == 200, resp
    return [r["room_id"] for r in resp.json["rooms"]]


async def add_child(client: Client, space_id: str, child_id: str, server: str) -> None:
    resp = await put_state(client, space_id, "m.space.child", {"via": [server]}, child_id)
    assert resp.code == 200, resp


async def alice_and_bob(servers: tuple[RunningServer, RunningServer]) -> tuple[Client, Client]:
    """@alice registered on the first server, @bob on the second."""
    alice, bob = servers[0].client(), servers[1].client()
    await alice.register("alice")
    await bob.register("bob")
    return alice, bob


@pytest_twisted.ensureDeferred
async def test_hierarchy_and_summary_of_rooms_only_on_the_other_server(
    two_servers: tuple[RunningServer, RunningServer],
) -> None:
    a, b = two_servers
    alice, bob = await alice_and_bob(two_servers)
    b_name = b.hs.server_name

    # The space lives on A (bob joins it); its children only on B.
    space = await create_room(alice, preset="public_chat", creation_content={"type": "m.space"})
    sub = await create_room(
        bob, preset="public_chat", name="Sub", creation_content={"type": "m.space"}
    )
    open_room = await create_room(bob, preset="public_chat", name="Open", topic="welcome")
    secret = await create_room(bob, name="Secret plans", topic="do not read")
    deep = await create_room(bob, preset="public_chat", name="Deep")
    invited = await create_room(bob, name="Invited")
    await add_child(bob, sub, deep, b_name)
    await add_child(bob, sub, secret, b_name)
    resp = await bob.post(
        f"/_matrix/client/v3/join/{q(space)}", {}, params={"via": a.hs.server_name}
    )
    assert resp.code == 200, resp
    for child in (sub, open_room, secret, invited):
        await add_child(alice, space, child, b_name)

    resp = await alice.get(f"{V1}/rooms/{q(space)}/hierarchy")
    assert resp.code == 200, resp
    rooms = {r["room_id"]: r for r in resp.json["rooms"]}
    assert list(rooms) == [space, sub, deep, open_room]
    assert rooms[open_room]["name"] == "Open" and rooms[open_room]["topic"] == "welcome"
    assert [e["state_key"] for e in rooms[sub]["children_state"]] == [deep, secret]
    body = resp.raw.decode()
    assert "Secret plans" not in body and "do not read" not in body
    assert "Invited" not in body
    assert await hierarchy_ids(alice, space, max_depth="1") == [space, sub, open_room]

    # The federation answer itself leaks nothing: B says the secret room is inaccessible.
    fed = await a.hs.federation.client.get_json(
        b_name, f"/_matrix/federation/v1/hierarchy/{q(sub)}", {"suggested_only": "false"}
    )
    assert [c["room_id"] for c in fed["children"]] == [deep]
    assert fed["inaccessible_children"] == [secret]
    assert fed["room"]["room_id"] == sub
    assert "Secret plans" not in str(fed)

    # Once invited, alice sees the invite-only child (its server says so only to her).
    assert (await invite(bob, invited, alice.user_id)).code == 200
    for _ in range(50):
        ids = await hierarchy_ids(alice, space)
        if invited in ids:
            break
        await sleep(0.2)
    assert invited in ids

    # /room_summary of a room we are not in, through the given server.
    resp = await alice.get(f"{V1}/room_summary/{q(open_room)}", params={"via": b_name})
    assert resp.code == 200, resp
    assert resp.json["name"] == "Open"
    assert resp.json["membership"] == "leave"
    resp = await alice.get(f"{V1}/room_summary/{q(secret)}", params={"via": b_name})
    assert_error(resp, 404, "M_NOT_FOUND")
    assert "do not read" not in resp.raw.decode()


@pytest_twisted.ensureDeferred
async def test_federation_hierarchy_refuses_servers_the_acl_denies(
    two_servers: tuple[RunningServer, RunningServer],
) -> None:
    a, b = two_servers
    _, bob = await alice_and_bob(two_servers)
    room = await create_room(bob, preset="public_chat", name="No A here")
    path = f"/_matrix/federation/v1/hierarchy/{q(room)}"
    fed: Any = a.hs.federation.client
    assert (await fed.get_json(b.hs.server_name, path))["room"]["name"] == "No A here"
    resp = await put_state(
        bob, room, "m.room.server_acl", {"allow": ["*"], "deny": [a.hs.server_name.split(":")[0]]}
    )
    assert resp.code == 200, resp
    from federation.interfaces import FederationRequestError

    try:
        await fed.get_json(b.hs.server_name, path)
    except FederationRequestError as e:
        assert e.code == 403 and e.errcode == "M_FORBIDDEN"
    else:
        raise AssertionError("the ACL was not applied")


@pytest_twisted.ensureDeferred
async def test_restricted_and_acl_denied_children_over_federation(
    two_servers: tuple[RunningServer, RunningServer],
) -> None:
    a, b = two_servers
    alice, bob = await alice_and_bob(two_servers)
    b_name = b.hs.server_name
    space = await create_room(bob, preset="public_chat", creation_content={"type": "m.space"})
    restricted = await create_room(
        bob,
        name="Space members only",
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
    banned = await create_room(bob, preset="public_chat", name="Not for A")
    resp = await put_state(
        bob, banned, "m.room.server_acl", {"allow": ["*"], "deny": [a.hs.server_name.split(":")[0]]}
    )
    assert resp.code == 200, resp
    for child in (restricted, banned):
        await add_child(bob, space, child, b_name)
    path = f"/_matrix/federation/v1/hierarchy/{q(space)}"
    fed: Any = a.hs.federation.client

    # A has nobody in the space: the restricted child is not for it, nor the ACL'd one.
    answer = await fed.get_json(b_name, path)
    assert answer["children"] == []
    assert sorted(answer["inaccessible_children"]) == sorted([restricted, banned])
    assert "Space members only" not in str(answer) and "Not for A" not in str(answer)

    # Once alice is in the space, A may see the restricted room, and so may she.
    resp = await alice.post(f"/_matrix/client/v3/join/{q(space)}", {}, params={"via": b_name})
    assert resp.code == 200, resp
    answer = await fed.get_json(b_name, path)
    assert [c["room_id"] for c in answer["children"]] == [restricted]
    assert answer["children"][0]["allowed_room_ids"] == [space]
    assert answer["inaccessible_children"] == [banned]
    assert await hierarchy_ids(alice, space) == [space, restricted]
