"""Synapse's user admin API (``/_synapse/admin/v1|v2|v3/...``) over real HTTP: the
answers, and their effects on logins, sends and rate limits."""

from __future__ import annotations

from typing import Any

import pytest_twisted

from tests.api.helpers import PASSWORD, assert_error, register, register_admin, with_config
from tests.rooms.helpers import V3, create_room, invite, join, messages, send, send_raw
from tests.support.client import Client, q
from tests.support.server import RunningServer

V1 = "/_synapse/admin/v1"
V2 = "/_synapse/admin/v2"


def names(resp_json: dict[str, Any]) -> list[str]:
    return [u["name"] for u in resp_json["users"]]


async def login(server: RunningServer, username: str, password: str = PASSWORD) -> Any:
    return await server.client().login(username, password)


@pytest_twisted.ensureDeferred
async def test_every_endpoint_refuses_non_admins(server: RunningServer) -> None:
    alice = await register(server, "alice")
    target = q(alice.user_id or "")
    for method, path in [
        ("GET", f"{V2}/users"),
        ("GET", "/_synapse/admin/v3/users"),
        ("GET", f"{V2}/users/{target}"),
        ("PUT", f"{V2}/users/{target}"),
        ("POST", f"{V1}/deactivate/{target}"),
        ("POST", f"{V1}/reset_password/{target}"),
        ("GET", f"{V1}/users/{target}/admin"),
        ("PUT", f"{V1}/users/{target}/admin"),
        ("GET", f"{V1}/whois/{q('@bob:test.local')}"),
        ("GET", f"{V1}/users/{target}/joined_rooms"),
        ("GET", f"{V2}/users/{target}/devices"),
        ("GET", f"{V2}/users/{target}/devices/DEV"),
        ("PUT", f"{V2}/users/{target}/devices/DEV"),
        ("DELETE", f"{V2}/users/{target}/devices/DEV"),
        ("POST", f"{V2}/users/{target}/delete_devices"),
        ("GET", f"{V1}/username_available?username=x"),
        ("POST", f"{V1}/users/{target}/shadow_ban"),
        ("DELETE", f"{V1}/users/{target}/shadow_ban"),
        ("GET", f"{V1}/users/{target}/override_ratelimit"),
        ("POST", f"{V1}/users/{target}/override_ratelimit"),
        ("DELETE", f"{V1}/users/{target}/override_ratelimit"),
        ("POST", f"{V1}/users/{q('@bob:test.local')}/login"),
        ("GET", f"{V1}/users/{target}/pushers"),
        ("GET", f"{V1}/users/{target}/memberships"),
        ("GET", f"{V1}/users/{target}/accountdata"),
        ("GET", f"{V1}/threepid/email/users/a%40b.c"),
        ("PUT", f"{V1}/suspend/{target}"),
        ("POST", f"{V2}/users/{target}/devices"),
    ]:
        resp = await alice.request(method, path, body={} if method in ("PUT", "POST") else None)
        assert_error(resp, 403, "M_FORBIDDEN")
        assert resp.json["error"] == "You are not a server admin", (method, path)
    resp = await server.client().get(f"{V2}/users", token=False)
    assert_error(resp, 401, "M_MISSING_TOKEN")


