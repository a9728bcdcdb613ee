"""POST /_matrix/client/v1/appservice/{appserviceId}/ping and its errors."""

from __future__ import annotations

from typing import Any

import pytest
import pytest_twisted

from homeserver.appservice import api
from tests.appservice.fake_as import FakeAppService
from tests.appservice.helpers import HS_TOKEN, V1, as_client, assert_error, registration
from tests.support.server import RunningServer

PING = f"{V1}/appservice/bridge/ping"


@pytest_twisted.ensureDeferred
async def test_a_ping_reaches_the_service_with_the_transaction_id(
    server: RunningServer, fake_as: FakeAppService
) -> None:
    resp = await as_client(server).post(PING, {"transaction_id": "meow"})
    assert resp.code == 200, resp
    assert isinstance(resp.json["duration_ms"], int) and resp.json["duration_ms"] >= 0
    (ping,) = fake_as.requests_to("/ping")
    assert ping.method == "POST"
    assert ping.authorization == f"Bearer {HS_TOKEN}"
    assert ping.body == {"transaction_id": "meow"}
    resp = await as_client(server).post(PING, {})
    assert resp.code == 200, resp
    assert fake_as.requests_to("/ping")[1].body == {}


@pytest_twisted.ensureDeferred
async def test_only_the_service_itself_may_ping(server: RunningServer) -> None:
    resp = await as_client(server).post(f"{V1}/appservice/other/ping", {})
    assert_error(resp, 403, "M_FORBIDDEN")
    alice = server.client()
    await alice.register("alice")
    resp = await alice.post(PING, {})
    assert_error(resp, 403, "M_FORBIDDEN")
    resp = await server.client().post(PING, {}, token=False)
    assert_error(resp, 401, "M_MISSING_TOKEN")


@pytest_twisted.ensureDeferred
async def test_a_bad_status_is_reported_with_status_and_body(
    server: RunningServer, fake_as: FakeAppService
) -> None:
    fake_as.state.hs_token = "something else"  # the service refuses our hs_token
    resp = await as_client(server).post(PING, {"transaction_id": "x"})
    assert_error(resp, 502, "M_BAD_STATUS")
    assert resp.json["status"] == 403
    assert "M_FORBIDDEN" in resp.json["body"]


@pytest_twisted.ensureDeferred
async def test_an_unreachable_service_is_connection_failed(
    server: RunningServer, fake_as: FakeAppService
) -> None:
    await fake_as.stop()
    resp = await as_client(server).post(PING, {})
    assert_error(resp, 502, "M_CONNECTION_FAILED")


@pytest_twisted.ensureDeferred
async def test_a_silent_service_is_connection_timeout(
    server: RunningServer, fake_as: FakeAppService, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(api, "REQUEST_TIMEOUT_S", 0.3)
    fake_as.state.hang = True
    resp = await as_client(server).post(PING, {})
    assert_error(resp, 504, "M_CONNECTION_TIMEOUT")


class TestNoUrl:
    @pytest.fixture
    def extra_services(self) -> list[dict[str, Any]]:
        return [registration(None, id="silent", as_token="silent_token", sender_localpart="silent")]

    @pytest_twisted.ensureDeferred
    async def test_a_service_without_url_gets_url_not_set(self, server: RunningServer) -> None:
        resp = await as_client(server, token="silent_token").post(
            f"{V1}/appservice/silent/ping", {}
        )
        assert_error(resp, 400, "M_URL_NOT_SET")
