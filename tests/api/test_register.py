"""POST /register, /register/available and the registration token validity check."""

from __future__ import annotations

import json
from typing import Any

import pytest
import pytest_twisted

from tests.api.helpers import PASSWORD, assert_error, with_config
from tests.support.client import Client, q
from tests.support.server import RunningServer

REGISTER = "/_matrix/client/v3/register"
AVAILABLE = "/_matrix/client/v3/register/available"
VALIDITY = "/_matrix/client/v1/register/m.login.registration_token/validity"
TOKEN_STAGE = "m.login.registration_token"


async def _start(c: Client, body: dict[str, Any]) -> dict[str, Any]:
    resp = await c.post(REGISTER, body, token=False)
    assert resp.code == 401, resp
    return resp.json  # type: ignore[no-any-return]


async def _register_dummy(c: Client, **body: Any) -> Any:
    state = await _start(c, body)
    auth = {"type": "m.login.dummy", "session": state["session"]}
    return await c.post(REGISTER, {**body, "auth": auth}, token=False)


# The dummy flow ------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_register_first_answers_401_with_flows_and_session(server: RunningServer) -> None:
    state = await _start(server.client(), {"username": "alice", "password": PASSWORD})
    assert state["flows"] == [{"stages": ["m.login.dummy"]}]
    assert isinstance(state["session"], str) and state["session"]
    assert state["params"] == {}
    assert "completed" not in state


@pytest_twisted.ensureDeferred
async def test_register_dummy_flow_creates_account_and_logs_in(server: RunningServer) -> None:
    c = server.client()
    resp = await _register_dummy(c, username="alice", password=PASSWORD)
    assert resp.code == 200, resp
    assert resp.json["user_id"] == "@alice:test.local"
    assert resp.json["home_server"] == "test.local"
    assert resp.json["access_token"] and resp.json["device_id"]
    assert "refresh_token" not in resp.json
    assert "expires_in_ms" not in resp.json
    who = await c.get("/_matrix/client/v3/account/whoami", token=resp.json["access_token"])
    assert who.json == {
        "user_id": "@alice:test.local",
        "device_id": resp.json["device_id"],
        "is_guest": False,
    }
    # The password chosen at registration works for login.
    assert (await server.client().login("alice")).code == 200


@pytest_twisted.ensureDeferred
async def test_register_with_dummy_auth_in_one_request(server: RunningServer) -> None:
    # tests.support.client.register sends the dummy stage without a session.
    c = server.client()
    resp = await c.register("alice")
    assert resp.json["user_id"] == "@alice:test.local"


@pytest_twisted.ensureDeferred
async def test_second_step_may_omit_fields_sent_in_the_first(server: RunningServer) -> None:
    c = server.client()
    state = await _start(c, {"username": "alice", "password": PASSWORD})
    resp = await c.post(
        REGISTER, {"auth": {"type": "m.login.dummy", "session": state["session"]}}, token=False
    )
    assert resp.code == 200, resp
    assert resp.json["user_id"] == "@alice:test.local"


@pytest_twisted.ensureDeferred
async def test_the_uia_session_never_holds_the_password(server: RunningServer) -> None:
    c = server.client()
    state = await _start(c, {"username": "alice", "password": PASSWORD})
    session = await server.hs.storage.registration.get_ui_auth_session(state["session"])
    assert session is not None
    assert PASSWORD not in json.dumps(session.clientdict)
    # A client cannot choose the stored hash itself.
    resp = await c.post(
        REGISTER,
        {
            "auth": {"type": "m.login.dummy", "session": state["session"]},
            "org.homeserver.password_hash": "$2b$04$forgedforgedforgedforgedforgedforgedforgedforgedforg",
        },
        token=False,
    )
    assert resp.code == 200, resp
    assert (await server.client().login("alice", PASSWORD)).code == 200


@pytest_twisted.ensureDeferred
async def test_register_without_username_generates_one(server: RunningServer) -> None:
    resp = await _register_dummy(server.client(), password=PASSWORD)
    assert resp.code == 200, resp
    user_id = resp.json["user_id"]
    assert user_id.startswith("@") and user_id.endswith(":test.local")
    assert not user_id[1:].split(":")[0].isdigit()


@pytest_twisted.ensureDeferred
async def test_register_lowercases_the_username(server: RunningServer) -> None:
    resp = await _register_dummy(server.client(), username="Alice", password=PASSWORD)
    assert resp.code == 200, resp
    assert resp.json["user_id"] == "@alice:test.local"


