"""Synapse's media admin API over real HTTP: quarantine (by id, room, user), protection,
a room's media, deletion (by id, by age and size), the remote cache purge, statistics."""

from __future__ import annotations

import os
from typing import Any

import pytest_twisted
from twisted.internet import reactor, task

from homeserver.media.storage import FileSystemMediaStorage, local_content_key
from storage.media import ImageFacts, NewUpload
from tests.api.helpers import assert_error, register, register_admin
from tests.media.helpers import SERVER, download, image_bytes, thumbnail, upload_ok
from tests.rooms.helpers import V3, create_room, send
from tests.support.client import Client, q
from tests.support.server import RunningServer

V1 = "/_synapse/admin/v1"


def files(server: RunningServer) -> FileSystemMediaStorage:
    assert server.hs.media is not None
    storage = server.hs.media.storage
    assert isinstance(storage, FileSystemMediaStorage)
    return storage


def stored_paths(server: RunningServer, media_id: str) -> list[str]:
    """Every file under the media store belonging to ``media_id`` (content, thumbnails)."""
    base = files(server).base_path
    shard = f"{media_id[0:2]}/{media_id[2:4]}/{media_id[4:]}"
    found = []
    for top in ("local_content", "local_thumbnails"):
        path = os.path.join(base, top, *shard.split("/"))
        if os.path.isfile(path):
            found.append(path)
        elif os.path.isdir(path):
            found += [os.path.join(path, f) for f in os.listdir(path)]
    return found


async def info(admin: Client, media_id: str, server_name: str = SERVER) -> dict[str, Any]:
    resp = await admin.get(f"{V1}/media/{server_name}/{media_id}")
    assert resp.code == 200, resp
    return dict(resp.json["media_info"])


async def tick() -> None:
    """Let the clock move past the last upload's millisecond."""
    await task.deferLater(reactor, 0.005, lambda: None)


PNG = image_bytes("PNG", (200, 150))


@pytest_twisted.ensureDeferred
async def test_every_endpoint_refuses_non_admins(server: RunningServer) -> None:
    alice = await register(server, "alice")
    media_id = await upload_ok(alice, b"hello", "text/plain")
    room = q("!room:test.local")
    for method, path in [
        ("GET", f"{V1}/media/{SERVER}/{media_id}"),
        ("DELETE", f"{V1}/media/{SERVER}/{media_id}"),
        ("POST", f"{V1}/media/quarantine/{SERVER}/{media_id}"),
        ("POST", f"{V1}/media/unquarantine/{SERVER}/{media_id}"),
        ("POST", f"{V1}/media/protect/{media_id}"),
        ("POST", f"{V1}/media/unprotect/{media_id}"),
        ("POST", f"{V1}/room/{room}/media/quarantine"),
        ("POST", f"{V1}/quarantine_media/{room}"),
        ("GET", f"{V1}/room/{room}/media"),
        ("POST", f"{V1}/user/{q(alice.user_id or '')}/media/quarantine"),
        ("POST", f"{V1}/media/delete?before_ts=40000000000"),
        ("POST", f"{V1}/media/{SERVER}/delete?before_ts=40000000000"),
        ("POST", f"{V1}/purge_media_cache?before_ts=40000000000"),
        ("GET", f"{V1}/statistics/users/media"),
    ]:
        resp = await alice.request(method, path, {} if method == "POST" else None)
        assert_error(resp, 403, "M_FORBIDDEN")
        assert (await alice.request(method, path, token=False)).code == 401
    assert (await download(alice, media_id)).code == 200  # nothing happened