@pytest_twisted.ensureDeferred
async def test_list_users_pages_filters_and_orders(server: RunningServer) -> None:
    admin = await register_admin(server)
    for name in ("carol", "bob", "dave", "erin"):
        await register(server, name)
    await server.hs.storage.users.set_admin("@erin:test.local", True)
    resp = await admin.put(f"{V2}/users/{q('@bob:test.local')}", {"displayname": "zzz bob"})
    assert resp.code == 200, resp

    resp = await admin.get(f"{V2}/users")
    assert resp.code == 200, resp
    assert resp.json["total"] == 5
    assert "next_token" not in resp.json
    assert names(resp.json) == [
        f"@{n}:test.local" for n in ("admin", "bob", "carol", "dave", "erin")
    ]
    first = resp.json["users"][0]
    assert set(first) >= {
        "name", "user_type", "is_guest", "admin", "deactivated", "shadow_banned",
        "displayname", "avatar_url", "creation_ts", "erased", "last_seen_ts", "locked",
    }  # fmt: skip
    assert first["admin"] is True and first["deactivated"] is False
    assert first["creation_ts"] > 10**12  # milliseconds in the list

    # Paging: `from`/`limit`, `next_token` while more remain.
    page1 = (await admin.get(f"{V2}/users?limit=2")).json
    assert names(page1) == ["@admin:test.local", "@bob:test.local"]
    assert page1["next_token"] == "2" and page1["total"] == 5
    page2 = (await admin.get(f"{V2}/users?limit=2&from={page1['next_token']}")).json
    assert names(page2) == ["@carol:test.local", "@dave:test.local"]
    page3 = (await admin.get(f"{V2}/users?limit=2&from=4")).json
    assert names(page3) == ["@erin:test.local"] and "next_token" not in page3

    # Ordering.
    back = (await admin.get(f"{V2}/users?dir=b")).json
    assert names(back)[0] == "@erin:test.local"
    by_admin = (await admin.get(f"{V2}/users?order_by=admin&dir=b")).json
    assert names(by_admin)[:2] == ["@admin:test.local", "@erin:test.local"]
    by_name = (await admin.get(f"{V2}/users?order_by=displayname&dir=b")).json
    assert names(by_name)[0] == "@bob:test.local"  # "zzz bob"

    # Filters: `name` matches the localpart or the display name, `user_id` the id.
    assert names((await admin.get(f"{V2}/users?name=zzz")).json) == ["@bob:test.local"]
    assert names((await admin.get(f"{V2}/users?name=car")).json) == ["@carol:test.local"]
    assert names((await admin.get(f"{V2}/users?user_id=dav")).json) == ["@dave:test.local"]
    assert names((await admin.get(f"{V2}/users?admins=true")).json) == [
        "@admin:test.local",
        "@erin:test.local",
    ]
    assert len((await admin.get(f"{V2}/users?admins=false")).json["users"]) == 3

    # Deactivated users: left out by v2 unless asked; v3's filter is tri-state.
    resp = await admin.post(f"{V1}/deactivate/{q('@dave:test.local')}", {})
    assert resp.code == 200, resp
    assert "@dave:test.local" not in names((await admin.get(f"{V2}/users")).json)
    assert "@dave:test.local" in names((await admin.get(f"{V2}/users?deactivated=true")).json)
    v3 = "/_synapse/admin/v3/users"
    assert len((await admin.get(v3)).json["users"]) == 5
    assert names((await admin.get(f"{v3}?deactivated=true")).json) == ["@dave:test.local"]
    assert len((await admin.get(f"{v3}?deactivated=false")).json["users"]) == 4

    for bad in ("order_by=nope", "dir=x", "from=-1", "limit=-5", "guests=maybe"):
        assert_error(await admin.get(f"{V2}/users?{bad}"), 400, "M_INVALID_PARAM")


@with_config(allow_guest_access=True)
@pytest_twisted.ensureDeferred
async def test_list_users_guests_and_locked(server: RunningServer) -> None:
    from tests.api.helpers import register_guest

    admin = await register_admin(server)
    guest = await register_guest(server)
    alice = await register(server, "alice")
    everyone = names((await admin.get(f"{V2}/users")).json)
    assert guest.user_id in everyone
    assert guest.user_id not in names((await admin.get(f"{V2}/users?guests=false")).json)
    # Locked users are left out unless `locked=true`, as Synapse.
    resp = await admin.put(f"{V2}/users/{q(alice.user_id or '')}", {"locked": True})
    assert resp.code == 200 and resp.json["locked"] is True, resp
    assert alice.user_id not in names((await admin.get(f"{V2}/users")).json)
    assert alice.user_id in names((await admin.get(f"{V2}/users?locked=true")).json)


