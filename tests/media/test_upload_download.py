"""POST /_matrix/media/v3/upload and GET /_matrix/client/v1/media/download: bytes, headers."""

from __future__ import annotations

import os

import pytest_twisted

from tests.media.helpers import (
    CLIENT_MEDIA,
    MEDIA_V3,
    SERVER,
    assert_error,
    download,
    sqlite_only,
    stored_files,
    upload,
    upload_ok,
    user,
    with_config,
)
from tests.support.server import RunningServer


@pytest_twisted.ensureDeferred
async def test_small_upload_downloads_byte_identical(server: RunningServer) -> None:
    alice = await user(server, "alice")
    data = os.urandom(3000) + b"\x00\r\n" + os.urandom(5)
    media_id = await upload_ok(alice, data, "application/octet-stream")
    resp = await download(alice, media_id)
    assert resp.code == 200, resp
    assert resp.raw == data
    assert resp.header("Content-Type") == "application/octet-stream"


@pytest_twisted.ensureDeferred
async def test_empty_upload_is_stored_and_served(server: RunningServer) -> None:
    alice = await user(server, "alice")
    media_id = await upload_ok(alice, b"", "text/plain")
    resp = await download(alice, media_id)
    assert resp.code == 200 and resp.raw == b"", resp


@pytest_twisted.ensureDeferred
async def test_upload_without_content_type_defaults_to_octet_stream(server: RunningServer) -> None:
    alice = await user(server, "alice")
    # treq sends no Content-Type for raw bytes unless told to.
    resp = await alice.request(
        "POST", f"{MEDIA_V3}/upload", raw=b"abc", headers={"Content-Type": ""}
    )
    assert resp.code == 200, resp
    media_id = resp.json["content_uri"].rsplit("/", 1)[1]
    assert (await download(alice, media_id)).header("Content-Type") == "application/octet-stream"


@sqlite_only
@pytest_twisted.ensureDeferred
async def test_upload_needs_an_access_token(server: RunningServer) -> None:
    anon = server.client()
    resp = await upload(anon, b"data")
    assert_error(resp, 401, "M_MISSING_TOKEN")
    assert stored_files(server) == []


@sqlite_only
@pytest_twisted.ensureDeferred
async def test_download_needs_an_access_token(server: RunningServer) -> None:
    alice = await user(server, "alice")
    media_id = await upload_ok(alice, b"secret", "text/plain")
    resp = await server.client().get(f"{CLIENT_MEDIA}/download/{SERVER}/{media_id}")
    assert_error(resp, 401, "M_MISSING_TOKEN")


@sqlite_only
@pytest_twisted.ensureDeferred
async def test_invalid_content_type_is_refused(server: RunningServer) -> None:
    alice = await user(server, "alice")
    resp = await upload(alice, b"x", "not a type")
    assert_error(resp, 400, "M_INVALID_PARAM")


@pytest_twisted.ensureDeferred
async def test_unknown_media_is_404(server: RunningServer) -> None:
    alice = await user(server, "alice")
    assert_error(await download(alice, "NoSuchMediaIdHere"), 404, "M_NOT_FOUND")
    # Characters outside [A-Za-z0-9_-] can never name media (no path traversal).
    resp = await alice.get(f"{CLIENT_MEDIA}/download/{SERVER}/..%2F..%2Fetc")
    assert_error(resp, 404, "M_NOT_FOUND")


@sqlite_only
@pytest_twisted.ensureDeferred
async def test_remote_and_invalid_server_names(server: RunningServer) -> None:
    alice = await user(server, "alice")
    # allow_remote=false: never fetched, so unknown.
    resp = await alice.get(
        f"{CLIENT_MEDIA}/download/other.example/abcdefgh", params={"allow_remote": "false"}
    )
    assert_error(resp, 404, "M_NOT_FOUND")
    # A server that cannot be reached: 502, as Synapse.
    resp = await alice.get(f"{CLIENT_MEDIA}/download/other.invalid/abcdefgh")
    assert_error(resp, 502, "M_UNKNOWN")
    resp = await alice.get(f"{CLIENT_MEDIA}/download/bad_server!name/abcdefgh")
    assert_error(resp, 400, "M_INVALID_PARAM")


# Headers ----------------------------------------------------------------------------


@sqlite_only
@pytest_twisted.ensureDeferred
async def test_security_headers_on_downloads(server: RunningServer) -> None:
    alice = await user(server, "alice")
    media_id = await upload_ok(alice, b"<script>alert(1)</script>", "text/html")
    resp = await download(alice, media_id)
    assert resp.code == 200
    csp = resp.header("Content-Security-Policy") or ""
    assert csp.startswith("sandbox;") and "default-src 'none'" in csp
    assert "script-src 'none'" in csp
    assert resp.header("X-Content-Type-Options") == "nosniff"
    assert resp.header("Cross-Origin-Resource-Policy") == "cross-origin"
    assert resp.header("Access-Control-Allow-Origin") == "*"
    # HTML can run script: never inline.
    assert resp.header("Content-Disposition") == "attachment"
    assert resp.header("Content-Type") == "text/html; charset=UTF-8"