@pytest_twisted.ensureDeferred
async def test_quarantine_answers_404_to_downloads_and_thumbnails(server: RunningServer) -> None:
    admin = await register_admin(server)
    alice = await register(server, "alice")
    media_id = await upload_ok(alice, PNG, "image/png")
    assert (await thumbnail(alice, media_id, 32, 32, "crop")).code == 200

    resp = await admin.post(f"{V1}/media/quarantine/{SERVER}/{media_id}")
    assert resp.code == 200 and resp.json == {}, resp
    for who in (alice, admin):
        assert_error(await download(who, media_id), 404, "M_NOT_FOUND")
        assert_error(await thumbnail(who, media_id, 32, 32, "crop"), 404, "M_NOT_FOUND")
    assert (await info(admin, media_id))["quarantined_by"] == admin.user_id
    # The same bytes uploaded again are quarantined too.
    again = await upload_ok(alice, PNG, "image/png")
    assert_error(await download(alice, again), 404, "M_NOT_FOUND")

    resp = await admin.post(f"{V1}/media/unquarantine/{SERVER}/{media_id}")
    assert resp.code == 200 and resp.json == {}, resp
    assert (await download(alice, media_id)).code == 200
    assert (await download(alice, again)).code == 200  # released by content, as Synapse
    assert (await info(admin, media_id))["quarantined_by"] is None


@pytest_twisted.ensureDeferred
async def test_protected_media_is_never_quarantined(server: RunningServer) -> None:
    admin = await register_admin(server)
    alice = await register(server, "alice")
    kept = await upload_ok(alice, b"keep me", "text/plain")
    other = await upload_ok(alice, b"not me", "text/plain")
    assert (await admin.post(f"{V1}/media/protect/{kept}")).json == {}
    assert (await info(admin, kept))["safe_from_quarantine"] is True

    assert (await admin.post(f"{V1}/media/quarantine/{SERVER}/{kept}")).code == 200
    assert (await download(alice, kept)).code == 200
    resp = await admin.post(f"{V1}/user/{q(alice.user_id or '')}/media/quarantine")
    assert resp.json == {"num_quarantined": 1}, resp
    assert (await download(alice, kept)).code == 200
    assert_error(await download(alice, other), 404, "M_NOT_FOUND")

    assert (await admin.post(f"{V1}/media/unprotect/{kept}")).json == {}
    assert (await info(admin, kept))["safe_from_quarantine"] is False
    assert (await admin.post(f"{V1}/media/quarantine/{SERVER}/{kept}")).code == 200
    assert_error(await download(alice, kept), 404, "M_NOT_FOUND")


@pytest_twisted.ensureDeferred
async def test_user_media_quarantine_leaves_other_users_alone(server: RunningServer) -> None:
    admin = await register_admin(server)
    alice = await register(server, "alice")
    bob = await register(server, "bob")
    mine = [await upload_ok(alice, f"a{i}".encode(), "text/plain") for i in range(2)]
    bobs = await upload_ok(bob, b"b", "text/plain")
    resp = await admin.post(f"{V1}/user/{q(alice.user_id or '')}/media/quarantine")
    assert resp.code == 200 and resp.json == {"num_quarantined": 2}, resp
    for media_id in mine:
        assert_error(await download(bob, media_id), 404, "M_NOT_FOUND")
    assert (await download(alice, bobs)).code == 200
    # Nothing left to quarantine.
    resp = await admin.post(f"{V1}/user/{q(alice.user_id or '')}/media/quarantine")
    assert resp.json == {"num_quarantined": 0}, resp


