"""PUT /sendToDevice and the to_device section of /sync."""

from __future__ import annotations

from typing import Any

import pytest_twisted
from twisted.internet import defer

from tests.api.helpers import assert_error, sqlite_only
from tests.e2ee.helpers import V3
from tests.rooms.helpers import sync
from tests.support.client import Client, Response, q
from tests.support.server import RunningServer, make_config_dict, start_server

_txn = [0]


async def send_to_device(
    client: Client,
    messages: dict[str, Any],
    *,
    event_type: str = "m.test",
    txn: str | None = None,
) -> Response:
    if txn is None:
        _txn[0] += 1
        txn = f"td{_txn[0]}"
    return await client.put(f"{V3}/sendToDevice/{q(event_type)}/{q(txn)}", {"messages": messages})


def to_device(body: dict[str, Any]) -> list[dict[str, Any]]:
    return list(body["to_device"]["events"])


@pytest_twisted.ensureDeferred
async def test_message_reaches_the_device_in_order(
    server: RunningServer, alice: Client, bob: Client
) -> None:
    start = await sync(bob)
    for i in range(3):
        resp = await send_to_device(alice, {bob.user_id: {bob.device_id: {"n": i}}})
        assert resp.code == 200 and resp.json == {}, resp
    body = await sync(bob, start["next_batch"])
    assert to_device(body) == [
        {"type": "m.test", "sender": alice.user_id, "content": {"n": i}} for i in range(3)
    ]
    # The sender's own devices got nothing.
    assert to_device(await sync(alice)) == []


@pytest_twisted.ensureDeferred
async def test_messages_survive_a_lost_response_and_go_once_acknowledged(
    server: RunningServer, alice: Client, bob: Client
) -> None:
    first = await sync(bob)
    await send_to_device(alice, {bob.user_id: {bob.device_id: {"secret": "olm"}}})

    delivered = await sync(bob, first["next_batch"])
    assert [e["content"] for e in to_device(delivered)] == [{"secret": "olm"}]
    # The response was lost: the client retries with the old token and gets it again.
    retried = await sync(bob, first["next_batch"])
    assert [e["content"] for e in to_device(retried)] == [{"secret": "olm"}]
    # It syncs from the newer token: that acknowledges the message, which is deleted.
    later = await sync(bob, retried["next_batch"])
    assert to_device(later) == []
    assert to_device(await sync(bob, first["next_batch"])) == []
    assert to_device(await sync(bob)) == []  # not in an initial sync either


@pytest_twisted.ensureDeferred
async def test_initial_sync_delivers_pending_messages(
    server: RunningServer, alice: Client, bob: Client
) -> None:
    await send_to_device(alice, {bob.user_id: {bob.device_id: {"early": True}}})
    body = await sync(bob)
    assert [e["content"] for e in to_device(body)] == [{"early": True}]
    assert to_device(await sync(bob, body["next_batch"])) == []


@pytest_twisted.ensureDeferred
async def test_same_transaction_id_is_sent_once(
    server: RunningServer, alice: Client, bob: Client
) -> None:
    start = await sync(bob)
    messages = {bob.user_id: {bob.device_id: {"once": 1}}}
    for _ in range(3):
        assert (await send_to_device(alice, messages, txn="same")).code == 200
    # Another device of the same sender may reuse the id.
    other = server.client()
    await other.login("alice")
    assert (
        await send_to_device(other, {bob.user_id: {bob.device_id: {"once": 2}}}, txn="same")
    ).code == 200
    body = await sync(bob, start["next_batch"])
    assert [e["content"] for e in to_device(body)] == [{"once": 1}, {"once": 2}]


@pytest_twisted.ensureDeferred
async def test_concurrent_retries_of_one_transaction_send_once(
    server: RunningServer, alice: Client, bob: Client
) -> None:
    start = await sync(bob)
    messages = {bob.user_id: {bob.device_id: {"race": 1}}}
    results = await defer.gatherResults(
        [defer.ensureDeferred(send_to_device(alice, messages, txn="racy")) for _ in range(5)]
    )
    assert all(r.code == 200 for r in results), results
    body = await sync(bob, start["next_batch"])
    assert [e["content"] for e in to_device(body)] == [{"race": 1}]