@sqlite_only
@pytest_twisted.ensureDeferred
async def test_content_disposition_inline_for_safe_types_with_filename(
    server: RunningServer,
) -> None:
    alice = await user(server, "alice")
    media_id = await upload_ok(alice, b"GIF89a...", "image/gif", filename="cat.gif")
    resp = await download(alice, media_id)
    assert resp.header("Content-Disposition") == "inline; filename=cat.gif"
    assert resp.header("Content-Type") == "image/gif"
    svg = await upload_ok(alice, b"<svg/>", "image/svg+xml", filename="a.svg")
    assert (await download(alice, svg)).header("Content-Disposition") == (
        "attachment; filename=a.svg"
    )


@sqlite_only
@pytest_twisted.ensureDeferred
async def test_non_token_filenames_use_rfc5987_encoding(server: RunningServer) -> None:
    alice = await user(server, "alice")
    media_id = await upload_ok(alice, b"x", "text/plain", filename="War and Peace é.txt")
    resp = await download(alice, media_id)
    assert resp.header("Content-Disposition") == (
        "inline; filename*=utf-8''War%20and%20Peace%20%C3%A9.txt"
    )


@sqlite_only
@pytest_twisted.ensureDeferred
async def test_filename_in_path_overrides_upload_name(server: RunningServer) -> None:
    alice = await user(server, "alice")
    media_id = await upload_ok(alice, b"%PDF-1.4", "application/pdf", filename="orig.pdf")
    resp = await alice.get(f"{CLIENT_MEDIA}/download/{SERVER}/{media_id}/other.pdf")
    assert resp.code == 200
    assert resp.header("Content-Disposition") == "attachment; filename=other.pdf"
    no_name = await upload_ok(alice, b"abc", "text/plain")
    assert (await download(alice, no_name)).header("Content-Disposition") == "inline"


@sqlite_only
@pytest_twisted.ensureDeferred
async def test_etag_and_conditional_get(server: RunningServer) -> None:
    alice = await user(server, "alice")
    media_id = await upload_ok(alice, b"cache me", "text/plain")
    first = await download(alice, media_id)
    etag = first.header("ETag")
    assert etag is not None and etag.startswith('"')
    assert "max-age" in (first.header("Cache-Control") or "")
    again = await download(alice, media_id, headers={"If-None-Match": etag})
    assert again.code == 304 and again.raw == b""
    other = await download(alice, media_id, headers={"If-None-Match": '"nope"'})
    assert other.code == 200 and other.raw == b"cache me"


@sqlite_only
@pytest_twisted.ensureDeferred
async def test_head_gives_headers_without_body(server: RunningServer) -> None:
    alice = await user(server, "alice")
    media_id = await upload_ok(alice, b"0123456789", "text/plain")
    resp = await alice.request("HEAD", f"{CLIENT_MEDIA}/download/{SERVER}/{media_id}")
    assert resp.code == 200 and resp.raw == b""
    assert resp.header("Content-Length") == "10"


# Ranges -----------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_range_requests(server: RunningServer) -> None:
    alice = await user(server, "alice")
    data = os.urandom(1_000_000)
    media_id = await upload_ok(alice, data, "video/mp4")
    full = await download(alice, media_id)
    assert full.header("Accept-Ranges") == "bytes"

    part = await download(alice, media_id, headers={"Range": "bytes=100-199"})
    assert part.code == 206, part
    assert part.raw == data[100:200]
    assert part.header("Content-Range") == f"bytes 100-199/{len(data)}"

    tail = await download(alice, media_id, headers={"Range": "bytes=999000-"})
    assert tail.code == 206 and tail.raw == data[999000:]
    suffix = await download(alice, media_id, headers={"Range": "bytes=-10"})
    assert suffix.code == 206 and suffix.raw == data[-10:]
    clamped = await download(alice, media_id, headers={"Range": "bytes=999990-2000000"})
    assert clamped.code == 206 and clamped.raw == data[999990:]

    beyond = await download(alice, media_id, headers={"Range": "bytes=2000000-"})
    assert beyond.code == 416, beyond
    assert beyond.header("Content-Range") == f"bytes */{len(data)}"

    # Several ranges, or an If-Range that does not match: the whole file.
    multi = await download(alice, media_id, headers={"Range": "bytes=0-1,5-6"})
    assert multi.code == 200 and multi.raw == data
    stale = await download(alice, media_id, headers={"Range": "bytes=0-1", "If-Range": '"other"'})
    assert stale.code == 200 and len(stale.raw) == len(data)
    etag = full.header("ETag")
    assert etag is not None
    fresh = await download(alice, media_id, headers={"Range": "bytes=0-1", "If-Range": etag})
    assert fresh.code == 206 and fresh.raw == data[:2]


