"""A state resolution that fails never leaves arbitrary state behind (issue #15).

Two of our servers fork a room (both set the topic at once). While resolutions fail,
each server must postpone the other's event: not persisted, current state untouched,
never "the first state set" kept at random. Once resolutions work again, the next
event brings the postponed one back (missing events are fetched) and both agree.
"""

from __future__ import annotations

from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer

import federation.room_events
from homeserver.events.state_res import StateResolutionError, resolve_state
from tests.federation.test_two_servers import (
    current_state,
    eventually_equal_state,
    room_anyone_may_change,
    sleep,
)
from tests.support.client import Client, q
from tests.support.server import RunningServer


class FailingResolver:
    """``resolve_state`` that fails while ``failing`` is set (counting the failures)."""

    def __init__(self) -> None:
        self.failing = True
        self.failures = 0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.failing:
            self.failures += 1
            raise StateResolutionError("forced by the test")
        return resolve_state(*args, **kwargs)


async def has_event(client: Client, room_id: str, event_id: str) -> bool:
    resp = await client.get(f"/_matrix/client/v3/rooms/{q(room_id)}/event/{q(event_id)}")
    return resp.code == 200


async def set_topic(client: Client, room_id: str, topic: str) -> str:
    resp = await client.put(
        f"/_matrix/client/v3/rooms/{q(room_id)}/state/m.room.topic", {"topic": topic}
    )
    assert resp.code == 200, resp
    return str(resp.json["event_id"])


@pytest_twisted.ensureDeferred
async def test_failed_resolution_postpones_the_event_instead_of_keeping_one_side(
    two_servers: tuple[RunningServer, RunningServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    alice, bob, room_id = await room_anyone_may_change(*two_servers)
    await eventually_equal_state(alice, bob, room_id)

    resolver = FailingResolver()
    monkeypatch.setattr(federation.room_events, "resolve_state", resolver)
    from_a, from_b = await defer.gatherResults(
        [
            defer.ensureDeferred(set_topic(alice, room_id, "from A")),
            defer.ensureDeferred(set_topic(bob, room_id, "from B")),
        ]
    )
    for _ in range(40):  # both transactions delivered and processed
        if resolver.failures >= 2:
            break
        await sleep(0.1)
    await sleep(0.5)
    assert resolver.failures >= 1, "the topics did not fork"
    # Each server that had to resolve postponed the other's event: nothing of it is
    # stored or applied, its own topic stays. (One resolution per server that forked.)
    postponed = 0
    for client, own, other in ((alice, from_a, from_b), (bob, from_b, from_a)):
        if not await has_event(client, room_id, other):
            postponed += 1
            assert (await current_state(client, room_id))[("m.room.topic", "")] == own
    assert postponed == resolver.failures

    resolver.failing = False
    # The next events cite the postponed ones: they are fetched and resolved properly.
    for client, body in ((alice, "after A"), (bob, "after B")):
        resp = await client.put(
            f"/_matrix/client/v3/rooms/{q(room_id)}/send/m.room.message/{body[-1]}",
            {"msgtype": "m.text", "body": body},
        )
        assert resp.code == 200, resp
    for _ in range(100):
        if all([await has_event(c, room_id, e) for c in (alice, bob) for e in (from_a, from_b)]):
            break
        await sleep(0.1)
    for client in (alice, bob):
        for event_id in (from_a, from_b):
            assert await has_event(client, room_id, event_id)
    await eventually_equal_state(alice, bob, room_id)


@pytest_twisted.ensureDeferred
async def test_concurrent_state_changes_resolve_over_the_incoming_event(
    two_servers: tuple[RunningServer, RunningServer], caplog: pytest.LogCaptureFixture
) -> None:
    """Both set the topic at once: each side resolves its current state over the other's
    topic while that event is still in hand (not queued for the database yet). The
    resolution must see it, not fail and keep one side: both agree with no further
    event, and no resolution failed."""
    alice, bob, room_id = await room_anyone_may_change(*two_servers)
    await eventually_equal_state(alice, bob, room_id)
    await defer.gatherResults(
        [
            defer.ensureDeferred(set_topic(alice, room_id, "from A")),
            defer.ensureDeferred(set_topic(bob, room_id, "from B")),
        ]
    )
    await eventually_equal_state(alice, bob, room_id)
    failed = [r.getMessage() for r in caplog.records if "State resolution" in r.getMessage()]
    assert not failed
