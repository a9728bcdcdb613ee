"""Room tags (/tags) and m.direct, both as account data reaching /sync."""

from __future__ import annotations

from typing import Any

import pytest_twisted

from tests.ephemeral.helpers import (
    V3,
    assert_error,
    create_room,
    room_account_data,
    sync,
    user,
)
from tests.support.client import Client, q
from tests.support.server import RunningServer


def tags_path(client: Client, room_id: str, tag: str | None = None) -> str:
    path = f"{V3}/user/{q(client.user_id or '')}/rooms/{q(room_id)}/tags"
    return path if tag is None else f"{path}/{q(tag)}"


@pytest_twisted.ensureDeferred
async def test_tags_round_trip_and_reach_sync(server: RunningServer) -> None:
    alice = await user(server, "alice")
    room = await create_room(alice)
    resp = await alice.get(tags_path(alice, room))
    assert resp.code == 200 and resp.json == {"tags": {}}, resp
    since = (await sync(alice))["next_batch"]

    assert (await alice.put(tags_path(alice, room, "m.favourite"), {"order": 0.25})).code == 200
    assert (await alice.put(tags_path(alice, room, "u.Work"), {})).code == 200
    assert (await alice.put(tags_path(alice, room, "u.int"), {"order": 1})).code == 200
    resp = await alice.get(tags_path(alice, room))
    assert resp.json == {
        "tags": {"m.favourite": {"order": 0.25}, "u.Work": {}, "u.int": {"order": 1}}
    }

    body = await sync(alice, since, timeout=5000)
    assert room_account_data(body, room)["m.tag"] == resp.json

    resp = await alice.delete(tags_path(alice, room, "u.Work"))
    assert resp.code == 200 and resp.json == {}, resp
    body = await sync(alice, body["next_batch"], timeout=5000)
    expected = {"tags": {"m.favourite": {"order": 0.25}, "u.int": {"order": 1}}}
    assert room_account_data(body, room)["m.tag"] == expected
    # Deleting a tag that is not there is fine and changes nothing.
    assert (await alice.delete(tags_path(alice, room, "u.none"))).code == 200
    assert (await alice.get(tags_path(alice, room))).json == expected
    # Also readable as plain room account data.
    path = f"{V3}/user/{q(alice.user_id or '')}/rooms/{q(room)}/account_data/m.tag"
    assert (await alice.get(path)).json == expected


@pytest_twisted.ensureDeferred
async def test_concurrent_tag_changes_are_all_kept(server: RunningServer) -> None:
    from twisted.internet import defer

    alice = await user(server, "alice")
    room = await create_room(alice)
    names = [f"u.t{i}" for i in range(8)]
    await defer.gatherResults(
        [defer.ensureDeferred(alice.put(tags_path(alice, room, n), {})) for n in names]
    )
    resp = await alice.get(tags_path(alice, room))
    assert sorted(resp.json["tags"]) == names


@pytest_twisted.ensureDeferred
async def test_tag_errors(server: RunningServer) -> None:
    alice, bob = await user(server, "alice"), await user(server, "bob")
    room = await create_room(alice)
    path = tags_path(alice, room, "u.x")

    for bad in ("high", True, None, [1]):
        assert_error(await alice.put(path, {"order": bad}), 400, "M_BAD_JSON")
    assert_error(await alice.put(tags_path(alice, room, "u" * 256), {}), 400, "M_INVALID_PARAM")
    assert_error(await alice.request("PUT", path, raw=b"[]"), 400, "M_BAD_JSON")
    assert_error(await alice.request("PUT", path, raw=b"nope"), 400, "M_NOT_JSON")
    assert_error(await bob.put(path, {}), 403, "M_FORBIDDEN")
    assert_error(await bob.get(tags_path(alice, room)), 403, "M_FORBIDDEN")
    assert_error(await bob.delete(path), 403, "M_FORBIDDEN")
    assert_error(await alice.get(tags_path(alice, "not-a-room")), 400, "M_INVALID_PARAM")
    assert_error(await alice.get(tags_path(alice, room), token=False), 401, "M_MISSING_TOKEN")
    assert (await alice.get(tags_path(alice, room))).json == {"tags": {}}


@pytest_twisted.ensureDeferred
async def test_m_direct_round_trips_as_global_account_data(server: RunningServer) -> None:
    alice, bob = await user(server, "alice"), await user(server, "bob")
    room = await create_room(alice, is_direct=True, invite=[bob.user_id])
    since = (await sync(alice))["next_batch"]
    content: dict[str, Any] = {bob.user_id or "": [room]}
    path = f"{V3}/user/{q(alice.user_id or '')}/account_data/m.direct"

    assert (await alice.put(path, content)).code == 200
    resp = await alice.get(path)
    assert resp.code == 200 and resp.json == content, resp
    body = await sync(alice, since, timeout=5000)
    events = {e["type"]: e["content"] for e in body["account_data"]["events"]}
    assert events["m.direct"] == content
    assert "m.direct" not in {e["type"] for e in (await sync(bob))["account_data"]["events"]}
