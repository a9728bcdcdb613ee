"""The WebSocket transport over real loopback with a real WebSocket client."""

from __future__ import annotations

import json
import socket
import time
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor, task, threads
from websockets.exceptions import InvalidStatus

from tests.rooms.helpers import V3, create_room, room_path, send, user
from tests.support.client import Client, q
from tests.support.server import RunningServer
from tests.websocket.helpers import Ws, timeline_bodies, ws_url


async def _joined_pair(server: RunningServer) -> tuple[Client, Client, str]:
    alice = await user(server, "alice")
    bob = await user(server, "bob")
    room_id = await create_room(alice, preset="public_chat")
    resp = await bob.post(f"{V3}/join/{room_id}", {})
    assert resp.code == 200, resp
    return alice, bob, room_id


async def _refused(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    from websockets.sync.client import connect

    def _try() -> tuple[int, dict[str, Any]]:
        try:
            connect(url, additional_headers=headers or {}, proxy=None, compression=None)
        except InvalidStatus as e:
            return e.response.status_code, json.loads(e.response.body or b"{}")
        raise AssertionError("the upgrade was accepted")

    result: tuple[int, dict[str, Any]] = await threads.deferToThread(_try)
    return result


@pytest_twisted.ensureDeferred
async def test_versions_advertise_the_transport(server: RunningServer) -> None:
    resp = await server.client().get("/_matrix/client/versions", token=False)
    assert resp.json["unstable_features"].get("org.homeserver.ws") is True


@pytest_twisted.ensureDeferred
async def test_upgrade_refused_without_a_valid_token(server: RunningServer) -> None:
    status, body = await _refused(ws_url(server))
    assert (status, body["errcode"]) == (401, "M_MISSING_TOKEN")
    status, body = await _refused(ws_url(server), {"Authorization": "Bearer nope"})
    assert (status, body["errcode"]) == (401, "M_UNKNOWN_TOKEN")
    status, body = await _refused(ws_url(server, access_token="nope"))
    assert (status, body["errcode"]) == (401, "M_UNKNOWN_TOKEN")
    alice = await user(server, "alice")
    status, body = await _refused(
        ws_url(server, since="garbage"), {"Authorization": f"Bearer {alice.access_token}"}
    )
    assert (status, body["errcode"]) == (400, "M_INVALID_PARAM")
    # A plain GET (no upgrade) is an ordinary Matrix error, not a hung request.
    resp = await alice.get("/_matrix/client/unstable/org.homeserver.ws/stream")
    assert resp.code == 400 and resp.json["errcode"] == "M_UNRECOGNIZED", resp


@pytest_twisted.ensureDeferred
async def test_initial_sync_then_messages_pushed_promptly(server: RunningServer) -> None:
    alice, bob, room_id = await _joined_pair(server)
    await send(alice, room_id, "before")
    # Browsers cannot set headers: the access_token query parameter works too.
    ws = await Ws.open(server, bob, header_token=False, access_token=bob.access_token)
    try:
        assert ws.conn.subprotocol == "m.json"
        first = await ws.next_sync()
        assert room_id in first["rooms"]["join"]
        assert "before" in timeline_bodies(first, room_id)
        for text in ("one", "two"):
            started = time.monotonic()
            await send(alice, room_id, text)
            pushed = await ws.next_sync(timeout=5)
            assert timeline_bodies(pushed, room_id) == [text]
            assert time.monotonic() - started < 2.0
            # Exactly an incremental /sync body.
            assert set(pushed) >= {"next_batch", "rooms", "account_data", "to_device"}
    finally:
        await ws.close()


@pytest_twisted.ensureDeferred
async def test_send_is_idempotent_by_call_id(server: RunningServer) -> None:
    alice, bob, room_id = await _joined_pair(server)
    ws = await Ws.open(server, alice)
    try:
        await ws.next_sync()
        params = {
            "room_id": room_id,
            "event_type": "m.room.message",
            "content": {"msgtype": "m.text", "body": "once"},
        }
        first = await ws.call("send", params, call_id="txn-1")
        again = await ws.call("send", params, call_id="txn-1")
        assert first["result"]["event_id"] == again["result"]["event_id"]
        # The same transaction through REST, same device: the same event.
        resp = await alice.put(room_path(room_id, "/send/m.room.message/txn-1"), params["content"])
        assert resp.json["event_id"] == first["result"]["event_id"]
        other = await ws.call("send", params, call_id="txn-2")
        assert other["result"]["event_id"] != first["result"]["event_id"]
        resp = await bob.get(f"{V3}/rooms/{room_id}/messages?dir=b&limit=10")
        bodies = [e["content"].get("body") for e in resp.json["chunk"]]
        assert bodies.count("once") == 2

        # Our own echo carries the transaction id, as over /sync.
        def echoed() -> list[dict[str, Any]]:
            rooms = [s["rooms"]["join"].get(room_id, {}) for s in ws.syncs[1:]]
            return [e for r in rooms for e in r.get("timeline", {}).get("events", [])]

        while len(echoed()) < 2:
            await ws.next_sync()
        assert [e["unsigned"]["transaction_id"] for e in echoed()] == ["txn-1", "txn-2"]
    finally:
        await ws.close()


@pytest_twisted.ensureDeferred
async def test_state_typing_receipt_read_markers_seen_by_others(server: RunningServer) -> None:
    alice, bob, room_id = await _joined_pair(server)
    event_id = await send(bob, room_id, "read me")
    resp = await bob.get(f"{V3}/sync")
    since = resp.json["next_batch"]
    ws = await Ws.open(server, alice)
    try:
        await ws.next_sync()
        r = await ws.call(
            "state",
            {"room_id": room_id, "event_type": "m.room.topic", "content": {"topic": "ws"}},
        )
        assert r["result"]["event_id"].startswith("$"), r
        r = await ws.call("typing", {"room_id": room_id, "typing": True, "timeout": 30000})
        assert r == {"id": r["id"], "result": {}}
        r = await ws.call(
            "receipt", {"room_id": room_id, "receipt_type": "m.read", "event_id": event_id}
        )
        assert "result" in r, r
        r = await ws.call(
            "read_markers", {"room_id": room_id, "m.fully_read": event_id, "m.read": event_id}
        )
        assert "result" in r, r

        resp = await bob.get(f"{V3}/sync?since={since}&timeout=0")
        joined = resp.json["rooms"]["join"][room_id]
        topics = [
            e["content"]["topic"]
            for e in joined["timeline"]["events"]
            if e["type"] == "m.room.topic"
        ]
        assert topics == ["ws"]
        ephemeral = {e["type"]: e["content"] for e in joined["ephemeral"]["events"]}
        assert alice.user_id in ephemeral["m.typing"]["user_ids"]
        assert alice.user_id in ephemeral["m.receipt"][event_id]["m.read"]
        # The fully-read marker is alice's own room account data.
        resp = await alice.get(f"{V3}/sync")
        data = resp.json["rooms"]["join"][room_id]["account_data"]["events"]
        assert {"type": "m.fully_read", "content": {"event_id": event_id}} in data
    finally:
        await ws.close()


@pytest_twisted.ensureDeferred
async def test_errors_and_ping(server: RunningServer) -> None:
    alice, _bob, room_id = await _joined_pair(server)
    outsider = await user(server, "carol")
    ws = await Ws.open(server, alice)
    try:
        await ws.next_sync()
        assert await ws.call("ping") == {"id": "c1", "result": {}}
        r = await ws.call("nope", {})
        assert r["error"]["errcode"] == "M_UNRECOGNIZED"
        r = await ws.call("send", {"room_id": room_id, "event_type": "m.room.message"})
        assert r["error"]["errcode"] == "M_MISSING_PARAM"
        r = await ws.call("send", {"room_id": room_id, "event_type": 5, "content": {}})
        assert r["error"]["errcode"] == "M_BAD_JSON"
        r = await ws.call("typing", {"room_id": room_id, "typing": "yes"})
        assert r["error"]["errcode"] == "M_BAD_JSON"
        r = await ws.call(
            "receipt", {"room_id": room_id, "receipt_type": "m.bogus", "event_id": "$x"}
        )
        assert r["error"]["errcode"] == "M_INVALID_PARAM"
        # Replies that cannot name a call have a null id.
        await ws.send_raw("{not json")
        r = await ws.reply(None)  # type: ignore[arg-type]
        assert r["error"]["errcode"] == "M_NOT_JSON"
        await ws.send_raw(json.dumps({"method": "ping"}))
        r = await ws.reply(None)  # type: ignore[arg-type]
        assert r["error"]["errcode"] == "M_MISSING_PARAM"
        r = await ws.call("ping", call_id="p", params=[])  # type: ignore[arg-type]
        assert r["error"]["errcode"] == "M_BAD_JSON"
    finally:
        await ws.close()
    ws = await Ws.open(server, outsider)
    try:
        await ws.next_sync()
        r = await ws.call(
            "send",
            {"room_id": room_id, "event_type": "m.room.message", "content": {"body": "x"}},
        )
        assert r["error"]["errcode"] == "M_FORBIDDEN"
    finally:
        await ws.close()


@pytest_twisted.ensureDeferred
async def test_reconnect_with_since_misses_nothing_repeats_nothing(server: RunningServer) -> None:
    alice, bob, room_id = await _joined_pair(server)
    ws = await Ws.open(server, bob)
    received: list[str] = []
    try:
        await ws.next_sync()
        for i in range(3):
            await send(alice, room_id, f"m{i}")
        while len(received) < 3:
            received += timeline_bodies(await ws.next_sync(), room_id)
        token = ws.next_batch
    finally:
        await ws.close()
    for i in range(3, 6):
        await send(alice, room_id, f"m{i}")
    ws = await Ws.open(server, bob, since=token)
    try:
        while len(received) < 6:
            received += timeline_bodies(await ws.next_sync(), room_id)
        await send(alice, room_id, "m6")
        received += timeline_bodies(await ws.next_sync(), room_id)
    finally:
        await ws.close()
    assert received == [f"m{i}" for i in range(7)]


@pytest_twisted.ensureDeferred
async def test_logout_closes_the_connection(server: RunningServer) -> None:
    alice, _bob, room_id = await _joined_pair(server)
    ws = await Ws.open(server, alice)
    await ws.next_sync()
    resp = await alice.post(f"{V3}/logout", {})
    assert resp.code == 200, resp
    # Logging out deletes the device, which wakes the connection: it closes at once.
    closed = await ws.drain_until_closed()
    assert closed.rcvd is not None and closed.rcvd.code == 4401


SLOW = {
    "websocket": {
        "stall_timeout": 1000,
        "max_buffered_bytes": 256 * 1024,
        "close_timeout": 10_000,
    }
}


@pytest.mark.parametrize("config_overrides", [SLOW])
@pytest_twisted.ensureDeferred
async def test_slow_consumer_closed_with_4000_then_resumes(server: RunningServer) -> None:
    alice, bob, room_id = await _joined_pair(server)
    # A client that stops reading: a tiny receive buffer, and at most one message queued.
    sock = socket.create_connection(("127.0.0.1", int(server.base_url.rsplit(":", 1)[1])))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
    # A timeline limit above what is sent, so no response is `limited`.
    everything = json.dumps({"room": {"timeline": {"limit": 500}}})
    ws = await Ws.open(server, bob, sock=sock, max_queue=1, filter=everything)
    first = await ws.next_sync()
    token = first["next_batch"]
    # A small kernel send buffer on the server's side too (no autotuning up to megabytes),
    # so the bytes needed to back the server up do not depend on the machine.
    assert server.hs.websockets is not None
    (conn,) = server.hs.websockets.connections
    conn.transport.getHandle().setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
    big = "x" * 40_000
    sent = 0
    # Until the server gives up on the connection: once its buffers are full it stops
    # building for it, and closes it when over the byte limit or stalled for 1 s
    # (bounded: at most 200 events, at most 30 s).
    assert server.hs.websockets is not None
    deadline = time.monotonic() + 30
    while not server.hs.websockets.closed_too_slow and time.monotonic() < deadline:
        if sent < 200:
            await send(alice, room_id, content={"msgtype": "m.text", "body": f"{sent} {big}"})
            sent += 1
        else:
            await _sleep(0.05)
    assert server.hs.websockets.closed_too_slow
    # It reads again: what was already sent, then the close with the reason.
    bodies: list[str] = []
    closed = await ws.drain_until_closed()
    assert closed.rcvd is not None, closed
    assert closed.rcvd.code == 4000
    assert "next_batch" in closed.rcvd.reason
    for s in ws.syncs[1:]:
        bodies += timeline_bodies(s, room_id)
        token = s["next_batch"]
    # Resuming from the last next_batch received brings exactly the rest.
    ws = await Ws.open(server, bob, since=token, filter=everything)
    try:
        while len(bodies) < sent:
            bodies += timeline_bodies(await ws.next_sync(), room_id)
    finally:
        await ws.close()
    assert [b.split(" ")[0] for b in bodies] == [str(i) for i in range(sent)]
    assert not any(s["rooms"]["join"][room_id]["timeline"]["limited"] for s in ws.syncs)


@pytest_twisted.ensureDeferred
async def test_server_stop_closes_connections(server: RunningServer) -> None:
    alice = await user(server, "alice")
    ws = await Ws.open(server, alice)
    await ws.next_sync()
    await server.restart()
    closed = await ws.drain_until_closed()
    assert closed.rcvd is not None and closed.rcvd.code == 4001


PRESENCE_FAST = {"presence": {"sync_online_timeout": 300, "offline_timeout": 700}}


@pytest.mark.parametrize("config_overrides", [PRESENCE_FAST])
@pytest_twisted.ensureDeferred
async def test_idle_connection_keeps_the_user_online_until_closed(
    server: RunningServer,
) -> None:
    alice, bob, _room_id = await _joined_pair(server)
    ws = await Ws.open(server, alice)
    try:
        await ws.next_sync()
        # Idle for more than the offline timeout: no sync runs, the connection holds.
        await _sleep(1.0)
        status = await bob.get(f"{V3}/presence/{q(alice.user_id or '')}/status")
        assert status.json["presence"] == "online", status
    finally:
        await ws.close()
    await _sleep(1.0)
    status = await bob.get(f"{V3}/presence/{q(alice.user_id or '')}/status")
    assert status.json["presence"] == "offline", status


PING_FAST = {"websocket": {"ping_interval": 300, "ping_timeout": 200}}


@pytest.mark.parametrize("config_overrides", [PING_FAST])
@pytest_twisted.ensureDeferred
async def test_answered_pings_keep_an_idle_connection_and_pushes_stay_prompt(
    server: RunningServer,
) -> None:
    alice, bob, room_id = await _joined_pair(server)
    ws = await Ws.open(server, bob)
    try:
        await ws.next_sync()
        await _sleep(1.5)  # five ping rounds, each answered by the client
        started = time.monotonic()
        await send(alice, room_id, "still here")
        pushed = await ws.next_sync(timeout=5)
        if not timeline_bodies(pushed, room_id):  # alice's last active time came first
            assert alice.user_id in {e["sender"] for e in pushed["presence"]["events"]}
            pushed = await ws.next_sync(timeout=5)
        assert timeline_bodies(pushed, room_id) == ["still here"]
        assert time.monotonic() - started < 2.0
    finally:
        await ws.close()


async def _sleep(seconds: float) -> None:
    await task.deferLater(reactor, seconds, lambda: None)  # type: ignore[arg-type]
