"""``/login`` with ``m.login.application_service``: the as_token vouches for a user in
the service's namespace; anyone else is refused."""

from __future__ import annotations

import pytest_twisted

from tests.appservice.helpers import SENDER, V3, as_client, assert_error, puppet
from tests.support.client import Client
from tests.support.server import RunningServer

LOGIN = f"{V3}/login"


def _body(user: str) -> dict[str, object]:
    return {
        "type": "m.login.application_service",
        "identifier": {"type": "m.id.user", "user": user},
    }


@pytest_twisted.ensureDeferred
async def test_the_flow_is_advertised(server: RunningServer) -> None:
    resp = await server.client().get(LOGIN)
    assert {"type": "m.login.application_service"} in resp.json["flows"]


@pytest_twisted.ensureDeferred
async def test_logs_in_a_namespaced_user_without_a_password(server: RunningServer) -> None:
    user_id = await puppet(server, "_bridge_dave")
    resp = await as_client(server).post(LOGIN, {**_body("_bridge_dave"), "device_id": "BRIDGEDEV"})
    assert resp.code == 200, resp
    assert resp.json["user_id"] == user_id
    assert resp.json["device_id"] == "BRIDGEDEV"
    # The new token is a normal user token.
    client = Client(server.base_url, resp.json["access_token"])
    whoami = await client.get(f"{V3}/account/whoami")
    assert whoami.json == {"user_id": user_id, "device_id": "BRIDGEDEV", "is_guest": False}
    # The sender itself may log in too.
    resp = await as_client(server).post(LOGIN, _body(SENDER))
    assert resp.code == 200, resp


@pytest_twisted.ensureDeferred
async def test_users_outside_the_namespace_are_refused(server: RunningServer) -> None:
    await server.client().register("outsider")
    resp = await as_client(server).post(LOGIN, _body("outsider"))
    assert_error(resp, 403, "M_FORBIDDEN")


@pytest_twisted.ensureDeferred
async def test_unknown_user_is_refused(server: RunningServer) -> None:
    resp = await as_client(server).post(LOGIN, _body("_bridge_nobody"))
    assert_error(resp, 403, "M_FORBIDDEN")


@pytest_twisted.ensureDeferred
async def test_a_token_is_required(server: RunningServer) -> None:
    await puppet(server, "_bridge_erin")
    resp = await server.client().post(LOGIN, _body("_bridge_erin"), token=False)
    assert_error(resp, 401, "M_MISSING_TOKEN")
    resp = await as_client(server, token="not-a-token").post(LOGIN, _body("_bridge_erin"))
    assert_error(resp, 401, "M_UNKNOWN_TOKEN")
    # A user's access token is not an as_token.
    user = server.client()
    await user.register("frank")
    resp = await user.post(LOGIN, _body("_bridge_erin"))
    assert_error(resp, 401, "M_UNKNOWN_TOKEN")