@pytest_twisted.ensureDeferred
async def test_put_creates_then_modifies_a_user(server: RunningServer) -> None:
    admin = await register_admin(server)
    path = f"{V2}/users/{q('@newbie:test.local')}"
    assert_error(await admin.get(path), 404, "M_NOT_FOUND")
    body = {
        "password": "s3cret-pass",
        "displayname": "New Bie",
        "avatar_url": "mxc://test.local/abc",
        "threepids": [{"medium": "email", "address": "newbie@example.org"}],
        "admin": False,
        "user_type": "bot",
    }
    resp = await admin.put(path, body)
    assert resp.code == 201, resp
    user = resp.json
    assert user["name"] == "@newbie:test.local"
    assert user["displayname"] == "New Bie"
    assert user["avatar_url"] == "mxc://test.local/abc"
    assert user["user_type"] == "bot"
    assert [(t["medium"], t["address"]) for t in user["threepids"]] == [
        ("email", "newbie@example.org")
    ]
    assert user["admin"] is False and user["deactivated"] is False
    assert user["locked"] is False and user["shadow_banned"] is False
    assert user["is_guest"] is False and user["erased"] is False
    assert user["external_ids"] == [] and user["appservice_id"] is None
    assert 10**9 < user["creation_ts"] < 10**11  # seconds, as Synapse
    assert (await admin.get(path)).json == user
    # The password works.
    assert (await login(server, "newbie", "s3cret-pass")).code == 200

    # Modify: 200, the fields given change, the others stay.
    newbie = Client(server.base_url)
    await newbie.login("newbie", "s3cret-pass")
    resp = await admin.put(
        path,
        {
            "displayname": "Renamed",
            "threepids": [{"medium": "email", "address": "other@example.org"}],
            "admin": True,
            "user_type": None,
            "password": "another-pass",
        },
    )
    assert resp.code == 200, resp
    assert resp.json["displayname"] == "Renamed"
    assert resp.json["avatar_url"] == "mxc://test.local/abc"
    assert resp.json["admin"] is True and resp.json["user_type"] is None
    assert [t["address"] for t in resp.json["threepids"]] == ["other@example.org"]
    # The new password logged the user's devices out (logout_devices defaults to true).
    assert_error(await newbie.get(f"{V3}/account/whoami"), 401, "M_UNKNOWN_TOKEN")
    assert (await login(server, "newbie", "another-pass")).code == 200
    assert (await login(server, "newbie", "s3cret-pass")).code == 403
    # The profile API sees the admin's change.
    resp = await admin.get(f"{V3}/profile/{q('@newbie:test.local')}/displayname")
    assert resp.json == {"displayname": "Renamed"}

    # Deactivate, then reactivate.
    resp = await admin.put(path, {"deactivated": True})
    assert resp.code == 200 and resp.json["deactivated"] is True, resp
    assert (await login(server, "newbie", "another-pass")).code == 403
    resp = await admin.put(path, {"deactivated": False, "password": "third-pass"})
    assert resp.code == 200 and resp.json["deactivated"] is False, resp
    assert (await login(server, "newbie", "third-pass")).code == 200


@pytest_twisted.ensureDeferred
async def test_put_user_errors(server: RunningServer) -> None:
    admin = await register_admin(server)
    path = f"{V2}/users/{q('@x:test.local')}"
    assert_error(await admin.put(path, {"admin": "yes"}), 400, "M_BAD_JSON")
    assert_error(await admin.put(path, {"user_type": "alien"}), 400, "M_UNKNOWN")
    assert_error(await admin.put(path, {"password": "x" * 513}), 400, "M_UNKNOWN")
    assert_error(await admin.put(path, {"deactivated": "no"}), 400, "M_UNKNOWN")
    resp = await admin.put(path, {"deactivated": True, "locked": True})
    assert_error(resp, 400, "M_UNKNOWN")
    assert_error(
        await admin.put(path, {"threepids": [{"medium": "email"}]}), 400, "M_MISSING_PARAM"
    )
    remote = f"{V2}/users/{q('@x:elsewhere.org')}"
    assert_error(await admin.put(remote, {}), 400, "M_UNKNOWN")
    assert_error(await admin.get(remote), 400, "M_UNKNOWN")
    assert_error(await admin.get(f"{V2}/users/not-a-user"), 400, "M_INVALID_PARAM")
    assert_error(
        await admin.put(f"{V2}/users/{q('@_bad:test.local')}", {}), 400, "M_INVALID_USERNAME"
    )
    # An admin may not demote themselves.
    own = f"{V2}/users/{q(admin.user_id or '')}"
    assert_error(await admin.put(own, {"admin": False}), 400, "M_UNKNOWN")
    assert (await admin.get(own)).json["admin"] is True


