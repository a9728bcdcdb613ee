"""/account/whoami, /account/password, /account/deactivate and /account/3pid."""

from __future__ import annotations

import pytest_twisted

from homeserver.handlers.auth import hash_token
from tests.api.helpers import PASSWORD, assert_error, register, uia_password
from tests.support.client import Client
from tests.support.server import RunningServer

WHOAMI = "/_matrix/client/v3/account/whoami"
PASSWORD_PATH = "/_matrix/client/v3/account/password"
DEACTIVATE = "/_matrix/client/v3/account/deactivate"
NEW_PASSWORD = "battery staple"


async def _second_session(server: RunningServer, user: str = "alice") -> Client:
    c = server.client()
    resp = await c.login(user)
    assert resp.code == 200, resp
    return c


# whoami ----------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_whoami_returns_user_device_and_guest_flag(
    server: RunningServer, alice: Client
) -> None:
    resp = await alice.get(WHOAMI)
    assert resp.code == 200, resp
    assert resp.json == {
        "user_id": "@alice:test.local",
        "device_id": alice.device_id,
        "is_guest": False,
    }


@pytest_twisted.ensureDeferred
async def test_whoami_tells_sessions_apart(server: RunningServer, alice: Client) -> None:
    other = await _second_session(server)
    resp = await other.get(WHOAMI)
    assert resp.json["device_id"] == other.device_id != alice.device_id


@pytest_twisted.ensureDeferred
async def test_whoami_requires_token(server: RunningServer) -> None:
    assert_error(await server.client().get(WHOAMI), 401, "M_MISSING_TOKEN")


# Password change -----------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_password_change_needs_uia_password_stage(
    server: RunningServer, alice: Client
) -> None:
    resp = await alice.post(PASSWORD_PATH, {"new_password": NEW_PASSWORD})
    assert resp.code == 401, resp
    assert resp.json["flows"] == [{"stages": ["m.login.password"]}]
    assert resp.json["session"]
    assert "errcode" not in resp.json


@pytest_twisted.ensureDeferred
async def test_password_change_wrong_password_is_401_with_forbidden_in_uia_body(
    server: RunningServer, alice: Client
) -> None:
    resp = await uia_password(
        alice, "POST", PASSWORD_PATH, {"new_password": NEW_PASSWORD}, password="wrong"
    )
    assert resp.code == 401, resp
    assert resp.json["errcode"] == "M_FORBIDDEN"
    assert resp.json["flows"] == [{"stages": ["m.login.password"]}]
    assert resp.json["session"]
    assert resp.json["completed"] == []  # present once a stage was tried, as Synapse
    # Nothing changed.
    assert (await server.client().login("alice", PASSWORD)).code == 200


@pytest_twisted.ensureDeferred
async def test_password_change_then_new_password_works_and_old_does_not(
    server: RunningServer, alice: Client
) -> None:
    resp = await uia_password(alice, "POST", PASSWORD_PATH, {"new_password": NEW_PASSWORD})
    assert resp.code == 200, resp
    assert resp.json == {}
    assert_error(await server.client().login("alice", PASSWORD), 403, "M_FORBIDDEN")
    assert (await server.client().login("alice", NEW_PASSWORD)).code == 200


@pytest_twisted.ensureDeferred
async def test_password_change_logs_out_other_devices_but_not_this_one(
    server: RunningServer, alice: Client
) -> None:
    others = [await _second_session(server) for _ in range(2)]
    for other in others:
        assert (await other.get(WHOAMI)).code == 200  # warm the token cache
    resp = await uia_password(alice, "POST", PASSWORD_PATH, {"new_password": NEW_PASSWORD})
    assert resp.code == 200, resp
    for other in others:
        after = await other.get(WHOAMI)
        assert_error(after, 401, "M_UNKNOWN_TOKEN")
    assert (await alice.get(WHOAMI)).code == 200
    devices = (await alice.get("/_matrix/client/v3/devices")).json["devices"]
    assert [d["device_id"] for d in devices] == [alice.device_id]


