"""GET /voip/turnServer: TURN credentials as Synapse hands them out."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

import pytest_twisted

from tests.api.helpers import assert_error, register, register_guest, with_config
from tests.support.server import RunningServer

TURN = "/_matrix/client/v3/voip/turnServer"
URIS = ["turn:turn.example.com:3478?transport=udp", "turns:turn.example.com:5349"]


@pytest_twisted.ensureDeferred
async def test_turn_server_unconfigured_is_empty(server: RunningServer) -> None:
    client = await register(server, "alice")
    resp = await client.get(TURN)
    assert resp.code == 200, resp
    assert resp.json == {}


@with_config(turn_uris=URIS, turn_shared_secret="s3cret", turn_user_lifetime="2h")
@pytest_twisted.ensureDeferred
async def test_turn_server_shared_secret_credentials(server: RunningServer) -> None:
    client = await register(server, "alice")
    resp = await client.get(TURN)
    assert resp.code == 200, resp
    body = resp.json
    assert body["uris"] == URIS
    assert body["ttl"] == 7200
    expiry, user_id = body["username"].split(":", 1)
    assert user_id == client.user_id
    assert abs(int(expiry) - (time.time() + 7200)) < 60
    mac = hmac.new(b"s3cret", body["username"].encode(), hashlib.sha1).digest()
    assert body["password"] == base64.b64encode(mac).decode()


@with_config(turn_uris=URIS, turn_username="fixed", turn_password="pw")
@pytest_twisted.ensureDeferred
async def test_turn_server_fixed_credentials(server: RunningServer) -> None:
    client = await register(server, "alice")
    resp = await client.get(TURN)
    assert resp.code == 200, resp
    assert resp.json == {"username": "fixed", "password": "pw", "ttl": 3600, "uris": URIS}


@with_config(
    turn_uris=URIS, turn_shared_secret="s3cret", turn_allow_guests=False, allow_guest_access=True
)
@pytest_twisted.ensureDeferred
async def test_turn_server_refuses_guests_when_configured(server: RunningServer) -> None:
    guest = await register_guest(server)
    resp = await guest.get(TURN)
    assert_error(resp, 403, "M_GUEST_ACCESS_FORBIDDEN")


@pytest_twisted.ensureDeferred
async def test_turn_server_needs_a_token(server: RunningServer) -> None:
    resp = await server.client().get(TURN, token=False)
    assert_error(resp, 401, "M_MISSING_TOKEN")
