"""/versions, .well-known and /capabilities."""

from __future__ import annotations

from typing import Any

import pytest
import pytest_twisted

from tests.api.helpers import assert_error, with_config
from tests.support.client import Client
from tests.support.server import RunningServer


@pytest_twisted.ensureDeferred
async def test_versions_lists_spec_versions_without_auth(server: RunningServer) -> None:
    resp = await server.client().get("/_matrix/client/versions")
    assert resp.code == 200, resp
    versions = resp.json["versions"]
    assert isinstance(versions, list) and versions
    assert all(isinstance(v, str) for v in versions)
    assert "v1.1" in versions
    # v1.11 makes clients use authenticated media (/_matrix/client/v1/media), which we serve.
    assert {"v1.11", "v1.12"} <= set(versions)
    assert isinstance(resp.json.get("unstable_features", {}), dict)


@pytest_twisted.ensureDeferred
async def test_versions_ignores_an_invalid_token(server: RunningServer) -> None:
    resp = await server.client().get("/_matrix/client/versions", token="mat_bogus")
    assert resp.code == 200, resp


@pytest_twisted.ensureDeferred
async def test_wellknown_client_points_at_public_baseurl(server: RunningServer) -> None:
    resp = await server.client().get("/.well-known/matrix/client")
    assert resp.code == 200, resp
    assert resp.json == {"m.homeserver": {"base_url": "http://127.0.0.1/"}}


@with_config(public_baseurl=None)
@pytest_twisted.ensureDeferred
async def test_wellknown_client_defaults_to_https_server_name(server: RunningServer) -> None:
    resp = await server.client().get("/.well-known/matrix/client")
    assert resp.json["m.homeserver"]["base_url"] == "https://test.local/"


@pytest_twisted.ensureDeferred
async def test_wellknown_server_is_404_unless_enabled(server: RunningServer) -> None:
    resp = await server.client().get("/.well-known/matrix/server")
    assert resp.code == 404, resp


@with_config(serve_server_wellknown=True)
@pytest_twisted.ensureDeferred
async def test_wellknown_server_delegates_to_port_443_when_enabled(
    server: RunningServer,
) -> None:
    resp = await server.client().get("/.well-known/matrix/server")
    assert resp.code == 200, resp
    assert resp.json == {"m.server": "test.local:443"}


@with_config(serve_server_wellknown=True, server_name="test.local:8448")
@pytest_twisted.ensureDeferred
async def test_wellknown_server_keeps_an_explicit_port(server: RunningServer) -> None:
    resp = await server.client().get("/.well-known/matrix/server")
    assert resp.json == {"m.server": "test.local:8448"}


@pytest_twisted.ensureDeferred
async def test_wellknown_support_is_404_m_not_found_unless_configured(
    server: RunningServer,
) -> None:
    resp = await server.client().get("/.well-known/matrix/support")
    assert_error(resp, 404, "M_NOT_FOUND")


SUPPORT = {
    "contacts": [
        {"role": "m.role.admin", "matrix_id": "@admin:test.local"},
        {"role": "m.role.security", "email_address": "security@test.local"},
    ],
    "support_page": "https://test.local/help",
}


@with_config(well_known_support=SUPPORT)
@pytest_twisted.ensureDeferred
async def test_wellknown_support_serves_the_configured_contacts(server: RunningServer) -> None:
    resp = await server.client().get("/.well-known/matrix/support", token=False)
    assert resp.code == 200, resp
    assert resp.json == SUPPORT


def test_wellknown_support_config_is_validated(tmp_path: Any) -> None:
    from homeserver.config import ConfigError, parse_config

    base = {"server_name": "test.local", "database": {"name": "sqlite3", "args": {}}}
    for bad in (
        {},
        {"contacts": [{"role": "m.role.admin"}]},
        {"contacts": [{"matrix_id": "@a:b"}]},
        {"support_page": "ftp://x"},
        "https://x",
    ):
        with pytest.raises(ConfigError):
            parse_config({**base, "well_known_support": bad}, str(tmp_path))


@pytest_twisted.ensureDeferred
async def test_capabilities_requires_auth(server: RunningServer) -> None:
    assert_error(
        await server.client().get("/_matrix/client/v3/capabilities"), 401, "M_MISSING_TOKEN"
    )


@pytest_twisted.ensureDeferred
async def test_capabilities_room_versions_default_12_with_1_to_12(
    server: RunningServer, alice: Client
) -> None:
    resp = await alice.get("/_matrix/client/v3/capabilities")
    assert resp.code == 200, resp
    caps = resp.json["capabilities"]
    room_versions = caps["m.room_versions"]
    assert room_versions["default"] == "12"
    assert room_versions["available"] == {str(v): "stable" for v in range(1, 13)}
    assert room_versions["default"] in room_versions["available"]
    assert caps["m.change_password"] == {"enabled": True}
    assert caps["m.set_displayname"] == {"enabled": True}
    assert caps["m.3pid_changes"] == {"enabled": True}


@with_config(password_config={"enabled": False})
@pytest_twisted.ensureDeferred
async def test_capabilities_change_password_off_when_passwords_disabled(
    server: RunningServer,
) -> None:
    # No password login: create the session directly.
    user_id = "@carol:test.local"
    await server.hs.storage.users.create_user(user_id, None, 0)
    session = await server.hs.auth.create_session(user_id, None, None)
    c = Client(server.base_url, session.access_token)
    resp = await c.get("/_matrix/client/v3/capabilities")
    assert resp.json["capabilities"]["m.change_password"] == {"enabled": False}
    login = await c.get("/_matrix/client/v3/login")
    assert login.json["flows"] == [{"type": "m.login.application_service"}]
    password = await c.post("/_matrix/client/v3/account/password", {"new_password": "x"})
    assert_error(password, 403, "M_FORBIDDEN")
