"""/rooms/{roomId}/hierarchy and /room_summary on one server, over HTTP."""

from __future__ import annotations

from typing import Any

import pytest_twisted

from tests.rooms.helpers import assert_error, create_room, invite, join, put_state, user
from tests.support.client import Client, Response, q
from tests.support.server import RunningServer

V1 = "/_matrix/client/v1"


async def hierarchy(client: Client, room_id: str, **params: Any) -> Response:
    return await client.get(
        f"{V1}/rooms/{q(room_id)}/hierarchy", params={k: str(v) for k, v in params.items()}
    )


async def summary(client: Client, room: str, **kw: Any) -> Response:
    return await client.get(f"{V1}/room_summary/{q(room)}", **kw)


async def space(client: Client, **body: Any) -> str:
    return await create_room(client, creation_content={"type": "m.space"}, **body)


async def add_child(
    client: Client, space_id: str, child_id: str, *, order: str | None = None, **extra: Any
) -> None:
    content: dict[str, Any] = {"via": ["test.local"], **extra}
    if order is not None:
        content["order"] = order
    resp = await put_state(client, space_id, "m.space.child", content, child_id)
    assert resp.code == 200, resp


def ids(resp: Response) -> list[str]:
    assert resp.code == 200, resp
    return [r["room_id"] for r in resp.json["rooms"]]


@pytest_twisted.ensureDeferred
async def test_hierarchy_walks_depth_first_in_child_order(server: RunningServer) -> None:
    alice = await user(server, "alice")
    root = await space(alice, name="Root", preset="public_chat")
    sub = await space(alice, name="Sub", preset="public_chat")
    a = await create_room(alice, name="A", topic="about A", preset="public_chat")
    b = await create_room(alice, name="B", preset="public_chat")
    c = await create_room(alice, name="C", preset="public_chat")
    await add_child(alice, root, b, order="b")
    await add_child(alice, root, sub, order="a")
    await add_child(alice, sub, c)
    await add_child(alice, root, a)  # no order: after the ordered ones
    resp = await hierarchy(alice, root)
    assert ids(resp) == [root, sub, c, b, a]
    assert "next_batch" not in resp.json
    rooms = {r["room_id"]: r for r in resp.json["rooms"]}
    assert rooms[root]["room_type"] == "m.space"
    assert [e["state_key"] for e in rooms[root]["children_state"]] == [sub, b, a]
    child_event = rooms[root]["children_state"][0]
    assert child_event["type"] == "m.space.child"
    assert child_event["sender"] == alice.user_id
    assert isinstance(child_event["origin_server_ts"], int)
    assert rooms[a]["name"] == "A" and rooms[a]["topic"] == "about A"
    assert rooms[a]["children_state"] == []
    assert rooms[a]["join_rule"] == "public"
    assert rooms[a]["num_joined_members"] == 1
    assert rooms[a]["room_version"] == "12"


@pytest_twisted.ensureDeferred
async def test_hierarchy_max_depth_suggested_only_and_removed_children(
    server: RunningServer,
) -> None:
    alice = await user(server, "alice")
    root = await space(alice, preset="public_chat")
    sub = await space(alice, preset="public_chat")
    a = await create_room(alice, preset="public_chat")
    deep = await create_room(alice, preset="public_chat")
    gone = await create_room(alice, preset="public_chat")
    await add_child(alice, root, sub, suggested=True)
    await add_child(alice, root, a)
    await add_child(alice, sub, deep, suggested=True)
    await add_child(alice, root, gone)
    resp = await put_state(alice, root, "m.space.child", {}, gone)  # removed: no via
    assert resp.code == 200, resp

    assert ids(await hierarchy(alice, root, max_depth=0)) == [root]
    assert set(ids(await hierarchy(alice, root, max_depth=1))) == {root, sub, a}
    assert set(ids(await hierarchy(alice, root))) == {root, sub, a, deep}
    assert ids(await hierarchy(alice, root, suggested_only="true")) == [root, sub, deep]


@pytest_twisted.ensureDeferred
async def test_hierarchy_pagination_with_from_and_limit(server: RunningServer) -> None:
    alice = await user(server, "alice")
    root = await space(alice, preset="public_chat")
    children = [await create_room(alice, preset="public_chat") for _ in range(5)]
    for i, child in enumerate(children):
        await add_child(alice, root, child, order=str(i))
    seen: list[str] = []
    token = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 2}
        if token is not None:
            params["from"] = token
        resp = await hierarchy(alice, root, **params)
        page = ids(resp)
        assert 0 < len(page) <= 2
        seen += page
        pages += 1
        token = resp.json.get("next_batch")
        if token is None:
            break
    assert seen == [root, *children]
    assert pages == 3
    # A page asked for again (a client's retry) is answered the same.
    first = await hierarchy(alice, root, limit=2)
    token = first.json["next_batch"]
    again = [await hierarchy(alice, root, limit=2, **{"from": token}) for _ in range(2)]
    assert ids(again[0]) == ids(again[1]) == children[1:3]

    # The token is bound to the parameters it was made with, and to the user.
    first = await hierarchy(alice, root, limit=1)
    token = first.json["next_batch"]
    assert_error(
        await hierarchy(alice, root, limit=1, **{"from": token, "suggested_only": "true"}),
        400,
        "M_INVALID_PARAM",
    )
    first = await hierarchy(alice, root, limit=1)
    token = first.json["next_batch"]
    assert_error(
        await hierarchy(alice, root, **{"from": token, "max_depth": 1}), 400, "M_INVALID_PARAM"
    )
    bob = await user(server, "bob")
    first = await hierarchy(alice, root, limit=1)
    assert_error(
        await hierarchy(bob, root, **{"from": first.json["next_batch"]}), 400, "M_INVALID_PARAM"
    )
    assert_error(await hierarchy(alice, root, **{"from": "nonsense"}), 400, "M_INVALID_PARAM")


