"""The last of Synapse's admin API over real HTTP: external ids, a user's activity counts,
``search_users``, bulk redaction (a background job), the cross-signing replacement
window, a user's media deletion, quarantine changes, a space's hierarchy and the
background updates switch."""

from __future__ import annotations

from typing import Any

import pytest_twisted
from twisted.internet import reactor, task

from tests.api.helpers import assert_error, register, register_admin
from tests.e2ee.helpers import cross_signing_set, signing_upload_body
from tests.media.helpers import SERVER, upload_ok
from tests.rooms.helpers import V3, create_room, invite, join, leave, send
from tests.support.client import Client, q
from tests.support.server import RunningServer

V1 = "/_synapse/admin/v1"
V2 = "/_synapse/admin/v2"
SIGNING_UPLOAD = f"{V3}/keys/device_signing/upload"


async def sleep(seconds: float) -> None:
    await task.deferLater(reactor, seconds, lambda: None)


async def wait_redact(admin: Client, redact_id: str) -> dict[str, Any]:
    for _ in range(300):
        resp = await admin.get(f"{V1}/user/redact_status/{q(redact_id)}")
        assert resp.code == 200, resp
        if resp.json["status"] in ("complete", "failed"):
            return dict(resp.json)
        await sleep(0.02)
    raise AssertionError("redaction job did not finish")


async def event_content(client: Client, room_id: str, event_id: str) -> dict[str, Any]:
    resp = await client.get(f"{V3}/rooms/{q(room_id)}/event/{q(event_id)}")
    assert resp.code == 200, resp
    return dict(resp.json["content"])


@pytest_twisted.ensureDeferred
async def test_every_new_endpoint_refuses_non_admins(server: RunningServer) -> None:
    alice = await register(server, "alice")
    me = q(alice.user_id or "")
    for method, path in [
        ("GET", f"{V1}/users/{me}/sent_invite_count?from_ts=0"),
        ("GET", f"{V1}/users/{me}/cumulative_joined_room_count?from_ts=0"),
        ("POST", f"{V1}/users/{me}/_allow_cross_signing_replacement_without_uia"),
        ("GET", f"{V1}/search_users/{me}?term=a"),
        ("GET", f"{V1}/auth_providers/oidc/users/x"),
        ("POST", f"{V1}/user/{me}/redact"),
        ("GET", f"{V1}/user/redact_status/abc"),
        ("DELETE", f"{V1}/users/{me}/media"),
        ("GET", f"{V1}/media/quarantine_changes"),
        ("GET", f"{V1}/rooms/{q('!r:test.local')}/hierarchy"),
        ("GET", f"{V1}/background_updates/enabled"),
        ("POST", f"{V1}/background_updates/enabled"),
        ("POST", f"{V1}/background_updates/start_job"),
    ]:
        resp = await alice.request(method, path, body={} if method == "POST" else None)
        assert_error(resp, 403, "M_FORBIDDEN")
        assert resp.json["error"] == "You are not a server admin", (method, path)


@pytest_twisted.ensureDeferred
async def test_external_ids_are_stored_returned_found_and_unique(server: RunningServer) -> None:
    admin = await register_admin(server)
    bob_path = f"{V2}/users/{q('@bob:test.local')}"
    ids = [
        {"auth_provider": "oidc", "external_id": "sub/1@idp"},
        {"auth_provider": "saml", "external_id": "bob"},
    ]
    resp = await admin.put(bob_path, {"password": "pw-bob-1234", "external_ids": ids})
    assert resp.code == 201, resp
    assert resp.json["external_ids"] == ids
    assert (await admin.get(bob_path)).json["external_ids"] == ids

    found = await admin.get(f"{V1}/auth_providers/oidc/users/{q('sub/1@idp')}")
    assert found.code == 200 and found.json == {"user_id": "@bob:test.local"}, found
    missing = await admin.get(f"{V1}/auth_providers/oidc/users/nobody")
    assert_error(missing, 404, "M_NOT_FOUND")
    assert missing.json["error"] == "User not found"

    # Another user may not take one of bob's ids: 409, and carol is not created.
    carol_path = f"{V2}/users/{q('@carol:test.local')}"
    resp = await admin.put(carol_path, {"external_ids": [ids[1]]})
    assert_error(resp, 409, "M_UNKNOWN")
    assert resp.json["error"] == "External id is already in use."
    assert_error(await admin.get(carol_path), 404, "M_NOT_FOUND")

    # Modifying replaces the whole set; an empty list clears it.
    resp = await admin.put(bob_path, {"external_ids": [ids[1]]})
    assert resp.code == 200 and resp.json["external_ids"] == [ids[1]], resp
    assert_error(
        await admin.get(f"{V1}/auth_providers/oidc/users/{q('sub/1@idp')}"), 404, "M_NOT_FOUND"
    )
    resp = await admin.put(carol_path, {"external_ids": [ids[0]]})
    assert resp.code == 201 and resp.json["external_ids"] == [ids[0]], resp
    resp = await admin.put(bob_path, {"external_ids": []})
    assert resp.code == 200 and resp.json["external_ids"] == [], resp

    # Bad input.
    resp = await admin.put(bob_path, {"external_ids": [{"auth_provider": "oidc"}]})
    assert_error(resp, 400, "M_MISSING_PARAM")
    assert_error(await admin.put(bob_path, {"external_ids": ["x"]}), 400, "M_BAD_JSON")
    assert_error(await admin.put(bob_path, {"external_ids": "x"}), 400, "M_BAD_JSON")


