"""Proxies and rate limits: X-Forwarded-For trust, rc_invites and rc_federation.

Found by probing: the generated config trusted X-Forwarded-For on a listener not behind
a proxy (every per-address limit dodged by rotating the header), and 30 federation
invites were accepted in 0.1 s.
"""

from __future__ import annotations

import os
import time
from typing import Any

import pytest
import pytest_twisted
import yaml
from twisted.internet import defer

from federation.interfaces import FederationRequestError
from homeserver.config import generate_config_text
from tests.api.helpers import PASSWORD, assert_error, register, with_config
from tests.rooms.helpers import create_room, invite, room_path, user
from tests.support.client import Response
from tests.support.federation import two_federating_servers
from tests.support.server import HIGH_LIMIT, RunningServer

SLOW = {"per_second": 0.001, "burst_count": 2}
LOGIN = "/_matrix/client/v3/login"


def _assert_limited(resp: Response) -> None:
    assert_error(resp, 429, "M_LIMIT_EXCEEDED")
    assert resp.json["retry_after_ms"] > 0


def _generated_listeners() -> list[dict[str, Any]]:
    text = generate_config_text(
        "example.org",
        "/tmp/data",
        registration_shared_secret="s",
        macaroon_secret_key="m",
        form_secret="f",
    )
    listeners: list[dict[str, Any]] = yaml.safe_load(text)["listeners"]
    for listener in listeners:
        listener["port"] = 0
    return listeners


def test_generated_config_does_not_trust_x_forwarded_for() -> None:
    assert [listener["x_forwarded"] for listener in _generated_listeners()] == [False]


@with_config(
    rc_login={"address": SLOW, "account": HIGH_LIMIT, "failed_attempts": HIGH_LIMIT},
    listeners=_generated_listeners(),
)
@pytest_twisted.ensureDeferred
async def test_rotating_x_forwarded_for_does_not_dodge_the_address_limit(
    server: RunningServer,
) -> None:
    await register(server, "alice")
    c = server.client()
    body = {"type": "m.login.password", "user": "alice", "password": PASSWORD}
    for i in range(2):
        resp = await c.post(LOGIN, body, headers={"X-Forwarded-For": f"10.0.0.{i}"})
        assert resp.code == 200, resp
    _assert_limited(await c.post(LOGIN, body, headers={"X-Forwarded-For": "10.0.0.99"}))


# rc_invites, local ---------------------------------------------------------------


@with_config(rc_invites={"per_room": SLOW, "per_user": HIGH_LIMIT, "per_issuer": HIGH_LIMIT})
@pytest_twisted.ensureDeferred
async def test_local_invites_are_limited_per_room(server: RunningServer) -> None:
    alice = await user(server, "alice")
    invitees = [await user(server, f"u{i}") for i in range(3)]
    room_id = await create_room(alice)
    for invitee in invitees[:2]:
        assert (await invite(alice, room_id, invitee.user_id)).code == 200
    _assert_limited(await invite(alice, room_id, invitees[2].user_id))
    # Another room has its own budget.
    other = await create_room(alice)
    assert (await invite(alice, other, invitees[2].user_id)).code == 200


@with_config(rc_invites={"per_room": HIGH_LIMIT, "per_user": SLOW, "per_issuer": HIGH_LIMIT})
@pytest_twisted.ensureDeferred
async def test_local_invites_are_limited_per_invited_user(server: RunningServer) -> None:
    alice = await user(server, "alice")
    bob = await user(server, "bob")
    carol = await user(server, "carol")
    rooms = [await create_room(alice) for _ in range(3)]
    for room_id in rooms[:2]:
        assert (await invite(alice, room_id, bob.user_id)).code == 200
    _assert_limited(await invite(alice, rooms[2], bob.user_id))
    assert (await invite(alice, rooms[2], carol.user_id)).code == 200


@with_config(rc_invites={"per_room": HIGH_LIMIT, "per_user": HIGH_LIMIT, "per_issuer": SLOW})
@pytest_twisted.ensureDeferred
async def test_local_invites_are_limited_per_issuer(server: RunningServer) -> None:
    alice = await user(server, "alice")
    bob = await user(server, "bob")
    invitees = [await user(server, f"u{i}") for i in range(3)]
    rooms = [await create_room(alice) for _ in range(3)]
    for room_id, invitee in zip(rooms[:2], invitees[:2], strict=True):
        assert (await invite(alice, room_id, invitee.user_id)).code == 200
    resp = await invite(alice, rooms[2], invitees[2].user_id)
    _assert_limited(resp)
    # The refused invite was not sent, and other inviters have their own budget.
    state = await alice.get(room_path(rooms[2], "/state"))
    assert invitees[2].user_id not in {e.get("state_key") for e in state.json}
    bob_room = await create_room(bob)
    assert (await invite(bob, bob_room, invitees[2].user_id)).code == 200


# rc_invites and rc_federation, over federation --------------------------------------