@pytest_twisted.ensureDeferred
async def test_deactivate_with_erase_and_reset_password(server: RunningServer) -> None:
    admin = await register_admin(server)
    alice = await register(server, "alice")
    target = q(alice.user_id or "")
    assert_error(
        await admin.post(f"{V1}/deactivate/{q('@ghost:test.local')}", {}), 404, "M_NOT_FOUND"
    )
    assert_error(await admin.post(f"{V1}/deactivate/{target}", {"erase": 1}), 400, "M_BAD_JSON")

    resp = await admin.post(f"{V1}/reset_password/{target}", {"new_password": "fresh-one"})
    assert resp.code == 200 and resp.json == {}, resp
    assert_error(await alice.get(f"{V3}/account/whoami"), 401, "M_UNKNOWN_TOKEN")
    assert (await login(server, "alice", "fresh-one")).code == 200
    # logout_devices: false keeps the sessions.
    alice2 = Client(server.base_url)
    await alice2.login("alice", "fresh-one")
    body = {"new_password": "fresher", "logout_devices": False}
    assert (await admin.post(f"{V1}/reset_password/{target}", body)).code == 200
    assert (await alice2.get(f"{V3}/account/whoami")).code == 200
    assert_error(await admin.post(f"{V1}/reset_password/{target}", {}), 400, "M_MISSING_PARAM")
    resp = await admin.post(f"{V1}/reset_password/{q('@ghost:test.local')}", {"new_password": "x"})
    assert_error(resp, 404, "M_NOT_FOUND")

    resp = await admin.post(f"{V1}/deactivate/{target}", {"erase": True})
    assert resp.code == 200, resp
    assert resp.json == {"id_server_unbind_result": "success"}
    assert_error(await alice2.get(f"{V3}/account/whoami"), 401, "M_UNKNOWN_TOKEN")
    user = (await admin.get(f"{V2}/users/{target}")).json
    assert user["deactivated"] is True and user["erased"] is True


@pytest_twisted.ensureDeferred
async def test_admin_flag_whois_joined_rooms_and_username_available(
    server: RunningServer,
) -> None:
    admin = await register_admin(server)
    alice = await register(server, "alice")
    target = q(alice.user_id or "")
    assert (await admin.get(f"{V1}/users/{target}/admin")).json == {"admin": False}
    assert (await admin.put(f"{V1}/users/{target}/admin", {"admin": True})).json == {}
    assert (await admin.get(f"{V1}/users/{target}/admin")).json == {"admin": True}
    # Alice's next request is an admin's.
    assert (await alice.get(f"{V2}/users")).code == 200
    assert (await admin.put(f"{V1}/users/{target}/admin", {"admin": False})).code == 200
    assert_error(await alice.get(f"{V2}/users"), 403, "M_FORBIDDEN")
    assert_error(await admin.put(f"{V1}/users/{target}/admin", {}), 400, "M_MISSING_PARAM")
    own = f"{V1}/users/{q(admin.user_id or '')}/admin"
    assert_error(await admin.put(own, {"admin": False}), 400, "M_UNKNOWN")
    assert_error(await admin.get(f"{V1}/users/{q('@a:else.org')}/admin"), 400, "M_UNKNOWN")

    resp = await admin.get(f"{V1}/whois/{target}")
    assert resp.code == 200, resp
    assert resp.json["user_id"] == alice.user_id and len(resp.json["devices"]) == 1

    assert (await admin.get(f"{V1}/users/{target}/joined_rooms")).json == {
        "joined_rooms": [],
        "total": 0,
    }
    room_id = await create_room(alice)
    assert (await admin.get(f"{V1}/users/{target}/joined_rooms")).json == {
        "joined_rooms": [room_id],
        "total": 1,
    }

    resp = await admin.get(f"{V1}/username_available?username=free")
    assert resp.code == 200 and resp.json == {"available": True}, resp
    assert_error(await admin.get(f"{V1}/username_available?username=alice"), 400, "M_USER_IN_USE")
    resp = await admin.get(f"{V1}/username_available?username=Bad%20Name")
    assert_error(resp, 400, "M_INVALID_USERNAME")
    assert_error(await admin.get(f"{V1}/username_available"), 400, "M_MISSING_PARAM")