@pytest_twisted.ensureDeferred
async def test_hierarchy_bad_parameters(server: RunningServer) -> None:
    alice = await user(server, "alice")
    root = await space(alice, preset="public_chat")
    assert_error(await hierarchy(alice, root, limit=0), 400, "M_INVALID_PARAM")
    assert_error(await hierarchy(alice, root, limit="x"), 400, "M_INVALID_PARAM")
    assert_error(await hierarchy(alice, root, max_depth=-1), 400, "M_INVALID_PARAM")
    assert_error(await hierarchy(alice, root, suggested_only="maybe"), 400, "M_INVALID_PARAM")
    resp = await server.client().get(f"{V1}/rooms/{q(root)}/hierarchy")
    assert_error(resp, 401, "M_MISSING_TOKEN")


@pytest_twisted.ensureDeferred
async def test_hierarchy_hides_private_children_and_refuses_a_private_root(
    server: RunningServer,
) -> None:
    alice = await user(server, "alice")
    bob = await user(server, "bob")
    root = await space(alice, preset="public_chat")
    secret = await create_room(alice, name="Secret plans", topic="do not read")
    readable = await create_room(alice, name="Readable")
    resp = await put_state(
        alice, readable, "m.room.history_visibility", {"history_visibility": "world_readable"}
    )
    assert resp.code == 200, resp
    invited = await create_room(alice, name="Invited")
    assert (await invite(alice, invited, bob.user_id)).code == 200
    restricted = await create_room(
        alice,
        name="Members of the space",
        initial_state=[
            {
                "type": "m.room.join_rules",
                "content": {
                    "join_rule": "restricted",
                    "allow": [{"type": "m.room_membership", "room_id": root}],
                },
            }
        ],
    )
    knock = await create_room(alice, name="Knock first")
    resp = await put_state(alice, knock, "m.room.join_rules", {"join_rule": "knock"})
    assert resp.code == 200, resp
    for child in (secret, readable, invited, restricted, knock):
        await add_child(alice, root, child)

    resp = await hierarchy(bob, root)
    assert set(ids(resp)) == {root, readable, invited, knock}
    assert "Secret plans" not in resp.raw.decode()
    assert "do not read" not in resp.raw.decode()
    # Joined to the space: the restricted room opens up (and shows its allow list).
    assert (await join(bob, root)).code == 200
    resp = await hierarchy(bob, root)
    assert set(ids(resp)) == {root, readable, invited, restricted, knock}
    entry = next(r for r in resp.json["rooms"] if r["room_id"] == restricted)
    assert entry["allowed_room_ids"] == [root]
    assert entry["join_rule"] == "restricted"
    # The room's members see it all.
    everything = {root, secret, readable, invited, restricted, knock}
    assert set(ids(await hierarchy(alice, root))) == everything

    private_space = await space(alice)
    assert_error(await hierarchy(bob, private_space), 403, "M_FORBIDDEN")
    assert_error(await hierarchy(bob, "!unknown:test.local"), 403, "M_FORBIDDEN")


@pytest_twisted.ensureDeferred
async def test_room_summary_of_local_rooms(server: RunningServer) -> None:
    alice = await user(server, "alice")
    bob = await user(server, "bob")
    public = await create_room(
        alice, name="Lobby", topic="hello", preset="public_chat", room_alias_name="lobby"
    )
    resp = await summary(bob, "#lobby:test.local")
    assert resp.code == 200, resp
    assert resp.json["room_id"] == public
    assert resp.json["name"] == "Lobby"
    assert resp.json["topic"] == "hello"
    assert resp.json["canonical_alias"] == "#lobby:test.local"
    assert resp.json["join_rule"] == "public"
    assert resp.json["membership"] == "leave"
    assert resp.json["room_version"] == "12"
    assert resp.json["num_joined_members"] == 1
    assert (await summary(alice, public)).json["membership"] == "join"
    # Without a token: open rooms only, and no membership.
    anonymous = await summary(server.client(), public)
    assert anonymous.code == 200, anonymous
    assert "membership" not in anonymous.json

    private = await create_room(alice, name="Private", topic="secret topic")
    for client in (bob, server.client()):
        resp = await summary(client, private)
        assert_error(resp, 404, "M_NOT_FOUND")
        assert "secret topic" not in resp.raw.decode()
    assert (await invite(alice, private, bob.user_id)).code == 200
    resp = await summary(bob, private)
    assert resp.code == 200, resp
    assert resp.json["membership"] == "invite"
    assert resp.json["name"] == "Private"

    assert_error(await summary(bob, "#nothing:test.local"), 404, "M_NOT_FOUND")
    assert_error(await summary(bob, "nonsense"), 400, "M_INVALID_PARAM")
    # A room we do not hold, with no server to ask.
    assert_error(await summary(bob, "!unknown:test.local"), 400, "M_MISSING_PARAM")
    for via in ("not a server!", "127.0.0.1:1"):  # invalid; nobody listening
        resp = await summary(bob, "!unknown:test.local", params={"via": via})
        assert_error(resp, 404, "M_NOT_FOUND")
