"""Remote media: a user of B downloads media uploaded on A, over real HTTPS federation."""

from __future__ import annotations

import io
import json
import os
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer

from federation.interfaces import FederationRequestError
from homeserver.http.responses import MultipartFileResponse
from tests.media.helpers import assert_error, image_bytes, open_image, sqlite_only, stored_files
from tests.media.test_federation_media import parse_multipart
from tests.support.client import Client
from tests.support.federation import start_federating_server
from tests.support.server import RunningServer

CLIENT_MEDIA = "/_matrix/client/v1/media"
FED_MEDIA = "/_matrix/federation/v1/media"


@pytest.fixture
def a_overrides() -> dict[str, Any]:
    return {}


@pytest.fixture
def b_overrides() -> dict[str, Any]:
    return {}


class Pair:
    def __init__(self, a: RunningServer, b: RunningServer) -> None:
        self.a, self.b = a, b
        self.a_name = a.hs.config.server_name
        self.a_running = True

    async def stop_a(self) -> None:
        await self.a.stop()
        self.a_running = False


@pytest_twisted.async_yield_fixture
async def pair(
    database: dict[str, Any],
    database_b: dict[str, Any],
    tmp_path: Any,
    a_overrides: Any,
    b_overrides: Any,
) -> AsyncIterator[Pair]:
    a = await start_federating_server(str(tmp_path / "a"), database, **a_overrides)
    b = await start_federating_server(str(tmp_path / "b"), database_b, **b_overrides)
    p = Pair(a, b)
    try:
        yield p
    finally:
        if p.a_running:
            await a.stop()
        await b.stop()


async def user(server: RunningServer, name: str) -> Client:
    client = server.client()
    await client.register(name, "correct horse")
    return client


async def upload(
    client: Client, data: bytes, content_type: str, filename: str | None = None
) -> str:
    params = {"filename": filename} if filename else None
    resp = await client.request(
        "POST",
        "/_matrix/media/v3/upload",
        raw=data,
        headers={"Content-Type": content_type},
        params=params,
    )
    assert resp.code == 200, resp
    return str(resp.json["content_uri"]).rsplit("/", 1)[1]


def remote_files(server: RunningServer) -> list[str]:
    return [f for f in stored_files(server) if f.startswith(("remote_", "tmp/"))]


