"""Presence pings between two of our servers, with the intervals shortened (25 and 30
minutes in production): A re-sends its online user's unchanged state, which keeps B
from timing them out; once A stops re-sending, B shows them offline."""

from __future__ import annotations

import pytest_twisted

from homeserver.ephemeral.presence import PresenceHandler
from tests.federation.test_edus import shared_room
from tests.federation.test_two_servers import sleep
from tests.support.client import q
from tests.support.server import RunningServer


def presence_of(server: RunningServer) -> PresenceHandler:
    assert server.hs.presence is not None
    return server.hs.presence


async def state_on(server: RunningServer, user_id: str) -> str:
    return (await presence_of(server).current_states([user_id]))[0].state


@pytest_twisted.ensureDeferred
async def test_pings_keep_a_remote_user_online_and_their_absence_times_them_out(
    two_servers: tuple[RunningServer, RunningServer],
) -> None:
    a, b = two_servers
    presence_of(a).federation_ping_interval_ms = 1_000
    presence_of(b).federation_timeout_ms = 2_500
    alice, _bob, _room_id = await shared_room(a, b)
    resp = await alice.put(
        f"/_matrix/client/v3/presence/{q(alice.user_id)}/status", {"presence": "online"}
    )
    assert resp.code == 200, resp
    for _ in range(100):
        if await state_on(b, alice.user_id or "") == "online":
            break
        await sleep(0.1)
    assert await state_on(b, alice.user_id or "") == "online"

    # Three timeouts long: only A's pings (nothing visible changes) keep her online.
    for _ in range(15):
        await sleep(0.5)
        assert await state_on(b, alice.user_id or "") == "online"
    assert await state_on(a, alice.user_id or "") == "online"

    presence_of(a).federation_ping_interval_ms = 3_600_000  # A goes quiet
    for _ in range(60):
        if await state_on(b, alice.user_id or "") == "offline":
            break
        await sleep(0.1)
    assert await state_on(b, alice.user_id or "") == "offline"
    assert await state_on(a, alice.user_id or "") == "online"  # only B's view timed out
