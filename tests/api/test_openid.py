"""OpenID tokens: requested by a client, exchanged for the user id over federation."""

from __future__ import annotations

import time

import pytest_twisted

from homeserver.handlers.auth import hash_token
from tests.rooms.helpers import V3, assert_error, user
from tests.support.client import q
from tests.support.server import RunningServer

USERINFO = "/_matrix/federation/v1/openid/userinfo"


@pytest_twisted.ensureDeferred
async def test_request_token_then_userinfo_names_the_user(server: RunningServer) -> None:
    alice = await user(server, "alice")
    resp = await alice.post(f"{V3}/user/{q(alice.user_id)}/openid/request_token", {})
    assert resp.code == 200, resp
    body = resp.json
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 3600
    assert body["matrix_server_name"] == alice.user_id.split(":", 1)[1]
    info = await server.client().get(
        USERINFO, token=False, params={"access_token": body["access_token"]}
    )
    assert info.code == 200, info
    assert info.json == {"sub": alice.user_id}


@pytest_twisted.ensureDeferred
async def test_request_token_for_another_user_is_403(server: RunningServer) -> None:
    alice = await user(server, "alice")
    bob = await user(server, "bob")
    resp = await alice.post(f"{V3}/user/{q(bob.user_id)}/openid/request_token", {})
    assert_error(resp, 403, "M_FORBIDDEN")


@pytest_twisted.ensureDeferred
async def test_userinfo_unknown_missing_or_expired_token_is_401(server: RunningServer) -> None:
    client = server.client()
    resp = await client.get(USERINFO, token=False, params={"access_token": "nope"})
    assert_error(resp, 401, "M_UNKNOWN_TOKEN")
    assert_error(await client.get(USERINFO, token=False), 401, "M_MISSING_TOKEN")
    now = int(time.time() * 1000)
    await server.hs.storage.openid.insert_token(hash_token("old"), "@a:test", now - 1, now)
    resp = await client.get(USERINFO, token=False, params={"access_token": "old"})
    assert_error(resp, 401, "M_UNKNOWN_TOKEN")