@pytest_twisted.ensureDeferred
async def test_register_without_password_is_refused(server: RunningServer) -> None:
    resp = await _register_dummy(server.client(), username="alice")
    assert_error(resp, 400, "M_MISSING_PARAM")
    available = await server.client().get(AVAILABLE, params={"username": "alice"})
    assert available.code == 200, available


@pytest_twisted.ensureDeferred
async def test_register_unknown_auth_type_is_400(server: RunningServer) -> None:
    c = server.client()
    state = await _start(c, {"username": "alice", "password": PASSWORD})
    resp = await c.post(
        REGISTER,
        {"auth": {"type": "m.login.password", "session": state["session"]}},
        token=False,
    )
    assert_error(resp, 400, "M_UNRECOGNIZED")


@pytest_twisted.ensureDeferred
async def test_register_unknown_session_is_400(server: RunningServer) -> None:
    resp = await server.client().post(
        REGISTER,
        {"password": PASSWORD, "auth": {"type": "m.login.dummy", "session": "nope"}},
        token=False,
    )
    assert resp.code == 400, resp


@pytest_twisted.ensureDeferred
async def test_register_retry_of_a_session_gets_the_same_account(server: RunningServer) -> None:
    # As Synapse (SyTest 11register.pl "registration is idempotent"): a session that
    # registered an account logs it in again; it never makes a second one.
    c = server.client()
    state = await _start(c, {"username": "alice", "password": PASSWORD})
    auth = {"type": "m.login.dummy", "session": state["session"]}
    first = await c.post(REGISTER, {"auth": auth}, token=False)
    assert first.code == 200, first
    again = await c.post(
        REGISTER, {"username": "alice2", "password": PASSWORD, "auth": auth}, token=False
    )
    assert again.code == 200, again
    assert again.json["user_id"] == first.json["user_id"] == "@alice:test.local"
    assert again.json["access_token"] != first.json["access_token"]
    assert again.json["device_id"] != first.json["device_id"]
    resp = await c.get("/_matrix/client/v3/profile/@alice2:test.local", token=False)
    assert resp.code == 404, resp
    # The same request again (its username is now taken: by this very session).
    again = await c.post(
        REGISTER, {"username": "alice", "password": PASSWORD, "auth": auth}, token=False
    )
    assert again.code == 200 and again.json["user_id"] == "@alice:test.local", again
    # Another session asking for the name is refused.
    other = server.client()
    resp = await other.post(REGISTER, {"username": "alice", "password": PASSWORD}, token=False)
    assert_error(resp, 400, "M_USER_IN_USE")
    # Without a username: the same generated account.
    state = await _start(c, {"password": PASSWORD})
    auth = {"type": "m.login.dummy", "session": state["session"]}
    first = await c.post(REGISTER, {"auth": auth}, token=False)
    again = await c.post(REGISTER, {"password": PASSWORD, "auth": auth}, token=False)
    assert first.code == again.code == 200, again
    assert again.json["user_id"] == first.json["user_id"]


@pytest.mark.parametrize(
    "body",
    [
        {"username": 5, "password": PASSWORD},
        {"username": "alice", "password": ["x"]},
        {"username": "alice", "password": PASSWORD, "device_id": 1},
        {"username": "alice", "password": PASSWORD, "inhibit_login": "yes"},
        {"username": "alice", "password": PASSWORD, "auth": "dummy"},
    ],
    ids=["username", "password", "device_id", "inhibit_login", "auth"],
)
@pytest.mark.parametrize("db_kind", ["sqlite"])
@pytest_twisted.ensureDeferred
async def test_register_field_of_wrong_type_is_400_bad_json(
    server: RunningServer, body: dict[str, Any]
) -> None:
    resp = await server.client().post(REGISTER, body, token=False)
    assert_error(resp, 400, "M_BAD_JSON")


@pytest_twisted.ensureDeferred
async def test_register_taken_username_is_400_user_in_use(
    server: RunningServer, alice: Client
) -> None:
    for name in ("alice", "ALICE"):
        resp = await server.client().post(
            REGISTER, {"username": name, "password": PASSWORD}, token=False
        )
        assert_error(resp, 400, "M_USER_IN_USE")


@pytest.mark.parametrize("name", ["bad name", "_leading", "12345", "caf\u00e9", "a:b", ""])
@pytest_twisted.ensureDeferred
async def test_register_invalid_username_is_400_invalid_username(
    server: RunningServer, name: str
) -> None:
    resp = await server.client().post(
        REGISTER, {"username": name, "password": PASSWORD}, token=False
    )
    assert_error(resp, 400, "M_INVALID_USERNAME")