@pytest_twisted.ensureDeferred
async def test_admin_manages_devices(server: RunningServer) -> None:
    admin = await register_admin(server)
    alice = await register(server, "alice")
    alice2 = Client(server.base_url)
    await alice2.login("alice", PASSWORD, device_id="SECOND")
    base = f"{V2}/users/{q(alice.user_id or '')}"
    resp = await admin.get(f"{base}/devices")
    assert resp.code == 200, resp
    assert resp.json["total"] == 2
    assert {d["device_id"] for d in resp.json["devices"]} == {alice.device_id, "SECOND"}
    assert all(d["user_id"] == alice.user_id for d in resp.json["devices"])

    resp = await admin.put(f"{base}/devices/SECOND", {"display_name": "Renamed"})
    assert resp.code == 200 and resp.json == {}, resp
    resp = await admin.get(f"{base}/devices/SECOND")
    assert resp.json["display_name"] == "Renamed" and resp.json["device_id"] == "SECOND"
    assert_error(await admin.get(f"{base}/devices/NOPE"), 404, "M_NOT_FOUND")
    assert_error(await admin.put(f"{base}/devices/NOPE", {"display_name": "x"}), 404, "M_NOT_FOUND")
    resp = await admin.put(f"{base}/devices/SECOND", {"display_name": "x" * 101})
    assert_error(resp, 400, "M_TOO_LARGE")

    assert (await admin.delete(f"{base}/devices/SECOND")).code == 200
    assert_error(await alice2.get(f"{V3}/account/whoami"), 401, "M_UNKNOWN_TOKEN")
    assert_error(await admin.post(f"{base}/delete_devices", {}), 400, "M_MISSING_PARAM")
    resp = await admin.post(f"{base}/delete_devices", {"devices": [alice.device_id]})
    assert resp.code == 200, resp
    assert_error(await alice.get(f"{V3}/account/whoami"), 401, "M_UNKNOWN_TOKEN")
    assert (await admin.get(f"{base}/devices")).json == {"devices": [], "total": 0}

    ghost = f"{V2}/users/{q('@ghost:test.local')}/devices"
    assert_error(await admin.get(ghost), 404, "M_NOT_FOUND")
    assert_error(await admin.get(f"{V2}/users/{q('@a:else.org')}/devices"), 400, "M_UNKNOWN")


@pytest_twisted.ensureDeferred
async def test_shadow_banned_sends_look_sent_and_persist_nothing(server: RunningServer) -> None:
    admin = await register_admin(server)
    alice = await register(server, "alice")
    mallory = await register(server, "mallory")
    bob = await register(server, "bob")
    room_id = await create_room(alice, preset="public_chat")
    assert (await join(mallory, room_id)).code == 200
    target = q(mallory.user_id or "")

    assert_error(await admin.post(f"{V1}/users/{q('@a:else.org')}/shadow_ban"), 400, "M_UNKNOWN")
    resp = await admin.post(f"{V1}/users/{target}/shadow_ban")
    assert resp.code == 200 and resp.json == {}, resp
    assert (await admin.get(f"{V2}/users/{target}")).json["shadow_banned"] is True
    listed = (await admin.get(f"{V2}/users?name=mallory")).json["users"]
    assert listed[0]["shadow_banned"] is True

    resp = await send_raw(mallory, room_id, "spam")
    assert resp.code == 200, resp
    fake_id = resp.json["event_id"]
    assert fake_id.startswith("$")
    resp = await mallory.put(f"{V3}/rooms/{q(room_id)}/state/m.room.topic", {"topic": "spam"})
    assert resp.code == 200 and resp.json["event_id"].startswith("$"), resp
    assert (await invite(mallory, room_id, bob.user_id)).code == 200

    # Nothing reached the room.
    resp = await alice.get(f"{V3}/rooms/{q(room_id)}/event/{q(fake_id)}")
    assert_error(resp, 404, "M_NOT_FOUND")
    chunk = (await messages(alice, room_id, dir="b", limit=50)).json["chunk"]
    assert all(ev["sender"] != mallory.user_id or ev["type"] == "m.room.member" for ev in chunk)
    state = (await alice.get(f"{V3}/rooms/{q(room_id)}/state")).json
    assert not any(ev["type"] == "m.room.topic" for ev in state)
    assert not any(ev["type"] == "m.room.member" and ev["state_key"] == bob.user_id for ev in state)

    # A room is made without its invites; typing is answered and goes nowhere.
    resp = await mallory.post(f"{V3}/createRoom", {"invite": [bob.user_id]})
    assert resp.code == 200, resp
    new_state = (await mallory.get(f"{V3}/rooms/{q(resp.json['room_id'])}/state")).json
    assert not any(ev.get("state_key") == bob.user_id for ev in new_state)
    typing = {"typing": True, "timeout": 30000}
    resp = await mallory.put(f"{V3}/rooms/{q(room_id)}/typing/{target}", typing)
    assert resp.code == 200, resp

    # Lifted: sends are real again.
    assert (await admin.delete(f"{V1}/users/{target}/shadow_ban")).code == 200
    event_id = await send(mallory, room_id, "back")
    resp = await alice.get(f"{V3}/rooms/{q(room_id)}/event/{q(event_id)}")
    assert resp.code == 200 and resp.json["content"]["body"] == "back", resp


