"""User directory search: who is visible, matching, ranking, limits and errors."""

from __future__ import annotations

from typing import Any

import pytest_twisted

from tests.api.helpers import uia_password
from tests.ephemeral.helpers import (
    V3,
    assert_error,
    create_room,
    join,
    room_path,
    user,
)
from tests.support.client import Client
from tests.support.server import RunningServer

SEARCH = f"{V3}/user_directory/search"


async def search(client: Client, term: str, limit: int | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"search_term": term}
    if limit is not None:
        body["limit"] = limit
    resp = await client.post(SEARCH, body)
    assert resp.code == 200, resp
    return dict(resp.json)


def found(result: dict[str, Any]) -> list[str]:
    return [r["user_id"] for r in result["results"]]


@pytest_twisted.ensureDeferred
async def test_users_sharing_a_private_room_are_found_strangers_are_not(
    server: RunningServer,
) -> None:
    searcher = await user(server, "searcher")
    alice = await user(server, "alice", "Alice Smith")
    stranger = await user(server, "alistair", "Alistair Stranger")
    room = await create_room(searcher, preset="private_chat", invite=[alice.user_id])
    await join(alice, room)
    await create_room(stranger, preset="private_chat")

    result = await search(searcher, "ali")
    assert found(result) == [alice.user_id]
    assert result["results"][0]["display_name"] == "Alice Smith"
    assert result["limited"] is False
    for term in ("ALICE", "smi", "Alice Smith", "@alice", "alice:test"):
        assert found(await search(searcher, term)) == [alice.user_id], term
    for term in ("lice", "mith", "alice jones", "zed"):
        assert found(await search(searcher, term)) == [], term


@pytest_twisted.ensureDeferred
async def test_members_of_public_and_world_readable_rooms_are_found(
    server: RunningServer,
) -> None:
    searcher = await user(server, "searcher")
    public = await user(server, "pub", "Public Person")
    reader = await user(server, "reader", "Public Reader")
    hidden = await user(server, "hid", "Public Hidden")
    await create_room(public, preset="public_chat")
    readable = await create_room(reader, preset="private_chat")
    resp = await reader.put(
        room_path(readable, "/state/m.room.history_visibility"),
        {"history_visibility": "world_readable"},
    )
    assert resp.code == 200, resp
    await create_room(hidden, preset="private_chat")

    assert sorted(found(await search(searcher, "public"))) == sorted(
        [public.user_id, reader.user_id]
    )


@pytest_twisted.ensureDeferred
async def test_users_who_left_or_were_deactivated_disappear(server: RunningServer) -> None:
    searcher = await user(server, "searcher")
    leaver = await user(server, "leaver", "Zed Leaver")
    gone = await user(server, "gone", "Zed Gone")
    room = await create_room(searcher, preset="private_chat", invite=[leaver.user_id, gone.user_id])
    await join(leaver, room)
    await join(gone, room)
    assert sorted(found(await search(searcher, "zed"))) == sorted([leaver.user_id, gone.user_id])

    assert (await leaver.post(room_path(room, "/leave"), {})).code == 200
    resp = await uia_password(gone, "POST", f"{V3}/account/deactivate", {})
    assert resp.code == 200, resp
    assert found(await search(searcher, "zed")) == []


@pytest_twisted.ensureDeferred
async def test_ranking_limit_and_limited(server: RunningServer) -> None:
    searcher = await user(server, "searcher", "Searcher")
    names = {"bob": "Bob", "bobby": "Bobby Tables", "rob": "Bob Roberts", "zbob": None}
    clients = {n: await user(server, n, d) for n, d in names.items()}
    room = await create_room(searcher, preset="public_chat")
    for client in clients.values():
        await join(client, room)

    result = await search(searcher, "bob")
    ids = found(result)
    assert ids[0] == clients["bob"].user_id  # exact name first
    assert set(ids) == {clients[n].user_id for n in ("bob", "bobby", "rob")}
    assert clients["zbob"].user_id not in ids  # "zbob" does not start with "bob"

    limited = await search(searcher, "bob", limit=2)
    assert found(limited) == ids[:2] and limited["limited"] is True
    assert (await search(searcher, "bob", limit=3))["limited"] is False
    assert (await search(searcher, "   "))["results"] == []


@pytest_twisted.ensureDeferred
async def test_search_with_non_ascii_and_like_metacharacters(server: RunningServer) -> None:
    searcher = await user(server, "searcher")
    elodie = await user(server, "elodie", "Élodie Dupont")
    percent = await user(server, "percent", "100% Sure")
    room = await create_room(searcher, preset="public_chat")
    await join(elodie, room)
    await join(percent, room)

    assert found(await search(searcher, "élo")) == [elodie.user_id]
    assert found(await search(searcher, "ÉLODIE")) == [elodie.user_id]
    assert found(await search(searcher, "100%")) == [percent.user_id]
    assert found(await search(searcher, "%")) == []
    assert found(await search(searcher, "_")) == []


@pytest_twisted.ensureDeferred
async def test_user_directory_errors(server: RunningServer) -> None:
    searcher = await user(server, "searcher")
    assert_error(await searcher.post(SEARCH, {}), 400, "M_MISSING_PARAM")
    assert_error(await searcher.post(SEARCH, {"search_term": 5}), 400, "M_BAD_JSON")
    resp = await searcher.post(SEARCH, {"search_term": "a", "limit": "10"})
    assert_error(resp, 400, "M_BAD_JSON")
    resp = await searcher.post(SEARCH, {"search_term": "a", "limit": -1})
    assert_error(resp, 400, "M_INVALID_PARAM")
    assert_error(await searcher.request("POST", SEARCH, raw=b"x"), 400, "M_NOT_JSON")
    resp = await searcher.post(SEARCH, {"search_term": "a"}, token=False)
    assert_error(resp, 401, "M_MISSING_TOKEN")


@pytest_twisted.ensureDeferred
async def test_the_searcher_is_found_through_public_rooms_only(server: RunningServer) -> None:
    searcher = await user(server, "searcher", "Sam Searcher")
    alice = await user(server, "alice")
    room = await create_room(alice, preset="private_chat", invite=[searcher.user_id])
    await join(searcher, room)
    assert found(await search(searcher, "sam")) == []
    resp = await alice.put(room_path(room, "/state/m.room.join_rules"), {"join_rule": "public"})
    assert resp.code == 200, resp
    assert found(await search(searcher, "sam")) == [searcher.user_id]
    resp = await alice.put(room_path(room, "/state/m.room.join_rules"), {"join_rule": "invite"})
    assert resp.code == 200, resp
    assert found(await search(searcher, "sam")) == []
    assert found(await search(alice, "sam")) == [searcher.user_id]
