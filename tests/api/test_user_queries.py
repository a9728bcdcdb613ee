"""Queries about users: MSC2666 mutual rooms, /admin/whois, and the OIDC-only
endpoints a server without OIDC delegation does not serve."""

from __future__ import annotations

import pytest_twisted

from homeserver.rooms.mutual import mutual_rooms_page
from tests.api.helpers import register_admin
from tests.rooms.helpers import V3, assert_error, create_room, join, user
from tests.support.server import RunningServer

MUTUAL = "/_matrix/client/v1/mutual_rooms"


def test_mutual_rooms_page_sorts_and_pages_by_room_id() -> None:
    mine = ["!c:x", "!a:x", "!b:x", "!only-mine:x"]
    theirs = ["!b:x", "!a:x", "!c:x", "!only-theirs:x"]
    assert mutual_rooms_page(mine, theirs, None, 2) == (["!a:x", "!b:x"], "!c:x")
    assert mutual_rooms_page(mine, theirs, "!c:x", 2) == (["!c:x"], None)
    assert mutual_rooms_page(mine, [], None) == ([], None)


@pytest_twisted.ensureDeferred
async def test_mutual_rooms_lists_rooms_both_joined(server: RunningServer) -> None:
    alice = await user(server, "alice")
    bob = await user(server, "bob")
    shared = await create_room(alice, preset="public_chat")
    await create_room(alice)  # alice only
    assert (await join(bob, shared)).code == 200
    resp = await alice.get(MUTUAL, params={"user_id": bob.user_id})
    assert resp.code == 200, resp
    assert resp.json == {"joined": [shared]}
    unstable = "/_matrix/client/unstable/uk.half-shot.msc2666/user/mutual_rooms"
    resp = await bob.get(unstable, params={"user_id": alice.user_id})
    assert resp.json == {"joined": [shared]}


@pytest_twisted.ensureDeferred
async def test_mutual_rooms_errors(server: RunningServer) -> None:
    alice = await user(server, "alice")
    assert_error(await alice.get(MUTUAL), 400, "M_MISSING_PARAM")
    resp = await alice.get(MUTUAL, params={"user_id": "not-a-user"})
    assert_error(resp, 400, "M_INVALID_PARAM")
    assert_error(await alice.get(MUTUAL, params={"user_id": alice.user_id}), 422, "M_UNKNOWN")
    resp = await alice.get(MUTUAL, params={"user_id": "@bob:test", "from": "garbage"})
    assert_error(resp, 400, "M_INVALID_PARAM")


@pytest_twisted.ensureDeferred
async def test_whois_for_oneself_and_for_admins(server: RunningServer) -> None:
    admin = await register_admin(server)
    alice = await user(server, "alice")
    resp = await alice.get(f"{V3}/admin/whois/{alice.user_id}")
    assert resp.code == 200, resp
    assert resp.json["user_id"] == alice.user_id
    assert list(resp.json["devices"]) == [alice.device_id]
    assert isinstance(resp.json["devices"][alice.device_id]["sessions"][0]["connections"], list)
    resp = await admin.get(f"{V3}/admin/whois/{alice.user_id}")
    assert resp.code == 200, resp
    assert resp.json["user_id"] == alice.user_id


@pytest_twisted.ensureDeferred
async def test_whois_errors(server: RunningServer) -> None:
    admin = await register_admin(server)
    alice = await user(server, "alice")
    assert_error(await alice.get(f"{V3}/admin/whois/{admin.user_id}"), 403, "M_FORBIDDEN")
    resp = await admin.get(f"{V3}/admin/whois/@x:elsewhere.example")
    assert_error(resp, 400, "M_INVALID_PARAM")
    server_name = alice.user_id.split(":", 1)[1]
    resp = await admin.get(f"{V3}/admin/whois/@nobody:{server_name}")
    assert_error(resp, 404, "M_NOT_FOUND")


@pytest_twisted.ensureDeferred
async def test_auth_metadata_and_login_get_token_are_unrecognized(server: RunningServer) -> None:
    # Synapse without OIDC delegation, and with login_via_existing_session off (its
    # default): neither endpoint is served.
    alice = await user(server, "alice")
    resp = await alice.get("/_matrix/client/v1/auth_metadata")
    assert_error(resp, 404, "M_UNRECOGNIZED")
    resp = await alice.post("/_matrix/client/v1/login/get_token", {})
    assert_error(resp, 404, "M_UNRECOGNIZED")
