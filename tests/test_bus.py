"""The bus: every message type survives its encoding; LocalBus keeps subscription order
and isolates failures; two RedisBus processes exchange every type over real Redis,
skip their own messages and come back after the connection is killed."""

from __future__ import annotations

import os
import time
import uuid
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer, reactor, task

from homeserver.bus import (
    MESSAGE_TYPES,
    AccountDataChanged,
    AliasChanged,
    DeviceListsChanged,
    DevicesChanged,
    EventsPersisted,
    LocalBus,
    LocalEventAccepted,
    Message,
    PresenceChanged,
    PresencePing,
    ProfileChanged,
    ReceiptStored,
    RedisBus,
    RoomsInvalidated,
    ToDeviceQueued,
    TokensInvalidated,
    TypingChanged,
    UserSyncing,
    decode,
    encode,
)
from homeserver.config import RedisConfig
from homeserver.events.event import Event
from homeserver.events.room_versions import get_room_version
from storage.presence import PresenceState
from storage.receipts import Receipt


def _event(event_id: str, stream: int, **kw: Any) -> Event:
    version = get_room_version("10")
    assert version is not None
    pdu = {
        "type": "m.room.message",
        "room_id": "!room:example.org",
        "sender": "@alice:example.org",
        "content": {"body": "héllo"},
        "origin_server_ts": 1,
        "depth": 3,
        "prev_events": ["$prev"],
        "auth_events": ["$auth"],
        "hashes": {"sha256": "x"},
        "signatures": {},
    }
    return Event(event_id, pdu, version, stream_ordering=stream, **kw)


def _redacted_event() -> Event:
    redaction = _event("$redaction", 8, sender_had_redact_power=True)
    return _event(
        "$redacted", -4, outlier=True, redacted_by="$redaction", redaction=redaction, withheld=True
    )


STATE = PresenceState("@alice:example.org", "online", "busy", 10, 20, True, 7)
SAMPLES: dict[type[Message], Message] = {
    EventsPersisted: EventsPersisted(
        [_event("$a", 5, txn_device_id="DEV", txn_id="t1"), _redacted_event()]
    ),
    RoomsInvalidated: RoomsInvalidated(("!a:example.org", "!b:example.org")),
    LocalEventAccepted: LocalEventAccepted(_event("$l", 0, rejected_reason="auth")),
    ReceiptStored: ReceiptStored(Receipt("!r:x", "m.read", "@u:x", "main", "$e", {"ts": 1}, 42)),
    TypingChanged: TypingChanged("!r:x", "@u:x", True),
    PresenceChanged: PresenceChanged(STATE),
    PresencePing: PresencePing(STATE),
    UserSyncing: UserSyncing("@bob:test", "DEV", None),
    DeviceListsChanged: DeviceListsChanged((("@bob:test", None), ("@carol:test", "@bob:test"))),
    ToDeviceQueued: ToDeviceQueued(
        {"@u:x": {"DEV": {"type": "m.x", "sender": "@v:x", "content": {"k": [1]}}}}
    ),
    DevicesChanged: DevicesChanged("@u:x", ("A", "B"), True),
    AccountDataChanged: AccountDataChanged("@u:x", 9),
    ProfileChanged: ProfileChanged("@u:x", "displayname", "Ü"),
    TokensInvalidated: TokensInvalidated("@u:x"),
    AliasChanged: AliasChanged("#a:x", None),
}


def _event_fields(ev: Event | None) -> Any:
    if ev is None:
        return None
    return (
        ev.event_id,
        ev.pdu,
        ev.room_version,
        ev.stream_ordering,
        ev.txn_device_id,
        ev.txn_id,
        ev.redacted_by,
        ev.rejected_reason,
        ev.outlier,
        ev.sender_had_redact_power,
        ev.withheld,
        _event_fields(ev.redaction),
    )


def _comparable(msg: Message) -> Any:
    """Events compare by identity; compare what they carry instead."""
    if isinstance(msg, EventsPersisted):
        return [_event_fields(ev) for ev in msg.events]
    if isinstance(msg, LocalEventAccepted):
        return _event_fields(msg.event)
    return msg


@pytest.mark.parametrize("name", sorted(MESSAGE_TYPES))
def test_every_message_type_round_trips(name: str) -> None:
    cls = MESSAGE_TYPES[name]
    assert cls in SAMPLES, f"no sample for {cls.__name__}: add one to SAMPLES"
    sample = SAMPLES[cls]
    decoded = decode(encode(sample))
    assert type(decoded) is cls
    assert _comparable(decoded) == _comparable(sample)
    assert encode(decoded) == encode(sample)


def test_unknown_message_is_refused() -> None:
    with pytest.raises(ValueError):
        decode(b'nonsense {"a": 1}')


def test_local_bus_calls_in_subscription_order_and_isolates_failures() -> None:
    bus = LocalBus()
    calls: list[str] = []

    def failing(_: TypingChanged) -> None:
        calls.append("failing")
        raise RuntimeError("boom")

    bus.subscribe(TypingChanged, lambda m: calls.append(f"first {m.user_id}"))
    bus.subscribe(TypingChanged, failing)
    bus.subscribe(TypingChanged, lambda m: calls.append("third"))
    bus.subscribe(TokensInvalidated, lambda m: calls.append("other type"))
    bus.publish(TypingChanged("!r:x", "@u:x", True))
    assert calls == ["first @u:x", "failing", "third"]


