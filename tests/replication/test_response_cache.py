"""The txn-id response cache: bounded, least recently used out first, answers expire."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer, task

from homeserver.replication.server import Answer, ResponseCache


def _runs(log: list[str], name: str) -> Callable[[], Coroutine[Any, Any, Answer]]:
    async def compute() -> Answer:
        log.append(name)
        return 200, {"name": name}

    return compute


@pytest_twisted.ensureDeferred
async def test_answers_expire_after_their_time() -> None:
    clock = task.Clock()
    cache = ResponseCache(clock, expiry_s=60)
    log: list[str] = []
    assert await cache.wrap(("e", "t"), _runs(log, "a")) == (200, {"name": "a"})
    clock.advance(59)
    assert await cache.wrap(("e", "t"), _runs(log, "b")) == (200, {"name": "a"})
    clock.advance(2)
    assert await cache.wrap(("e", "t"), _runs(log, "c")) == (200, {"name": "c"})
    assert log == ["a", "c"]


@pytest_twisted.ensureDeferred
async def test_the_least_recently_used_answer_leaves_first() -> None:
    cache = ResponseCache(task.Clock(), max_entries=2)
    log: list[str] = []
    await cache.wrap(("e", "1"), _runs(log, "1"))
    await cache.wrap(("e", "2"), _runs(log, "2"))
    await cache.wrap(("e", "1"), _runs(log, "x"))  # 1 used again
    await cache.wrap(("e", "3"), _runs(log, "3"))  # 2 leaves
    assert len(cache) == 2
    await cache.wrap(("e", "1"), _runs(log, "y"))
    await cache.wrap(("e", "2"), _runs(log, "2 again"))
    assert log == ["1", "2", "3", "2 again"]


@pytest_twisted.ensureDeferred
async def test_a_cancelled_caller_does_not_cancel_the_run() -> None:
    cache = ResponseCache(task.Clock())
    gate: defer.Deferred[None] = defer.Deferred()
    runs = []

    async def compute() -> Answer:
        runs.append(1)
        await gate
        return 200, {}

    first = defer.ensureDeferred(cache.wrap(("e", "t"), compute))
    first.cancel()
    with pytest.raises(defer.CancelledError):
        await first
    gate.callback(None)
    assert await cache.wrap(("e", "t"), compute) == (200, {})
    assert runs == [1]


@pytest_twisted.ensureDeferred
async def test_a_run_in_flight_does_not_stop_older_answers_leaving() -> None:
    cache = ResponseCache(task.Clock(), max_entries=2)
    gate: defer.Deferred[None] = defer.Deferred()

    async def slow() -> Answer:
        await gate
        return 200, {}

    log: list[str] = []
    hanging = defer.ensureDeferred(cache.wrap(("e", "slow"), slow))
    for name in ("1", "2", "3", "4"):
        await cache.wrap(("e", name), _runs(log, name))
    assert len(cache) == 2  # the run in flight and the newest answer
    gate.callback(None)
    assert await hanging == (200, {})