@pytest_twisted.ensureDeferred
async def test_password_change_kills_other_refresh_tokens(
    server: RunningServer, alice: Client
) -> None:
    resp = await server.client().post(
        "/_matrix/client/v3/login",
        {"type": "m.login.password", "user": "alice", "password": PASSWORD, "refresh_token": True},
    )
    refresh_token = resp.json["refresh_token"]
    assert (await uia_password(alice, "POST", PASSWORD_PATH, {"new_password": "n"})).code == 200
    refreshed = await server.client().post(
        "/_matrix/client/v3/refresh", {"refresh_token": refresh_token}
    )
    assert_error(refreshed, 401, "M_UNKNOWN_TOKEN")


@pytest_twisted.ensureDeferred
async def test_password_change_with_logout_devices_false_keeps_other_sessions(
    server: RunningServer, alice: Client
) -> None:
    other = await _second_session(server)
    body = {"new_password": NEW_PASSWORD, "logout_devices": False}
    resp = await uia_password(alice, "POST", PASSWORD_PATH, body)
    assert resp.code == 200, resp
    assert (await other.get(WHOAMI)).code == 200
    assert (await alice.get(WHOAMI)).code == 200


@pytest_twisted.ensureDeferred
async def test_password_change_logs_out_other_tokens_of_the_same_device(
    server: RunningServer, alice: Client
) -> None:
    # A second token on the same device is another session: it is logged out too.
    extra = "mat_same_device_other_token"
    await server.hs.storage.users.add_access_token(
        alice.user_id, alice.device_id, hash_token(extra)
    )
    assert (await alice.get(WHOAMI, token=extra)).code == 200
    assert (await uia_password(alice, "POST", PASSWORD_PATH, {"new_password": "n"})).code == 200
    assert_error(await alice.get(WHOAMI, token=extra), 401, "M_UNKNOWN_TOKEN")
    assert (await alice.get(WHOAMI)).code == 200


@pytest_twisted.ensureDeferred
async def test_password_change_new_password_of_wrong_type_is_400_bad_json(
    server: RunningServer, alice: Client
) -> None:
    assert_error(await alice.post(PASSWORD_PATH, {"new_password": 123}), 400, "M_BAD_JSON")
    assert_error(
        await alice.post(PASSWORD_PATH, {"new_password": "x", "logout_devices": "no"}),
        400,
        "M_BAD_JSON",
    )


@pytest_twisted.ensureDeferred
async def test_password_change_without_new_password_is_refused_after_auth(
    server: RunningServer, alice: Client
) -> None:
    resp = await uia_password(alice, "POST", PASSWORD_PATH, {})
    assert_error(resp, 400, "M_MISSING_PARAM")
    assert (await server.client().login("alice", PASSWORD)).code == 200


@pytest_twisted.ensureDeferred
async def test_password_change_requires_token(server: RunningServer) -> None:
    resp = await server.client().post(PASSWORD_PATH, {"new_password": NEW_PASSWORD})
    assert_error(resp, 401, "M_MISSING_TOKEN")


@pytest_twisted.ensureDeferred
async def test_uia_session_cannot_authorise_another_operation(
    server: RunningServer, alice: Client
) -> None:
    first = await alice.post(PASSWORD_PATH, {"new_password": NEW_PASSWORD})
    auth = {"type": "m.login.password", "password": PASSWORD, "session": first.json["session"]}
    resp = await alice.post(DEACTIVATE, {"auth": auth})
    assert_error(resp, 403, "M_FORBIDDEN")
    assert (await alice.get(WHOAMI)).code == 200


@pytest_twisted.ensureDeferred
async def test_uia_session_of_another_user_is_refused(
    server: RunningServer, alice: Client, bob: Client
) -> None:
    first = await alice.post(PASSWORD_PATH, {"new_password": NEW_PASSWORD})
    auth = {"type": "m.login.password", "password": PASSWORD, "session": first.json["session"]}
    resp = await bob.post(PASSWORD_PATH, {"new_password": "hijack", "auth": auth})
    assert_error(resp, 403, "M_FORBIDDEN")
    assert (await server.client().login("alice", PASSWORD)).code == 200
    assert (await server.client().login("bob", PASSWORD)).code == 200


@pytest_twisted.ensureDeferred
async def test_uia_password_of_another_user_does_not_authorise(
    server: RunningServer, alice: Client, bob: Client
) -> None:
    first = await alice.post(PASSWORD_PATH, {"new_password": NEW_PASSWORD})
    auth = {
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": "bob"},
        "password": PASSWORD,
        "session": first.json["session"],
    }
    resp = await alice.post(PASSWORD_PATH, {"new_password": NEW_PASSWORD, "auth": auth})
    assert_error(resp, 403, "M_FORBIDDEN")  # as Synapse: refused outright
    assert (await server.client().login("alice", PASSWORD)).code == 200