@pytest_twisted.ensureDeferred
async def test_sent_invites_and_cumulative_joins_are_counted(server: RunningServer) -> None:
    admin = await register_admin(server)
    alice = await register(server, "alice")
    bob = await register(server, "bob")
    carol = await register(server, "carol")
    start = server.hs.reactor.seconds() * 1000 - 1
    rooms = [await create_room(alice) for _ in range(3)]
    for room_id in rooms[:2]:
        assert (await invite(alice, room_id, bob.user_id)).code == 200
    assert (await invite(alice, rooms[0], carol.user_id)).code == 200
    assert (await join(bob, rooms[0])).code == 200
    assert (await leave(bob, rooms[0])).code == 200
    assert (await join(bob, rooms[1])).code == 200

    def path(user: Client, what: str, from_ts: float) -> str:
        return f"{V1}/users/{q(user.user_id or '')}/{what}?from_ts={int(from_ts)}"

    resp = await admin.get(path(alice, "sent_invite_count", start))
    assert resp.code == 200 and resp.json == {"invite_count": 3}, resp
    assert (await admin.get(path(bob, "sent_invite_count", start))).json == {"invite_count": 0}
    later = server.hs.reactor.seconds() * 1000 + 60_000
    assert (await admin.get(path(alice, "sent_invite_count", later))).json["invite_count"] == 0

    # Bob joined two rooms (one of them left since); alice created (joined) three.
    resp = await admin.get(path(bob, "cumulative_joined_room_count", start))
    assert resp.code == 200 and resp.json == {"cumulative_joined_room_count": 2}, resp
    resp = await admin.get(path(alice, "cumulative_joined_room_count", start))
    assert resp.json == {"cumulative_joined_room_count": 3}, resp
    resp = await admin.get(path(alice, "cumulative_joined_room_count", later))
    assert resp.json == {"cumulative_joined_room_count": 0}, resp

    target = q(alice.user_id or "")
    missing = await admin.get(f"{V1}/users/{target}/sent_invite_count")
    assert_error(missing, 400, "M_MISSING_PARAM")
    bad = await admin.get(f"{V1}/users/{target}/cumulative_joined_room_count?from_ts=x")
    assert bad.code == 400, bad


@pytest_twisted.ensureDeferred
async def test_search_users_matches_ids(server: RunningServer) -> None:
    admin = await register_admin(server)
    await register(server, "alice")
    await register(server, "malice")
    await register(server, "bob")
    me = q(admin.user_id or "")
    resp = await admin.get(f"{V1}/search_users/{me}?term=lic")
    assert resp.code == 200, resp
    assert [u["name"] for u in resp.json] == ["@alice:test.local", "@malice:test.local"]
    first = resp.json[0]
    assert set(first) == {"name", "password_hash", "is_guest", "admin", "user_type"}
    assert first["is_guest"] is False and first["admin"] is False
    assert first["password_hash"].startswith("$2")
    assert (await admin.get(f"{V1}/search_users/{me}?term=%25")).json == []  # a literal %
    assert_error(await admin.get(f"{V1}/search_users/{me}"), 400, "M_MISSING_PARAM")
    remote = await admin.get(f"{V1}/search_users/{q('@x:elsewhere.example')}?term=a")
    assert_error(remote, 400, "M_UNKNOWN")


