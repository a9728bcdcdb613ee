"""The client's view of other servers, between two of ours over real HTTPS: remote
profiles (and their cache), aliases, public room lists and the user directory."""

from __future__ import annotations

from typing import Any

import pytest
import pytest_twisted

from federation.interfaces import FederationRequestError
from federation.setup import Federation
from tests.federation.test_two_servers import sleep
from tests.support.client import Client, Response, q
from tests.support.server import RunningServer

V3 = "/_matrix/client/v3"


def fed(server: RunningServer) -> Federation:
    assert server.hs.federation is not None
    return server.hs.federation


def assert_error(resp: Response, code: int, errcode: str) -> None:
    assert resp.code == code, resp
    assert resp.json is not None and resp.json["errcode"] == errcode, resp


async def user(server: RunningServer, name: str, displayname: str | None = None) -> Client:
    client = server.client()
    await client.register(name)
    if displayname is not None:
        await set_profile(client, "displayname", displayname)
    return client


async def set_profile(client: Client, key: str, value: Any) -> None:
    resp = await client.put(f"{V3}/profile/{q(client.user_id or '')}/{key}", {key: value})
    assert resp.code == 200, resp


def profile_path(user_id: str, key: str | None = None) -> str:
    return f"{V3}/profile/{q(user_id)}" + (f"/{key}" if key else "")


async def create_room(client: Client, **body: Any) -> str:
    resp = await client.post(f"{V3}/createRoom", body)
    assert resp.code == 200, resp
    return str(resp.json["room_id"])


async def join_remote(client: Client, room_id: str, via: RunningServer) -> None:
    resp = await client.post(
        f"{V3}/join/{q(room_id)}", {}, params={"server_name": via.hs.server_name}
    )
    assert resp.code == 200, resp


async def join_once_invited(client: Client, room_id: str) -> None:
    """Join as soon as the invite over federation has arrived."""
    for _ in range(100):
        resp = await client.post(f"{V3}/rooms/{q(room_id)}/join", {})
        if resp.code == 200:
            return
        await sleep(0.1)
    raise AssertionError(f"could not join {room_id}: {resp}")


async def wait_member_name(
    server: RunningServer, client: Client, room_id: str, user_id: str, name: str
) -> None:
    """Until ``server`` (``client``'s) has stored ``user_id``'s membership with display
    name ``name`` and the listeners of stored events have run."""
    for _ in range(100):
        resp = await client.get(f"{V3}/rooms/{q(room_id)}/state")
        member = next(
            (
                e
                for e in resp.json or []
                if e["type"] == "m.room.member" and e["state_key"] == user_id
            ),
            None,
        )
        if member is not None and member["content"].get("displayname") == name:
            stored = await server.hs.storage.state_groups.get_current_state_ids(room_id)
            if stored.get(("m.room.member", user_id)) == member["event_id"]:
                await sleep(0.2)  # the listeners run once the commit is reported
                return
        await sleep(0.1)
    raise AssertionError(f"{user_id} never became {name!r} in {room_id}")


# Profiles --------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_remote_profile_whole_and_by_field(
    two_servers: tuple[RunningServer, RunningServer],
) -> None:
    a, b = two_servers
    alice = await user(a, "alice")
    bob = await user(b, "bob", "Bob")
    await set_profile(bob, "avatar_url", "mxc://example.org/bob")
    await set_profile(bob, "org.example.pronouns", "he/him")
    bob_id = bob.user_id or ""

    resp = await alice.get(profile_path(bob_id))
    assert resp.code == 200, resp
    assert resp.json == {
        "displayname": "Bob",
        "avatar_url": "mxc://example.org/bob",
        "org.example.pronouns": "he/him",
    }
    for key, value in (
        ("displayname", "Bob"),
        ("avatar_url", "mxc://example.org/bob"),
        ("org.example.pronouns", "he/him"),
    ):
        resp = await alice.get(profile_path(bob_id, key))
        assert resp.code == 200, resp
        assert resp.json == {key: value}
    assert_error(await alice.get(profile_path(bob_id, "m.tz")), 404, "M_NOT_FOUND")
    nobody = f"@nobody:{b.hs.server_name}"
    assert_error(await alice.get(profile_path(nobody)), 404, "M_NOT_FOUND")
    assert_error(await alice.get(profile_path(nobody, "displayname")), 404, "M_NOT_FOUND")

    # B's side of query/profile: an unset field is left out; only B's users.
    client = fed(a).client
    path = "/_matrix/federation/v1/query/profile"
    assert await client.get_json(b.hs.server_name, path, {"user_id": bob_id, "field": "m.tz"}) == {}
    assert await client.get_json(
        b.hs.server_name, path, {"user_id": bob_id, "field": "displayname"}
    ) == {"displayname": "Bob"}


