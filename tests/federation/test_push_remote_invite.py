"""Push for an invite received over federation to a room this server does not hold."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_twisted

from crypto.event_hashing import compute_event_id, hash_and_sign_event
from crypto.signing_key import load_or_generate_signing_key
from federation.x_matrix import sign_request
from homeserver.events.room_versions import get_room_version
from tests.push.gateway import GatewayStub, sleep, start_gateway
from tests.push.test_durability import crash_before_evaluation
from tests.push.test_pushers import pusher_body, set_pusher
from tests.support.client import q
from tests.support.federation import federation_request
from tests.support.server import RunningServer


@pytest.fixture
def server_b_overrides() -> dict[str, Any]:
    # B's pushers reach the gateway stub on loopback.
    return {"ip_range_whitelist": ["127.0.0.0/8"]}


@pytest_twisted.async_yield_fixture
async def gateway() -> AsyncIterator[GatewayStub]:
    stub = await start_gateway()
    try:
        yield stub
    finally:
        await stub.stop()


async def invite_over_federation(
    a: RunningServer, b: RunningServer, room_id: str, sender: str, invitee: str, stripped: list[Any]
) -> None:
    """A (a room server B does not know) invites ``invitee`` of B with ``stripped``."""
    version = get_room_version("10")
    assert version is not None
    key = load_or_generate_signing_key(a.hs.config.signing_key_path)
    pdu = hash_and_sign_event(
        {
            "type": "m.room.member",
            "room_id": room_id,
            "sender": sender,
            "state_key": invitee,
            "content": {"membership": "invite"},
            "auth_events": [],
            "prev_events": [],
            "depth": 3,
            "origin_server_ts": 1,
        },
        a.hs.server_name,
        key,
        version,
    )
    path = f"/_matrix/federation/v2/invite/{q(room_id)}/{q(compute_event_id(pdu, version))}"
    body = {"event": pdu, "room_version": "10", "invite_room_state": stripped}
    auth = sign_request(key, "PUT", path, a.hs.server_name, b.hs.server_name, body)
    code, answer = await federation_request(b, "PUT", path, body=body, auth=auth)
    assert code == 200, answer


def invites(stub: GatewayStub) -> list[dict[str, Any]]:
    return [n for n in stub.event_notifications() if n.get("type") == "m.room.member"]


@pytest_twisted.ensureDeferred
async def test_remote_invite_is_pushed_with_the_stripped_room_name(
    two_servers: tuple[RunningServer, RunningServer], gateway: GatewayStub
) -> None:
    a, b = two_servers
    alice = a.client()
    await alice.register("alice")
    carol = b.client()
    await carol.register("carol")
    await set_pusher(carol, pusher_body(gateway.url))
    resp = await alice.post(
        "/_matrix/client/v3/createRoom", {"name": "Secret plans", "invite": [carol.user_id]}
    )
    assert resp.code == 200, resp
    room_id = resp.json["room_id"]

    await gateway.wait_until(lambda: bool(invites(gateway)), timeout=20.0)
    (note,) = invites(gateway)
    assert note["room_id"] == room_id
    assert note["sender"] == alice.user_id
    assert note["membership"] == "invite"
    assert note["user_is_target"] is True
    assert note["room_name"] == "Secret plans"
    assert note["content"]["membership"] == "invite"
    assert note["devices"][0]["pushkey"] == "key-1"
    # .m.rule.invite_for_me: notify with the default sound.
    assert note["devices"][0]["tweaks"] == {"sound": "default"}
    assert note["prio"] == "high"


@pytest_twisted.ensureDeferred
async def test_stripped_state_makes_no_one_else_a_target(
    two_servers: tuple[RunningServer, RunningServer], gateway: GatewayStub
) -> None:
    """The stripped state is the inviting server's word: members it lists are no push
    targets; only the invitee is, and the sender's stripped display name is used."""
    a, b = two_servers
    carol = b.client()
    await carol.register("carol")
    dave = b.client()
    await dave.register("dave")
    await set_pusher(carol, pusher_body(gateway.url, pushkey="carol"))
    await set_pusher(dave, pusher_body(gateway.url, pushkey="dave"))
    origin = a.hs.server_name
    room_id, sender = f"!room:{origin}", f"@mallory:{origin}"
    stripped = [
        {"type": "m.room.name", "state_key": "", "sender": sender, "content": {"name": "Lure"}},
        {
            "type": "m.room.member",
            "state_key": sender,
            "sender": sender,
            "content": {"membership": "join", "displayname": "Mallory"},
        },
        {
            "type": "m.room.member",
            "state_key": dave.user_id,
            "sender": dave.user_id,
            "content": {"membership": "join"},
        },
        {"type": "m.room.topic", "state_key": 5, "sender": sender, "content": {}},
        "not an event",
    ]
    await invite_over_federation(a, b, room_id, sender, carol.user_id, stripped)

    await gateway.wait_until(lambda: bool(invites(gateway)), timeout=20.0)
    # A push to dave would go out with carol's: give it a moment to show up anyway.
    await sleep(0.5)
    (note,) = invites(gateway)
    assert note["devices"][0]["pushkey"] == "carol"
    assert (note["room_id"], note["sender"]) == (room_id, sender)
    assert (note["room_name"], note["sender_display_name"]) == ("Lure", "Mallory")


@pytest_twisted.ensureDeferred
async def test_remote_invite_committed_before_a_crash_is_pushed_after_restart(
    two_servers: tuple[RunningServer, RunningServer], gateway: GatewayStub
) -> None:
    """The catch-up of push actions reads out-of-band invites back too."""
    a, b = two_servers
    carol = b.client()
    await carol.register("carol")
    await set_pusher(carol, pusher_body(gateway.url))
    missed = crash_before_evaluation(b)
    room_id, sender = f"!room:{a.hs.server_name}", f"@mallory:{a.hs.server_name}"
    name = {"type": "m.room.name", "state_key": "", "sender": sender, "content": {"name": "Later"}}
    await invite_over_federation(a, b, room_id, sender, carol.user_id, [name])
    assert [e.membership for e in missed] == ["invite"]
    await sleep(0.5)
    assert invites(gateway) == []

    await b.restart()
    await gateway.wait_until(lambda: bool(invites(gateway)), timeout=20.0)
    (note,) = invites(gateway)
    assert (note["room_id"], note["room_name"]) == (room_id, "Later")


@pytest_twisted.ensureDeferred
async def test_remote_invite_rejected_before_its_evaluation_is_not_pushed(
    two_servers: tuple[RunningServer, RunningServer], gateway: GatewayStub
) -> None:
    a, b = two_servers
    carol = b.client()
    await carol.register("carol")
    await set_pusher(carol, pusher_body(gateway.url))
    missed = crash_before_evaluation(b)
    room_id, sender = f"!room:{a.hs.server_name}", f"@mallory:{a.hs.server_name}"
    await invite_over_federation(a, b, room_id, sender, carol.user_id, [])
    # A never heard of the room: the rejection is recorded locally all the same.
    resp = await carol.post(f"/_matrix/client/v3/rooms/{q(room_id)}/leave", {})
    assert resp.code == 200, resp
    assert [e.membership for e in missed] == ["invite", "leave"]

    await b.restart()
    assert b.hs.push is not None
    await b.hs.push.actions.caught_up()
    await sleep(0.5)
    assert invites(gateway) == []