@pytest_twisted.ensureDeferred
async def test_cross_signing_replacement_window(server: RunningServer) -> None:
    admin = await register_admin(server)
    alice = await register(server, "alice")
    allow = f"{V1}/users/{q(alice.user_id or '')}/_allow_cross_signing_replacement_without_uia"
    resp = await admin.post(allow, {})
    assert_error(resp, 404, "M_NOT_FOUND")
    assert resp.json["error"] == "User has no master cross-signing key"

    first = signing_upload_body(*cross_signing_set(alice.user_id or ""))
    assert (await alice.post(SIGNING_UPLOAD, first)).code == 200  # the first needs no UIA
    second = signing_upload_body(*cross_signing_set(alice.user_id or ""))
    assert (await alice.post(SIGNING_UPLOAD, second)).code == 401  # a replacement does

    before = server.hs.reactor.seconds() * 1000
    resp = await admin.post(allow, {})
    assert resp.code == 200, resp
    until = resp.json["updatable_without_uia_before_ms"]
    assert before + 9 * 60_000 < until <= before + 10 * 60_000 + 1000
    resp = await alice.post(SIGNING_UPLOAD, second)
    assert resp.code == 200, resp
    keys = await alice.post(f"{V3}/keys/query", {"device_keys": {alice.user_id: []}})
    assert keys.json["master_keys"][alice.user_id]["keys"] == second["master_key"]["keys"]

    # The window belonged to the key it was opened for: the new one needs UIA again.
    third = signing_upload_body(*cross_signing_set(alice.user_id or ""))
    assert (await alice.post(SIGNING_UPLOAD, third)).code == 401


@pytest_twisted.ensureDeferred
async def test_redact_a_users_events_in_the_background(server: RunningServer) -> None:
    admin = await register_admin(server)
    alice = await register(server, "alice")
    spammer = await register(server, "spammer")
    rooms = [await create_room(alice, preset="public_chat") for _ in range(3)]
    sent: dict[str, list[str]] = {}
    for room_id in rooms:
        assert (await join(spammer, room_id)).code == 200
        sent[room_id] = [await send(spammer, room_id, f"spam {i}") for i in range(3)]
    kept = await send(alice, rooms[0], "not spam")

    body = {"rooms": rooms[:2], "reason": "spam", "limit": 2}
    resp = await admin.post(f"{V1}/user/{q(spammer.user_id or '')}/redact", body)
    assert resp.code == 200, resp
    status = await wait_redact(admin, resp.json["redact_id"])
    assert status == {"status": "complete", "failed_redactions": {}}, status
    for room_id in rooms[:2]:
        # `limit`: the 2 newest of the spammer's events per room.
        oldest, *newest = sent[room_id]
        assert (await event_content(alice, room_id, oldest))["body"] == "spam 0"
        for event_id in newest:
            assert await event_content(alice, room_id, event_id) == {}
        redacted = await alice.get(f"{V3}/rooms/{q(room_id)}/event/{q(newest[0])}")
        because = redacted.json["unsigned"]["redacted_because"]
        # Puppeted: a local user's events are redacted by the user themselves.
        assert because["sender"] == spammer.user_id and because["content"]["reason"] == "spam"
    assert (await event_content(alice, rooms[2], sent[rooms[2]][0]))["body"] == "spam 0"
    assert (await event_content(alice, rooms[0], kept))["body"] == "not spam"

    # No rooms: every room of the user; the spammer has left the last one, so their own
    # redactions there are refused and reported, and the others go through.
    assert (await leave(spammer, rooms[2])).code == 200
    resp = await admin.post(f"{V1}/user/{q(spammer.user_id or '')}/redact", {"rooms": []})
    status = await wait_redact(admin, resp.json["redact_id"])
    assert status["status"] == "complete"
    # Its three messages and its join there (a join is redacted for its profile).
    failed = set(status["failed_redactions"])
    assert set(sent[rooms[2]]) < failed and len(failed) == 4, status
    assert all("not in room" in e for e in status["failed_redactions"].values())
    assert (await event_content(alice, rooms[0], sent[rooms[0]][0])) == {}

    # `use_admin`: the admin redacts, where they have the power to.
    assert (await join(admin, rooms[2])).code == 200
    resp = await alice.put(
        f"{V3}/rooms/{q(rooms[2])}/state/m.room.power_levels/",
        {"users": {admin.user_id: 50}, "redact": 50},
    )
    assert resp.code == 200, resp
    resp = await admin.post(
        f"{V1}/user/{q(spammer.user_id or '')}/redact", {"rooms": [rooms[2]], "use_admin": True}
    )
    status = await wait_redact(admin, resp.json["redact_id"])
    assert status == {"status": "complete", "failed_redactions": {}}, status
    redacted = await alice.get(f"{V3}/rooms/{q(rooms[2])}/event/{q(sent[rooms[2]][1])}")
    assert redacted.json["content"] == {}
    assert redacted.json["unsigned"]["redacted_because"]["sender"] == admin.user_id

    # Bad input, unknown jobs.
    path = f"{V1}/user/{q(spammer.user_id or '')}/redact"
    assert_error(await admin.post(path, {}), 400, "M_BAD_JSON")
    assert_error(await admin.post(path, {"rooms": ["nope"]}), 400, "M_BAD_JSON")
    assert_error(await admin.post(path, {"rooms": [], "limit": 0}), 400, "M_BAD_JSON")
    assert_error(await admin.post(path, {"rooms": [], "reason": 3}), 400, "M_BAD_JSON")
    assert_error(
        await admin.post(f"{V1}/user/notauser/redact", {"rooms": []}), 400, "M_INVALID_PARAM"
    )
    resp = await admin.get(f"{V1}/user/redact_status/nope")
    assert_error(resp, 404, "M_NOT_FOUND")
    assert resp.json["error"] == "redact id 'nope' not found"


