"""POST /_synapse/admin/v1/register (shared secret) and the register-user tool."""

from __future__ import annotations

from typing import Any

import pytest
import pytest_twisted
from twisted.internet import threads

from synapse_compat import register_user
from synapse_compat.admin_register import compute_registration_mac
from tests.api.helpers import assert_error, with_config
from tests.support.client import Client
from tests.support.server import RunningServer

PATH = "/_synapse/admin/v1/register"
SECRET = "shared-secret-for-tests"


async def _nonce(c: Client) -> str:
    resp = await c.get(PATH)
    assert resp.code == 200, resp
    nonce = resp.json["nonce"]
    assert isinstance(nonce, str) and len(nonce) >= 16
    return nonce  # type: ignore[no-any-return]


def _body(
    nonce: str, username: str, password: str = "pw", admin: bool = False, **extra: Any
) -> dict[str, Any]:
    mac = compute_registration_mac(SECRET, nonce, username, password, admin, extra.get("user_type"))
    return {
        "nonce": nonce,
        "username": username,
        "password": password,
        "admin": admin,
        "mac": mac,
        **extra,
    }


def test_mac_matches_synapse_documented_example() -> None:
    # HMAC-SHA1 of nonce\0user\0password\0admin|notadmin, keyed by the shared secret.
    import hashlib
    import hmac

    want = hmac.new(b"s3cret", b"n\x00u\x00p\x00notadmin", hashlib.sha1).hexdigest()
    assert compute_registration_mac("s3cret", "n", "u", "p", False) == want
    want_admin = hmac.new(b"s3cret", b"n\x00u\x00p\x00admin\x00bot", hashlib.sha1).hexdigest()
    assert compute_registration_mac("s3cret", "n", "u", "p", True, "bot") == want_admin


@pytest_twisted.ensureDeferred
async def test_nonces_are_fresh_each_time(server: RunningServer) -> None:
    c = server.client()
    assert await _nonce(c) != await _nonce(c)


@pytest_twisted.ensureDeferred
async def test_shared_secret_registration_creates_user_and_session(server: RunningServer) -> None:
    c = server.client()
    resp = await c.post(PATH, _body(await _nonce(c), "carol", "pw1"), token=False)
    assert resp.code == 200, resp
    assert resp.json["user_id"] == "@carol:test.local"
    assert resp.json["home_server"] == "test.local"
    assert resp.json["device_id"]
    who = await c.get("/_matrix/client/v3/account/whoami", token=resp.json["access_token"])
    assert who.json["user_id"] == "@carol:test.local"
    assert (await server.client().login("carol", "pw1")).code == 200
    user = await server.hs.storage.users.get_user("@carol:test.local")
    assert user is not None and user.admin is False


@pytest_twisted.ensureDeferred
async def test_admin_flag_makes_an_admin(server: RunningServer) -> None:
    c = server.client()
    resp = await c.post(PATH, _body(await _nonce(c), "boss", admin=True), token=False)
    assert resp.code == 200, resp
    user = await server.hs.storage.users.get_user("@boss:test.local")
    assert user is not None and user.admin is True


@pytest_twisted.ensureDeferred
async def test_admin_flag_is_covered_by_the_mac(server: RunningServer) -> None:
    c = server.client()
    body = _body(await _nonce(c), "sneaky", admin=False)
    body["admin"] = True  # MAC computed for notadmin
    assert_error(await c.post(PATH, body, token=False), 403, "M_FORBIDDEN")
    assert await server.hs.storage.users.get_user("@sneaky:test.local") is None


@pytest_twisted.ensureDeferred
async def test_bad_hmac_is_403(server: RunningServer) -> None:
    c = server.client()
    body = _body(await _nonce(c), "carol")
    body["mac"] = "0" * 40
    assert_error(await c.post(PATH, body, token=False), 403, "M_FORBIDDEN")
    assert await server.hs.storage.users.get_user("@carol:test.local") is None


@pytest_twisted.ensureDeferred
async def test_mac_with_wrong_secret_is_403(server: RunningServer) -> None:
    c = server.client()
    nonce = await _nonce(c)
    body = _body(nonce, "carol")
    body["mac"] = compute_registration_mac("wrong-secret", nonce, "carol", "pw", False)
    assert_error(await c.post(PATH, body, token=False), 403, "M_FORBIDDEN")


@pytest_twisted.ensureDeferred
async def test_nonce_cannot_be_reused(server: RunningServer) -> None:
    c = server.client()
    nonce = await _nonce(c)
    assert (await c.post(PATH, _body(nonce, "carol"), token=False)).code == 200
    again = await c.post(PATH, _body(nonce, "dave"), token=False)
    assert again.code == 400, again
    assert await server.hs.storage.users.get_user("@dave:test.local") is None