# Limits -----------------------------------------------------------------------------


@with_config(max_upload_size="100K")
@pytest_twisted.ensureDeferred
async def test_upload_over_the_limit_is_413_and_leaves_nothing(server: RunningServer) -> None:
    alice = await user(server, "alice")
    resp = await upload(alice, os.urandom(100 * 1024 + 1))
    assert_error(resp, 413, "M_TOO_LARGE")
    assert [f for f in stored_files(server)] == []
    # Exactly at the limit is fine, and the JSON body limit does not apply to uploads.
    ok = await upload(alice, os.urandom(100 * 1024))
    assert ok.code == 200, ok


@sqlite_only
@with_config(max_upload_size="1M", max_request_body_size="10K")
@pytest_twisted.ensureDeferred
async def test_upload_limit_is_separate_from_json_body_limit(server: RunningServer) -> None:
    alice = await user(server, "alice")
    ok = await upload(alice, os.urandom(500_000))
    assert ok.code == 200, ok
    resp = await alice.put(
        "/_matrix/client/v3/profile/" + "%40alice%3Atest.local" + "/displayname",
        {"displayname": "x" * 20_000},
    )
    assert_error(resp, 413, "M_TOO_LARGE")


@sqlite_only
@with_config(max_upload_size="200K")
@pytest_twisted.ensureDeferred
async def test_chunked_upload_over_the_limit_is_cut_off_while_streaming(
    server: RunningServer,
) -> None:
    from tests.media.streaming import chunked_upload

    alice = await user(server, "alice")
    assert alice.access_token is not None
    code, body = await chunked_upload(
        server.base_url + f"{MEDIA_V3}/upload", alice.access_token, total=1024 * 1024
    )
    assert code == 413, body
    assert body["errcode"] == "M_TOO_LARGE"
    assert stored_files(server) == []
    code, body = await chunked_upload(
        server.base_url + f"{MEDIA_V3}/upload", alice.access_token, total=150 * 1024
    )
    assert code == 200, body


@with_config(media_upload_limits=[{"time_period": "1d", "max_size": 10000}])
@pytest_twisted.ensureDeferred
async def test_per_user_quota(server: RunningServer) -> None:
    alice = await user(server, "alice")
    bob = await user(server, "bob")
    assert (await upload(alice, os.urandom(6000))).code == 200
    over = await upload(alice, os.urandom(6000))
    assert_error(over, 403, "M_FORBIDDEN")
    assert (await upload(alice, os.urandom(4000))).code == 200
    assert_error(await upload(alice, b"x"), 403, "M_FORBIDDEN")
    # Quotas are per user.
    assert (await upload(bob, os.urandom(9000))).code == 200
    usage = await server.hs.storage.media.get_usage("@alice:test.local")
    assert (usage.media_count, usage.total_bytes) == (2, 10000)
    # Refused uploads leave no file behind: 3 uploads stored, each one content file.
    contents = [f for f in stored_files(server) if f.startswith("local_content/")]
    assert len(contents) == 3


@sqlite_only
@pytest_twisted.ensureDeferred
async def test_media_config(server: RunningServer) -> None:
    alice = await user(server, "alice")
    resp = await alice.get(f"{CLIENT_MEDIA}/config")
    assert resp.code == 200 and resp.json == {"m.upload.size": 50 * 1024 * 1024}
    legacy = await alice.get(f"{MEDIA_V3}/config")
    assert legacy.code == 200 and legacy.json == resp.json
    assert_error(await server.client().get(f"{CLIENT_MEDIA}/config"), 401, "M_MISSING_TOKEN")


@sqlite_only
@pytest_twisted.ensureDeferred
async def test_client_leaving_mid_upload_leaves_no_orphan_files(server: RunningServer) -> None:
    from tests.media.streaming import send_and_hang_up

    alice = await user(server, "alice")
    assert alice.access_token is not None
    body = os.urandom(8 * 1024 * 1024)
    await send_and_hang_up(server.base_url, f"{MEDIA_V3}/upload", alice.access_token, body)
    # Whatever the server was doing when the client left, it finishes or undoes it.
    for _ in range(100):
        files = stored_files(server)
        if not any(f.startswith("tmp/") for f in files):
            break
        await sleep(0.05)
    await sleep(0.3)
    files = stored_files(server)
    assert not any(f.startswith("tmp/") for f in files), files
    rows = await server.hs.storage.db.run_interaction(
        "rows", lambda txn: txn.select_all("SELECT media_id, size FROM media")
    )
    contents = [f for f in files if f.startswith("local_content/")]
    assert len(contents) == len(rows)
    for media_id, size in rows:
        assert size == len(body)
        assert f"local_content/{media_id[:2]}/{media_id[2:4]}/{media_id[4:]}" in contents


async def sleep(seconds: float) -> None:
    from twisted.internet import reactor, task

    await task.deferLater(reactor, seconds, lambda: None)
