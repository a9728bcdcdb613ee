"""GET /_matrix/client/v1/media/preview_url against pages served on loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.web import resource, server

from tests.media.helpers import assert_error, download, image_bytes, open_image, user, with_config
from tests.support.server import RunningServer

PREVIEW = "/_matrix/client/v1/media/preview_url"
PNG = image_bytes("PNG", (120, 80))

PAGE = b"""<!doctype html><html><head><meta charset="utf-8">
<title>Ignored title</title>
<meta property="og:title" content="A caf\xc3\xa9 page">
<meta property="og:description" content="Described &amp; escaped">
<meta property="og:image" content="/img.png">
</head><body>hello</body></html>"""

PLAIN = b"""<html><head><title>  Plain
  title </title><meta name="description" content="From meta"></head></html>"""


class _Static(resource.Resource):
    isLeaf = True

    def __init__(self, body: bytes, content_type: bytes, code: int = 200) -> None:
        super().__init__()
        self._body, self._type, self._code = body, content_type, code

    def render_GET(self, request: Any) -> bytes:
        request.setResponseCode(self._code)
        request.setHeader(b"Content-Type", self._type)
        return self._body


class _Redirect(resource.Resource):
    isLeaf = True

    def __init__(self, target: bytes) -> None:
        super().__init__()
        self._target = target

    def render_GET(self, request: Any) -> bytes:
        request.redirect(self._target)
        return b""


@pytest_twisted.async_yield_fixture
async def pages() -> AsyncIterator[str]:
    root = resource.Resource()
    root.putChild(b"page.html", _Static(PAGE, b"text/html"))
    root.putChild(b"plain.html", _Static(PLAIN, b"text/html; charset=utf-8"))
    root.putChild(b"img.png", _Static(PNG, b"image/png"))
    root.putChild(b"big.html", _Static(b"<html>" + b"x" * 2_000_000, b"text/html"))
    root.putChild(b"missing", _Static(b"nope", b"text/plain", 404))
    root.putChild(b"data.bin", _Static(b"\x00\x01", b"application/octet-stream"))
    port = reactor.listenTCP(0, server.Site(root), interface="127.0.0.1")  # type: ignore[attr-defined]
    base = f"http://127.0.0.1:{port.getHost().port}"
    root.putChild(b"away", _Redirect(f"http://127.0.0.2:{port.getHost().port}/page.html".encode()))
    try:
        yield base
    finally:
        await port.stopListening()


ENABLED = with_config(
    url_preview_enabled=True,
    url_preview_ip_range_whitelist=["127.0.0.1/32"],
    max_spider_size="1M",
)


@pytest.mark.parametrize("db_kind", ["sqlite"])
@ENABLED
@pytest_twisted.ensureDeferred
async def test_preview_of_a_page_with_opengraph_and_image(
    server: RunningServer, pages: str
) -> None:
    alice = await user(server, "alice")
    resp = await alice.get(PREVIEW, params={"url": f"{pages}/page.html"})
    assert resp.code == 200, resp
    og = resp.json
    assert og["og:title"] == "A café page"
    assert og["og:description"] == "Described & escaped"
    assert og["og:image"].startswith("mxc://test.local/")
    assert og["matrix:image:size"] == len(PNG)
    assert og["og:image:type"] == "image/png"
    assert (og["og:image:width"], og["og:image:height"]) == (120, 80)
    stored = await download(alice, og["og:image"].rsplit("/", 1)[1])
    assert stored.code == 200 and stored.raw == PNG
    # Preview images do not count as the user's uploads.
    usage = await server.hs.storage.media.get_usage("@alice:test.local")
    assert usage.total_bytes == 0


@pytest.mark.parametrize("db_kind", ["sqlite"])
@ENABLED
@pytest_twisted.ensureDeferred
async def test_preview_falls_back_to_title_and_description(
    server: RunningServer, pages: str
) -> None:
    alice = await user(server, "alice")
    resp = await alice.get(PREVIEW, params={"url": f"{pages}/plain.html"})
    assert resp.code == 200, resp
    assert resp.json == {"og:title": "Plain title", "og:description": "From meta"}
    other = await alice.get(PREVIEW, params={"url": f"{pages}/data.bin"})
    assert other.code == 200 and other.json == {}


@pytest.mark.parametrize("db_kind", ["sqlite"])
@ENABLED
@pytest_twisted.ensureDeferred
async def test_preview_of_an_image_url(server: RunningServer, pages: str) -> None:
    alice = await user(server, "alice")
    resp = await alice.get(PREVIEW, params={"url": f"{pages}/img.png"})
    assert resp.code == 200, resp
    media_id = resp.json["og:image"].rsplit("/", 1)[1]
    thumb = await alice.get(
        f"/_matrix/client/v1/media/thumbnail/test.local/{media_id}",
        params={"width": 32, "height": 32, "method": "crop"},
    )
    assert thumb.code == 200 and open_image(thumb.raw).size == (32, 32)


@pytest.mark.parametrize("db_kind", ["sqlite"])
@ENABLED
@pytest_twisted.ensureDeferred
async def test_preview_refusals(server: RunningServer, pages: str) -> None:
    alice = await user(server, "alice")
    too_big = await alice.get(PREVIEW, params={"url": f"{pages}/big.html"})
    assert_error(too_big, 502, "M_TOO_LARGE")
    missing = await alice.get(PREVIEW, params={"url": f"{pages}/missing"})
    assert_error(missing, 502, "M_UNKNOWN")
    # A redirect to a loopback address that is not whitelisted.
    away = await alice.get(PREVIEW, params={"url": f"{pages}/away"})
    assert_error(away, 403, "M_UNKNOWN")
    assert_error(await alice.get(PREVIEW, params={"url": "ftp://127.0.0.1/x"}), 400, "M_UNKNOWN")
    assert_error(await alice.get(PREVIEW), 400, "M_MISSING_PARAM")
    assert_error(
        await server.client().get(PREVIEW, params={"url": f"{pages}/page.html"}),
        401,
        "M_MISSING_TOKEN",
    )


@pytest.mark.parametrize("db_kind", ["sqlite"])
@with_config(url_preview_enabled=True)
@pytest_twisted.ensureDeferred
async def test_loopback_is_blocked_without_a_whitelist(server: RunningServer, pages: str) -> None:
    alice = await user(server, "alice")
    resp = await alice.get(PREVIEW, params={"url": f"{pages}/page.html"})
    assert_error(resp, 403, "M_UNKNOWN")
    unspecified = await alice.get(PREVIEW, params={"url": "http://0.0.0.0:1/"})
    assert_error(unspecified, 403, "M_UNKNOWN")
