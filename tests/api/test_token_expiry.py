"""Refreshable access tokens really expire (a short configured lifetime, one short wait)."""

from __future__ import annotations

from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor, task

from tests.api.helpers import PASSWORD, assert_error
from tests.support.client import Client
from tests.support.server import RunningServer

LIFETIME_MS = 1500  # long enough for two logins on a loaded machine
WHOAMI = "/_matrix/client/v3/account/whoami"


@pytest.fixture
def config_overrides() -> dict[str, Any]:
    return {"refreshable_access_token_lifetime": LIFETIME_MS}


async def _login(server: RunningServer, refresh: bool) -> dict[str, Any]:
    resp = await server.client().post(
        "/_matrix/client/v3/login",
        {
            "type": "m.login.password",
            "user": "alice",
            "password": PASSWORD,
            "refresh_token": refresh,
        },
    )
    assert resp.code == 200, resp
    return resp.json  # type: ignore[no-any-return]


@pytest_twisted.ensureDeferred
async def test_refreshable_token_expires_into_soft_logout_then_refreshes(
    server: RunningServer, alice: Client
) -> None:
    a = await _login(server, refresh=True)
    b = await _login(server, refresh=True)
    plain = await _login(server, refresh=False)
    assert a["expires_in_ms"] == LIFETIME_MS
    assert "expires_in_ms" not in plain
    c = server.client()
    assert (await c.get(WHOAMI, token=a["access_token"])).code == 200  # cached while fresh

    await task.deferLater(reactor, (LIFETIME_MS + 50) / 1000, lambda: None)

    expired = await c.get(WHOAMI, token=a["access_token"])
    assert_error(expired, 401, "M_UNKNOWN_TOKEN")
    assert expired.json["soft_logout"] is True
    # Tokens handed out without a refresh token never expire.
    assert (await c.get(WHOAMI, token=plain["access_token"])).code == 200
    # The refresh token still works after its access token expired.
    refreshed = await c.post("/_matrix/client/v3/refresh", {"refresh_token": a["refresh_token"]})
    assert refreshed.code == 200, refreshed
    assert refreshed.json["expires_in_ms"] == LIFETIME_MS
    # An expired token may still log its session out.
    out = await c.post("/_matrix/client/v3/logout", {}, token=b["access_token"])
    assert out.code == 200, out
    gone = await c.post("/_matrix/client/v3/refresh", {"refresh_token": b["refresh_token"]})
    assert_error(gone, 401, "M_UNKNOWN_TOKEN")