TIGHT = {"per_second": 0.001, "burst_count": 2}


@with_config(rc_message=TIGHT)
@pytest_twisted.ensureDeferred
async def test_override_ratelimit_endpoints_and_effect(server: RunningServer) -> None:
    admin = await register_admin(server)
    alice = await register(server, "alice")
    room_id = await create_room(admin)  # admin's own sends: 1 of its 2
    target = q(alice.user_id or "")
    path = f"{V1}/users/{target}/override_ratelimit"
    assert (await admin.get(path)).json == {}

    room_id = await create_room(alice)
    await send(alice, room_id, "one")
    assert_error(await send_raw(alice, room_id, "two"), 429, "M_LIMIT_EXCEEDED")

    # Zero: not limited at all.
    resp = await admin.post(path, {})
    assert resp.code == 200 and resp.json == {"messages_per_second": 0, "burst_count": 0}, resp
    assert (await admin.get(path)).json == {"messages_per_second": 0, "burst_count": 0}
    for i in range(5):
        await send(alice, room_id, f"free {i}")

    # Other values replace rc_message for the user.
    resp = await admin.post(path, {"messages_per_second": 1, "burst_count": 100})
    assert resp.json == {"messages_per_second": 1, "burst_count": 100}, resp
    for i in range(5):
        await send(alice, room_id, f"burst {i}")

    # Deleted: back to rc_message.
    assert (await admin.delete(path)).json == {}
    assert (await admin.get(path)).json == {}
    assert_error(await send_raw(alice, room_id, "limited"), 429, "M_LIMIT_EXCEEDED")

    assert_error(await admin.post(path, {"burst_count": -1}), 400, "M_INVALID_PARAM")
    assert_error(await admin.post(path, {"messages_per_second": "1"}), 400, "M_INVALID_PARAM")
    assert_error(await admin.post(path, {"messages_per_second": True}), 400, "M_INVALID_PARAM")
    ghost = f"{V1}/users/{q('@ghost:test.local')}/override_ratelimit"
    assert_error(await admin.get(ghost), 404, "M_NOT_FOUND")
    remote = f"{V1}/users/{q('@a:else.org')}/override_ratelimit"
    assert_error(await admin.post(remote, {}), 400, "M_UNKNOWN")


