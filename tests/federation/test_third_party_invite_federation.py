"""Third-party invites across two servers: the invitee's server forwards the signed
invite (``exchange_third_party_invite``) to the server of the room and the inviter."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor, task

from crypto.signing_key import load_or_generate_signing_key
from federation.x_matrix import sign_request
from tests.support.client import Client, q
from tests.support.federation import federation_request
from tests.support.identity_server import ACCESS_TOKEN, FakeIdentityServer, start_identity_server
from tests.support.server import RunningServer

EMAIL = "carol@example.com"
ONBIND = "/_matrix/federation/v1/3pid/onbind"


@pytest.fixture
def id_server(tmp_path: Any) -> Iterator[FakeIdentityServer]:
    fake = start_identity_server(str(tmp_path / "is"))
    yield fake
    fake.listener.stopListening()


async def _membership(client: Client, room_id: str, user_id: str) -> str | None:
    resp = await client.get(
        f"/_matrix/client/v3/rooms/{q(room_id)}/state/m.room.member/{q(user_id)}"
    )
    return resp.json.get("membership") if resp.code == 200 else None


async def _eventually(client: Client, room_id: str, user_id: str, membership: str) -> None:
    for _ in range(100):
        if await _membership(client, room_id, user_id) == membership:
            return
        await task.deferLater(reactor, 0.1, lambda: None)
    raise AssertionError(f"{user_id} never became {membership} in {room_id}")


async def _setup(
    a: RunningServer, b: RunningServer, id_server: FakeIdentityServer, with_bob: bool
) -> tuple[Client, Client, str]:
    alice, carol = a.client(), b.client()
    await alice.register("alice")
    await carol.register("carol")
    resp = await alice.post("/_matrix/client/v3/createRoom", {"preset": "private_chat"})
    room_id = str(resp.json["room_id"])
    if with_bob:
        bob = b.client()
        await bob.register("bob")
        resp = await alice.post(
            f"/_matrix/client/v3/rooms/{q(room_id)}/invite", {"user_id": bob.user_id}
        )
        assert resp.code == 200, resp
        resp = await bob.post(f"/_matrix/client/v3/join/{q(room_id)}", {})
        assert resp.code == 200, resp
    resp = await alice.post(
        f"/_matrix/client/v3/rooms/{q(room_id)}/invite",
        {
            "id_server": id_server.name,
            "id_access_token": ACCESS_TOKEN,
            "medium": "email",
            "address": EMAIL,
        },
    )
    assert resp.code == 200, resp
    return alice, carol, room_id


@pytest.mark.parametrize("with_bob", [False, True], ids=["b-not-in-room", "b-in-room"])
@pytest_twisted.ensureDeferred
async def test_onbind_at_the_invitees_server_invites_through_the_rooms_server(
    two_servers: tuple[RunningServer, RunningServer],
    id_server: FakeIdentityServer,
    with_bob: bool,
) -> None:
    a, b = two_servers
    alice, carol, room_id = await _setup(a, b, id_server, with_bob)
    assert carol.user_id is not None
    code, body = await federation_request(
        b, "POST", ONBIND, body=id_server.onbind_body("email", EMAIL, carol.user_id)
    )
    assert code == 200, body
    await _eventually(alice, room_id, carol.user_id, "invite")
    resp = await carol.post(f"/_matrix/client/v3/join/{q(room_id)}", {})
    assert resp.code == 200, resp
    await _eventually(alice, room_id, carol.user_id, "join")


@pytest_twisted.ensureDeferred
async def test_exchange_for_someone_elses_inviter_is_refused(
    two_servers: tuple[RunningServer, RunningServer], id_server: FakeIdentityServer
) -> None:
    """A server may only have us send invites from our own users."""
    a, b = two_servers
    alice, carol, room_id = await _setup(a, b, id_server, False)
    token = id_server.invites[0]["token"]
    signed = id_server.sign({"mxid": carol.user_id, "token": token})
    event = {
        "type": "m.room.member",
        "room_id": room_id,
        "sender": carol.user_id,  # not one of A's users
        "state_key": carol.user_id,
        "content": {"membership": "invite", "third_party_invite": {"signed": signed}},
    }
    path = f"/_matrix/federation/v1/exchange_third_party_invite/{q(room_id)}"
    code, _ = await federation_request(a, "PUT", path, body=event)
    assert code == 401  # unsigned
    b_key = load_or_generate_signing_key(b.hs.config.signing_key_path)
    auth = sign_request(b_key, "PUT", path, b.hs.server_name, a.hs.server_name, event)
    code, body = await federation_request(a, "PUT", path, body=event, auth=auth)
    assert (code, body["errcode"]) == (403, "M_FORBIDDEN"), body
    assert await _membership(alice, room_id, str(carol.user_id)) is None
    # With A's user as the inviter, B's request is honoured.
    event["sender"] = alice.user_id
    auth = sign_request(b_key, "PUT", path, b.hs.server_name, a.hs.server_name, event)
    code, body = await federation_request(a, "PUT", path, body=event, auth=auth)
    assert code == 200, body
    assert await _membership(alice, room_id, str(carol.user_id)) == "invite"
