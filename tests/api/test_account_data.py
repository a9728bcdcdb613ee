"""Global and per-room account data."""

from __future__ import annotations

import pytest_twisted

from tests.api.helpers import assert_error
from tests.support.client import Client, q
from tests.support.server import RunningServer

ALICE = "@alice:test.local"
ROOM = "!abcdef:test.local"
ROOM_V12 = "!" + "A" * 43


def _global(user_id: str, data_type: str) -> str:
    return f"/_matrix/client/v3/user/{q(user_id)}/account_data/{q(data_type)}"


def _room(user_id: str, room_id: str, data_type: str) -> str:
    return f"/_matrix/client/v3/user/{q(user_id)}/rooms/{q(room_id)}/account_data/{q(data_type)}"


@pytest_twisted.ensureDeferred
async def test_global_account_data_put_then_get(server: RunningServer, alice: Client) -> None:
    content = {"custom": [1, 2, 3], "nested": {"ü": "ñ"}}
    resp = await alice.put(_global(ALICE, "com.example.settings"), content)
    assert resp.code == 200, resp
    assert resp.json == {}
    got = await alice.get(_global(ALICE, "com.example.settings"))
    assert got.code == 200, got
    assert got.json == content


@pytest_twisted.ensureDeferred
async def test_global_account_data_put_replaces(server: RunningServer, alice: Client) -> None:
    await alice.put(_global(ALICE, "m.ignored_user_list"), {"ignored_users": {"@x:y": {}}})
    await alice.put(_global(ALICE, "m.ignored_user_list"), {"ignored_users": {}})
    got = await alice.get(_global(ALICE, "m.ignored_user_list"))
    assert got.json == {"ignored_users": {}}


@pytest_twisted.ensureDeferred
async def test_room_account_data_put_then_get(server: RunningServer, alice: Client) -> None:
    for room_id in (ROOM, ROOM_V12):
        resp = await alice.put(_room(ALICE, room_id, "m.tag_like"), {"room": room_id})
        assert resp.code == 200, resp
        got = await alice.get(_room(ALICE, room_id, "m.tag_like"))
        assert got.json == {"room": room_id}


@pytest_twisted.ensureDeferred
async def test_room_and_global_account_data_are_separate(
    server: RunningServer, alice: Client
) -> None:
    await alice.put(_global(ALICE, "com.example.x"), {"scope": "global"})
    await alice.put(_room(ALICE, ROOM, "com.example.x"), {"scope": "room"})
    other_room = "!other:test.local"
    assert (await alice.get(_global(ALICE, "com.example.x"))).json == {"scope": "global"}
    assert (await alice.get(_room(ALICE, ROOM, "com.example.x"))).json == {"scope": "room"}
    assert_error(await alice.get(_room(ALICE, other_room, "com.example.x")), 404, "M_NOT_FOUND")


@pytest_twisted.ensureDeferred
async def test_missing_account_data_is_404_not_found(server: RunningServer, alice: Client) -> None:
    assert_error(await alice.get(_global(ALICE, "com.example.none")), 404, "M_NOT_FOUND")
    assert_error(await alice.get(_room(ALICE, ROOM, "com.example.none")), 404, "M_NOT_FOUND")


@pytest_twisted.ensureDeferred
async def test_another_users_account_data_is_403(
    server: RunningServer, alice: Client, bob: Client
) -> None:
    await alice.put(_global(ALICE, "com.example.secret"), {"s": 1})
    await alice.put(_room(ALICE, ROOM, "com.example.secret"), {"s": 1})
    assert_error(await bob.get(_global(ALICE, "com.example.secret")), 403, "M_FORBIDDEN")
    assert_error(await bob.put(_global(ALICE, "com.example.secret"), {}), 403, "M_FORBIDDEN")
    assert_error(await bob.get(_room(ALICE, ROOM, "com.example.secret")), 403, "M_FORBIDDEN")
    assert_error(await bob.put(_room(ALICE, ROOM, "com.example.secret"), {}), 403, "M_FORBIDDEN")
    assert (await alice.get(_global(ALICE, "com.example.secret"))).json == {"s": 1}


@pytest_twisted.ensureDeferred
async def test_invalid_room_id_is_400_invalid_param(server: RunningServer, alice: Client) -> None:
    for room_id in ("not-a-room", "#alias:test.local", "!"):
        put = await alice.put(_room(ALICE, room_id, "com.example.x"), {})
        assert_error(put, 400, "M_INVALID_PARAM")
        get = await alice.get(_room(ALICE, room_id, "com.example.x"))
        assert_error(get, 400, "M_INVALID_PARAM")


@pytest_twisted.ensureDeferred
async def test_account_data_body_must_be_a_json_object(
    server: RunningServer, alice: Client
) -> None:
    assert_error(await alice.put(_global(ALICE, "com.example.x"), raw=b"nope"), 400, "M_NOT_JSON")
    assert_error(await alice.put(_global(ALICE, "com.example.x"), raw=b"[1]"), 400, "M_BAD_JSON")
    assert_error(await alice.put(_room(ALICE, ROOM, "com.example.x"), raw=b"1"), 400, "M_BAD_JSON")


@pytest_twisted.ensureDeferred
async def test_server_managed_types_cannot_be_set_globally_or_per_room(
    server: RunningServer, alice: Client
) -> None:
    # "Servers MUST reject setting account data for event types that the server manages
    # by using a 405 error response ... m.fully_read and m.push_rules ... both global and
    # room-specific account data."
    for data_type in ("m.fully_read", "m.push_rules"):
        resp = await alice.put(_room(ALICE, ROOM, data_type), {"event_id": "$x"})
        assert_error(resp, 405, "M_BAD_JSON")
        resp = await alice.put(_global(ALICE, data_type), {"global": {}})
        assert_error(resp, 405, "M_BAD_JSON")


@pytest_twisted.ensureDeferred
async def test_account_data_requires_token(server: RunningServer) -> None:
    c = server.client()
    assert_error(await c.get(_global(ALICE, "x.y")), 401, "M_MISSING_TOKEN")
    assert_error(await c.put(_global(ALICE, "x.y"), {}), 401, "M_MISSING_TOKEN")
    assert_error(await c.get(_room(ALICE, ROOM, "x.y")), 401, "M_MISSING_TOKEN")


@pytest_twisted.ensureDeferred
async def test_account_data_advances_the_stream(server: RunningServer, alice: Client) -> None:
    store = server.hs.storage.account_data
    before = store.stream.current_position
    await alice.put(_global(ALICE, "com.example.a"), {"v": 1})
    await alice.put(_room(ALICE, ROOM, "com.example.b"), {"v": 2})
    after = store.stream.current_position
    assert after == before + 2
    changes = await store.get_changes(ALICE, before, after)
    assert [(c.room_id, c.data_type, c.content) for c in changes] == [
        ("", "com.example.a", {"v": 1}),
        (ROOM, "com.example.b", {"v": 2}),
    ]