@pytest_twisted.ensureDeferred
async def test_register_too_long_username_is_invalid(server: RunningServer) -> None:
    resp = await server.client().post(
        REGISTER, {"username": "a" * 250, "password": PASSWORD}, token=False
    )
    assert_error(resp, 400, "M_INVALID_USERNAME")


# Options -----------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_register_inhibit_login_returns_no_token(server: RunningServer) -> None:
    resp = await _register_dummy(
        server.client(), username="alice", password=PASSWORD, inhibit_login=True
    )
    assert resp.code == 200, resp
    assert resp.json == {"user_id": "@alice:test.local", "home_server": "test.local"}
    assert await server.hs.storage.users.get_devices("@alice:test.local") == []
    # The account exists and its password works.
    assert (await server.client().login("alice")).code == 200


@pytest_twisted.ensureDeferred
async def test_register_with_device_id_and_display_name(server: RunningServer) -> None:
    c = server.client()
    resp = await _register_dummy(
        c,
        username="alice",
        password=PASSWORD,
        device_id="MYDEVICE",
        initial_device_display_name="Alice's phone",
    )
    assert resp.code == 200, resp
    assert resp.json["device_id"] == "MYDEVICE"
    devices = await c.get("/_matrix/client/v3/devices", token=resp.json["access_token"])
    assert [(d["device_id"], d["display_name"]) for d in devices.json["devices"]] == [
        ("MYDEVICE", "Alice's phone")
    ]


@pytest_twisted.ensureDeferred
async def test_register_with_refresh_token_returns_refresh_pair(server: RunningServer) -> None:
    c = server.client()
    resp = await _register_dummy(c, username="alice", password=PASSWORD, refresh_token=True)
    assert resp.code == 200, resp
    assert resp.json["refresh_token"].startswith("mar_")
    assert resp.json["expires_in_ms"] == 300_000
    refreshed = await c.post(
        "/_matrix/client/v3/refresh", {"refresh_token": resp.json["refresh_token"]}, token=False
    )
    assert refreshed.code == 200, refreshed


@pytest_twisted.ensureDeferred
async def test_registered_user_gets_localpart_as_displayname(server: RunningServer) -> None:
    await _register_dummy(server.client(), username="alice", password=PASSWORD)
    resp = await server.client().get(f"/_matrix/client/v3/profile/{q('@alice:test.local')}")
    assert resp.json == {"displayname": "alice"}


@pytest_twisted.ensureDeferred
async def test_guest_registration_refused_by_default(server: RunningServer) -> None:
    resp = await server.client().post(REGISTER, {}, token=False, params={"kind": "guest"})
    assert_error(resp, 403, "M_FORBIDDEN")


@with_config(allow_guest_access=True)
@pytest_twisted.ensureDeferred
async def test_guest_registration_when_allowed_gives_guest_session(
    server: RunningServer,
) -> None:
    c = server.client()
    resp = await c.post(REGISTER, {}, token=False, params={"kind": "guest"})
    assert resp.code == 200, resp
    token = resp.json["access_token"]
    who = await c.get("/_matrix/client/v3/account/whoami", token=token)
    assert who.json["is_guest"] is True
    # Guests cannot use endpoints that need a full account.
    password = await c.post(
        "/_matrix/client/v3/account/password", {"new_password": "x"}, token=token
    )
    assert_error(password, 403, "M_GUEST_ACCESS_FORBIDDEN")


async def _guest_session(c: Client) -> tuple[str, str]:
    resp = await c.post(REGISTER, {}, token=False, params={"kind": "guest"})
    assert resp.code == 200, resp
    return resp.json["user_id"], resp.json["access_token"]


