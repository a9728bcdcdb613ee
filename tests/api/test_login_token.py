"""POST /login/get_token (MSC3882) and m.login.token at /login, with Synapse's
``login_via_existing_session`` keys."""

from __future__ import annotations

import time

import pytest_twisted

from homeserver.handlers.auth import hash_token
from tests.api.helpers import PASSWORD, assert_error, register, uia_password, with_config
from tests.support.server import RunningServer

GET_TOKEN = "/_matrix/client/v1/login/get_token"
LOGIN = "/_matrix/client/v3/login"
ENABLED = {"enabled": True, "token_timeout": "2m"}


async def token_login(server: RunningServer, token: str) -> tuple[int, dict[str, object]]:
    resp = await server.client().post(LOGIN, {"type": "m.login.token", "token": token})
    return resp.code, resp.json


@with_config(login_via_existing_session=ENABLED)
@pytest_twisted.ensureDeferred
async def test_get_token_after_uia_logs_in_a_new_device_once(server: RunningServer) -> None:
    alice = await register(server, "alice")
    resp = await uia_password(alice, "POST", GET_TOKEN, {})
    assert resp.code == 200, resp
    assert resp.json["expires_in_ms"] == 120_000
    code, body = await token_login(server, resp.json["login_token"])
    assert code == 200, body
    assert body["user_id"] == alice.user_id
    assert body["device_id"] != alice.device_id
    # One use only.
    code, body = await token_login(server, resp.json["login_token"])
    assert code == 403 and body["errcode"] == "M_FORBIDDEN", body


@with_config(login_via_existing_session=ENABLED)
@pytest_twisted.ensureDeferred
async def test_get_token_is_advertised(server: RunningServer) -> None:
    alice = await register(server, "alice")
    flows = (await server.client().get(LOGIN)).json["flows"]
    assert {"type": "m.login.token", "get_login_token": True} in flows
    caps = await alice.get("/_matrix/client/v3/capabilities")
    assert caps.json["capabilities"]["m.get_login_token"] == {"enabled": True}


@with_config(login_via_existing_session=ENABLED)
@pytest_twisted.ensureDeferred
async def test_token_login_refuses_unknown_and_expired_tokens(server: RunningServer) -> None:
    alice = await register(server, "alice")
    code, body = await token_login(server, "mlt_unknown")
    assert code == 403 and body["errcode"] == "M_FORBIDDEN", body
    now = int(time.time() * 1000)
    await server.hs.storage.login_tokens.add_token(hash_token("old"), alice.user_id, now - 1, now)
    code, body = await token_login(server, "old")
    assert code == 403 and body["errcode"] == "M_FORBIDDEN", body
    resp = await server.client().post(LOGIN, {"type": "m.login.token"})
    assert_error(resp, 400, "M_MISSING_PARAM")


@with_config(login_via_existing_session=ENABLED)
@pytest_twisted.ensureDeferred
async def test_get_token_needs_uia_and_a_session(server: RunningServer) -> None:
    alice = await register(server, "alice")
    first = await alice.post(GET_TOKEN, {})
    assert first.code == 401, first
    assert {"stages": ["m.login.password"]} in first.json["flows"]
    wrong = await alice.post(
        GET_TOKEN,
        {
            "auth": {
                "type": "m.login.password",
                "identifier": {"type": "m.id.user", "user": alice.user_id},
                "password": PASSWORD + "x",
                "session": first.json["session"],
            }
        },
    )
    assert wrong.code == 401, wrong
    assert_error(await server.client().post(GET_TOKEN, {}, token=False), 401, "M_MISSING_TOKEN")


@with_config(login_via_existing_session={"enabled": True, "require_ui_auth": False})
@pytest_twisted.ensureDeferred
async def test_get_token_without_uia_when_configured(server: RunningServer) -> None:
    alice = await register(server, "alice")
    resp = await alice.post(GET_TOKEN, {})
    assert resp.code == 200, resp
    assert resp.json["expires_in_ms"] == 300_000


@pytest_twisted.ensureDeferred
async def test_get_token_disabled_by_default(server: RunningServer) -> None:
    alice = await register(server, "alice")
    assert_error(await alice.post(GET_TOKEN, {}), 404, "M_UNRECOGNIZED")
    code, body = await token_login(server, "anything")
    assert code == 400 and body["errcode"] == "M_UNKNOWN", body
    flows = (await server.client().get(LOGIN)).json["flows"]
    assert all(f["type"] != "m.login.token" for f in flows)
