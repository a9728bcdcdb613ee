"""GET /_matrix/federation/v1/media/{download,thumbnail}/{mediaId}: multipart answers."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator

import pytest_twisted
import treq
from twisted.internet import reactor
from twisted.web.server import Request

from homeserver.api.federation_media import FederationMediaServlets
from homeserver.errors import Codes, MatrixError
from homeserver.http.server import JsonResource, MatrixSite
from tests.media.helpers import (
    assert_error,
    image_bytes,
    open_image,
    pool,
    sqlite_only,
    upload_ok,
    user,
)
from tests.support.server import RunningServer

FED = "/_matrix/federation/v1/media"


async def fake_x_matrix(request: Request) -> str:
    if request.getHeader("authorization") != "X-Matrix origin=remote.example,key=k,sig=s":
        raise MatrixError(401, Codes.UNAUTHORIZED, "bad signature")
    return "remote.example"


@pytest_twisted.async_yield_fixture
async def fed_base(server: RunningServer) -> AsyncIterator[str]:
    """The federation media servlets with a stand-in request authenticator."""
    assert server.hs.media is not None
    resource = JsonResource()
    FederationMediaServlets(server.hs.media, authenticate=fake_x_matrix).register(resource)
    site = MatrixSite(resource, max_body_size=1024, x_forwarded=False)
    port = reactor.listenTCP(0, site, interface="127.0.0.1")  # type: ignore[attr-defined]
    try:
        yield f"http://127.0.0.1:{port.getHost().port}"
    finally:
        await port.stopListening()


async def fed_get(url: str, **params: object) -> tuple[int, str, bytes]:
    resp = await treq.get(
        url,
        params={k: str(v) for k, v in params.items()},
        headers={"Authorization": "X-Matrix origin=remote.example,key=k,sig=s"},
        pool=pool(),
    )
    return (
        resp.code,
        (resp.headers.getRawHeaders("content-type") or [""])[0],
        await treq.content(resp),
    )


def parse_multipart(content_type: str, body: bytes) -> list[tuple[dict[str, str], bytes]]:
    assert content_type.startswith("multipart/mixed; boundary=")
    boundary = content_type.split("boundary=", 1)[1].encode()
    assert body.endswith(b"\r\n--" + boundary + b"--\r\n")
    inner = body[: -len(b"--" + boundary + b"--\r\n")]
    parts = []
    for raw in inner.split(b"--" + boundary + b"\r\n")[1:]:
        assert raw.endswith(b"\r\n")  # every part ends with the delimiter's CRLF
        head, _, content = raw[:-2].partition(b"\r\n\r\n")
        headers = dict(line.decode().split(": ", 1) for line in head.split(b"\r\n") if line)
        parts.append((headers, content))
    return parts


@sqlite_only
@pytest_twisted.ensureDeferred
async def test_unauthenticated_federation_requests_are_refused(server: RunningServer) -> None:
    alice = await user(server, "alice")
    media_id = await upload_ok(alice, b"data", "text/plain")
    anon = server.client()
    assert_error(await anon.get(f"{FED}/download/{media_id}"), 401, "M_UNAUTHORIZED")
    resp = await anon.get(f"{FED}/thumbnail/{media_id}", params={"width": 32, "height": 32})
    assert_error(resp, 401, "M_UNAUTHORIZED")
    # A user's access token is not a server's signature.
    assert_error(await alice.get(f"{FED}/download/{media_id}"), 401, "M_UNAUTHORIZED")


@pytest_twisted.ensureDeferred
async def test_download_is_multipart_json_then_file(server: RunningServer, fed_base: str) -> None:
    alice = await user(server, "alice")
    data = os.urandom(5000) + b"\r\n--not-a-boundary\r\n"
    media_id = await upload_ok(alice, data, "application/pdf", filename="doc.pdf")
    code, content_type, body = await fed_get(f"{fed_base}{FED}/download/{media_id}")
    assert code == 200, body
    (meta_headers, meta), (file_headers, content) = parse_multipart(content_type, body)
    assert meta_headers["Content-Type"] == "application/json"
    assert json.loads(meta) == {}
    assert file_headers["Content-Type"] == "application/pdf"
    assert file_headers["Content-Disposition"] == "attachment; filename=doc.pdf"
    assert content == data


@sqlite_only
@pytest_twisted.ensureDeferred
async def test_thumbnail_is_multipart(server: RunningServer, fed_base: str) -> None:
    alice = await user(server, "alice")
    media_id = await upload_ok(alice, image_bytes("JPEG", (640, 480)), "image/jpeg")
    code, content_type, body = await fed_get(
        f"{fed_base}{FED}/thumbnail/{media_id}", width=96, height=96, method="crop"
    )
    assert code == 200, body
    (_, meta), (file_headers, content) = parse_multipart(content_type, body)
    assert json.loads(meta) == {}
    assert file_headers["Content-Type"] == "image/jpeg"
    assert file_headers["Content-Disposition"] == "inline; filename=thumbnail.jpg"
    assert open_image(content).size == (96, 96)


@sqlite_only
@pytest_twisted.ensureDeferred
async def test_federation_errors(server: RunningServer, fed_base: str) -> None:
    code, _, body = await fed_get(f"{fed_base}{FED}/download/UnknownMediaId")
    assert code == 404 and json.loads(body)["errcode"] == "M_NOT_FOUND"
    resp = await treq.get(f"{fed_base}{FED}/download/UnknownMediaId", pool=pool())
    assert resp.code == 401
    await treq.content(resp)