@pytest_twisted.ensureDeferred
async def test_delete_a_users_media_and_list_quarantine_changes(server: RunningServer) -> None:
    admin = await register_admin(server)
    alice = await register(server, "alice")
    bob = await register(server, "bob")
    mine = []
    for i in range(3):
        mine.append(await upload_ok(alice, f"alice {i}".encode(), "text/plain"))
        await sleep(0.005)
    bobs = await upload_ok(bob, b"bob's", "text/plain")
    path = f"{V1}/users/{q(alice.user_id or '')}/media"

    # As the list: newest first by default, `limit` of them.
    resp = await admin.delete(f"{path}?limit=2")
    assert resp.code == 200, resp
    assert resp.json == {"deleted_media": [mine[2], mine[1]], "total": 2}
    listed = (await admin.get(path)).json
    assert [m["media_id"] for m in listed["media"]] == [mine[0]]
    resp = await admin.delete(path)
    assert resp.json == {"deleted_media": [mine[0]], "total": 1}
    assert (await admin.delete(path)).json == {"deleted_media": [], "total": 0}
    assert (await admin.get(f"{V1}/media/{SERVER}/{bobs}")).code == 200
    assert_error(await admin.delete(f"{path}?order_by=nope"), 400, "M_INVALID_PARAM")
    assert_error(
        await admin.delete(f"{V1}/users/{q('@x:elsewhere.example')}/media"), 400, "M_UNKNOWN"
    )
    assert_error(
        await admin.delete(f"{V1}/users/{q('@ghost:test.local')}/media"), 404, "M_NOT_FOUND"
    )

    # Quarantine changes, oldest first, paged by `next_batch`.
    changes = f"{V1}/media/quarantine_changes"
    empty = (await admin.get(changes)).json
    assert empty == {"next_batch": 0, "changes": []}, empty
    protected = await upload_ok(bob, b"sticker", "text/plain")
    assert (await admin.post(f"{V1}/media/protect/{protected}", {})).code == 200
    for action in ("quarantine", "unquarantine", "quarantine", "quarantine"):
        resp = await admin.post(f"{V1}/media/{action}/{SERVER}/{bobs}", {})
        assert resp.code == 200, resp
    # Nothing changed for these: unknown, protected.
    assert (await admin.post(f"{V1}/media/quarantine/remote.example/abc", {})).code == 200
    assert (await admin.post(f"{V1}/media/quarantine/{SERVER}/{protected}", {})).code == 200
    page = (await admin.get(changes)).json
    assert page["changes"] == [
        {"origin": SERVER, "media_id": bobs, "quarantined": True},
        {"origin": SERVER, "media_id": bobs, "quarantined": False},
        {"origin": SERVER, "media_id": bobs, "quarantined": True},
    ]
    middle = (await admin.get(f"{changes}?from=1")).json
    assert [c["quarantined"] for c in middle["changes"]] == [False, True]
    assert middle["next_batch"] == page["next_batch"]
    after = (await admin.get(f"{changes}?from={page['next_batch']}")).json
    assert after == {"next_batch": page["next_batch"], "changes": []}
    assert_error(await admin.get(f"{changes}?from=-1"), 400, "M_INVALID_PARAM")


