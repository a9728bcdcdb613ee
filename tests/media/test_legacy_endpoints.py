"""The deprecated unauthenticated /_matrix/media/{v3,r0,v1} endpoints and the freeze."""

from __future__ import annotations

import pytest_twisted

from tests.media.helpers import (
    SERVER,
    assert_error,
    image_bytes,
    sqlite_only,
    upload_ok,
    user,
    with_config,
)
from tests.support.server import RunningServer


@pytest_twisted.ensureDeferred
async def test_unauthenticated_download_refused_by_default(server: RunningServer) -> None:
    alice = await user(server, "alice")
    media_id = await upload_ok(alice, b"new media", "text/plain")
    anon = server.client()
    for version in ("v3", "r0", "v1"):
        resp = await anon.get(f"/_matrix/media/{version}/download/{SERVER}/{media_id}")
        assert_error(resp, 404, "M_NOT_FOUND")
        resp = await anon.get(
            f"/_matrix/media/{version}/thumbnail/{SERVER}/{media_id}",
            params={"width": 32, "height": 32},
        )
        assert_error(resp, 404, "M_NOT_FOUND")
    # An access token does not unfreeze the deprecated endpoints.
    resp = await alice.get(f"/_matrix/media/v3/download/{SERVER}/{media_id}")
    assert_error(resp, 404, "M_NOT_FOUND")


@with_config(enable_authenticated_media=False)
@pytest_twisted.ensureDeferred
async def test_unauthenticated_download_allowed_when_enabled(server: RunningServer) -> None:
    alice = await user(server, "alice")
    media_id = await upload_ok(alice, b"public media", "text/plain", filename="p.txt")
    anon = server.client()
    resp = await anon.get(f"/_matrix/media/v3/download/{SERVER}/{media_id}")
    assert resp.code == 200 and resp.raw == b"public media"
    assert resp.header("Content-Disposition") == "inline; filename=p.txt"
    assert resp.header("X-Content-Type-Options") == "nosniff"
    resp = await anon.get(f"/_matrix/media/r0/download/{SERVER}/{media_id}/renamed.txt")
    assert resp.code == 200 and resp.header("Content-Disposition") == (
        "inline; filename=renamed.txt"
    )
    png = await upload_ok(alice, image_bytes("PNG", (200, 200)), "image/png")
    resp = await anon.get(
        f"/_matrix/media/v3/thumbnail/{SERVER}/{png}",
        params={"width": 32, "height": 32, "method": "crop"},
    )
    assert resp.code == 200 and resp.header("Content-Type") == "image/png"
    # The authenticated endpoints serve it too.
    assert (await alice.get(f"/_matrix/client/v1/media/download/{SERVER}/{media_id}")).code == 200


@sqlite_only
@pytest_twisted.ensureDeferred
async def test_media_uploaded_before_the_freeze_stays_public(server: RunningServer) -> None:
    alice = await user(server, "alice")
    media_id = await upload_ok(alice, b"old media", "text/plain")
    # As if uploaded while enable_authenticated_media was off.
    db = server.hs.storage.db
    await db.run_interaction(
        "unfreeze",
        lambda txn: txn.execute(
            "UPDATE media SET authenticated = 0 WHERE media_id = ?", (media_id,)
        ),
    )
    resp = await server.client().get(f"/_matrix/media/v3/download/{SERVER}/{media_id}")
    assert resp.code == 200 and resp.raw == b"old media"


@sqlite_only
@pytest_twisted.ensureDeferred
async def test_legacy_upload_paths_work(server: RunningServer) -> None:
    alice = await user(server, "alice")
    for version in ("r0", "v1"):
        resp = await alice.request(
            "POST",
            f"/_matrix/media/{version}/upload",
            raw=b"x",
            headers={"Content-Type": "text/plain"},
        )
        assert resp.code == 200, resp


@sqlite_only
@pytest_twisted.ensureDeferred
async def test_quarantined_media_is_not_served(server: RunningServer) -> None:
    alice = await user(server, "alice")
    media_id = await upload_ok(alice, b"bad content", "text/plain")
    await server.hs.storage.media.set_quarantined(SERVER, media_id, "@admin:test.local")
    resp = await alice.get(f"/_matrix/client/v1/media/download/{SERVER}/{media_id}")
    assert_error(resp, 404, "M_NOT_FOUND")
    # The same bytes uploaded again are quarantined at once.
    again = await upload_ok(alice, b"bad content", "text/plain")
    resp = await alice.get(f"/_matrix/client/v1/media/download/{SERVER}/{again}")
    assert_error(resp, 404, "M_NOT_FOUND")
    fine = await upload_ok(alice, b"good content", "text/plain")
    assert (await alice.get(f"/_matrix/client/v1/media/download/{SERVER}/{fine}")).code == 200


@sqlite_only
@pytest_twisted.ensureDeferred
async def test_preview_url_is_off_by_default(server: RunningServer) -> None:
    alice = await user(server, "alice")
    resp = await alice.get(
        "/_matrix/client/v1/media/preview_url", params={"url": "https://example.com"}
    )
    assert_error(resp, 404, "M_UNRECOGNIZED")
    resp = await alice.get("/_matrix/media/v3/preview_url", params={"url": "https://example.com"})
    assert_error(resp, 400, "M_UNRECOGNIZED")