@pytest_twisted.ensureDeferred
async def test_star_sends_to_every_device_of_the_user(
    server: RunningServer, alice: Client, bob: Client
) -> None:
    bob2 = server.client()
    await bob2.login("bob")
    tokens = {
        bob.device_id: (await sync(bob))["next_batch"],
        bob2.device_id: (await sync(bob2))["next_batch"],
    }
    await send_to_device(alice, {bob.user_id: {"*": {"all": True}}, alice.user_id: {"NOPE": {}}})
    for client in (bob, bob2):
        body = await sync(client, tokens[client.device_id])
        assert [e["content"] for e in to_device(body)] == [{"all": True}]


@pytest_twisted.ensureDeferred
async def test_waiting_sync_wakes_for_a_to_device_message(
    server: RunningServer, alice: Client, bob: Client
) -> None:
    start = await sync(bob)
    waiting = defer.ensureDeferred(sync(bob, start["next_batch"], timeout=10_000))
    await send_to_device(alice, {bob.user_id: {bob.device_id: {"wake": "up"}}})
    body = await waiting
    assert [e["content"] for e in to_device(body)] == [{"wake": "up"}]


@pytest_twisted.ensureDeferred
async def test_messages_for_unknown_devices_and_remote_users_are_dropped(
    server: RunningServer, alice: Client, bob: Client
) -> None:
    start = await sync(bob)
    resp = await send_to_device(
        alice,
        {
            bob.user_id: {"NOSUCHDEVICE": {"x": 1}},
            "@nobody:test.local": {"DEV": {"x": 2}},
            "@carol:remote.example": {"DEV": {"x": 3}},
        },
    )
    assert resp.code == 200, resp
    body = await sync(bob, start["next_batch"])
    assert to_device(body) == []


@sqlite_only
@pytest_twisted.ensureDeferred
async def test_send_to_device_rejects_malformed_requests(
    server: RunningServer, alice: Client, bob: Client
) -> None:
    path = f"{V3}/sendToDevice/m.test/bad1"
    assert_error(await alice.put(path, {}), 400, "M_MISSING_PARAM")
    assert_error(await alice.put(path, {"messages": []}), 400, "M_BAD_JSON")
    resp = await alice.put(path, {"messages": {bob.user_id: {bob.device_id: "text"}}})
    assert_error(resp, 400, "M_BAD_JSON")
    resp = await alice.put(path, {"messages": {bob.user_id: ["x"]}})
    assert_error(resp, 400, "M_BAD_JSON")
    resp = await alice.put(path, {"messages": {"bob": {"DEV": {}}}})
    assert_error(resp, 400, "M_INVALID_PARAM")
    assert_error(await alice.put(path, {"messages": {}}, token=False), 401, "M_MISSING_TOKEN")
    # After all those refusals the transaction id is still free.
    assert (await alice.put(path, {"messages": {}})).code == 200


@pytest_twisted.ensureDeferred
async def test_to_device_position_survives_a_restart_with_an_empty_inbox(
    database: dict[str, Any], tmp_path: Any
) -> None:
    config = make_config_dict(str(tmp_path), database)
    running = await start_server(config, str(tmp_path))
    try:
        alice = running.client()
        await alice.register("alice", "pw")
        bob = running.client()
        await bob.register("bob", "pw")
        first = await sync(bob)
        for i in range(3):
            await send_to_device(alice, {bob.user_id: {bob.device_id: {"n": i}}})
        delivered = await sync(bob, first["next_batch"])
        assert len(to_device(delivered)) == 3
        acked = await sync(bob, delivered["next_batch"])  # the inbox is now empty
        token = acked["next_batch"]
    finally:
        await running.stop()

    running = await start_server(config, str(tmp_path))
    try:
        alice.base_url = bob.base_url = running.base_url
        await send_to_device(alice, {bob.user_id: {bob.device_id: {"after": "restart"}}})
        body = await sync(bob, token)
        assert [e["content"] for e in to_device(body)] == [{"after": "restart"}]
    finally:
        await running.stop()
