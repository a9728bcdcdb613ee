"""Application service -> homeserver: as_token authentication and identity assertion."""

from __future__ import annotations

from typing import Any

import pytest
import pytest_twisted

from tests.appservice.helpers import (
    AS_TOKEN,
    SENDER,
    V3,
    as_client,
    as_request,
    assert_error,
    puppet,
    register_puppet,
)
from tests.rooms.helpers import user
from tests.support.client import q
from tests.support.server import RunningServer

WHOAMI = f"{V3}/account/whoami"


@pytest_twisted.ensureDeferred
async def test_the_sender_user_exists_at_start_up(server: RunningServer) -> None:
    resp = await server.client().get(f"{V3}/profile/{q(SENDER)}")
    assert resp.code == 200, resp
    assert resp.json["displayname"] == "_bridge_bot"


@pytest_twisted.ensureDeferred
async def test_the_as_token_acts_as_the_sender(server: RunningServer) -> None:
    resp = await as_client(server).get(WHOAMI)
    assert resp.code == 200, resp
    assert resp.json["user_id"] == SENDER
    # The deprecated query parameter works too.
    resp = await server.client().get(WHOAMI, token=False, params={"access_token": AS_TOKEN})
    assert resp.code == 200, resp
    assert resp.json["user_id"] == SENDER
    # The sender named explicitly (mautrix always sends user_id).
    resp = await as_request(server, "GET", WHOAMI, user_id=SENDER)
    assert resp.json["user_id"] == SENDER


@pytest_twisted.ensureDeferred
async def test_identity_assertion_inside_the_namespace(server: RunningServer) -> None:
    user_id = await puppet(server, "_bridge_alice")
    resp = await as_request(server, "GET", WHOAMI, user_id=user_id)
    assert resp.code == 200, resp
    assert resp.json["user_id"] == user_id
    # A non-exclusive namespace counts too.
    shared = await puppet(server, "shared-carol")
    resp = await as_request(server, "GET", WHOAMI, user_id=shared)
    assert resp.json["user_id"] == shared


@pytest_twisted.ensureDeferred
async def test_identity_assertion_outside_the_namespace_is_forbidden(
    server: RunningServer,
) -> None:
    normal = server.client()
    await normal.register("alice")
    resp = await as_request(server, "GET", WHOAMI, user_id="@alice:test.local")
    assert_error(resp, 403, "M_FORBIDDEN")
    resp = await as_request(server, "GET", WHOAMI, user_id="@_bridge_x:elsewhere.org")
    assert_error(resp, 403, "M_FORBIDDEN")


@pytest_twisted.ensureDeferred
async def test_identity_assertion_of_an_unregistered_user_is_forbidden(
    server: RunningServer,
) -> None:
    resp = await as_request(server, "GET", WHOAMI, user_id="@_bridge_nobody:test.local")
    assert_error(resp, 403, "M_FORBIDDEN")
    assert "not registered" in resp.json["error"]


@pytest_twisted.ensureDeferred
async def test_device_id_assertion(server: RunningServer) -> None:
    resp = await register_puppet(server, "_bridge_dev", device_id="PUPPETDEV")
    assert resp.code == 200, resp
    user_id = resp.json["user_id"]
    client = as_client(server)
    resp = await client.get(WHOAMI, params={"user_id": user_id, "device_id": "PUPPETDEV"})
    assert resp.code == 200, resp
    assert resp.json["device_id"] == "PUPPETDEV"
    resp = await client.get(WHOAMI, params={"user_id": user_id, "device_id": "NOPE"})
    assert_error(resp, 400, "M_UNKNOWN_DEVICE")
    # Without user_id the device must be the sender's.
    resp = await client.get(WHOAMI, params={"device_id": "PUPPETDEV"})
    assert_error(resp, 400, "M_UNKNOWN_DEVICE")


@pytest_twisted.ensureDeferred
async def test_a_wrong_token_is_still_unknown(server: RunningServer) -> None:
    resp = await as_client(server, token="not-the-as-token").get(WHOAMI)
    assert_error(resp, 401, "M_UNKNOWN_TOKEN")


@pytest_twisted.ensureDeferred
async def test_a_puppet_sends_into_a_room_as_itself(server: RunningServer) -> None:
    user_id = await puppet(server, "_bridge_alice")
    resp = await as_request(server, "POST", f"{V3}/createRoom", {}, user_id=user_id)
    assert resp.code == 200, resp
    room_id = resp.json["room_id"]
    resp = await as_request(
        server,
        "PUT",
        f"{V3}/rooms/{q(room_id)}/send/m.room.message/t1",
        {"msgtype": "m.text", "body": "hi"},
        user_id=user_id,
    )
    assert resp.code == 200, resp
    resp = await as_request(
        server, "GET", f"{V3}/rooms/{q(room_id)}/messages?dir=b", user_id=user_id
    )
    assert resp.code == 200, resp
    senders = {e["sender"] for e in resp.json["chunk"]}
    assert senders == {user_id}


class TestIpRangeWhitelist:
    @pytest.fixture
    def registration_overrides(self) -> dict[str, Any]:
        return {"ip_range_whitelist": ["10.0.0.0/8"]}

    @pytest_twisted.ensureDeferred
    async def test_a_request_from_outside_the_whitelist_is_refused(
        self, server: RunningServer
    ) -> None:
        resp = await as_client(server).get(WHOAMI)
        assert_error(resp, 401, "M_UNKNOWN_TOKEN")


@pytest_twisted.ensureDeferred
async def test_the_as_deactivates_its_user_without_uia(server: RunningServer) -> None:
    user_id = await puppet(server, "_bridge_gone")
    deactivate = f"{V3}/account/deactivate"
    resp = await as_request(server, "POST", deactivate, {}, user_id=user_id)
    assert resp.code == 200, resp
    assert resp.json == {"id_server_unbind_result": "success"}
    row = await server.hs.storage.users.get_user(user_id)
    assert row is not None and row.deactivated
    # A user's own token still needs UIA.
    mortal = await user(server, "mortal")
    resp = await mortal.post(deactivate, {})
    assert resp.code == 401 and "flows" in resp.json, resp