@pytest_twisted.ensureDeferred
async def test_publish_and_wait_awaits_each_handler_in_turn() -> None:
    bus = LocalBus()
    clock = task.Clock()
    calls: list[str] = []

    async def slow(m: DevicesChanged) -> None:
        calls.append("slow start")
        await task.deferLater(clock, 1, lambda: None)
        calls.append("slow end")

    async def failing(m: DevicesChanged) -> None:
        raise RuntimeError("boom")

    bus.subscribe(DevicesChanged, slow)
    bus.subscribe(DevicesChanged, failing)
    bus.subscribe(DevicesChanged, lambda m: calls.append("sync"))
    done = defer.ensureDeferred(bus.publish_and_wait(DevicesChanged("@u:x", ("D",), False)))
    assert calls == ["slow start"] and not done.called
    clock.advance(1)
    await done
    assert calls == ["slow start", "slow end", "sync"]


# Real Redis ----------------------------------------------------------------------------

REDIS = RedisConfig(
    enabled=True,
    host=os.environ.get("TEST_REDIS_HOST", "127.0.0.1"),
    port=int(os.environ.get("TEST_REDIS_PORT", "6379")),
    password=None,
    dbid=0,
)


def _require_redis() -> Any:
    import redis

    client = redis.Redis(host=REDIS.host, port=REDIS.port, socket_connect_timeout=3)
    try:
        client.ping()
    except Exception as e:
        reason = f"Redis not reachable at {REDIS.host}:{REDIS.port}: {e}"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return client


async def _until(predicate: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        await task.deferLater(reactor, 0.02, lambda: None)


@pytest_twisted.ensureDeferred
async def test_redis_buses_exchange_every_type_and_survive_a_killed_connection() -> None:
    admin = _require_redis()
    channel = f"bus-test-{uuid.uuid4().hex}"
    first = RedisBus(reactor, REDIS, channel, "first")
    second = RedisBus(reactor, REDIS, channel, "second")
    got_first: list[Message] = []
    got_second: list[Message] = []
    for cls in MESSAGE_TYPES.values():
        first.subscribe(cls, got_first.append)
        second.subscribe(cls, got_second.append)
    first.start()
    second.start()
    try:
        await _until(lambda: first.subscribed.is_set() and second.subscribed.is_set())
        for sample in SAMPLES.values():
            first.publish(sample)
        # Dispatched locally at once, on the publisher's own bus.
        assert got_first == list(SAMPLES.values())
        await _until(lambda: len(got_second) == len(SAMPLES))
        assert [_comparable(m) for m in got_second] == [_comparable(m) for m in SAMPLES.values()]

        # second's message reaches first; first never hears its own again.
        second.publish(TokensInvalidated("@from-second:x"))
        await _until(lambda: TokensInvalidated("@from-second:x") in got_first)
        await task.deferLater(reactor, 0.3, lambda: None)
        assert len(got_first) == len(SAMPLES) + 1
        assert got_second.count(TokensInvalidated("@from-second:x")) == 1

        # Redis drops every subscriber connection: both come back and hear later messages.
        assert admin.client_kill_filter(_type="pubsub") >= 2
        n = 0
        while True:  # published until heard: one sent while reconnecting is lost
            n += 1
            probe = TokensInvalidated(f"@after-kill-{n}:x")
            first.publish(probe)
            try:
                await _until(lambda p=probe: p in got_second, timeout=0.5)  # type: ignore[misc]
                break
            except AssertionError:
                assert n < 40, "the subscriber never came back"
        second.publish(TypingChanged("!r:x", "@after:x", False))
        await _until(lambda: TypingChanged("!r:x", "@after:x", False) in got_first)
    finally:
        await first.stop()
        await second.stop()
        admin.close()


@pytest_twisted.ensureDeferred
async def test_redis_down_keeps_local_dispatch() -> None:
    down = RedisConfig(enabled=True, host="127.0.0.1", port=49001, password=None, dbid=0)
    bus = RedisBus(reactor, down, "nowhere", "lonely")
    got: list[Message] = []
    bus.subscribe(TypingChanged, got.append)
    bus.start()
    try:
        bus.publish(TypingChanged("!r:x", "@u:x", True))
        assert got == [TypingChanged("!r:x", "@u:x", True)]
    finally:
        await bus.stop()


@pytest.fixture
def config_overrides() -> dict[str, Any]:
    return {
        "server_name": f"bus-{uuid.uuid4().hex[:8]}.test",
        "redis": {"enabled": True, "host": REDIS.host, "port": REDIS.port},
    }


@pytest_twisted.ensureDeferred
async def test_a_server_with_redis_publishes_what_happened(
    config_overrides: dict[str, Any], database: dict[str, Any], tmp_path: Any
) -> None:
    admin = _require_redis()
    from tests.support.server import make_config_dict, start_server

    pubsub = admin.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(f"homeserver.bus.{config_overrides['server_name']}")
    running = await start_server(
        make_config_dict(str(tmp_path), database, **config_overrides), str(tmp_path)
    )
    heard: list[Message] = []

    def drain() -> bool:
        while (item := pubsub.get_message(timeout=0)) is not None:
            if item["type"] == "message":
                heard.append(decode(item["data"].partition(b" ")[2]))
        return any(isinstance(m, AccountDataChanged) for m in heard)

    try:
        alice = running.client()
        await alice.register("alice")
        path = f"/_matrix/client/v3/user/{alice.user_id}/account_data/m.example"
        assert (await alice.put(path, {"a": 1})).code == 200
        await _until(drain)
        assert DevicesChanged(alice.user_id, (alice.device_id,), True) in heard
        changed = [m for m in heard if isinstance(m, AccountDataChanged)]
        assert changed[-1].user_id == alice.user_id
    finally:
        await running.stop()
        pubsub.close()
        admin.close()
