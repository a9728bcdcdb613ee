"""Accounts: password rules (Synapse's ``password_config``) and login timing.

Found by probing: an empty password could be registered and used, and a login for an
unknown user answered about 100 times faster than for a known one (enumeration).
"""

from __future__ import annotations

import json
import statistics
import time
from typing import Any

import pytest
import pytest_twisted

from synapse_compat.admin_register import compute_registration_mac
from tests.api.helpers import PASSWORD, assert_error, register, uia_password, with_config
from tests.support.client import Client
from tests.support.server import RunningServer

REGISTER = "/_matrix/client/v3/register"
LOGIN = "/_matrix/client/v3/login"
CHANGE_PASSWORD = "/_matrix/client/v3/account/password"
ADMIN_REGISTER = "/_synapse/admin/v1/register"

POLICY = {
    "policy": {
        "enabled": True,
        "minimum_length": 8,
        "require_digit": True,
        "require_symbol": True,
        "require_lowercase": True,
        "require_uppercase": True,
    }
}
# (password, errcode) against POLICY; the first rule broken is the one reported.
POLICY_CASES = [
    ("", "M_WEAK_PASSWORD"),
    ("Ab1!", "M_PASSWORD_TOO_SHORT"),
    ("Abcdefg!", "M_PASSWORD_NO_DIGIT"),
    ("Abcdefg1", "M_PASSWORD_NO_SYMBOL"),
    ("abcdefg1!", "M_PASSWORD_NO_UPPERCASE"),
    ("ABCDEFG1!", "M_PASSWORD_NO_LOWERCASE"),
]
GOOD = "Abcdef1!"


def _register_body(username: str, password: str) -> dict[str, Any]:
    return {"username": username, "password": password, "auth": {"type": "m.login.dummy"}}


async def _login(c: Client, user: str, password: str) -> int:
    body = {"type": "m.login.password", "user": user, "password": password}
    return (await c.post(LOGIN, body, token=False)).code


@pytest_twisted.ensureDeferred
async def test_empty_password_cannot_be_registered(server: RunningServer) -> None:
    c = server.client()
    assert_error(await c.post(REGISTER, _register_body("eve", "")), 400, "M_WEAK_PASSWORD")
    assert await _login(c, "eve", "") == 403


@pytest_twisted.ensureDeferred
async def test_empty_password_cannot_be_set_by_password_change(server: RunningServer) -> None:
    alice = await register(server, "alice")
    assert_error(await alice.post(CHANGE_PASSWORD, {"new_password": ""}), 400, "M_WEAK_PASSWORD")
    assert await _login(server.client(), "alice", "") == 403


@pytest_twisted.ensureDeferred
async def test_empty_password_cannot_be_registered_with_the_shared_secret(
    server: RunningServer,
) -> None:
    c = server.client()
    nonce = (await c.get(ADMIN_REGISTER)).json["nonce"]
    mac = compute_registration_mac("shared-secret-for-tests", nonce, "eve", "", False, None)
    body = {"nonce": nonce, "username": "eve", "password": "", "admin": False, "mac": mac}
    assert_error(await c.post(ADMIN_REGISTER, body), 400, "M_WEAK_PASSWORD")
    assert await _login(c, "eve", "") == 403


@with_config(password_config=POLICY)
@pytest_twisted.ensureDeferred
async def test_password_policy_applies_to_registration(server: RunningServer) -> None:
    c = server.client()
    for i, (password, errcode) in enumerate(POLICY_CASES):
        assert_error(await c.post(REGISTER, _register_body(f"u{i}", password)), 400, errcode)
    assert (await c.post(REGISTER, _register_body("good", GOOD))).code == 200
    assert await _login(c, "good", GOOD) == 200


@with_config(password_config=POLICY)
@pytest_twisted.ensureDeferred
async def test_password_policy_applies_to_password_change(server: RunningServer) -> None:
    alice = server.client()
    await alice.register("alice", "Correct-horse-1")
    for password, errcode in POLICY_CASES:
        resp = await alice.post(CHANGE_PASSWORD, {"new_password": password})
        assert_error(resp, 400, errcode)
    resp = await uia_password(
        alice, "POST", CHANGE_PASSWORD, {"new_password": GOOD}, password="Correct-horse-1"
    )
    assert resp.code == 200, resp
    assert await _login(server.client(), "alice", GOOD) == 200


@with_config(password_config={"policy": {**POLICY["policy"], "enabled": False}})
@pytest_twisted.ensureDeferred
async def test_disabled_policy_checks_only_emptiness(server: RunningServer) -> None:
    c = server.client()
    assert (await c.post(REGISTER, _register_body("alice", "a"))).code == 200


@with_config(password_config={"pepper": "first pepper"})
@pytest_twisted.ensureDeferred
async def test_pepper_is_part_of_the_hash(server: RunningServer) -> None:
    await register(server, "alice")
    assert await _login(server.client(), "alice", PASSWORD) == 200
    assert server.config_dict is not None
    server.config_dict["password_config"] = {"pepper": "another pepper"}
    await server.restart()
    assert await _login(server.client(), "alice", PASSWORD) == 403


@pytest.mark.parametrize(
    "password_config", [{"enabled": False}, {"localdb_enabled": False}], ids=["off", "nolocaldb"]
)
@pytest_twisted.ensureDeferred
async def test_password_login_can_be_turned_off(
    database: dict[str, Any], tmp_path: Any, password_config: dict[str, Any]
) -> None:
    from tests.support.server import make_config_dict, start_server

    running = await start_server(
        make_config_dict(str(tmp_path), database, password_config=password_config),
        str(tmp_path),
    )
    try:
        c = running.client()
        flows = (await c.get(LOGIN)).json["flows"]
        assert {"type": "m.login.password"} not in flows
        assert_error(
            await c.post(LOGIN, {"type": "m.login.password", "user": "a", "password": "b"}),
            400,
            "M_UNKNOWN",
        )
    finally:
        await running.stop()


@with_config(bcrypt_rounds=9)
@pytest_twisted.ensureDeferred
async def test_login_for_unknown_user_costs_as_much_as_for_a_known_one(
    server: RunningServer,
) -> None:
    await register(server, "alice")
    c = server.client()
    await _login(c, "nobody", "wrong")  # the dummy hash is made on first use
    known: list[float] = []
    unknown: list[float] = []
    for _ in range(15):  # interleaved, so load on the machine hits both alike
        for user, samples in (("alice", known), ("nobody", unknown)):
            start = time.perf_counter()
            assert await _login(c, user, "wrong") == 403
            samples.append(time.perf_counter() - start)
    ratio = statistics.median(known) / statistics.median(unknown)
    assert 0.5 < ratio < 2, (ratio, statistics.median(known), statistics.median(unknown))


@pytest_twisted.ensureDeferred
async def test_password_change_session_never_stores_the_new_password(
    server: RunningServer,
) -> None:
    alice = await register(server, "alice")
    first = await alice.post(CHANGE_PASSWORD, {"new_password": "a new secret"})
    assert first.code == 401, first
    session = await server.hs.storage.registration.get_ui_auth_session(first.json["session"])
    assert session is not None
    assert "a new secret" not in json.dumps(session.clientdict)
    # The flow still completes with the password sent on the first step only.
    auth = {
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": alice.user_id},
        "password": PASSWORD,
        "session": first.json["session"],
    }
    assert (await alice.post(CHANGE_PASSWORD, {"auth": auth})).code == 200
    assert await _login(server.client(), "alice", "a new secret") == 200
    assert await _login(server.client(), "alice", PASSWORD) == 403