@pytest_twisted.ensureDeferred
async def test_admin_sees_a_spaces_whole_hierarchy(server: RunningServer) -> None:
    admin = await register_admin(server)
    alice = await register(server, "alice")
    space = await create_room(alice, creation_content={"type": "m.space"})
    children = [await create_room(alice) for _ in range(2)]  # private: invite only
    for child in children:
        resp = await alice.put(
            f"{V3}/rooms/{q(space)}/state/m.space.child/{q(child)}", {"via": ["test.local"]}
        )
        assert resp.code == 200, resp

    # The admin is in none of them; the client API refuses them, the admin API shows all.
    assert_error(
        await admin.get(f"/_matrix/client/v1/rooms/{q(space)}/hierarchy"), 403, "M_FORBIDDEN"
    )
    resp = await admin.get(f"{V1}/rooms/{q(space)}/hierarchy")
    assert resp.code == 200, resp
    assert {r["room_id"] for r in resp.json["rooms"]} == {space, *children}
    root = resp.json["rooms"][0]
    assert root["room_id"] == space and root["room_type"] == "m.space"
    assert {c["state_key"] for c in root["children_state"]} == set(children)
    assert "next_batch" not in resp.json

    # Paged: one room a page, the token carries on.
    page1 = (await admin.get(f"{V1}/rooms/{q(space)}/hierarchy?limit=1")).json
    assert [r["room_id"] for r in page1["rooms"]] == [space]
    page2 = await admin.get(
        f"{V1}/rooms/{q(space)}/hierarchy?limit=1&from={q(page1['next_batch'])}"
    )
    assert page2.code == 200 and page2.json["rooms"][0]["room_id"] in children, page2
    # max_depth 0: the space alone.
    only = (await admin.get(f"{V1}/rooms/{q(space)}/hierarchy?max_depth=0")).json
    assert [r["room_id"] for r in only["rooms"]] == [space]

    unknown = await admin.get(f"{V1}/rooms/{q('!nope:test.local')}/hierarchy")
    assert_error(unknown, 404, "M_NOT_FOUND")
    assert_error(await admin.get(f"{V1}/rooms/nope/hierarchy"), 400, "M_INVALID_PARAM")
    bad_token = await admin.get(f"{V1}/rooms/{q(space)}/hierarchy?from=nope")
    assert_error(bad_token, 400, "M_INVALID_PARAM")


@pytest_twisted.ensureDeferred
async def test_background_updates_switch_and_jobs(server: RunningServer) -> None:
    admin = await register_admin(server)
    enabled = f"{V1}/background_updates/enabled"
    status = f"{V1}/background_updates/status"
    assert (await admin.get(enabled)).json == {"enabled": True}
    resp = await admin.post(enabled, {"enabled": False})
    assert resp.code == 200 and resp.json == {"enabled": False}, resp
    assert (await admin.get(enabled)).json == {"enabled": False}
    assert (await admin.get(status)).json == {"enabled": False, "current_updates": {}}
    assert (await admin.post(enabled, {})).json == {"enabled": True}  # the default
    assert_error(await admin.post(enabled, {"enabled": "no"}), 400, "M_UNKNOWN")

    start = f"{V1}/background_updates/start_job"
    for job in ("populate_stats_process_rooms", "regenerate_directory"):
        resp = await admin.post(start, {"job_name": job})
        assert resp.code == 200 and resp.json == {}, resp
    resp = await admin.post(start, {"job_name": "nope"})
    assert_error(resp, 400, "M_UNKNOWN")
    assert resp.json["error"] == "Invalid job_name"
    assert_error(await admin.post(start, {"job_name": "event_resign"}), 400, "M_UNKNOWN")
    assert_error(await admin.post(start, {}), 400, "M_MISSING_PARAM")


@pytest_twisted.ensureDeferred
async def test_redaction_job_survives_a_restart(server: RunningServer) -> None:
    admin = await register_admin(server)
    alice = await register(server, "alice")
    room_id = await create_room(alice)
    sent = [await send(alice, room_id, f"m{i}") for i in range(2)]
    # A job the server was running when it stopped (its row says so).
    jobs = server.hs.storage.admin_jobs
    params = {
        "user_id": alice.user_id,
        "rooms": [room_id],
        "admin_user_id": admin.user_id,
        "reason": None,
        "limit": 1000,
        "use_admin": False,
        "after_ts": None,
        "before_ts": None,
    }
    await jobs.create("cutshort", "redact_all_events", alice.user_id or "", params, 0)
    await jobs.update("cutshort", 1, status="active")
    await server.restart()
    admin.base_url = alice.base_url = server.base_url
    status = await wait_redact(admin, "cutshort")
    assert status == {"status": "complete", "failed_redactions": {}}, status
    for event_id in sent:
        assert await event_content(alice, room_id, event_id) == {}