@pytest_twisted.ensureDeferred
async def test_nonce_is_spent_even_by_a_failed_attempt(server: RunningServer) -> None:
    c = server.client()
    nonce = await _nonce(c)
    bad = _body(nonce, "carol")
    bad["mac"] = "f" * 40
    assert (await c.post(PATH, bad, token=False)).code == 403
    retry = await c.post(PATH, _body(nonce, "carol"), token=False)
    assert retry.code == 400, retry


@pytest_twisted.ensureDeferred
async def test_unknown_nonce_is_refused(server: RunningServer) -> None:
    resp = await server.client().post(PATH, _body("made-up-nonce", "carol"), token=False)
    assert resp.code == 400, resp


@pytest_twisted.ensureDeferred
async def test_taken_or_invalid_username_is_refused(server: RunningServer, alice: Client) -> None:
    c = server.client()
    assert_error(await c.post(PATH, _body(await _nonce(c), "alice")), 400, "M_USER_IN_USE")
    assert_error(await c.post(PATH, _body(await _nonce(c), "bad name")), 400, "M_INVALID_USERNAME")


@pytest_twisted.ensureDeferred
async def test_username_is_lowercased(server: RunningServer) -> None:
    c = server.client()
    resp = await c.post(PATH, _body(await _nonce(c), "Carol"), token=False)
    assert resp.code == 200, resp
    assert resp.json["user_id"] == "@carol:test.local"


@pytest_twisted.ensureDeferred
async def test_displayname_is_applied(server: RunningServer) -> None:
    c = server.client()
    resp = await c.post(PATH, _body(await _nonce(c), "carol", displayname="Carol C."), token=False)
    assert resp.code == 200, resp
    profile = await c.get("/_matrix/client/v3/profile/%40carol%3Atest.local")
    assert profile.json["displayname"] == "Carol C."


@pytest_twisted.ensureDeferred
async def test_missing_fields_are_400(server: RunningServer) -> None:
    c = server.client()
    for missing in ("username", "password", "mac"):
        body = _body(await _nonce(c), "carol")
        del body[missing]
        assert_error(await c.post(PATH, body, token=False), 400, "M_MISSING_PARAM")
    assert_error(await c.post(PATH, {"username": "x"}, token=False), 400, "M_MISSING_PARAM")


@with_config(registration_shared_secret=None)
@pytest_twisted.ensureDeferred
async def test_without_shared_secret_registration_is_refused(server: RunningServer) -> None:
    c = server.client()
    nonce_resp = await c.get(PATH)
    nonce = nonce_resp.json["nonce"] if nonce_resp.code == 200 else "x"
    resp = await c.post(PATH, _body(nonce, "carol"), token=False)
    assert resp.code == 400, resp
    assert await server.hs.storage.users.get_user("@carol:test.local") is None


# The register-user tool --------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_register_user_tool_registers_against_running_server(
    server: RunningServer,
) -> None:
    result = await threads.deferToThread(
        register_user.register, server.base_url, SECRET, "tooluser", "tool-pw", False
    )
    assert result["user_id"] == "@tooluser:test.local"
    assert (await server.client().login("tooluser", "tool-pw")).code == 200
    admin = await threads.deferToThread(
        register_user.register, server.base_url + "/", SECRET, "tooladmin", "pw", True
    )
    user = await server.hs.storage.users.get_user(admin["user_id"])
    assert user is not None and user.admin is True


@pytest_twisted.ensureDeferred
async def test_register_user_tool_with_wrong_secret_exits_with_message(
    server: RunningServer,
) -> None:
    with pytest.raises(SystemExit) as excinfo:
        await threads.deferToThread(
            register_user.register, server.base_url, "wrong", "tooluser", "pw", False
        )
    assert "403" in str(excinfo.value.code)
    assert "HMAC" in str(excinfo.value.code)


@pytest_twisted.ensureDeferred
async def test_register_user_main_reads_secret_from_config(
    server: RunningServer, tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "hs.yaml"
    config.write_text(f"registration_shared_secret: {SECRET}\n")
    argv = ["-c", str(config), "-u", "cliuser", "-p", "cli-pw", "--no-admin", server.base_url]
    code = await threads.deferToThread(register_user.main, argv)
    assert code == 0
    assert "@cliuser:test.local" in capsys.readouterr().out
    assert (await server.client().login("cliuser", "cli-pw")).code == 200


def test_register_user_main_without_secret_fails(
    tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "hs.yaml"
    config.write_text("server_name: x\n")
    assert register_user.main(["-c", str(config), "-u", "u", "-p", "p"]) == 1
    assert "registration_shared_secret" in capsys.readouterr().err


def test_register_user_url_comes_from_the_client_listener() -> None:
    config = {
        "listeners": [
            {"port": 9000, "resources": [{"names": ["federation"]}]},
            {"port": 8118, "tls": False, "resources": [{"names": ["client"]}]},
        ]
    }
    assert register_user._client_url_from_config(config) == "http://localhost:8118"
    assert register_user._client_url_from_config({}) == "http://localhost:8008"
