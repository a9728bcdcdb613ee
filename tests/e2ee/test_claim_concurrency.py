"""One-time keys are handed out exactly once, even to concurrent claims (SQLite and
PostgreSQL at REPEATABLE READ, where clashing claims are retried)."""

from __future__ import annotations

from typing import Any

import pytest_twisted
from twisted.internet import defer

from tests.api.helpers import register
from tests.e2ee.helpers import FakeDevice, claim, upload
from tests.support.client import Client
from tests.support.server import RunningServer

CLAIMERS = 8


async def _claimers(server: RunningServer, n: int) -> list[Client]:
    return [await register(server, f"claimer{i}") for i in range(n)]


async def _claim_all(clients: list[Client], wanted: dict[str, dict[str, str]]) -> list[Any]:
    async def one(client: Client) -> Any:
        resp = await claim(client, wanted)
        assert resp.code == 200, resp
        return resp.json["one_time_keys"]

    return list(
        await defer.gatherResults([defer.ensureDeferred(one(c)) for c in clients])  # type: ignore[arg-type]
    )


@pytest_twisted.ensureDeferred
async def test_concurrent_claims_of_the_last_key_give_it_to_exactly_one(
    server: RunningServer, alice: Client
) -> None:
    device = FakeDevice.of(alice)
    otk = device.one_time_keys(1)
    fallback = device.fallback_key()
    body = {"device_keys": device.device_keys(), "one_time_keys": otk, "fallback_keys": fallback}
    assert (await upload(alice, body)).code == 200
    wanted = {alice.user_id or "": {alice.device_id or "": "signed_curve25519"}}

    results = await _claim_all(await _claimers(server, CLAIMERS), wanted)
    got = [r[alice.user_id][alice.device_id] for r in results]
    assert sum(1 for g in got if g == otk) == 1, got
    assert sum(1 for g in got if g == fallback) == CLAIMERS - 1, got


@pytest_twisted.ensureDeferred
async def test_concurrent_claims_without_fallback_leave_the_others_empty_handed(
    server: RunningServer, alice: Client
) -> None:
    device = FakeDevice.of(alice)
    otk = device.one_time_keys(1)
    assert (
        await upload(alice, {"device_keys": device.device_keys(), "one_time_keys": otk})
    ).code == 200
    wanted = {alice.user_id or "": {alice.device_id or "": "signed_curve25519"}}

    results = await _claim_all(await _claimers(server, CLAIMERS), wanted)
    winners = [r for r in results if r]
    assert len(winners) == 1, results
    assert winners[0][alice.user_id][alice.device_id] == otk


@pytest_twisted.ensureDeferred
async def test_many_concurrent_claims_never_hand_out_a_key_twice(
    server: RunningServer, alice: Client
) -> None:
    device = FakeDevice.of(alice)
    otks = device.one_time_keys(12)
    fallback = device.fallback_key()
    body = {"device_keys": device.device_keys(), "one_time_keys": otks, "fallback_keys": fallback}
    assert (await upload(alice, body)).code == 200
    wanted = {alice.user_id or "": {alice.device_id or "": "signed_curve25519"}}
    clients = await _claimers(server, 4)
    results = await _claim_all(clients * 5, wanted)  # 20 claims, 12 keys
    got = [r[alice.user_id][alice.device_id] for r in results]
    handed = [next(iter(g)) for g in got if g != fallback]
    assert sorted(handed) == sorted(otks)  # each exactly once
    assert sum(1 for g in got if g == fallback) == 20 - 12
