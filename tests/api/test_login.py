"""/login, /refresh, /logout and /logout/all."""

from __future__ import annotations

from typing import Any

import pytest
import pytest_twisted

from homeserver.handlers.auth import hash_token
from tests.api.helpers import PASSWORD, assert_error, register
from tests.support.client import Client
from tests.support.server import RunningServer

LOGIN = "/_matrix/client/v3/login"
REFRESH = "/_matrix/client/v3/refresh"
WHOAMI = "/_matrix/client/v3/account/whoami"


def _password_login(**fields: Any) -> dict[str, Any]:
    return {"type": "m.login.password", "password": PASSWORD, **fields}


async def _whoami_code(server: RunningServer, token: str) -> int:
    return (await server.client().get(WHOAMI, token=token)).code


@pytest_twisted.ensureDeferred
async def test_get_login_lists_password_flow(server: RunningServer) -> None:
    resp = await server.client().get(LOGIN)
    assert resp.code == 200, resp
    assert {"type": "m.login.password"} in resp.json["flows"]


@pytest.mark.parametrize(
    "fields",
    [
        {"identifier": {"type": "m.id.user", "user": "alice"}},
        {"identifier": {"type": "m.id.user", "user": "@alice:test.local"}},
        {"identifier": {"type": "m.id.user", "user": "ALICE"}},
        {"user": "alice"},
        {"user": "@alice:test.local"},
    ],
    ids=["localpart", "full_user_id", "uppercase_localpart", "legacy_user", "legacy_full_id"],
)
@pytest_twisted.ensureDeferred
async def test_password_login_accepts_each_identifier_form(
    server: RunningServer, alice: Client, fields: dict[str, Any]
) -> None:
    resp = await server.client().post(LOGIN, _password_login(**fields), token=False)
    assert resp.code == 200, resp
    body = resp.json
    assert body["user_id"] == "@alice:test.local"
    assert body["home_server"] == "test.local"
    assert body["device_id"] and body["access_token"]
    assert body["device_id"] != alice.device_id
    assert body["well_known"] == {"m.homeserver": {"base_url": "http://127.0.0.1/"}}
    assert "refresh_token" not in body
    assert await _whoami_code(server, body["access_token"]) == 200


@pytest_twisted.ensureDeferred
async def test_wrong_password_is_403_forbidden(server: RunningServer, alice: Client) -> None:
    resp = await server.client().post(
        LOGIN, _password_login(user="alice", password="wrong"), token=False
    )
    assert_error(resp, 403, "M_FORBIDDEN")
    assert "access_token" not in resp.json


@pytest_twisted.ensureDeferred
async def test_unknown_user_is_403_forbidden_like_wrong_password(server: RunningServer) -> None:
    resp = await server.client().post(LOGIN, _password_login(user="nobody"), token=False)
    assert_error(resp, 403, "M_FORBIDDEN")


@pytest_twisted.ensureDeferred
async def test_remote_user_id_cannot_log_in(server: RunningServer, alice: Client) -> None:
    resp = await server.client().post(
        LOGIN, _password_login(user="@alice:elsewhere.example"), token=False
    )
    assert_error(resp, 403, "M_FORBIDDEN")


@pytest_twisted.ensureDeferred
async def test_unknown_login_type_is_400(server: RunningServer) -> None:
    resp = await server.client().post(LOGIN, {"type": "m.login.token", "token": "x"})
    assert resp.code == 400, resp
    assert resp.json["errcode"] in ("M_UNKNOWN", "M_UNRECOGNIZED")


@pytest_twisted.ensureDeferred
async def test_unsupported_identifier_type_is_400(server: RunningServer) -> None:
    body = _password_login(identifier={"type": "m.id.thirdparty", "medium": "email"})
    resp = await server.client().post(LOGIN, body)
    assert resp.code == 400, resp


@pytest_twisted.ensureDeferred
async def test_login_without_identifier_is_400_missing_param(server: RunningServer) -> None:
    resp = await server.client().post(LOGIN, _password_login())
    assert_error(resp, 400, "M_MISSING_PARAM")


