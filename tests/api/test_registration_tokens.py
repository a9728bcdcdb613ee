"""Registration with ``registration_requires_token``: the m.login.registration_token stage."""

from __future__ import annotations

from typing import Any

import pytest
import pytest_twisted

from tests.api.helpers import PASSWORD, assert_error
from tests.support.client import Client
from tests.support.server import RunningServer

REGISTER = "/_matrix/client/v3/register"
VALIDITY = "/_matrix/client/v1/register/m.login.registration_token/validity"
TOKEN_STAGE = "m.login.registration_token"


@pytest.fixture
def config_overrides() -> dict[str, Any]:
    return {
        "registration_requires_token": True,
        "enable_registration_without_verification": False,
    }


async def _register_with_token(c: Client, username: str, token: str) -> Any:
    first = await c.post(REGISTER, {"username": username, "password": PASSWORD}, token=False)
    assert first.code == 401, first
    auth = {"type": TOKEN_STAGE, "token": token, "session": first.json["session"]}
    return await c.post(REGISTER, {"auth": auth}, token=False)


async def _validity(server: RunningServer, token: str) -> bool:
    resp = await server.client().get(VALIDITY, params={"token": token})
    assert resp.code == 200, resp
    return bool(resp.json["valid"])


def _now_ms(server: RunningServer) -> int:
    return int(server.hs.reactor.seconds() * 1000)


@pytest_twisted.ensureDeferred
async def test_register_requires_token_stage(server: RunningServer) -> None:
    resp = await server.client().post(
        REGISTER, {"username": "alice", "password": PASSWORD}, token=False
    )
    assert resp.code == 401, resp
    assert resp.json["flows"] == [{"stages": [TOKEN_STAGE]}]


@pytest_twisted.ensureDeferred
async def test_dummy_stage_is_not_accepted_when_token_required(server: RunningServer) -> None:
    c = server.client()
    first = await c.post(REGISTER, {"username": "alice", "password": PASSWORD}, token=False)
    resp = await c.post(
        REGISTER, {"auth": {"type": "m.login.dummy", "session": first.json["session"]}}
    )
    assert_error(resp, 400, "M_UNRECOGNIZED")


@pytest_twisted.ensureDeferred
async def test_register_with_valid_token_succeeds(server: RunningServer) -> None:
    await server.hs.storage.registration.create_registration_token("tok-alice", None, None)
    resp = await _register_with_token(server.client(), "alice", "tok-alice")
    assert resp.code == 200, resp
    assert resp.json["user_id"] == "@alice:test.local"


@pytest_twisted.ensureDeferred
async def test_register_with_unknown_token_is_401_forbidden_in_uia_body(
    server: RunningServer,
) -> None:
    resp = await _register_with_token(server.client(), "alice", "no-such-token")
    assert resp.code == 401, resp
    assert resp.json["errcode"] == "M_FORBIDDEN"
    assert resp.json["flows"] == [{"stages": [TOKEN_STAGE]}]
    assert "session" in resp.json


@pytest_twisted.ensureDeferred
async def test_token_uses_exhausted_refuses_next_registration(server: RunningServer) -> None:
    await server.hs.storage.registration.create_registration_token("once", 1, None)
    assert await _validity(server, "once") is True
    first = await _register_with_token(server.client(), "alice", "once")
    assert first.code == 200, first
    assert await _validity(server, "once") is False
    second = await _register_with_token(server.client(), "bob", "once")
    assert second.code == 401, second
    assert second.json["errcode"] == "M_FORBIDDEN"
    assert "access_token" not in second.json


@pytest_twisted.ensureDeferred
async def test_token_with_two_uses_allows_two_registrations(server: RunningServer) -> None:
    await server.hs.storage.registration.create_registration_token("twice", 2, None)
    for name in ("alice", "bob"):
        resp = await _register_with_token(server.client(), name, "twice")
        assert resp.code == 200, resp
    assert await _validity(server, "twice") is False


@pytest_twisted.ensureDeferred
async def test_token_validated_but_used_up_before_completion_is_refused(
    server: RunningServer,
) -> None:
    # Two sessions both pass the token stage; only the first to finish may use it.
    await server.hs.storage.registration.create_registration_token("race", 1, None)
    a, b = server.client(), server.client()
    first_a = await a.post(REGISTER, {"username": "alice", "password": PASSWORD}, token=False)
    first_b = await b.post(REGISTER, {"username": "bob", "password": PASSWORD}, token=False)
    auth_a = {"type": TOKEN_STAGE, "token": "race", "session": first_a.json["session"]}
    auth_b = {"type": TOKEN_STAGE, "token": "race", "session": first_b.json["session"]}
    ok = await a.post(REGISTER, {"auth": auth_a}, token=False)
    assert ok.code == 200, ok
    refused = await b.post(REGISTER, {"auth": auth_b}, token=False)
    assert refused.code == 401, refused
    assert refused.json["errcode"] == "M_FORBIDDEN"
    assert await server.hs.storage.users.get_user("@bob:test.local") is None


@pytest_twisted.ensureDeferred
async def test_expired_token_is_invalid(server: RunningServer) -> None:
    await server.hs.storage.registration.create_registration_token(
        "old", None, _now_ms(server) - 1000
    )
    await server.hs.storage.registration.create_registration_token(
        "fresh", None, _now_ms(server) + 3600_000
    )
    assert await _validity(server, "old") is False
    assert await _validity(server, "fresh") is True
    resp = await _register_with_token(server.client(), "alice", "old")
    assert resp.code == 401, resp


@pytest_twisted.ensureDeferred
async def test_validity_of_unknown_token_is_false(server: RunningServer) -> None:
    assert await _validity(server, "never-created") is False


@pytest_twisted.ensureDeferred
async def test_validity_needs_token_parameter(server: RunningServer) -> None:
    resp = await server.client().get(VALIDITY)
    assert_error(resp, 400, "M_MISSING_PARAM")


@pytest_twisted.ensureDeferred
async def test_token_stage_without_token_is_refused(server: RunningServer) -> None:
    c = server.client()
    first = await c.post(REGISTER, {"username": "alice", "password": PASSWORD}, token=False)
    resp = await c.post(
        REGISTER, {"auth": {"type": TOKEN_STAGE, "session": first.json["session"]}}, token=False
    )
    assert resp.code in (400, 401), resp
    assert resp.json["errcode"] == "M_MISSING_PARAM"