@pytest_twisted.ensureDeferred
async def test_remote_profile_cache_follows_member_events(
    two_servers: tuple[RunningServer, RunningServer],
) -> None:
    a, b = two_servers
    alice = await user(a, "alice")
    bob = await user(b, "bob", "Bob")
    carol = await user(b, "carol", "Carol")  # shares no room with anyone on A
    bob_id, carol_id = bob.user_id or "", carol.user_id or ""
    room_id = await create_room(alice, preset="public_chat")
    await join_remote(bob, room_id, a)
    await wait_member_name(a, alice, room_id, bob_id, "Bob")

    resp = await alice.get(profile_path(bob_id))
    assert resp.json == {"displayname": "Bob"}, resp
    resp = await alice.get(profile_path(carol_id))
    assert resp.json == {"displayname": "Carol"}, resp

    # Bob's new name reaches A as a member event, which drops the cached profile.
    await set_profile(bob, "displayname", "Bobby")
    await wait_member_name(a, alice, room_id, bob_id, "Bobby")
    resp = await alice.get(profile_path(bob_id))
    assert resp.json == {"displayname": "Bobby"}, resp

    # With B gone, the profile of a user sharing a room is still served from the
    # cache; one of a user sharing none was never kept.
    await b.stop()
    resp = await alice.get(profile_path(bob_id))
    assert resp.code == 200 and resp.json == {"displayname": "Bobby"}, resp
    resp = await alice.get(profile_path(bob_id, "displayname"))
    assert resp.code == 200 and resp.json == {"displayname": "Bobby"}, resp
    assert_error(await alice.get(profile_path(carol_id)), 502, "M_UNKNOWN")


@pytest.mark.parametrize(
    "server_b_overrides",
    [
        {
            "require_auth_for_profile_requests": True,
            "limit_profile_requests_to_users_who_share_rooms": True,
        }
    ],
)
@pytest_twisted.ensureDeferred
async def test_profile_requests_limited_to_users_who_share_rooms(
    two_servers: tuple[RunningServer, RunningServer],
) -> None:
    a, b = two_servers
    alice = await user(a, "alice", "Alice")
    bob = await user(b, "bob", "Bob")
    carol = await user(b, "carol", "Carol")
    alice_id = alice.user_id or ""
    assert_error(await b.client().get(profile_path(alice_id)), 401, "M_MISSING_TOKEN")
    assert_error(await bob.get(profile_path(alice_id)), 403, "M_FORBIDDEN")
    assert_error(await bob.get(profile_path(carol.user_id or "")), 403, "M_FORBIDDEN")
    resp = await bob.get(profile_path(bob.user_id or ""))
    assert resp.code == 200, resp

    room_id = await create_room(alice, preset="public_chat")
    await join_remote(bob, room_id, a)
    resp = await bob.get(profile_path(alice_id, "displayname"))
    assert resp.code == 200 and resp.json == {"displayname": "Alice"}, resp


@pytest.mark.parametrize("server_b_overrides", [{"allow_profile_lookup_over_federation": False}])
@pytest_twisted.ensureDeferred
async def test_profile_lookup_over_federation_refused(
    two_servers: tuple[RunningServer, RunningServer],
) -> None:
    a, b = two_servers
    alice = await user(a, "alice")
    bob = await user(b, "bob", "Bob")
    assert_error(await alice.get(profile_path(bob.user_id or "")), 403, "M_FORBIDDEN")
    resp = await b.client().get(profile_path(bob.user_id or ""))  # B's own clients still can
    assert resp.code == 200 and resp.json == {"displayname": "Bob"}, resp