@pytest_twisted.ensureDeferred
async def test_login_as_user(server: RunningServer) -> None:
    admin = await register_admin(server)
    alice = await register(server, "alice")
    path = f"{V1}/users/{q(alice.user_id or '')}/login"
    resp = await admin.post(path, {})
    assert resp.code == 200, resp
    puppet = Client(server.base_url, resp.json["access_token"])
    whoami = (await puppet.get(f"{V3}/account/whoami")).json
    assert whoami["user_id"] == alice.user_id
    # The puppet token makes no device of the user's.
    devices = (await admin.get(f"{V2}/users/{q(alice.user_id or '')}/devices")).json
    assert devices["total"] == 1

    # `valid_until_ms` in the past: the token is already expired.
    resp = await admin.post(path, {"valid_until_ms": 1000})
    assert resp.code == 200, resp
    expired = Client(server.base_url, resp.json["access_token"])
    assert_error(await expired.get(f"{V3}/account/whoami"), 401, "M_UNKNOWN_TOKEN")

    assert_error(await admin.post(path, {"valid_until_ms": "soon"}), 400, "M_UNKNOWN")
    own = f"{V1}/users/{q(admin.user_id or '')}/login"
    assert_error(await admin.post(own, {}), 400, "M_UNKNOWN")
    assert_error(
        await admin.post(f"{V1}/users/{q('@ghost:test.local')}/login", {}), 404, "M_NOT_FOUND"
    )
    assert_error(await admin.post(f"{V1}/users/{q('@a:else.org')}/login", {}), 400, "M_UNKNOWN")


@pytest_twisted.ensureDeferred
async def test_pushers_of_a_user(server: RunningServer) -> None:
    admin = await register_admin(server)
    alice = await register(server, "alice")
    path = f"{V1}/users/{q(alice.user_id or '')}/pushers"
    assert (await admin.get(path)).json == {"pushers": [], "total": 0}
    body = {
        "kind": "http",
        "app_id": "com.example.app",
        "app_display_name": "Example",
        "device_display_name": "Phone",
        "pushkey": "key-1",
        "lang": "en",
        "data": {"url": "http://127.0.0.1:9/_matrix/push/v1/notify"},
    }
    assert (await alice.post(f"{V3}/pushers/set", body)).code == 200
    resp = await admin.get(path)
    assert resp.json["total"] == 1, resp
    assert resp.json["pushers"][0]["pushkey"] == "key-1"
    assert resp.json["pushers"][0]["app_id"] == "com.example.app"
    assert_error(
        await admin.get(f"{V1}/users/{q('@ghost:test.local')}/pushers"), 404, "M_NOT_FOUND"
    )


@pytest_twisted.ensureDeferred
async def test_memberships_account_data_threepid_lookup_and_suspend(
    server: RunningServer,
) -> None:
    admin = await register_admin(server)
    alice = await register(server, "alice")
    bob = await register(server, "bob")
    target = q(alice.user_id or "")
    joined = await create_room(alice)
    invited = await create_room(bob)
    assert (await invite(bob, invited, alice.user_id)).code == 200
    resp = await admin.get(f"{V1}/users/{target}/memberships")
    assert resp.code == 200, resp
    assert resp.json == {"memberships": {joined: "join", invited: "invite"}}

    path = f"{V3}/user/{target}/account_data/org.example.setting"
    assert (await alice.put(path, {"x": 1})).code == 200
    room_path = f"{V3}/user/{target}/rooms/{q(joined)}/account_data/org.example.tag"
    assert (await alice.put(room_path, {"y": 2})).code == 200
    resp = await admin.get(f"{V1}/users/{target}/accountdata")
    assert resp.code == 200, resp
    data = resp.json["account_data"]
    assert data["global"]["org.example.setting"] == {"x": 1}
    assert data["rooms"] == {joined: {"org.example.tag": {"y": 2}}}
    resp = await admin.get(f"{V1}/users/{q('@ghost:test.local')}/accountdata")
    assert_error(resp, 404, "M_NOT_FOUND")

    body = {"threepids": [{"medium": "email", "address": "alice@example.org"}]}
    assert (await admin.put(f"{V2}/users/{target}", body)).code == 200
    resp = await admin.get(f"{V1}/threepid/email/users/{q('alice@example.org')}")
    assert resp.json == {"user_id": alice.user_id}, resp
    resp = await admin.get(f"{V1}/threepid/email/users/{q('nobody@example.org')}")
    assert_error(resp, 404, "M_NOT_FOUND")

    resp = await admin.put(f"{V1}/suspend/{target}", {"suspend": True})
    assert resp.code == 200, resp
    assert resp.json == {f"user_{alice.user_id}_suspended": True}
    assert (await admin.get(f"{V2}/users/{target}")).json["suspended"] is True
    assert_error(await send_raw(alice, joined, "no"), 403, "M_USER_SUSPENDED")
    assert (await admin.put(f"{V1}/suspend/{target}", {"suspend": False})).code == 200
    await send(alice, joined, "yes")
    assert_error(await admin.put(f"{V1}/suspend/{target}", {}), 400, "M_MISSING_PARAM")
    resp = await admin.put(f"{V1}/suspend/{q('@a:else.org')}", {"suspend": True})
    assert_error(resp, 400, "M_UNKNOWN")


