"""POST /_matrix/media/v1/create then PUT /_matrix/media/v3/upload/{serverName}/{mediaId}."""

from __future__ import annotations

from typing import Any

import pytest_twisted
from twisted.internet import defer, reactor, task

from tests.media.helpers import (
    MEDIA_V3,
    SERVER,
    assert_error,
    download,
    sqlite_only,
    stored_files,
    user,
    with_config,
)
from tests.support.client import Client, Response
from tests.support.server import RunningServer

CREATE = "/_matrix/media/v1/create"


async def create(client: Client) -> tuple[str, Any]:
    resp = await client.post(CREATE)
    assert resp.code == 200, resp
    mxc = resp.json["content_uri"]
    assert mxc.startswith(f"mxc://{SERVER}/")
    return str(mxc.rsplit("/", 1)[1]), resp.json


async def put(
    client: Client, media_id: str, data: bytes, content_type: str = "text/plain", **kw: Any
) -> Response:
    return await client.request(
        "PUT",
        f"{MEDIA_V3}/upload/{SERVER}/{media_id}",
        raw=data,
        headers={"Content-Type": content_type},
        **kw,
    )


async def sleep(seconds: float) -> None:
    await task.deferLater(reactor, seconds, lambda: None)


@pytest_twisted.ensureDeferred
async def test_create_then_put_then_download(server: RunningServer) -> None:
    alice = await user(server, "alice")
    before_ms = int(reactor.seconds() * 1000)  # type: ignore[attr-defined]
    media_id, body = await create(alice)
    expires = body["unused_expires_at"]
    assert before_ms + 86_400_000 - 5_000 <= expires <= before_ms + 86_400_000 + 5_000
    resp = await put(alice, media_id, b"later content", params={"filename": "note.txt"})
    assert resp.code == 200 and resp.json == {}, resp
    got = await download(alice, media_id)
    assert got.code == 200 and got.raw == b"later content"
    assert got.header("Content-Disposition") == "inline; filename=note.txt"


@pytest_twisted.ensureDeferred
async def test_second_put_cannot_overwrite(server: RunningServer) -> None:
    alice = await user(server, "alice")
    media_id, _ = await create(alice)
    assert (await put(alice, media_id, b"first")).code == 200
    again = await put(alice, media_id, b"second")
    assert_error(again, 409, "M_CANNOT_OVERWRITE_MEDIA")
    assert (await download(alice, media_id)).raw == b"first"


@pytest_twisted.ensureDeferred
async def test_only_the_creator_may_upload(server: RunningServer) -> None:
    alice = await user(server, "alice")
    bob = await user(server, "bob")
    media_id, _ = await create(alice)
    assert_error(await put(bob, media_id, b"bob's"), 403, "M_FORBIDDEN")
    assert [f for f in stored_files(server) if f.startswith("local_content")] == []
    assert (await put(alice, media_id, b"alice's")).code == 200


@sqlite_only
@pytest_twisted.ensureDeferred
async def test_put_to_unknown_or_foreign_ids(server: RunningServer) -> None:
    alice = await user(server, "alice")
    assert_error(await put(alice, "NeverCreatedMediaId", b"x"), 404, "M_NOT_FOUND")
    media_id, _ = await create(alice)
    resp = await alice.request("PUT", f"{MEDIA_V3}/upload/other.example/{media_id}", raw=b"x")
    assert_error(resp, 404, "M_NOT_FOUND")
    # Media uploaded directly cannot be overwritten either.
    direct = await alice.request(
        "POST", f"{MEDIA_V3}/upload", raw=b"x", headers={"Content-Type": "text/plain"}
    )
    direct_id = direct.json["content_uri"].rsplit("/", 1)[1]
    assert_error(await put(alice, direct_id, b"y"), 409, "M_CANNOT_OVERWRITE_MEDIA")
    assert_error(await alice.post(CREATE, token=False), 401, "M_MISSING_TOKEN")


@sqlite_only
@pytest_twisted.ensureDeferred
async def test_download_of_pending_media_times_out_with_504(server: RunningServer) -> None:
    alice = await user(server, "alice")
    media_id, _ = await create(alice)
    resp = await download(alice, media_id, params={"timeout_ms": "100"})
    assert_error(resp, 504, "M_NOT_YET_UPLOADED")


@pytest_twisted.ensureDeferred
async def test_download_waits_for_the_upload(server: RunningServer) -> None:
    alice = await user(server, "alice")
    media_id, _ = await create(alice)
    waiting = defer.ensureDeferred(download(alice, media_id, params={"timeout_ms": "5000"}))
    await sleep(0.05)
    assert not waiting.called
    started = reactor.seconds()  # type: ignore[attr-defined]
    assert (await put(alice, media_id, b"arrived")).code == 200
    got = await waiting
    assert got.code == 200 and got.raw == b"arrived"
    # Woken by the upload: re-checking only once a second would take ~0.95 s here.
    assert reactor.seconds() - started < 0.6  # type: ignore[attr-defined]


@sqlite_only
@with_config(max_pending_media_uploads=2)
@pytest_twisted.ensureDeferred
async def test_pending_upload_limit(server: RunningServer) -> None:
    alice = await user(server, "alice")
    first, _ = await create(alice)
    await create(alice)
    resp = await alice.post(CREATE)
    assert_error(resp, 429, "M_LIMIT_EXCEEDED")
    assert resp.json["retry_after_ms"] > 0
    # Using one frees a slot.
    assert (await put(alice, first, b"done")).code == 200
    await create(alice)


@sqlite_only
@with_config(rc_media_create={"per_second": 0.01, "burst_count": 2})
@pytest_twisted.ensureDeferred
async def test_create_is_rate_limited(server: RunningServer) -> None:
    alice = await user(server, "alice")
    await create(alice)
    await create(alice)
    assert_error(await alice.post(CREATE), 429, "M_LIMIT_EXCEEDED")


@with_config(unused_expiration_time="300ms")
@pytest_twisted.ensureDeferred
async def test_expired_media_id_cannot_be_used(server: RunningServer) -> None:
    alice = await user(server, "alice")
    media_id, body = await create(alice)
    await sleep(0.4)
    assert_error(await put(alice, media_id, b"late"), 404, "M_NOT_FOUND")
    assert_error(await download(alice, media_id, params={"timeout_ms": "0"}), 404, "M_NOT_FOUND")