@pytest_twisted.ensureDeferred
async def test_room_media_listed_and_quarantined(server: RunningServer) -> None:
    admin = await register_admin(server)
    alice = await register(server, "alice")
    image = await upload_ok(alice, PNG, "image/png")
    thumb = await upload_ok(alice, b"thumb bytes", "image/png")
    attachment = await upload_ok(alice, b"encrypted bytes", "application/octet-stream")
    elsewhere = await upload_ok(alice, b"not in the room", "text/plain")
    room_id = await create_room(alice)
    await send(
        alice,
        room_id,
        content={
            "msgtype": "m.image",
            "body": "cat.png",
            "url": f"mxc://{SERVER}/{image}",
            "info": {"thumbnail_url": f"mxc://{SERVER}/{thumb}"},
        },
    )
    await send(
        alice,
        room_id,
        content={"msgtype": "m.file", "body": "f", "url": "mxc://remote.example/abcdefgh"},
    )
    await send(
        alice,
        room_id,
        content={
            "msgtype": "m.file",
            "body": "secret",
            "file": {"url": f"mxc://{SERVER}/{attachment}", "v": "v2"},
        },
    )
    await send(alice, room_id, "mxc://not/a/url/field")

    resp = await admin.get(f"{V1}/room/{q(room_id)}/media")
    assert resp.code == 200, resp
    assert sorted(resp.json["local"]) == sorted(
        f"mxc://{SERVER}/{m}" for m in (image, thumb, attachment)
    )
    assert resp.json["remote"] == ["mxc://remote.example/abcdefgh"]

    resp = await admin.post(f"{V1}/room/{q(room_id)}/media/quarantine")
    assert resp.code == 200 and resp.json == {"num_quarantined": 3}, resp
    for media_id in (image, thumb, attachment):
        assert_error(await download(alice, media_id), 404, "M_NOT_FOUND")
    assert (await download(alice, elsewhere)).code == 200
    # The legacy path answers the same way.
    resp = await admin.post(f"{V1}/quarantine_media/{q(room_id)}")
    assert resp.code == 200 and resp.json == {"num_quarantined": 3}, resp

    empty = await admin.get(f"{V1}/room/{q('!nothing:test.local')}/media")
    assert empty.json == {"local": [], "remote": []}


@pytest_twisted.ensureDeferred
async def test_media_info(server: RunningServer) -> None:
    admin = await register_admin(server)
    alice = await register(server, "alice")
    media_id = await upload_ok(alice, b"12345", "text/plain", filename="a.txt")
    body = await info(admin, media_id)
    assert body["media_id"] == media_id and body["user_id"] == alice.user_id
    assert body["media_length"] == 5 and body["media_type"] == "text/plain"
    assert body["upload_name"] == "a.txt" and body["media_origin"] is None
    assert body["quarantined_by"] is None and body["safe_from_quarantine"] is False
    assert_error(await admin.get(f"{V1}/media/{SERVER}/nosuchmedia"), 404, "M_NOT_FOUND")
    assert_error(await admin.get(f"{V1}/media/other.example/nosuchmedia"), 404, "M_NOT_FOUND")


@pytest_twisted.ensureDeferred
async def test_delete_by_id_removes_files_and_thumbnails(server: RunningServer) -> None:
    admin = await register_admin(server)
    alice = await register(server, "alice")
    media_id = await upload_ok(alice, PNG, "image/png")
    paths = stored_paths(server, media_id)
    assert len(paths) > 1, paths  # the content and its thumbnails
    assert (await server.hs.storage.media.get_usage(alice.user_id or "")).media_count == 1

    resp = await admin.delete(f"{V1}/media/{SERVER}/{media_id}")
    assert resp.code == 200 and resp.json == {"deleted_media": [media_id], "total": 1}, resp
    assert stored_paths(server, media_id) == []
    assert all(not os.path.exists(p) for p in paths)
    assert_error(await download(alice, media_id), 404, "M_NOT_FOUND")
    assert (await server.hs.storage.media.get_usage(alice.user_id or "")).media_count == 0
    assert_error(await admin.delete(f"{V1}/media/{SERVER}/{media_id}"), 404, "M_NOT_FOUND")
    assert_error(await admin.delete(f"{V1}/media/other.example/{media_id}"), 400, "M_UNKNOWN")