@pytest_twisted.ensureDeferred
async def test_login_with_existing_device_id_keeps_device_with_new_token(
    server: RunningServer, alice: Client
) -> None:
    first = await server.client().post(
        LOGIN,
        _password_login(user="alice", device_id="LAPTOP", initial_device_display_name="Laptop"),
    )
    second = await server.client().post(
        LOGIN,
        _password_login(user="alice", device_id="LAPTOP", initial_device_display_name="Renamed"),
    )
    assert first.code == second.code == 200
    assert first.json["device_id"] == second.json["device_id"] == "LAPTOP"
    assert first.json["access_token"] != second.json["access_token"]
    assert await _whoami_code(server, second.json["access_token"]) == 200
    devices = (await alice.get("/_matrix/client/v3/devices")).json["devices"]
    laptops = [d for d in devices if d["device_id"] == "LAPTOP"]
    # One device, and its display name is the first one (ignored for a known device).
    assert [d["display_name"] for d in laptops] == ["Laptop"]
    assert len(devices) == 2


@pytest_twisted.ensureDeferred
async def test_initial_device_display_name_shown_in_devices(
    server: RunningServer, alice: Client
) -> None:
    resp = await server.client().post(
        LOGIN, _password_login(user="alice", initial_device_display_name="Work PC")
    )
    device_id = resp.json["device_id"]
    devices = (await alice.get("/_matrix/client/v3/devices")).json["devices"]
    assert {"device_id": device_id, "display_name": "Work PC"}.items() <= next(
        d for d in devices if d["device_id"] == device_id
    ).items()


# Refresh tokens ----------------------------------------------------------------------


async def _refreshable_login(server: RunningServer) -> dict[str, Any]:
    resp = await server.client().post(LOGIN, _password_login(user="alice", refresh_token=True))
    assert resp.code == 200, resp
    return resp.json  # type: ignore[no-any-return]


@pytest_twisted.ensureDeferred
async def test_login_with_refresh_token_returns_expiring_pair(
    server: RunningServer, alice: Client
) -> None:
    body = await _refreshable_login(server)
    assert body["refresh_token"].startswith("mar_")
    assert body["access_token"].startswith("mat_")
    assert body["expires_in_ms"] == 300_000


@pytest_twisted.ensureDeferred
async def test_refresh_rotates_tokens_and_kills_the_old_pair(
    server: RunningServer, alice: Client
) -> None:
    login = await _refreshable_login(server)
    c = server.client()
    resp = await c.post(REFRESH, {"refresh_token": login["refresh_token"]}, token=False)
    assert resp.code == 200, resp
    new = resp.json
    assert new["access_token"] != login["access_token"]
    assert new["refresh_token"] != login["refresh_token"]
    assert new["expires_in_ms"] == 300_000
    # The new access token belongs to the same user and device.
    who = await c.get(WHOAMI, token=new["access_token"])
    assert who.json["user_id"] == "@alice:test.local"
    assert who.json["device_id"] == login["device_id"]
    # The old access token is dead at once, and not "soft" (it was replaced, not expired).
    old = await c.get(WHOAMI, token=login["access_token"])
    assert_error(old, 401, "M_UNKNOWN_TOKEN")
    assert old.json["soft_logout"] is False
    # The old refresh token cannot be used again.
    again = await c.post(REFRESH, {"refresh_token": login["refresh_token"]}, token=False)
    assert_error(again, 401, "M_UNKNOWN_TOKEN")
    assert again.json["soft_logout"] is False
    # The new refresh token works, once.
    third = await c.post(REFRESH, {"refresh_token": new["refresh_token"]}, token=False)
    assert third.code == 200, third
    assert await _whoami_code(server, new["access_token"]) == 401


@pytest_twisted.ensureDeferred
async def test_refresh_keeps_the_device(server: RunningServer, alice: Client) -> None:
    login = await _refreshable_login(server)
    await server.client().post(REFRESH, {"refresh_token": login["refresh_token"]})
    devices = (await alice.get("/_matrix/client/v3/devices")).json["devices"]
    assert login["device_id"] in [d["device_id"] for d in devices]


@pytest_twisted.ensureDeferred
async def test_refresh_on_v1_path(server: RunningServer, alice: Client) -> None:
    login = await _refreshable_login(server)
    resp = await server.client().post(
        "/_matrix/client/v1/refresh", {"refresh_token": login["refresh_token"]}
    )
    assert resp.code == 200, resp