# Aliases ---------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_remote_alias_resolution(
    two_servers: tuple[RunningServer, RunningServer],
) -> None:
    a, b = two_servers
    alice = await user(a, "alice")
    bob = await user(b, "bob")
    room_id = await create_room(alice, preset="public_chat", room_alias_name="lobby")
    alias = f"#lobby:{a.hs.server_name}"

    resp = await bob.get(f"{V3}/directory/room/{q(alias)}")
    assert resp.code == 200, resp
    assert resp.json == {"room_id": room_id, "servers": [a.hs.server_name]}
    resp = await b.client().get(f"{V3}/directory/room/{q(alias)}")  # no token needed
    assert resp.code == 200, resp
    missing = f"#nope:{a.hs.server_name}"
    assert_error(await bob.get(f"{V3}/directory/room/{q(missing)}"), 404, "M_NOT_FOUND")

    # A answers only for its own aliases: it never asks a third server for B.
    with pytest.raises(FederationRequestError) as e:
        await fed(b).client.get_json(
            a.hs.server_name,
            "/_matrix/federation/v1/query/directory",
            {"room_alias": "#lobby:third.example"},
        )
    assert e.value.code == 400 and e.value.errcode == "M_INVALID_PARAM"


# Public room lists -----------------------------------------------------------------


async def published_rooms(alice: Client) -> dict[str, str]:
    rooms = {
        "apple": await create_room(alice, visibility="public", name="Apple pie"),
        "banana": await create_room(
            alice, visibility="public", name="Banana split", topic="yellow"
        ),
        "space": await create_room(
            alice, visibility="public", name="A space", creation_content={"type": "m.space"}
        ),
    }
    await create_room(alice, visibility="private", name="Apple secret")
    return rooms


@pytest_twisted.ensureDeferred
async def test_remote_public_rooms_get_and_post(
    two_servers: tuple[RunningServer, RunningServer],
) -> None:
    a, b = two_servers
    alice = await user(a, "alice")
    bob = await user(b, "bob")
    rooms = await published_rooms(alice)
    url = f"{V3}/publicRooms"
    server = {"server": a.hs.server_name}

    resp = await bob.get(url, params=server)
    assert resp.code == 200, resp
    assert sorted(r["room_id"] for r in resp.json["chunk"]) == sorted(rooms.values())
    assert resp.json["total_room_count_estimate"] == 3
    banana = next(r for r in resp.json["chunk"] if r["room_id"] == rooms["banana"])
    assert banana["name"] == "Banana split" and banana["topic"] == "yellow"
    assert banana["num_joined_members"] == 1 and banana["join_rule"] == "public"

    seen: list[str] = []
    since = None
    for _ in range(3):
        params = {**server, "limit": "2"} | ({"since": since} if since else {})
        resp = await bob.get(url, params=params)
        assert resp.code == 200, resp
        seen += [r["room_id"] for r in resp.json["chunk"]]
        since = resp.json.get("next_batch")
        if since is None:
            break
    assert sorted(seen) == sorted(rooms.values())

    resp = await bob.post(url, {"filter": {"generic_search_term": "banana"}}, params=server)
    assert resp.code == 200, resp
    assert [r["room_id"] for r in resp.json["chunk"]] == [rooms["banana"]]
    resp = await bob.post(url, {"filter": {"room_types": ["m.space"]}}, params=server)
    assert [r["room_id"] for r in resp.json["chunk"]] == [rooms["space"]]
    assert resp.json["chunk"][0]["room_type"] == "m.space"
    resp = await bob.post(
        url,
        {"limit": 1, "filter": {"room_types": [None]}, "include_all_networks": True},
        params=server,
    )
    assert resp.code == 200, resp
    assert len(resp.json["chunk"]) == 1 and "next_batch" in resp.json
    resp = await bob.post(
        url,
        {"since": resp.json["next_batch"], "filter": {"room_types": [None]}},
        params=server,
    )
    assert len(resp.json["chunk"]) == 1

    assert_error(await b.client().get(url, params=server), 401, "M_MISSING_TOKEN")
    assert_error(await bob.get(url, params={"server": "bad server"}), 400, "M_INVALID_PARAM")