@pytest_twisted.ensureDeferred
async def test_delete_by_date_and_size(server: RunningServer) -> None:
    admin = await register_admin(server)
    alice = await register(server, "alice")
    small = await upload_ok(alice, b"s" * 10, "text/plain")
    big = await upload_ok(alice, b"b" * 1000, "text/plain")
    protected = await upload_ok(alice, b"p" * 1000, "text/plain")
    await admin.post(f"{V1}/media/protect/{protected}")
    quarantined = await upload_ok(alice, b"q" * 1000, "text/plain")
    await admin.post(f"{V1}/media/quarantine/{SERVER}/{quarantined}")
    await tick()
    newer = await upload_ok(alice, b"n" * 1000, "text/plain")
    before_ts = (await info(admin, newer))["created_ts"]

    resp = await admin.post(f"{V1}/media/delete?before_ts={before_ts}&size_gt=100")
    assert resp.code == 200, resp
    assert resp.json == {"deleted_media": [big], "total": 1}
    assert_error(await download(alice, big), 404, "M_NOT_FOUND")
    for kept in (small, newer, protected):
        assert (await download(alice, kept)).code == 200
    assert stored_paths(server, big) == []

    # The legacy path, without a size: the small one goes too.
    resp = await admin.post(f"{V1}/media/{SERVER}/delete?before_ts={before_ts}")
    assert resp.json == {"deleted_media": [small], "total": 1}, resp

    # Errors, as Synapse.
    assert_error(await admin.post(f"{V1}/media/delete"), 400, "M_MISSING_PARAM")
    assert_error(await admin.post(f"{V1}/media/delete?before_ts=1234"), 400, "M_INVALID_PARAM")
    assert_error(await admin.post(f"{V1}/media/delete?before_ts=-1"), 400, "M_INVALID_PARAM")
    resp = await admin.post(f"{V1}/media/delete?before_ts={before_ts}&size_gt=-1")
    assert_error(resp, 400, "M_INVALID_PARAM")
    resp = await admin.post(f"{V1}/media/delete?before_ts={before_ts}&keep_profiles=maybe")
    assert_error(resp, 400, "M_INVALID_PARAM")
    resp = await admin.post(f"{V1}/media/other.example/delete?before_ts={before_ts}")
    assert_error(resp, 400, "M_UNKNOWN")


@pytest_twisted.ensureDeferred
async def test_delete_by_date_keeps_avatars_unless_asked(server: RunningServer) -> None:
    admin = await register_admin(server)
    alice = await register(server, "alice")
    avatar = await upload_ok(alice, PNG, "image/png")
    room_avatar = await upload_ok(alice, b"room avatar", "image/png")
    plain = await upload_ok(alice, b"plain", "text/plain")
    resp = await alice.put(
        f"{V3}/profile/{q(alice.user_id or '')}/avatar_url",
        {"avatar_url": f"mxc://{SERVER}/{avatar}"},
    )
    assert resp.code == 200, resp
    room_id = await create_room(alice)
    resp = await alice.put(
        f"{V3}/rooms/{q(room_id)}/state/m.room.avatar",
        {"url": f"mxc://{SERVER}/{room_avatar}"},
    )
    assert resp.code == 200, resp
    await tick()
    before_ts = (await info(admin, await upload_ok(alice, b"later", "text/plain")))["created_ts"]

    resp = await admin.post(f"{V1}/media/delete?before_ts={before_ts}")
    assert resp.json == {"deleted_media": [plain], "total": 1}, resp
    resp = await admin.post(f"{V1}/media/delete?before_ts={before_ts}&keep_profiles=false")
    assert sorted(resp.json["deleted_media"]) == sorted([avatar, room_avatar]), resp
    assert resp.json["total"] == 2


