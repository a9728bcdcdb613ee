"""What the spec-driven fuzzer (tests/fuzz, docs/fuzzing.md) found, one test per finding,
over real HTTP: each request once answered 500 (or no Matrix error), or reached where
it should not."""

from __future__ import annotations

from typing import Any

import pytest
import pytest_twisted

from federation.interfaces import FederationRequestError
from tests.ephemeral.helpers import send, shared_room
from tests.federation.conftest import database_b, server_b_overrides, two_servers  # noqa: F401
from tests.federation.test_backfill import alice_bob_and_a_room, join_from_b
from tests.push.gateway import sleep, start_gateway
from tests.push.test_pushers import pusher_body, set_pusher
from tests.support.client import q
from tests.support.server import RunningServer


async def _user(server: RunningServer, name: str) -> Any:
    client = server.client()
    await client.register(name)
    return client


@pytest.mark.parametrize(
    "path",
    [
        "/_matrix/client/v3/account/password",
        "/_matrix/client/v3/account/deactivate",
        "/_matrix/client/v3/delete_devices",
    ],
)
@pytest_twisted.ensureDeferred
async def test_uia_auth_type_not_a_string_is_bad_json(server: RunningServer, path: str) -> None:
    # Found on POST /account/password: {"auth": {"type": []}} was a TypeError (a list
    # is no set member), answered 500.
    alice = await _user(server, "alice")
    # A valid new password: an empty one is refused (M_WEAK_PASSWORD) before UIA.
    body = {"auth": {"type": []}, "new_password": "a-long-enough-passw0rd", "devices": []}
    resp = await alice.post(path, body)
    assert resp.code == 400, resp
    assert resp.json["errcode"] == "M_BAD_JSON"


@pytest_twisted.ensureDeferred
async def test_register_auth_type_not_a_string_is_bad_json(server: RunningServer) -> None:
    resp = await server.client().post(
        "/_matrix/client/v3/register",
        {"username": "bob", "password": "pw-long-enough", "auth": {"type": {"a": 1}}},
        token=False,
    )
    assert resp.code == 400, resp
    assert resp.json["errcode"] == "M_BAD_JSON"


@pytest_twisted.ensureDeferred
async def test_pusher_url_in_a_blacklisted_range_is_never_contacted(
    server: RunningServer,
) -> None:
    # Found while confining the fuzzer: a pusher's URL is any user's choice, and push
    # gateways were contacted wherever it pointed (loopback, the private network).
    # Synapse applies ip_range_blacklist to them; so do we now (default: loopback too).
    gateway = await start_gateway()
    try:
        alice, bob = await _user(server, "alice"), await _user(server, "bob")
        room_id = await shared_room(alice, bob)
        await set_pusher(bob, pusher_body(gateway.url))
        await send(alice, room_id, "ping")
        await sleep(1.5)
        assert gateway.attempts == 0
    finally:
        await gateway.stop()


@pytest.mark.parametrize(
    "path",
    [
        # Found by the long run on PostgreSQL: ?v=%00 reached the events table.
        "/_matrix/client/v3/rooms/{room}/context/%00",
        "/_matrix/client/v3/rooms/{room}/messages?from=%00",
        "/_matrix/client/v3/rooms/{room}/state/m.room.topic/%00",
        "/_matrix/client/v3/profile/%40a%00%3Atest.local",
        "/_matrix/client/v3/directory/room/%23a%00%3Atest.local",
    ],
)
@pytest_twisted.ensureDeferred
async def test_nul_in_a_path_or_query_parameter_is_invalid_param(
    server: RunningServer, path: str
) -> None:
    alice = await _user(server, "alice")
    room_id = await shared_room(alice)
    resp = await alice.get(path.format(room=q(room_id)))
    assert resp.code == 400, resp
    assert resp.json["errcode"] == "M_INVALID_PARAM"


@pytest.mark.parametrize(
    "body",
    [
        # Found by the fuzzer (its remote server joined the room first).
        {"earliest_events": False, "latest_events": [], "limit": [], "min_depth": []},
        {"earliest_events": [], "latest_events": "$x", "limit": 10},
        {"earliest_events": [], "latest_events": [], "limit": "10"},
    ],
)
@pytest_twisted.ensureDeferred
async def test_get_missing_events_with_wrong_field_types_is_bad_json(
    two_servers: tuple[RunningServer, RunningServer],  # noqa: F811 (the fixture)
    body: dict[str, Any],
) -> None:
    a, b = two_servers
    alice, bob, room_id = await alice_bob_and_a_room(a, b)
    await join_from_b(bob, room_id, a)
    with pytest.raises(FederationRequestError) as raised:
        await b.hs.federation.client.post_json(
            a.hs.server_name, f"/_matrix/federation/v1/get_missing_events/{q(room_id)}", body
        )
    assert (raised.value.code, raised.value.errcode) == (400, "M_BAD_JSON")