@pytest_twisted.ensureDeferred
async def test_federation_public_rooms_as_the_spec_says(
    two_servers: tuple[RunningServer, RunningServer],
) -> None:
    a, b = two_servers
    alice = await user(a, "alice")
    rooms = await published_rooms(alice)
    client, path = fed(b).client, "/_matrix/federation/v1/publicRooms"

    # limit 0, the spec's default, means no limit.
    resp = await client.get_json(a.hs.server_name, path, {"limit": "0"})
    assert sorted(r["room_id"] for r in resp["chunk"]) == sorted(rooms.values())
    resp = await client.get_json(a.hs.server_name, path, {"limit": "1"})
    assert len(resp["chunk"]) == 1 and "next_batch" in resp
    # Synapse sends include_all_networks as a string in the POST body.
    resp = await client.post_json(
        a.hs.server_name,
        path,
        {"limit": 0, "include_all_networks": "false", "filter": {"room_types": ["m.space"]}},
    )
    assert [r["room_id"] for r in resp["chunk"]] == [rooms["space"]]


@pytest.mark.parametrize("server_b_overrides", [{"allow_public_rooms_over_federation": False}])
@pytest_twisted.ensureDeferred
async def test_remote_public_rooms_refused_by_the_other_server(
    two_servers: tuple[RunningServer, RunningServer],
) -> None:
    a, b = two_servers
    alice = await user(a, "alice")
    resp = await alice.get(f"{V3}/publicRooms", params={"server": b.hs.server_name})
    assert_error(resp, 403, "M_FORBIDDEN")


# User directory --------------------------------------------------------------------


async def search(client: Client, term: str) -> list[dict[str, Any]]:
    resp = await client.post(f"{V3}/user_directory/search", {"search_term": term})
    assert resp.code == 200, resp
    return list(resp.json["results"])


@pytest_twisted.ensureDeferred
async def test_user_directory_finds_remote_room_mates_by_member_event_name(
    two_servers: tuple[RunningServer, RunningServer],
) -> None:
    a, b = two_servers
    alice = await user(a, "alice")
    bob = await user(b, "bob", "Roberto Remote")
    bob_id = bob.user_id or ""
    assert await search(alice, "roberto") == []

    room_id = await create_room(alice, preset="private_chat", invite=[bob_id])
    await join_once_invited(bob, room_id)
    await wait_member_name(a, alice, room_id, bob_id, "Roberto Remote")
    assert await search(alice, "roberto") == [{"user_id": bob_id, "display_name": "Roberto Remote"}]

    await set_profile(bob, "displayname", "Rob Newname")
    await wait_member_name(a, alice, room_id, bob_id, "Rob Newname")
    assert [r["display_name"] for r in await search(alice, "newname")] == ["Rob Newname"]
    assert await search(alice, "roberto") == []


@pytest.mark.parametrize("server_b_overrides", [{"user_directory": {"search_all_users": True}}])
@pytest_twisted.ensureDeferred
async def test_user_directory_search_all_users(
    two_servers: tuple[RunningServer, RunningServer],
) -> None:
    a, b = two_servers
    alice = await user(a, "alice", "Alice Faraway")
    bob = await user(b, "bob")
    carol = await user(b, "carol")
    zed = await user(b, "zed", "Zed Loner")  # in no room at all
    # Carol (not Bob) shares a private room with Alice.
    room_id = await create_room(alice, preset="private_chat", invite=[carol.user_id])
    await join_once_invited(carol, room_id)
    await wait_member_name(b, carol, room_id, alice.user_id or "", "Alice Faraway")

    assert [r["user_id"] for r in await search(bob, "loner")] == [zed.user_id]
    assert [r["user_id"] for r in await search(bob, "faraway")] == [alice.user_id]
    assert await search(bob, "bob") == []  # never the searcher


@pytest_twisted.ensureDeferred
async def test_user_directory_forgets_a_public_room_the_server_left(
    two_servers: tuple[RunningServer, RunningServer],
) -> None:
    """A room none of our users is in any more keeps its last state here, but its
    members are not found through it (as Synapse)."""
    a, b = two_servers
    alice = await user(a, "alice", "Alice Publica")
    bob = await user(b, "bob")
    room_id = await create_room(alice, preset="public_chat", invite=[bob.user_id])
    await join_once_invited(bob, room_id)
    await wait_member_name(b, bob, room_id, alice.user_id or "", "Alice Publica")
    assert [r["user_id"] for r in await search(bob, "publica")] == [alice.user_id]
    assert [r["user_id"] for r in await search(bob, "bob")] == [bob.user_id]  # public room

    resp = await bob.post(f"{V3}/rooms/{q(room_id)}/leave", {})
    assert resp.code == 200, resp
    assert await search(bob, "publica") == []
    assert await search(bob, "bob") == []
