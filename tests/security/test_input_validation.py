"""Issue #14, input at the edge: invalid Unicode, pathological globs, values that used
to answer 500 (deep JSON, huge numbers, overflowing tokens, bad X-Matrix origins).
All over real HTTP against a running server, on both databases."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import pytest_twisted
from twisted.internet import defer, reactor
from twisted.internet.protocol import Factory, Protocol

from tests.media.helpers import download, upload_ok
from tests.media.helpers import user as media_user
from tests.rooms.helpers import (
    V3,
    assert_error,
    create_room,
    join,
    messages,
    room_path,
    send,
    sync,
    sync_raw,
    user,
)
from tests.support.client import Client, Response, q
from tests.support.server import RunningServer

LONE = b'"\\ud800"'  # a JSON string holding one high surrogate, and nothing after it
STARS = "*" * 2000 + "x"


async def with_timeout(d: Any, seconds: float = 10) -> Response:
    """A request that must be answered: a hang fails the test instead of blocking it."""
    deferred = defer.ensureDeferred(d)
    deferred.addTimeout(seconds, reactor)
    return await deferred  # type: ignore[no-any-return]


async def roommates(server: RunningServer) -> tuple[Client, Client, str]:
    alice = await user(server, "alice")
    bob = await user(server, "bob")
    room_id = await create_room(alice, preset="public_chat")
    assert (await join(bob, room_id)).code == 200
    return alice, bob, room_id


# --- 4. lone surrogates ----------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_lone_surrogate_to_device_is_refused(server: RunningServer) -> None:
    alice, bob, _ = await roommates(server)
    raw = b'{"messages": {"%s": {"*": {"body": %s}}}}' % (bob.user_id.encode(), LONE)
    resp = await alice.put(f"{V3}/sendToDevice/m.test/t1", raw=raw)
    assert_error(resp, 400, "M_BAD_JSON")
    assert (await sync_raw(bob)).code == 200


@pytest_twisted.ensureDeferred
async def test_stored_lone_surrogate_to_device_does_not_break_sync_across_restart(
    server: RunningServer,
) -> None:
    """A row stored before input was checked: the recipient's /sync still answers
    (U+FFFD in its place), before and after a restart."""
    alice, bob, _ = await roommates(server)
    assert alice.user_id and alice.device_id and bob.user_id and bob.device_id
    await server.hs.storage.e2ee.add_to_device_messages(
        alice.user_id,
        alice.device_id,
        "old-txn",
        0,
        {bob.user_id: {bob.device_id: {"type": "m.test", "content": {"body": "a\ud800b"}}}},
    )
    resp = await sync_raw(bob)
    assert resp.code == 200, resp
    bodies = [m["content"].get("body") for m in resp.json["to_device"]["events"]]
    assert bodies == ["a\ufffdb"]
    await server.restart()
    bob.base_url = server.base_url
    assert (await sync_raw(bob)).code == 200


@pytest_twisted.ensureDeferred
async def test_lone_surrogate_presence_status_is_refused(server: RunningServer) -> None:
    alice, bob, _ = await roommates(server)
    raw = b'{"presence": "online", "status_msg": %s}' % LONE
    resp = await alice.put(f"{V3}/presence/{q(alice.user_id or '')}/status", raw=raw)
    assert_error(resp, 400, "M_BAD_JSON")
    assert (await sync_raw(bob)).code == 200
    assert (await sync_raw(alice)).code == 200


@pytest_twisted.ensureDeferred
async def test_lone_surrogate_receipt_thread_id_is_answered_400(server: RunningServer) -> None:
    alice, _, room_id = await roommates(server)
    event_id = await send(alice, room_id, "hello")
    raw = b'{"thread_id": %s}' % LONE
    path = room_path(room_id, f"/receipt/m.read/{q(event_id)}")
    resp = await with_timeout(alice.post(path, raw=raw))
    assert_error(resp, 400, "M_BAD_JSON")


@pytest_twisted.ensureDeferred
async def test_lone_surrogate_in_event_content_is_refused(server: RunningServer) -> None:
    alice, bob, room_id = await roommates(server)
    for raw in (
        b'{"msgtype": "m.text", "body": %s}' % LONE,
        b'{"msgtype": "m.text", "body": "x", %s: 1}' % LONE,  # in a key
        b'{"msgtype": "m.text", "body": "\\udc00\\ud800"}',  # low then high: no pair
    ):
        resp = await alice.put(room_path(room_id, f"/send/m.room.message/t-{len(raw)}"), raw=raw)
        assert_error(resp, 400, "M_BAD_JSON")
    # A real pair is one code point and fine.
    resp = await alice.put(
        room_path(room_id, "/send/m.room.message/pair"),
        raw=b'{"msgtype": "m.text", "body": "\\ud83d\\ude00"}',
    )
    assert resp.code == 200, resp
    body = await sync(bob)
    timeline = body["rooms"]["join"][room_id]["timeline"]["events"]
    assert timeline[-1]["content"]["body"] == "\U0001f600"


@pytest_twisted.ensureDeferred
async def test_lone_surrogate_in_federation_send_is_refused_before_auth(
    server: RunningServer,
) -> None:
    raw = b'{"origin": "other.example", "pdus": [], "edus": [{"edu_type": "m.typing", "content": {"x": %s}}]}'
    client = server.client()
    resp = await client.put("/_matrix/federation/v1/send/t1", raw=raw % LONE, token=False)
    assert_error(resp, 400, "M_BAD_JSON")


@pytest_twisted.ensureDeferred
async def test_invalid_utf8_in_query_and_path_is_400(server: RunningServer) -> None:
    alice, _, room_id = await roommates(server)
    resp = await alice.request("GET", room_path(room_id, "/messages?dir=%FF"))
    assert_error(resp, 400, "M_INVALID_PARAM")
    resp = await alice.put(room_path(room_id, "/state/m.room.topic/%ED%A0%80"), {"topic": "x"})
    assert_error(resp, 400, "M_INVALID_PARAM")


# --- 5. globs answer in linear time ------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_star_glob_in_messages_filter_is_fast(server: RunningServer) -> None:
    alice, _, room_id = await roommates(server)
    await send(alice, room_id, "hello")
    started = time.monotonic()
    resp = await messages(alice, room_id, dir="b", filter={"not_types": [STARS]})
    elapsed = time.monotonic() - started
    assert resp.code == 200, resp
    assert len(resp.json["chunk"]) > 0  # nothing excluded: no type ends in x
    assert elapsed < 0.5, elapsed
    resp = await messages(alice, room_id, dir="b", filter={"types": ["m.*.*.*.*.*message"]})
    assert [e["type"] for e in resp.json["chunk"]] == []
    resp = await messages(alice, room_id, dir="b", filter={"types": ["m.*.mes*ge"]})
    assert {e["type"] for e in resp.json["chunk"]} == {"m.room.message"}


@pytest_twisted.ensureDeferred
async def test_star_glob_in_sync_filter_is_fast(server: RunningServer) -> None:
    alice, _, room_id = await roommates(server)
    await send(alice, room_id, "hello")
    started = time.monotonic()
    body = await sync(alice, filter={"room": {"timeline": {"not_types": [STARS]}}})
    elapsed = time.monotonic() - started
    assert body["rooms"]["join"][room_id]["timeline"]["events"]
    assert elapsed < 0.5, elapsed


@pytest_twisted.ensureDeferred
async def test_star_glob_in_push_rule_is_fast(server: RunningServer) -> None:
    alice, bob, room_id = await roommates(server)
    rule = {
        "conditions": [{"kind": "event_match", "key": "content.body", "pattern": STARS}],
        "actions": ["notify"],
    }
    resp = await bob.put(f"{V3}/pushrules/global/override/stars", rule)
    assert resp.code == 200, resp
    started = time.monotonic()
    await send(alice, room_id, "a" * 5000)
    elapsed = time.monotonic() - started
    assert elapsed < 0.5, elapsed


# --- 7. 400, not 500 --------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_deeply_nested_json_is_400(server: RunningServer) -> None:
    alice = await user(server, "alice")
    deep = b"[" * 10000 + b"]" * 10000
    resp = await alice.post(f"{V3}/createRoom", raw=b'{"x": %s}' % deep)
    assert_error(resp, 400, "M_NOT_JSON")
    moderately = b"[" * 150 + b"]" * 150  # parses, but deeper than any Matrix content
    resp = await alice.post(f"{V3}/createRoom", raw=b'{"x": %s}' % moderately)
    assert_error(resp, 400, "M_NOT_JSON")
    client = server.client()
    resp = await client.put("/_matrix/federation/v1/send/t1", raw=deep, token=False)
    assert_error(resp, 400, "M_NOT_JSON")


@pytest_twisted.ensureDeferred
async def test_non_canonical_numbers_in_events_are_400(server: RunningServer) -> None:
    alice, _, room_id = await roommates(server)
    cases = [
        (b'{"body": "x", "n": 1e400}', "M_BAD_JSON"),
        (b'{"body": "x", "n": -1e400}', "M_BAD_JSON"),
        (b'{"body": "x", "n": 1.5}', "M_BAD_JSON"),
        (b'{"body": "x", "n": 9007199254740992}', "M_BAD_JSON"),
        (b'{"body": "x", "n": NaN}', "M_NOT_JSON"),
        (b'{"body": "x", "n": Infinity}', "M_NOT_JSON"),
    ]
    for index, (raw, errcode) in enumerate(cases):
        resp = await alice.put(room_path(room_id, f"/send/m.room.message/n{index}"), raw=raw)
        assert_error(resp, 400, errcode)
    # The same huge number in a body that is not an event: refused too.
    resp = await alice.put(
        f"{V3}/user/{q(alice.user_id or '')}/account_data/x", raw=b'{"n": 1e400}'
    )
    assert_error(resp, 400, "M_BAD_JSON")


@pytest_twisted.ensureDeferred
async def test_overflowing_tokens_and_integers_are_400(server: RunningServer) -> None:
    alice, _, room_id = await roommates(server)
    huge = "9" * 24
    for params in (
        {"from": f"s{huge}_0", "dir": "f"},
        {"from": f"t{huge}-1", "dir": "f"},
        {"from": f"t1-{huge}", "dir": "b"},
        {"dir": "b", "limit": huge},
    ):
        resp = await messages(alice, room_id, **params)
        assert_error(resp, 400, "M_INVALID_PARAM")
    resp = await alice.get(
        f"/_matrix/client/v1/rooms/{q(room_id)}/timestamp_to_event",
        params={"ts": "999999999999999999999", "dir": "f"},
    )
    assert_error(resp, 400, "M_INVALID_PARAM")
    resp = await alice.get(f"{V3}/sync", params={"since": f"s{huge}_1"})
    assert_error(resp, 400, "M_INVALID_PARAM")
    resp = await alice.get(f"{V3}/sync", params={"filter": huge})
    assert_error(resp, 400, "M_INVALID_PARAM")
    resp = await alice.get(f"{V3}/user/{q(alice.user_id or '')}/filter/{huge}")
    assert_error(resp, 404, "M_NOT_FOUND")
    resp = await alice.get(f"{V3}/notifications", params={"from": huge})
    assert_error(resp, 400, "M_INVALID_PARAM")


class _Recorder(Protocol):
    connected: list[bool]

    def connectionMade(self) -> None:
        self.factory.connected.append(True)  # type: ignore[attr-defined]
        assert self.transport is not None
        self.transport.loseConnection()


@pytest_twisted.ensureDeferred
async def test_x_matrix_origin_must_be_a_server_name(server: RunningServer) -> None:
    """``origin`` names the server whose key is fetched: a path in it is refused with
    400 (a malformed header, as Synapse answers) before anything is fetched (a listener
    on its port sees no connection)."""
    factory = Factory.forProtocol(_Recorder)
    factory.connected = []  # type: ignore[attr-defined]
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")  # type: ignore[attr-defined]
    try:
        origin = f"127.0.0.1:{port.getHost().port}/../x"
        header = f'X-Matrix origin="{origin}",destination="test.local",key="ed25519:a",sig="c2ln"'
        client = server.client()
        resp = await with_timeout(
            client.get(
                "/_matrix/federation/v1/query/profile?user_id=%40a%3Atest.local",
                token=False,
                headers={"Authorization": header},
            )
        )
        assert_error(resp, 400, "M_UNAUTHORIZED")
        assert factory.connected == []  # type: ignore[attr-defined]
    finally:
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_filter_json_with_lone_surrogate_is_refused(server: RunningServer) -> None:
    alice, _, room_id = await roommates(server)
    raw_filter = '{"types": ["\\ud800"]}'
    resp = await messages(alice, room_id, dir="b", filter=raw_filter)
    assert_error(resp, 400, "M_BAD_JSON")
    resp = await alice.get(f"{V3}/sync", params={"filter": raw_filter})
    assert_error(resp, 400, "M_BAD_JSON")
    resp = await alice.post(f"{V3}/user/{q(alice.user_id or '')}/filter", raw=raw_filter.encode())
    assert_error(resp, 400, "M_BAD_JSON")
    json.loads(raw_filter)  # the text itself is valid JSON syntax


@pytest_twisted.ensureDeferred
async def test_range_header_of_spaces_is_answered_fast(server: RunningServer) -> None:
    """Adjacent optional runs in the Range regex backtracked quadratically: 16 KB of
    spaces held the reactor for seconds per request."""
    alice = await media_user(server, "alice")
    media_id = await upload_ok(alice, b"0123456789", "application/octet-stream")
    for header in ("bytes=1-" + " " * 16000 + "x", "bytes=1-" + "9" * 5000):
        started = time.monotonic()
        resp = await download(alice, media_id, headers={"Range": header})
        assert time.monotonic() - started < 0.5
        assert resp.code == 200 and resp.raw == b"0123456789", resp  # ignored, as invalid
    resp = await download(alice, media_id, headers={"Range": " bytes = 2 - 4 "})
    assert resp.code == 206 and resp.raw == b"234", resp


@pytest_twisted.ensureDeferred
async def test_forged_search_next_batch_is_400(server: RunningServer) -> None:
    alice, _, room_id = await roommates(server)
    await send(alice, room_id, "findme")
    body = {"search_categories": {"room_events": {"search_term": "findme"}}}
    for data in (
        b'{"o": "recent", "s": 99999999999999999999999}',
        b'{"o": "rank", "s": 1, "r": NaN}',
        b"[" * 2000 + b"]" * 2000,  # the request line stays under 16 KB
        b'{"o": "recent", "s": 1, "g": "room_id", "k": %s}' % LONE,
    ):
        token = base64.urlsafe_b64encode(data).decode().rstrip("=")
        resp = await alice.post(f"{V3}/search", body, params={"next_batch": token})
        assert_error(resp, 400, "M_INVALID_PARAM")