class FetchCounter:
    """Counts B's downloads from other servers (wraps the real fetcher; nothing faked)."""

    def __init__(self, server: RunningServer) -> None:
        assert server.hs.media is not None
        fetcher: Any = server.hs.media._remote
        self.calls = 0
        real = fetcher.fetch

        async def counting(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            return await real(*args, **kwargs)

        fetcher.fetch = counting


@pytest_twisted.ensureDeferred
async def test_remote_download_is_fetched_once_then_served_from_cache(pair: Pair) -> None:
    alice, bob = await user(pair.a, "alice"), await user(pair.b, "bob")
    data = os.urandom(300_000) + b"\r\n--boundary-lookalike\r\n"
    media_id = await upload(alice, data, "application/pdf", "report v2.pdf")
    counter = FetchCounter(pair.b)

    url = f"{CLIENT_MEDIA}/download/{pair.a_name}/{media_id}"
    resp = await bob.get(url)
    assert resp.code == 200, resp
    assert resp.raw == data
    assert resp.header("Content-Type") == "application/pdf"
    assert resp.header("Content-Disposition") == "attachment; filename*=utf-8''report%20v2.pdf"
    assert counter.calls == 1
    assert any(f.startswith(f"remote_content/{pair.a_name}/") for f in remote_files(pair.b))

    # The origin goes away: B still serves its copy, without asking.
    await pair.stop_a()
    resp = await bob.get(url)
    assert resp.code == 200, resp
    assert resp.raw == data
    assert counter.calls == 1
    # allow_remote=false serves what is cached.
    resp = await bob.get(url, params={"allow_remote": "false"})
    assert resp.code == 200 and resp.raw == data
    # Uncached media of the stopped origin: unreachable, 502 as Synapse.
    assert_error(
        await bob.get(f"{CLIENT_MEDIA}/download/{pair.a_name}/NotFetchedYet"), 502, "M_UNKNOWN"
    )


@sqlite_only
@pytest_twisted.ensureDeferred
async def test_remote_thumbnail(pair: Pair) -> None:
    alice, bob = await user(pair.a, "alice"), await user(pair.b, "bob")
    media_id = await upload(alice, image_bytes("PNG", (800, 600)), "image/png")
    resp = await bob.get(
        f"{CLIENT_MEDIA}/thumbnail/{pair.a_name}/{media_id}",
        params={"width": 64, "height": 64, "method": "crop"},
    )
    assert resp.code == 200, resp
    assert resp.header("Content-Type") in ("image/png", "image/jpeg")
    assert open_image(resp.raw).size == (96, 96)  # the nearest configured crop, as locally
    # A size no configured thumbnail matches (made from the cached original).
    resp = await bob.get(
        f"{CLIENT_MEDIA}/thumbnail/{pair.a_name}/{media_id}",
        params={"width": 400, "height": 300, "method": "scale"},
    )
    assert resp.code == 200, resp
    assert open_image(resp.raw).size[0] <= 800
    assert any(f.startswith(f"remote_thumbnails/{pair.a_name}/") for f in remote_files(pair.b))


@sqlite_only
@pytest_twisted.ensureDeferred
async def test_unknown_and_allow_remote_false(pair: Pair) -> None:
    alice, bob = await user(pair.a, "alice"), await user(pair.b, "bob")
    counter = FetchCounter(pair.b)
    resp = await bob.get(f"{CLIENT_MEDIA}/download/{pair.a_name}/UnknownMediaIdHere")
    assert_error(resp, 404, "M_NOT_FOUND")
    assert counter.calls == 1
    media_id = await upload(alice, b"hello", "text/plain")
    resp = await bob.get(
        f"{CLIENT_MEDIA}/download/{pair.a_name}/{media_id}", params={"allow_remote": "false"}
    )
    assert_error(resp, 404, "M_NOT_FOUND")
    assert counter.calls == 1  # never asked
    assert remote_files(pair.b) == []


@sqlite_only
@pytest.mark.parametrize("b_overrides", [{"max_upload_size": 10_000}])
@pytest_twisted.ensureDeferred
async def test_too_large_remote_file_is_refused_and_nothing_kept(pair: Pair) -> None:
    alice, bob = await user(pair.a, "alice"), await user(pair.b, "bob")
    big = await upload(alice, os.urandom(50_000), "application/octet-stream")
    resp = await bob.get(f"{CLIENT_MEDIA}/download/{pair.a_name}/{big}")
    assert_error(resp, 502, "M_TOO_LARGE")
    assert remote_files(pair.b) == []
    resp = await bob.get(
        f"{CLIENT_MEDIA}/download/{pair.a_name}/{big}", params={"allow_remote": "false"}
    )
    assert_error(resp, 404, "M_NOT_FOUND")
    # Just under the limit is fine.
    small = await upload(alice, os.urandom(9_000), "application/octet-stream")
    resp = await bob.get(f"{CLIENT_MEDIA}/download/{pair.a_name}/{small}")
    assert resp.code == 200 and len(resp.raw) == 9_000


@sqlite_only
@pytest_twisted.ensureDeferred
async def test_concurrent_downloads_fetch_once(pair: Pair) -> None:
    alice, bob = await user(pair.a, "alice"), await user(pair.b, "bob")
    data = os.urandom(2_000_000)
    media_id = await upload(alice, data, "application/octet-stream")
    counter = FetchCounter(pair.b)
    url = f"{CLIENT_MEDIA}/download/{pair.a_name}/{media_id}"
    results = await defer.gatherResults(
        [defer.ensureDeferred(bob.get(url)) for _ in range(6)], consumeErrors=True
    )
    assert [r.code for r in results] == [200] * 6
    assert all(r.raw == data for r in results)
    assert counter.calls == 1


@sqlite_only
@pytest_twisted.ensureDeferred
async def test_federation_media_requires_a_signature(pair: Pair) -> None:
    alice = await user(pair.a, "alice")
    media_id = await upload(alice, b"signed only", "text/plain", "s.txt")
    assert pair.b.hs.media is not None
    client: Any = pair.b.hs.media._remote._client  # B's federation client
    path = f"{FED_MEDIA}/download/{media_id}"

    response = await client.send("GET", pair.a_name, path, sign=False)
    body = await _content(response)
    assert response.code == 401, body
    assert json.loads(body)["errcode"] == "M_UNAUTHORIZED"

    response = await client.send("GET", pair.a_name, path)
    body = await _content(response)
    assert response.code == 200, body
    content_type = response.headers.getRawHeaders("content-type")[0]
    (_, meta), (headers, content) = parse_multipart(content_type, body)
    assert json.loads(meta) == {}
    assert content == b"signed only"
    assert headers["Content-Disposition"] == "inline; filename=s.txt"

    # JSON requests through the same client still work (and carry errors).
    with pytest.raises(FederationRequestError) as err:
        await client.get_json(pair.a_name, f"{FED_MEDIA}/download/NoSuchMedia")
    assert err.value.code == 404 and err.value.errcode == "M_NOT_FOUND"


@sqlite_only
@pytest.mark.parametrize("a_overrides", [{"enable_authenticated_media": False}])
@pytest_twisted.ensureDeferred
async def test_fallback_to_legacy_download_for_old_servers(pair: Pair) -> None:
    """A server without the federation media endpoints (404 M_UNRECOGNIZED) is asked
    at /_matrix/media/v3/download with allow_remote=false."""
    resource: Any = pair.a.hs.resource
    resource._routes = [r for r in resource._routes if not r.pattern.startswith(FED_MEDIA)]
    alice, bob = await user(pair.a, "alice"), await user(pair.b, "bob")
    media_id = await upload(alice, b"from an old server", "text/plain", "old.txt")
    resp = await bob.get(f"{CLIENT_MEDIA}/download/{pair.a_name}/{media_id}")
    assert resp.code == 200, resp
    assert resp.raw == b"from an old server"
    assert resp.header("Content-Disposition") == "inline; filename=old.txt"
    resp = await bob.get(f"{CLIENT_MEDIA}/download/{pair.a_name}/MissingOnTheOldServer")
    assert_error(resp, 404, "M_NOT_FOUND")


@sqlite_only
@pytest.mark.parametrize("a_overrides", [{"enable_authenticated_media": False}])
@pytest_twisted.ensureDeferred
async def test_location_part_is_followed(pair: Pair) -> None:
    """A remote may answer with a Location instead of the bytes (a CDN): B follows it
    with a plain GET. Here A's download route is swapped for one that points at A's own
    unauthenticated client endpoint."""
    alice, bob = await user(pair.a, "alice"), await user(pair.b, "bob")
    media_id = await upload(alice, b"behind a redirect", "text/plain", "cdn.txt")
    target = f"{pair.a.base_url}/_matrix/media/v3/download/{pair.a_name}/{media_id}"

    async def redirecting(request: Any, mediaId: str) -> tuple[int, Any]:
        return 200, MultipartFileResponse(
            open_file=lambda: io.BytesIO(b""), size=0, part_headers={"Location": target}
        )

    resource: Any = pair.a.hs.resource
    resource._routes = [r for r in resource._routes if not r.pattern.startswith(FED_MEDIA)]
    resource.register("GET", f"{FED_MEDIA}/download/{{mediaId}}", redirecting)
    resp = await bob.get(f"{CLIENT_MEDIA}/download/{pair.a_name}/{media_id}")
    assert resp.code == 200, resp
    assert resp.raw == b"behind a redirect"
    assert resp.header("Content-Disposition") == "inline; filename=cdn.txt"


async def _content(response: Any) -> bytes:
    import treq

    return bytes(await treq.content(response))


@sqlite_only
@pytest.mark.parametrize(
    "b_overrides",
    [{"remote_media_download_burst_count": "1536K", "remote_media_download_per_second": 1}],
)
@pytest_twisted.ensureDeferred
async def test_remote_downloads_are_rate_limited_per_address(pair: Pair) -> None:
    alice, bob = await user(pair.a, "alice"), await user(pair.b, "bob")
    first = await upload(alice, os.urandom(1_000_000), "application/octet-stream")
    second = await upload(alice, os.urandom(1000), "application/octet-stream")
    resp = await bob.get(f"{CLIENT_MEDIA}/download/{pair.a_name}/{first}")
    assert resp.code == 200, resp
    # A fetch needs 1 MiB of allowance left: only ~0.5 MiB is.
    resp = await bob.get(f"{CLIENT_MEDIA}/download/{pair.a_name}/{second}")
    assert_error(resp, 429, "M_LIMIT_EXCEEDED")
    # What is cached is not counted.
    resp = await bob.get(f"{CLIENT_MEDIA}/download/{pair.a_name}/{first}")
    assert resp.code == 200, resp
