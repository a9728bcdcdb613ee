"""Third-party invites and 3PID bindings through a (fake) identity server over HTTPS."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import pytest_twisted

from tests.support.client import Client, q
from tests.support.identity_server import ACCESS_TOKEN, FakeIdentityServer, start_identity_server
from tests.support.server import RunningServer

EMAIL = "lemurs@monkeyworld.org"
ONBIND = "/_matrix/federation/v1/3pid/onbind"


@pytest.fixture
def config_overrides() -> dict[str, Any]:
    # The fake identity server is on loopback with a self-signed certificate.
    return {"federation_verify_certificates": False, "ip_range_whitelist": ["127.0.0.0/8"]}


@pytest.fixture
def id_server(tmp_path: Any) -> Iterator[FakeIdentityServer]:
    fake = start_identity_server(str(tmp_path / "is"))
    yield fake
    fake.listener.stopListening()


async def _users(server: RunningServer) -> tuple[Client, Client]:
    alice, bob = server.client(), server.client()
    await alice.register("alice")
    await bob.register("bob")
    return alice, bob


async def _room(alice: Client, preset: str = "private_chat") -> str:
    resp = await alice.post("/_matrix/client/v3/createRoom", {"preset": preset})
    assert resp.code == 200, resp
    return str(resp.json["room_id"])


def _invite_body(id_server: FakeIdentityServer) -> dict[str, Any]:
    return {
        "id_server": id_server.name,
        "id_access_token": ACCESS_TOKEN,
        "medium": "email",
        "address": EMAIL,
    }


async def _member(client: Client, room_id: str, user_id: str) -> Any:
    return await client.get(
        f"/_matrix/client/v3/rooms/{q(room_id)}/state/m.room.member/{q(user_id)}"
    )


@pytest_twisted.ensureDeferred
async def test_invite_of_a_bound_address_invites_its_user(
    server: RunningServer, id_server: FakeIdentityServer
) -> None:
    alice, bob = await _users(server)
    assert bob.user_id is not None
    id_server.bindings[("email", EMAIL)] = bob.user_id
    room_id = await _room(alice)
    resp = await alice.post(
        f"/_matrix/client/v3/rooms/{q(room_id)}/invite", _invite_body(id_server)
    )
    assert resp.code == 200, resp
    member = await _member(alice, room_id, bob.user_id)
    assert member.json["membership"] == "invite"


@pytest_twisted.ensureDeferred
async def test_unbound_address_invite_then_onbind_then_join(
    server: RunningServer, id_server: FakeIdentityServer
) -> None:
    alice, bob = await _users(server)
    assert bob.user_id is not None
    room_id = await _room(alice)
    resp = await alice.post(
        f"/_matrix/client/v3/rooms/{q(room_id)}/invite", _invite_body(id_server)
    )
    assert resp.code == 200, resp
    state = await alice.get(f"/_matrix/client/v3/rooms/{q(room_id)}/state")
    tpi = [e for e in state.json if e["type"] == "m.room.third_party_invite"]
    assert len(tpi) == 1
    assert tpi[0]["content"]["display_name"] == "B***"
    assert tpi[0]["content"]["public_keys"][0]["public_key"] == id_server.public_key
    # Not bound yet: bob cannot join the invite-only room.
    assert (await bob.post(f"/_matrix/client/v3/rooms/{q(room_id)}/join")).code == 403

    resp = await bob.post(ONBIND, id_server.onbind_body("email", EMAIL, bob.user_id), token=False)
    assert resp.code == 200, resp
    member = await _member(alice, room_id, bob.user_id)
    assert member.json["membership"] == "invite"
    assert member.json["third_party_invite"]["display_name"] == "B***"
    resp = await bob.post(f"/_matrix/client/v3/rooms/{q(room_id)}/join")
    assert resp.code == 200, resp
    assert (await _member(alice, room_id, bob.user_id)).json["membership"] == "join"


@pytest_twisted.ensureDeferred
async def test_onbind_with_another_key_or_a_revoked_key_is_refused(
    server: RunningServer, id_server: FakeIdentityServer
) -> None:
    alice, bob = await _users(server)
    assert bob.user_id is not None
    room_id = await _room(alice)
    resp = await alice.post(
        f"/_matrix/client/v3/rooms/{q(room_id)}/invite", _invite_body(id_server)
    )
    assert resp.code == 200, resp
    old_key = id_server.key
    # Signed by a key the invite does not name.
    id_server.rotate_keys()
    resp = await bob.post(ONBIND, id_server.onbind_body("email", EMAIL, bob.user_id), token=False)
    assert resp.code == 403, resp
    assert (await _member(alice, room_id, bob.user_id)).code == 404
    # Signed by the invite's key, which the identity server no longer vouches for.
    id_server.key = old_key
    resp = await bob.post(ONBIND, id_server.onbind_body("email", EMAIL, bob.user_id), token=False)
    assert resp.code == 403, resp
    assert (await _member(alice, room_id, bob.user_id)).code == 404


@pytest_twisted.ensureDeferred
async def test_join_with_third_party_signed(
    server: RunningServer, id_server: FakeIdentityServer
) -> None:
    alice, bob = await _users(server)
    assert alice.user_id is not None and bob.user_id is not None
    room_id = await _room(alice)
    resp = await alice.post(
        f"/_matrix/client/v3/rooms/{q(room_id)}/invite", _invite_body(id_server)
    )
    assert resp.code == 200, resp
    token = id_server.invites[0]["token"]
    signed = id_server.sign({"mxid": bob.user_id, "sender": alice.user_id, "token": token})
    # Someone else's signed block does not let carol in.
    carol = server.client()
    await carol.register("carol")
    resp = await carol.post(f"/_matrix/client/v3/join/{q(room_id)}", {"third_party_signed": signed})
    assert resp.code == 403, resp
    resp = await bob.post(f"/_matrix/client/v3/join/{q(room_id)}", {"third_party_signed": signed})
    assert resp.code == 200, resp
    assert (await _member(alice, room_id, bob.user_id)).json["membership"] == "join"


@pytest_twisted.ensureDeferred
async def test_3pid_invite_validation(server: RunningServer, id_server: FakeIdentityServer) -> None:
    alice, bob = await _users(server)
    room_id = await _room(alice)
    body = _invite_body(id_server)
    del body["id_access_token"]
    resp = await alice.post(f"/_matrix/client/v3/rooms/{q(room_id)}/invite", body)
    assert (resp.code, resp.json["errcode"]) == (400, "M_MISSING_PARAM")
    # The identity server refusing the id_access_token is not our 401 (no sign-out).
    body = {**_invite_body(id_server), "id_access_token": "wrong"}
    resp = await alice.post(f"/_matrix/client/v3/rooms/{q(room_id)}/invite", body)
    assert (resp.code, resp.json["errcode"]) == (403, "M_FORBIDDEN")
    id_server.requests.clear()
    body = {**_invite_body(id_server), "id_server": "https://evil/path"}
    resp = await alice.post(f"/_matrix/client/v3/rooms/{q(room_id)}/invite", body)
    assert (resp.code, resp.json["errcode"]) == (400, "M_INVALID_PARAM")
    # Only members may invite; the identity server never hears of the room.
    resp = await bob.post(f"/_matrix/client/v3/rooms/{q(room_id)}/invite", _invite_body(id_server))
    assert resp.code == 403, resp
    assert not id_server.requests


@pytest_twisted.ensureDeferred
async def test_bind_unbind_delete_and_deactivate(
    server: RunningServer, id_server: FakeIdentityServer
) -> None:
    alice, _ = await _users(server)
    assert alice.user_id is not None

    async def bind(address: str) -> None:
        sid = id_server.validated_session("email", address)
        resp = await alice.post(
            "/_matrix/client/v3/account/3pid/bind",
            {
                "id_server": id_server.name,
                "id_access_token": ACCESS_TOKEN,
                "sid": sid,
                "client_secret": "secret",
            },
        )
        assert resp.code == 200, resp
        assert id_server.bindings[("email", address)] == alice.user_id

    await bind("a@example.com")
    # Unbind without naming the identity server: the one we bound through.
    resp = await alice.post(
        "/_matrix/client/v3/account/3pid/unbind", {"medium": "email", "address": "a@example.com"}
    )
    assert resp.json == {"id_server_unbind_result": "success"}
    assert ("email", "a@example.com") not in id_server.bindings
    # Nothing left to unbind.
    resp = await alice.post(
        "/_matrix/client/v3/account/3pid/unbind", {"medium": "email", "address": "a@example.com"}
    )
    assert resp.json == {"id_server_unbind_result": "no-support"}

    # Bound out of band: delete names the identity server.
    id_server.bindings[("email", "b@example.com")] = alice.user_id
    resp = await alice.post(
        "/_matrix/client/v3/account/3pid/delete",
        {"medium": "email", "address": "b@example.com", "id_server": id_server.name},
    )
    assert resp.json == {"id_server_unbind_result": "success"}
    assert ("email", "b@example.com") not in id_server.bindings

    await bind("c@example.com")
    resp = await alice.post(
        "/_matrix/client/v3/account/deactivate",
        {"auth": {"type": "m.login.password", "user": alice.user_id, "password": "correct horse"}},
    )
    assert resp.code == 200, resp
    assert resp.json == {"id_server_unbind_result": "success"}
    assert ("email", "c@example.com") not in id_server.bindings


class TestLoopbackIdentityServerRefused:
    """Without a whitelist, an identity server on a private address is not contacted
    (the outbound IP policy, as for push gateways and URL previews)."""

    @pytest.fixture
    def config_overrides(self) -> dict[str, Any]:
        return {"federation_verify_certificates": False}

    @pytest_twisted.ensureDeferred
    async def test_invite_through_a_loopback_identity_server_is_refused(
        self, server: RunningServer, id_server: FakeIdentityServer
    ) -> None:
        alice, _ = await _users(server)
        room_id = await _room(alice)
        resp = await alice.post(
            f"/_matrix/client/v3/rooms/{q(room_id)}/invite", _invite_body(id_server)
        )
        assert resp.code == 403, resp
        assert not id_server.requests
