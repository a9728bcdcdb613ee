"""The outbox drops EDUs queued with a time to live once they are stale, and only those."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest_twisted
from twisted.internet import defer, reactor, task

from federation.interfaces import FederationRequestError
from federation.sender import FederationSender, RetrySettings
from homeserver.rooms.room_cache import RoomCache
from storage.database import Database, make_engine
from storage.storage import Storage


@pytest_twisted.async_yield_fixture
async def storage(database: dict[str, Any]) -> AsyncIterator[Storage]:
    db = Database(make_engine(database), reactor, cp_min=1, cp_max=2)
    try:
        yield await Storage.open(db)
    finally:
        db.close()


class RemoteServer:
    """Stands in for the network: refuses while ``down``, records what it accepts."""

    def __init__(self) -> None:
        self.down = True
        self.attempts = 0
        self.received: list[dict[str, Any]] = []

    async def put_json(self, destination: str, path: str, body: dict[str, Any], **kw: Any) -> Any:
        self.attempts += 1
        if self.down:
            raise FederationRequestError(destination, 502, None, "unreachable")
        self.received.append(body)
        return {"pdus": {}}


async def until(condition: Callable[[], bool]) -> None:
    for _ in range(200):
        if condition():
            return
        await task.deferLater(reactor, 0.01, lambda: None)
    raise AssertionError("condition never met")


@pytest_twisted.ensureDeferred
async def test_stale_ephemeral_edus_are_dropped_durable_ones_kept(storage: Storage) -> None:
    clock = task.Clock()
    clock.advance(1_000)
    remote = RemoteServer()
    sender = FederationSender(
        "a.example",
        clock,
        storage.federation,
        remote,
        RoomCache(storage.events, storage.state_groups),
        RetrySettings(min_interval_ms=1000),
    )
    try:
        typing = {"room_id": "!r:a.example", "user_id": "@u:a.example", "typing": True}
        await sender.send_edu(["b.example"], "m.typing", typing, ttl_ms=60_000)
        await until(lambda: remote.attempts == 1)
        await sender.send_edu(["b.example"], "m.device_list_update", {"user_id": "@u:a.example"})
        await sender.send_edu(["b.example"], "m.receipt", {"fresh": True}, ttl_ms=300_000)

        clock.advance(120)  # the typing notice is stale now, the receipt is not
        remote.down = False
        sender.retry_now("b.example")
        await until(lambda: bool(remote.received))
        edus = remote.received[0]["edus"]
        assert edus == [
            {"edu_type": "m.device_list_update", "content": {"user_id": "@u:a.example"}},
            {"edu_type": "m.receipt", "content": {"fresh": True}},
        ]
        await until(lambda: not sender._running)
        assert await storage.federation.peek("b.example", "edu", 10) == []
    finally:
        sender.stop()


@pytest_twisted.ensureDeferred
async def test_an_item_queued_while_the_loop_finds_the_queue_empty_is_sent(
    storage: Storage,
) -> None:
    """The loop's last look at the queue may run just before a new item commits; the
    new item's kick must make it look again rather than be lost until the next one."""
    remote = RemoteServer()
    remote.down = False
    sender = FederationSender(
        "a.example",
        reactor,
        storage.federation,
        remote,
        RoomCache(storage.events, storage.state_groups),
        RetrySettings(min_interval_ms=60_000),
    )
    real_peek = storage.federation.peek
    late: list[bool] = []

    async def peek_then_enqueue(destination: str, kind: str, limit: int) -> Any:
        result = await real_peek(destination, kind, limit)
        if kind == "edu" and remote.received and not late:
            # The loop saw an empty queue; another item commits before it stops.
            late.append(True)
            await sender.send_edu(["b.example"], "m.test", {"n": 2})
        return result

    storage.federation.peek = peek_then_enqueue  # type: ignore[method-assign]
    try:
        await sender.send_edu(["b.example"], "m.test", {"n": 1})
        await until(lambda: len(remote.received) == 2)
        assert [t["edus"][0]["content"] for t in remote.received] == [{"n": 1}, {"n": 2}]
    finally:
        sender.stop()


@pytest_twisted.ensureDeferred
async def test_wait_sent_waits_for_acceptance_but_not_for_failing_or_slow_servers(
    storage: Storage,
) -> None:
    remote = RemoteServer()
    remote.down = False
    hanging: list[defer.Deferred[Any]] = []

    async def put_json(destination: str, path: str, body: dict[str, Any], **kw: Any) -> Any:
        if destination == "slow.example":
            d: defer.Deferred[Any] = defer.Deferred()
            hanging.append(d)
            return await d
        return await RemoteServer.put_json(remote, destination, path, body)

    remote.put_json = put_json  # type: ignore[method-assign]
    sender = FederationSender(
        "a.example",
        reactor,
        storage.federation,
        remote,
        RoomCache(storage.events, storage.state_groups),
        RetrySettings(min_interval_ms=60_000),
    )
    try:
        # Accepted: the wait ends once the destination has it.
        await sender.send_edu(["b.example"], "m.test", {"n": 1})
        await sender.wait_sent(["b.example"], 5.0)
        assert [t["edus"][0]["content"] for t in remote.received] == [{"n": 1}]

        # Refused: the wait ends with the attempt; backing off, it does not wait at all.
        remote.down = True
        for n in (2, 3):
            started = reactor.seconds()
            await sender.send_edu(["b.example"], "m.test", {"n": n})
            await sender.wait_sent(["b.example"], 5.0)
            assert reactor.seconds() - started < 1.0
        assert remote.attempts == 2  # the third is queued for the retry

        # No answer: the wait gives up after its timeout.
        started = reactor.seconds()
        await sender.send_edu(["slow.example"], "m.test", {"n": 4})
        await sender.wait_sent(["slow.example"], 0.3)
        assert 0.3 <= reactor.seconds() - started < 2.0
        assert hanging
    finally:
        sender.stop()
        for d in hanging:
            d.callback({"pdus": {}})
