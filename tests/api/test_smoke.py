from __future__ import annotations

import pytest_twisted

from tests.support.server import RunningServer


@pytest_twisted.ensureDeferred
async def test_register_login_whoami(server: RunningServer) -> None:
    alice = server.client()
    await alice.register("alice")
    resp = await alice.get("/_matrix/client/v3/account/whoami")
    assert resp.code == 200, resp
    assert resp.json["user_id"] == "@alice:test.local"
    other = server.client()
    resp = await other.login("alice")
    assert resp.code == 200, resp
    assert other.device_id != alice.device_id
