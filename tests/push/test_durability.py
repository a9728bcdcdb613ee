"""Push actions and pushes survive a crash between an event's commit and its evaluation,
and a restart counts and pushes nothing twice."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_twisted

from homeserver.events.event import Event
from storage.database import Transaction
from tests.ephemeral.helpers import V3, send, shared_room, sync, user
from tests.push.gateway import GatewayStub, sleep, start_gateway
from tests.push.test_counts import counts, mention, unread
from tests.push.test_pushers import pusher_body, set_pusher
from tests.support.client import Client
from tests.support.server import RunningServer


@pytest_twisted.async_yield_fixture
async def gateway() -> AsyncIterator[GatewayStub]:
    stub = await start_gateway()
    try:
        yield stub
    finally:
        await stub.stop()


def crash_before_evaluation(server: RunningServer) -> list[Event]:
    """From now on, events commit but the push action generator never sees them (as if
    the process died right after each commit). Returns the events it missed."""
    assert server.hs.push is not None
    missed: list[Event] = []
    server.hs.push.actions.on_persisted = missed.extend  # type: ignore[method-assign]
    return missed


def repoint(server: RunningServer, *clients: Client) -> None:
    """After a restart: same access tokens, new port."""
    for client in clients:
        client.base_url = server.base_url


async def stored_position(server: RunningServer) -> int:
    return await server.hs.storage.push.get_push_actions_position()


async def notification_ids(client: Client) -> list[str]:
    resp = await client.get(f"{V3}/notifications")
    assert resp.code == 200, resp
    return [n["event"]["event_id"] for n in resp.json["notifications"]]


@pytest_twisted.ensureDeferred
async def test_events_committed_before_a_crash_are_counted_after_restart(
    server: RunningServer,
) -> None:
    alice, bob = await user(server, "alice"), await user(server, "bob")
    room_id = await shared_room(alice, bob)
    first = await send(alice, room_id, "counted")
    assert await unread(bob, room_id) == counts(1)

    missed = crash_before_evaluation(server)
    second = await send(alice, room_id, "lost in the crash?")
    third = await mention(alice, room_id, bob)
    assert [e.event_id for e in missed] == [second, third]
    assert await stored_position(server) < server.hs.storage.events.stream.current_position

    await server.restart()
    repoint(server, alice, bob)
    assert await unread(bob, room_id) == counts(3, 1)
    assert await notification_ids(bob) == [third, second, first]
    assert await stored_position(server) == server.hs.storage.events.stream.current_position


@pytest_twisted.ensureDeferred
async def test_no_double_counting_after_restarts(server: RunningServer) -> None:
    alice, bob = await user(server, "alice"), await user(server, "bob")
    room_id = await shared_room(alice, bob)
    await send(alice, room_id, "one")
    await mention(alice, room_id, bob)
    assert await unread(bob, room_id) == counts(2, 1)

    await server.restart()  # clean: the position was stored with the rows
    repoint(server, alice, bob)
    assert await unread(bob, room_id) == counts(2, 1)

    # A stale position (as after a crash before a lazy position write): the catch-up
    # re-reads events whose actions are stored and must skip them.
    def _rewind(txn: Transaction) -> None:
        txn.execute("UPDATE push_actions_position SET stream_ordering = 0")

    await server.hs.storage.db.run_interaction("rewind", _rewind)
    await server.restart()
    repoint(server, alice, bob)
    assert await unread(bob, room_id) == counts(2, 1)
    assert len(await notification_ids(bob)) == 2
    await send(alice, room_id, "three")
    assert await unread(bob, room_id) == counts(3, 1)


@pytest_twisted.ensureDeferred
async def test_a_pusher_gets_the_push_of_an_event_committed_before_a_crash(
    server: RunningServer, gateway: GatewayStub
) -> None:
    alice, bob = await user(server, "alice"), await user(server, "bob")
    room_id = await shared_room(alice, bob)
    await set_pusher(bob, pusher_body(gateway.url))
    crash_before_evaluation(server)
    event_id = await send(alice, room_id, "pushed after all")

    await server.restart()
    await gateway.wait_for_events(1)
    assert [n["event_id"] for n in gateway.event_notifications()] == [event_id]
    assert gateway.event_notifications()[0]["counts"] == {"unread": 1}


@pytest_twisted.ensureDeferred
async def test_a_push_in_flight_at_a_restart_is_sent_by_the_next_process(
    server: RunningServer, gateway: GatewayStub
) -> None:
    assert server.hs.push is not None
    server.hs.push.settings.initial_backoff_s = 60.0  # the retry would come after the stop
    alice, bob = await user(server, "alice"), await user(server, "bob")
    room_id = await shared_room(alice, bob)
    await set_pusher(bob, pusher_body(gateway.url))
    gateway.statuses = [500]
    event_id = await send(alice, room_id, "the gateway is down")
    for _ in range(50):  # the stub wakes waiters on 200s only: poll for the failure
        if gateway.attempts:
            break
        await sleep(0.1)
    assert gateway.attempts == 1
    assert gateway.event_notifications() == []

    await server.restart()
    await gateway.wait_for_events(1)
    assert [n["event_id"] for n in gateway.event_notifications()] == [event_id]

    # Delivered: the next restart owes nothing.
    await server.restart()
    await sleep(0.3)
    assert len(gateway.event_notifications()) == 1
    repoint(server, alice, bob)
    later = await send(alice, room_id, "still pushed after that")
    await gateway.wait_for_events(2)
    assert [n["event_id"] for n in gateway.event_notifications()] == [event_id, later]


@pytest.mark.parametrize(
    "config_overrides",
    [{"ip_range_whitelist": ["127.0.0.0/8"], "push": {"skip_while_syncing": True}}],
)
@pytest_twisted.ensureDeferred
async def test_actions_skipped_while_online_are_not_pushed_after_restart(
    server: RunningServer, gateway: GatewayStub
) -> None:
    alice, bob = await user(server, "alice"), await user(server, "bob")
    room_id = await shared_room(alice, bob)
    await set_pusher(bob, pusher_body(gateway.url))
    await sync(bob)  # bob is online for the grace period: no push
    await send(alice, room_id, "seen in /sync")
    assert await unread(bob, room_id) == counts(1)
    await sleep(0.2)
    assert gateway.event_notifications() == []

    await server.restart()  # the stop stores the skipped position
    await sleep(0.3)
    assert gateway.event_notifications() == []
