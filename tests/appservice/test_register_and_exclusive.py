"""m.login.application_service registration and M_EXCLUSIVE for everyone else."""

from __future__ import annotations

from typing import Any

import pytest
import pytest_twisted

from tests.appservice.helpers import (
    V3,
    as_client,
    as_request,
    assert_error,
    puppet,
    register_puppet,
)
from tests.support.client import Client, q
from tests.support.server import RunningServer


async def normal_user(server: RunningServer, name: str = "alice") -> Client:
    client = server.client()
    await client.register(name)
    return client


@pytest_twisted.ensureDeferred
async def test_a_service_registers_a_user_of_its_namespace(server: RunningServer) -> None:
    resp = await register_puppet(server, "_bridge_alice")
    assert resp.code == 200, resp
    assert resp.json["user_id"] == "@_bridge_alice:test.local"
    token = resp.json["access_token"]
    assert resp.json["device_id"]
    # The session it got is a normal one.
    whoami = await server.client().get(f"{V3}/account/whoami", token=token)
    assert whoami.json["user_id"] == "@_bridge_alice:test.local"
    profile = await server.client().get(f"{V3}/profile/{q('@_bridge_alice:test.local')}")
    assert profile.json["displayname"] == "_bridge_alice"


@pytest_twisted.ensureDeferred
async def test_inhibit_login_gives_no_session(server: RunningServer) -> None:
    resp = await register_puppet(server, "_bridge_bob", inhibit_login=True)
    assert resp.code == 200, resp
    assert resp.json["user_id"] == "@_bridge_bob:test.local"
    assert "access_token" not in resp.json


@pytest_twisted.ensureDeferred
async def test_registering_twice_is_user_in_use(server: RunningServer) -> None:
    await puppet(server, "_bridge_bob")
    resp = await register_puppet(server, "_bridge_bob", inhibit_login=True)
    assert_error(resp, 400, "M_USER_IN_USE")


@pytest_twisted.ensureDeferred
async def test_a_service_cannot_register_outside_its_namespace(server: RunningServer) -> None:
    resp = await register_puppet(server, "somebody")
    assert_error(resp, 400, "M_EXCLUSIVE")
    resp = await register_puppet(server, "Bad Name")
    assert_error(resp, 400, "M_INVALID_USERNAME")


@pytest_twisted.ensureDeferred
async def test_application_service_registration_needs_the_as_token(
    server: RunningServer,
) -> None:
    body = {"type": "m.login.application_service", "username": "_bridge_x"}
    resp = await server.client().post(f"{V3}/register", body, token=False)
    assert_error(resp, 401, "M_MISSING_TOKEN")
    alice = await normal_user(server)
    resp = await alice.post(f"{V3}/register", body)
    assert_error(resp, 401, "M_UNKNOWN_TOKEN")
    resp = await as_client(server).post(f"{V3}/register", {"type": "m.login.application_service"})
    assert_error(resp, 400, "M_MISSING_PARAM")


class TestRegistrationDisabled:
    @pytest.fixture
    def hs_overrides(self) -> dict[str, Any]:
        return {"enable_registration": False}

    @pytest_twisted.ensureDeferred
    async def test_services_register_users_when_registration_is_off(
        self, server: RunningServer
    ) -> None:
        resp = await register_puppet(server, "_bridge_alice", inhibit_login=True)
        assert resp.code == 200, resp


@pytest_twisted.ensureDeferred
async def test_normal_users_cannot_register_in_an_exclusive_namespace(
    server: RunningServer,
) -> None:
    client = server.client()
    body = {"username": "irc-bob", "password": "pw-pw-pw", "auth": {"type": "m.login.dummy"}}
    resp = await client.post(f"{V3}/register", body, token=False)
    assert_error(resp, 400, "M_EXCLUSIVE")
    resp = await client.get(f"{V3}/register/available?username=irc-bob", token=False)
    assert_error(resp, 400, "M_EXCLUSIVE")
    # Non-exclusive namespaces stay open to everyone.
    resp = await client.get(f"{V3}/register/available?username=shared-bob", token=False)
    assert resp.code == 200, resp
    await client.register("shared-bob")


@pytest_twisted.ensureDeferred
async def test_normal_users_cannot_create_aliases_in_an_exclusive_namespace(
    server: RunningServer,
) -> None:
    alice = await normal_user(server)
    resp = await alice.post(f"{V3}/createRoom", {"room_alias_name": "_bridge_room"})
    assert_error(resp, 400, "M_EXCLUSIVE")
    resp = await alice.post(f"{V3}/createRoom", {})
    room_id = resp.json["room_id"]
    resp = await alice.put(
        f"{V3}/directory/room/{q('#_bridge_room:test.local')}", {"room_id": room_id}
    )
    assert_error(resp, 400, "M_EXCLUSIVE")
    resp = await alice.put(f"{V3}/directory/room/{q('#free:test.local')}", {"room_id": room_id})
    assert resp.code == 200, resp


@pytest_twisted.ensureDeferred
async def test_a_service_manages_aliases_of_its_namespace_only(server: RunningServer) -> None:
    resp = await as_request(server, "POST", f"{V3}/createRoom", {"room_alias_name": "_bridge_a"})
    assert resp.code == 200, resp
    room_id = resp.json["room_id"]
    resp = await as_request(
        server, "PUT", f"{V3}/directory/room/{q('#elsewhere:test.local')}", {"room_id": room_id}
    )
    assert_error(resp, 400, "M_EXCLUSIVE")
    # A puppet of the service may delete an alias of the namespace it did not create.
    puppet_id = await puppet(server, "_bridge_p")
    resp = await as_request(
        server, "DELETE", f"{V3}/directory/room/{q('#_bridge_a:test.local')}", user_id=puppet_id
    )
    assert resp.code == 200, resp
    resp = await server.client().get(f"{V3}/directory/room/{q('#_bridge_a:test.local')}")
    assert resp.code == 404


@pytest_twisted.ensureDeferred
async def test_normal_users_cannot_delete_an_exclusive_alias(server: RunningServer) -> None:
    resp = await as_request(server, "POST", f"{V3}/createRoom", {"room_alias_name": "_bridge_b"})
    assert resp.code == 200, resp
    alice = await normal_user(server)
    resp = await alice.delete(f"{V3}/directory/room/{q('#_bridge_b:test.local')}")
    assert_error(resp, 400, "M_EXCLUSIVE")