@pytest_twisted.ensureDeferred
async def test_purge_media_cache_deletes_old_remote_media_only(server: RunningServer) -> None:
    admin = await register_admin(server)
    alice = await register(server, "alice")
    local = await upload_ok(alice, b"local", "text/plain")
    hs = server.hs
    assert hs.media is not None
    key = "remote_content/remote.example/ab/cd/efghij"
    await files(server).store_bytes(key, b"cached")
    await hs.storage.media.store_remote(
        NewUpload(
            server_name="remote.example",
            media_id="abcdefghij",
            user_id=None,
            content_type="text/plain",
            upload_name=None,
            size=6,
            sha256="0" * 64,
            authenticated=True,
            url_cache=False,
            image=ImageFacts(),
            thumbnails=(),
        ),
        1_700_000_000_000,
    )
    assert (await info(admin, "abcdefghij", "remote.example"))["media_origin"] == "remote.example"
    resp = await admin.post(f"{V1}/purge_media_cache?before_ts=1600000000000")
    assert resp.json == {"deleted": 0}, resp
    assert os.path.isfile(files(server).path_of(key))

    resp = await admin.post(f"{V1}/purge_media_cache?before_ts=1800000000000")
    assert resp.code == 200 and resp.json == {"deleted": 1}, resp
    assert not os.path.exists(files(server).path_of(key))
    assert await hs.storage.media.get_media("remote.example", "abcdefghij") is None
    assert os.path.isfile(files(server).path_of(local_content_key(local)))
    assert_error(await admin.post(f"{V1}/purge_media_cache"), 400, "M_MISSING_PARAM")
    resp = await admin.post(f"{V1}/purge_media_cache?before_ts=5")
    assert_error(resp, 400, "M_INVALID_PARAM")


@pytest_twisted.ensureDeferred
async def test_user_media_statistics(server: RunningServer) -> None:
    admin = await register_admin(server)
    alice = await register(server, "alice")
    bob = await register(server, "bob")
    carol = await register(server, "carol")
    await carol.put(f"{V3}/profile/{q(carol.user_id or '')}/displayname", {"displayname": "zed"})
    for data in (b"123", b"12345"):
        await upload_ok(alice, data, "text/plain")
    await upload_ok(bob, b"x" * 100, "text/plain")
    await tick()
    later = await upload_ok(carol, b"c", "text/plain")
    path = f"{V1}/statistics/users/media"

    resp = await admin.get(path)
    assert resp.code == 200, resp
    assert resp.json["total"] == 3 and "next_token" not in resp.json
    assert resp.json["users"][0] == {
        "user_id": alice.user_id,
        "displayname": "alice",
        "media_count": 2,
        "media_length": 8,
    }
    assert [u["user_id"] for u in resp.json["users"]] == [
        alice.user_id,
        bob.user_id,
        carol.user_id,
    ]

    def ids(body: dict[str, Any]) -> list[str]:
        return [u["user_id"] for u in body["users"]]

    by_length = (await admin.get(f"{path}?order_by=media_length&dir=b")).json
    assert ids(by_length) == [bob.user_id, alice.user_id, carol.user_id]
    by_count = (await admin.get(f"{path}?order_by=media_count&dir=b")).json
    assert ids(by_count)[0] == alice.user_id
    by_name = (await admin.get(f"{path}?order_by=displayname&dir=b")).json
    assert ids(by_name)[0] == carol.user_id
    page = (await admin.get(f"{path}?limit=1&from=1")).json
    assert ids(page) == [bob.user_id] and page["next_token"] == 2 and page["total"] == 3
    assert ids((await admin.get(f"{path}?search_term=ze")).json) == [carol.user_id]
    assert ids((await admin.get(f"{path}?search_term=bo")).json) == [bob.user_id]
    since = (await info(admin, later))["created_ts"]
    assert ids((await admin.get(f"{path}?from_ts={since}")).json) == [carol.user_id]
    assert set(ids((await admin.get(f"{path}?until_ts={since - 1}")).json)) == {
        alice.user_id,
        bob.user_id,
    }

    assert_error(await admin.get(f"{path}?order_by=size"), 400, "M_INVALID_PARAM")
    assert_error(await admin.get(f"{path}?from_ts=10&until_ts=10"), 400, "M_INVALID_PARAM")
    assert_error(await admin.get(f"{path}?search_term="), 400, "M_INVALID_PARAM")
    assert_error(await admin.get(f"{path}?from=-1"), 400, "M_INVALID_PARAM")
    assert_error(await admin.get(f"{path}?dir=x"), 400, "M_INVALID_PARAM")