@with_config(allow_guest_access=True)
@pytest_twisted.ensureDeferred
async def test_guest_upgrades_to_a_full_user_with_its_token(server: RunningServer) -> None:
    # As Synapse (SyTest "Guest user can upgrade to fully featured user"): the guest's
    # own token in guest_access_token lets it register its own id, now as a full user.
    c = server.client()
    guest_id, guest_token = await _guest_session(c)
    localpart = guest_id[1:].split(":")[0]
    body = {"username": localpart, "password": PASSWORD, "guest_access_token": guest_token}
    resp = await _register_dummy(c, **body)
    assert resp.code == 200, resp
    assert resp.json["user_id"] == guest_id
    who = await c.get("/_matrix/client/v3/account/whoami", token=resp.json["access_token"])
    assert who.json["user_id"] == guest_id and who.json["is_guest"] is False
    # The old guest token stays valid, no longer a guest's; the password logs in.
    who = await c.get("/_matrix/client/v3/account/whoami", token=guest_token)
    assert who.json["is_guest"] is False
    login = await c.post(
        "/_matrix/client/v3/login",
        {
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": localpart},
            "password": PASSWORD,
        },
        token=False,
    )
    assert login.code == 200, login
    # Upgraded once: the same again is refused (it is no guest any more).
    again = await c.post(REGISTER, body, token=False)
    assert_error(again, 403, "M_FORBIDDEN")


@with_config(allow_guest_access=True)
@pytest_twisted.ensureDeferred
async def test_guest_token_cannot_take_another_account(server: RunningServer) -> None:
    c = server.client()
    guest1, _ = await _guest_session(c)
    _, token2 = await _guest_session(c)
    await server.client().register("alice")
    for target in (guest1[1:].split(":")[0], "alice"):
        body = {"username": target, "password": PASSWORD, "guest_access_token": token2}
        assert_error(await c.post(REGISTER, body, token=False), 403, "M_FORBIDDEN")
        body["auth"] = {"type": "m.login.dummy"}
        assert_error(await c.post(REGISTER, body, token=False), 403, "M_FORBIDDEN")
    # Without a guest token a guest's id is taken.
    body = {"username": guest1[1:].split(":")[0], "password": PASSWORD}
    assert_error(await c.post(REGISTER, body, token=False), 400, "M_USER_IN_USE")
    unknown = {"username": "bob", "password": PASSWORD, "guest_access_token": "nope"}
    assert_error(await c.post(REGISTER, unknown, token=False), 401, "M_UNKNOWN_TOKEN")


@pytest_twisted.ensureDeferred
async def test_register_unknown_kind_is_400(server: RunningServer) -> None:
    resp = await server.client().post(REGISTER, {}, token=False, params={"kind": "robot"})
    assert_error(resp, 400, "M_INVALID_PARAM")


@with_config(enable_registration=False)
@pytest_twisted.ensureDeferred
async def test_register_when_registration_disabled_is_403_forbidden(
    server: RunningServer,
) -> None:
    resp = await server.client().post(
        REGISTER,
        {"username": "alice", "password": PASSWORD, "auth": {"type": "m.login.dummy"}},
        token=False,
    )
    assert_error(resp, 403, "M_FORBIDDEN")


@with_config(enable_registration_without_verification=False)
@pytest_twisted.ensureDeferred
async def test_register_needs_without_verification_flag_when_open(
    server: RunningServer,
) -> None:
    resp = await server.client().post(REGISTER, {"username": "alice"}, token=False)
    assert_error(resp, 403, "M_FORBIDDEN")


# /register/available -------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_available_username_is_available(server: RunningServer) -> None:
    resp = await server.client().get(AVAILABLE, params={"username": "newbie"})
    assert resp.code == 200, resp
    assert resp.json == {"available": True}


@pytest_twisted.ensureDeferred
async def test_available_taken_username_is_user_in_use(
    server: RunningServer, alice: Client
) -> None:
    # Unlike /register, /register/available does not lowercase (as Synapse): "Alice" is
    # an invalid name there, covered below.
    resp = await server.client().get(AVAILABLE, params={"username": "alice"})
    assert_error(resp, 400, "M_USER_IN_USE")


@pytest.mark.parametrize("name", ["bad name", "_leading", "12345", "UPPER", "a:b", "x" * 250])
@pytest.mark.parametrize("db_kind", ["sqlite"])
@pytest_twisted.ensureDeferred
async def test_available_invalid_username_is_invalid_username(
    server: RunningServer, name: str
) -> None:
    resp = await server.client().get(AVAILABLE, params={"username": name})
    assert_error(resp, 400, "M_INVALID_USERNAME")


@pytest_twisted.ensureDeferred
async def test_available_without_username_is_missing_param(server: RunningServer) -> None:
    resp = await server.client().get(AVAILABLE)
    assert_error(resp, 400, "M_MISSING_PARAM")


@pytest_twisted.ensureDeferred
async def test_registration_token_validity_is_403_when_tokens_not_required(
    server: RunningServer,
) -> None:
    resp = await server.client().get(VALIDITY, params={"token": "abc"})
    assert_error(resp, 403, "M_FORBIDDEN")