@pytest_twisted.ensureDeferred
async def test_refresh_with_unknown_token_is_401_unknown_token(server: RunningServer) -> None:
    resp = await server.client().post(REFRESH, {"refresh_token": "mar_nope"}, token=False)
    assert_error(resp, 401, "M_UNKNOWN_TOKEN")
    assert resp.json["soft_logout"] is False


@pytest_twisted.ensureDeferred
async def test_refresh_with_an_access_token_is_refused(
    server: RunningServer, alice: Client
) -> None:
    resp = await server.client().post(REFRESH, {"refresh_token": alice.access_token})
    assert_error(resp, 401, "M_UNKNOWN_TOKEN")


@pytest_twisted.ensureDeferred
async def test_refresh_without_refresh_token_is_400(server: RunningServer) -> None:
    assert_error(await server.client().post(REFRESH, {}), 400, "M_MISSING_PARAM")
    assert_error(await server.client().post(REFRESH, {"refresh_token": 1}), 400, "M_BAD_JSON")


@pytest_twisted.ensureDeferred
async def test_expired_refresh_token_is_refused(server: RunningServer, alice: Client) -> None:
    now_ms = int(server.hs.reactor.seconds() * 1000)
    await server.hs.storage.users.add_refresh_token(
        alice.user_id, alice.device_id, hash_token("mar_expired"), now_ms - 1000
    )
    resp = await server.client().post(REFRESH, {"refresh_token": "mar_expired"})
    assert_error(resp, 401, "M_UNKNOWN_TOKEN")
    assert resp.json["soft_logout"] is False


@pytest_twisted.ensureDeferred
async def test_logout_of_refreshable_session_kills_its_refresh_token(
    server: RunningServer, alice: Client
) -> None:
    login = await _refreshable_login(server)
    out = await server.client().post("/_matrix/client/v3/logout", {}, token=login["access_token"])
    assert out.code == 200, out
    resp = await server.client().post(REFRESH, {"refresh_token": login["refresh_token"]})
    assert_error(resp, 401, "M_UNKNOWN_TOKEN")


# Logout ----------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_logout_invalidates_token_immediately(server: RunningServer, alice: Client) -> None:
    # Warm the token cache first, so a stale cache would show.
    assert await _whoami_code(server, alice.access_token) == 200
    resp = await alice.post("/_matrix/client/v3/logout")
    assert resp.code == 200, resp
    assert resp.json == {}
    after = await alice.get(WHOAMI)
    assert_error(after, 401, "M_UNKNOWN_TOKEN")
    assert after.json["soft_logout"] is False


@pytest_twisted.ensureDeferred
async def test_logout_deletes_the_device_but_not_others(
    server: RunningServer, alice: Client
) -> None:
    other = server.client()
    await other.login("alice")
    await other.post("/_matrix/client/v3/logout")
    devices = (await alice.get("/_matrix/client/v3/devices")).json["devices"]
    assert [d["device_id"] for d in devices] == [alice.device_id]
    assert await _whoami_code(server, alice.access_token) == 200


@pytest_twisted.ensureDeferred
async def test_logout_without_token_is_401(server: RunningServer) -> None:
    resp = await server.client().post("/_matrix/client/v3/logout")
    assert_error(resp, 401, "M_MISSING_TOKEN")


@pytest_twisted.ensureDeferred
async def test_logout_all_invalidates_every_token(server: RunningServer, alice: Client) -> None:
    others = [server.client() for _ in range(2)]
    for other in others:
        await other.login("alice")
        assert await _whoami_code(server, other.access_token) == 200
    bob = await register(server, "bob")
    resp = await alice.post("/_matrix/client/v3/logout/all")
    assert resp.code == 200, resp
    for c in [alice, *others]:
        assert_error(await c.get(WHOAMI), 401, "M_UNKNOWN_TOKEN")
    assert await server.hs.storage.users.get_devices("@alice:test.local") == []
    # Other users are untouched, and alice can log in again.
    assert await _whoami_code(server, bob.access_token) == 200
    assert (await server.client().login("alice")).code == 200