@pytest_twisted.ensureDeferred
async def test_admin_creates_a_device(server: RunningServer) -> None:
    admin = await register_admin(server)
    alice = await register(server, "alice")
    base = f"{V2}/users/{q(alice.user_id or '')}/devices"
    resp = await admin.post(base, {"device_id": "MADE"})
    assert resp.code == 201 and resp.json == {}, resp
    assert (await admin.get(f"{base}/MADE")).json["device_id"] == "MADE"
    assert_error(await admin.post(base, {}), 400, "M_UNKNOWN")
    assert_error(await admin.post(base, {"device_id": 5}), 400, "M_UNKNOWN")


@pytest_twisted.ensureDeferred
async def test_media_of_a_user(server: RunningServer) -> None:
    from tests.media.helpers import upload

    admin = await register_admin(server)
    alice = await register(server, "alice")
    path = f"{V1}/users/{q(alice.user_id or '')}/media"
    assert (await admin.get(path)).json == {"media": [], "total": 0}
    ids = []
    for size in (3, 1, 2):
        resp = await upload(alice, b"x" * size, "text/plain", filename=f"f{size}.txt")
        assert resp.code == 200, resp
        ids.append(resp.json["content_uri"].rsplit("/", 1)[1])
    resp = await admin.get(path)
    assert resp.code == 200, resp
    assert resp.json["total"] == 3 and "next_token" not in resp.json
    assert {m["media_id"] for m in resp.json["media"]} == set(ids)
    entry = resp.json["media"][0]
    assert entry["user_id"] == alice.user_id and entry["media_type"] == "text/plain"
    by_size = (await admin.get(f"{path}?order_by=media_length")).json
    assert [m["media_length"] for m in by_size["media"]] == [1, 2, 3]
    assert [m["upload_name"] for m in by_size["media"]] == ["f1.txt", "f2.txt", "f3.txt"]
    page = (await admin.get(f"{path}?order_by=media_length&dir=b&limit=1&from=1")).json
    assert [m["media_length"] for m in page["media"]] == [2]
    assert page["next_token"] == 2 and page["total"] == 3
    assert_error(await admin.get(f"{path}?order_by=size"), 400, "M_INVALID_PARAM")
    ghost = f"{V1}/users/{q('@ghost:test.local')}/media"
    assert_error(await admin.get(ghost), 404, "M_NOT_FOUND")
    assert_error(await alice.get(path), 403, "M_FORBIDDEN")


@pytest_twisted.ensureDeferred
async def test_shadow_ban_override_and_user_type_survive_a_restart(server: RunningServer) -> None:
    admin = await register_admin(server)
    alice = await register(server, "alice")
    await register(server, "bob")
    target = q(alice.user_id or "")
    assert (await admin.post(f"{V1}/users/{target}/shadow_ban")).code == 200
    body = {"messages_per_second": 3, "burst_count": 7}
    assert (await admin.post(f"{V1}/users/{target}/override_ratelimit", body)).code == 200
    assert (await admin.put(f"{V2}/users/{target}", {"user_type": "support"})).code == 200

    await server.restart()
    admin.base_url = server.base_url
    user = (await admin.get(f"{V2}/users/{target}")).json
    assert user["shadow_banned"] is True and user["user_type"] == "support"
    resp = await admin.get(f"{V1}/users/{target}/override_ratelimit")
    assert resp.json == body, resp
    # `not_user_type`: "" leaves out users without a type, a type leaves that type out.
    typed = names((await admin.get(f"{V2}/users?not_user_type=")).json)
    assert typed == [alice.user_id]
    untyped = names((await admin.get(f"{V2}/users?not_user_type=support")).json)
    assert untyped == ["@admin:test.local", "@bob:test.local"]