@pytest_twisted.ensureDeferred
async def test_uia_unknown_session_is_400(server: RunningServer, alice: Client) -> None:
    auth = {"type": "m.login.password", "password": PASSWORD, "session": "nope"}
    resp = await alice.post(PASSWORD_PATH, {"new_password": NEW_PASSWORD, "auth": auth})
    assert resp.code == 400, resp


# Deactivation --------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_deactivate_needs_uia(server: RunningServer, alice: Client) -> None:
    resp = await alice.post(DEACTIVATE, {})
    assert resp.code == 401, resp
    assert resp.json["flows"] == [{"stages": ["m.login.password"]}]
    assert (await alice.get(WHOAMI)).code == 200


@pytest_twisted.ensureDeferred
async def test_deactivate_accepts_an_empty_body(server: RunningServer, alice: Client) -> None:
    resp = await alice.request("POST", DEACTIVATE, raw=b"")
    assert resp.code == 401, resp
    assert "session" in resp.json


@pytest_twisted.ensureDeferred
async def test_deactivate_with_wrong_password_keeps_account(
    server: RunningServer, alice: Client
) -> None:
    resp = await uia_password(alice, "POST", DEACTIVATE, {}, password="wrong")
    assert resp.code == 401 and resp.json["errcode"] == "M_FORBIDDEN", resp
    assert (await alice.get(WHOAMI)).code == 200


@pytest_twisted.ensureDeferred
async def test_deactivated_account_cannot_log_in_and_tokens_die(
    server: RunningServer, alice: Client
) -> None:
    other = await _second_session(server)
    assert (await other.get(WHOAMI)).code == 200
    resp = await uia_password(alice, "POST", DEACTIVATE, {"erase": False})
    assert resp.code == 200, resp
    assert resp.json["id_server_unbind_result"] in ("success", "no-support")
    for c in (alice, other):
        after = await c.get(WHOAMI)
        assert_error(after, 401, "M_UNKNOWN_TOKEN")
    login = await server.client().login("alice")
    assert login.code == 403, login
    assert login.json["errcode"] in ("M_USER_DEACTIVATED", "M_FORBIDDEN")
    # A wrong password learns nothing about the account's state.
    guess = await server.client().login("alice", "wrong guess")
    assert_error(guess, 403, "M_FORBIDDEN")
    # The name stays taken.
    available = await server.client().get(
        "/_matrix/client/v3/register/available", params={"username": "alice"}
    )
    assert_error(available, 400, "M_USER_IN_USE")


@pytest_twisted.ensureDeferred
async def test_deactivate_erase_of_wrong_type_is_400(server: RunningServer, alice: Client) -> None:
    assert_error(await alice.post(DEACTIVATE, {"erase": "yes"}), 400, "M_BAD_JSON")


@pytest_twisted.ensureDeferred
async def test_deactivating_one_user_leaves_others(
    server: RunningServer, alice: Client, bob: Client
) -> None:
    assert (await uia_password(alice, "POST", DEACTIVATE, {})).code == 200
    assert (await bob.get(WHOAMI)).code == 200
    assert (await server.client().login("bob")).code == 200


# 3pids -------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_3pid_list_is_empty(server: RunningServer, alice: Client) -> None:
    resp = await alice.get("/_matrix/client/v3/account/3pid")
    assert resp.code == 200, resp
    assert resp.json == {"threepids": []}


@pytest_twisted.ensureDeferred
async def test_3pid_list_requires_token(server: RunningServer) -> None:
    resp = await server.client().get("/_matrix/client/v3/account/3pid")
    assert_error(resp, 401, "M_MISSING_TOKEN")


@pytest_twisted.ensureDeferred
async def test_password_can_be_changed_again_with_the_new_one(server: RunningServer) -> None:
    carol = await register(server, "carol")
    assert (await uia_password(carol, "POST", PASSWORD_PATH, {"new_password": "one"})).code == 200
    resp = await uia_password(carol, "POST", PASSWORD_PATH, {"new_password": "two"}, password="one")
    assert resp.code == 200, resp
    assert (await server.client().login("carol", "two")).code == 200