@pytest.fixture
def database_b(db_kind: str, tmp_path: Any) -> Any:
    from tests.support.databases import database_config

    os.makedirs(str(tmp_path / "b"), exist_ok=True)
    with database_config(db_kind, str(tmp_path / "b")) as config:
        yield config


async def _federation_invites(b: RunningServer, inviter_name: str, a_users: list[str]) -> list[int]:
    """B's user invites each of ``a_users`` into a room of its own; the HTTP codes (a
    refusal by A reaches B's client with A's status)."""
    inviter = await user(b, inviter_name)
    codes = []
    for target in a_users:
        room_id = await create_room(inviter)
        codes.append((await invite(inviter, room_id, target)).code)
    return codes


@pytest_twisted.ensureDeferred
async def test_federation_invites_are_limited_per_invited_user(
    tmp_path: Any, database: Any, database_b: Any
) -> None:
    limits = {"per_room": HIGH_LIMIT, "per_user": SLOW, "per_issuer": HIGH_LIMIT}
    a_config = {"rc_invites": limits}
    async with two_federating_servers(tmp_path, database, database_b, a_config) as (a, b):
        alice = await user(a, "alice")
        assert alice.user_id is not None
        assert await _federation_invites(b, "bob", [alice.user_id] * 3) == [200, 200, 429]
        carol = await user(a, "carol")
        assert carol.user_id is not None
        assert await _federation_invites(b, "bob2", [carol.user_id]) == [200]


@pytest_twisted.ensureDeferred
async def test_federation_invites_are_limited_per_remote_issuer(
    tmp_path: Any, database: Any, database_b: Any
) -> None:
    limits = {"per_room": HIGH_LIMIT, "per_user": HIGH_LIMIT, "per_issuer": SLOW}
    a_config = {"rc_invites": limits}
    async with two_federating_servers(tmp_path, database, database_b, a_config) as (a, b):
        targets = []
        for i in range(3):
            c = await user(a, f"u{i}")
            assert c.user_id is not None
            targets.append(c.user_id)
        # A answers B 429 M_LIMIT_EXCEEDED; B passes it on to its client.
        assert await _federation_invites(b, "bob", targets) == [200, 200, 429]
        # Another inviting user of B has a budget of its own.
        assert await _federation_invites(b, "bob2", targets[2:]) == [200]


PROFILE = "/_matrix/federation/v1/query/profile"


async def _query(b: RunningServer, a: RunningServer, user_id: str) -> int:
    assert b.hs.federation is not None
    try:
        await b.hs.federation.client.get_json(a.hs.server_name, PROFILE, {"user_id": user_id})
    except FederationRequestError as e:
        if e.code == 429:
            assert e.errcode == "M_LIMIT_EXCEEDED"
            assert e.retry_after_ms is not None and e.retry_after_ms > 0
        return e.code
    return 200


@pytest_twisted.ensureDeferred
async def test_federation_requests_past_the_reject_limit_are_refused(
    tmp_path: Any, database: Any, database_b: Any
) -> None:
    limits = {"sleep_limit": 1, "sleep_delay": 500, "reject_limit": 1, "concurrent": 1}
    async with two_federating_servers(
        tmp_path, database, database_b, {"rc_federation": limits}
    ) as (a, b):
        alice = await user(a, "alice")
        assert alice.user_id is not None
        await _query(b, a, alice.user_id)  # B's key is fetched once, outside the burst
        codes = await defer.gatherResults(
            [defer.ensureDeferred(_query(b, a, alice.user_id)) for _ in range(8)]
        )
        assert 429 in codes and 200 in codes, codes


@pytest_twisted.ensureDeferred
async def test_federation_requests_past_the_sleep_limit_are_delayed(
    tmp_path: Any, database: Any, database_b: Any
) -> None:
    limits = {"window_size": 10_000, "sleep_limit": 2, "sleep_delay": 400}
    async with two_federating_servers(
        tmp_path, database, database_b, {"rc_federation": limits}
    ) as (a, b):
        alice = await user(a, "alice")
        assert alice.user_id is not None
        durations = []
        for _ in range(4):
            start = time.perf_counter()
            assert await _query(b, a, alice.user_id) == 200
            durations.append(time.perf_counter() - start)
        assert max(durations[:2]) < 0.4, durations
        assert min(durations[2:]) >= 0.4, durations


def test_federation_slot_of_a_cancelled_waiter_is_not_lost() -> None:
    from twisted.internet.task import Clock

    from homeserver.config import FederationRateLimit
    from homeserver.http.ratelimit import FederationRateLimiter

    limiter = FederationRateLimiter(Clock(), FederationRateLimit(concurrent=1))
    first = defer.ensureDeferred(limiter.enter("remote"))
    assert first.called
    waiting = defer.ensureDeferred(limiter.enter("remote"))
    assert not waiting.called
    waiting.cancel()  # its client went away while it queued
    waiting.addErrback(lambda f: None)
    limiter.leave("remote")
    assert defer.ensureDeferred(limiter.enter("remote")).called
