"""Helpers for the media repository tests: images, uploads, downloads, the store on disk."""

from __future__ import annotations

import hashlib
import io
import os
from typing import Any

import treq
from PIL import Image
from twisted.web.client import HTTPConnectionPool

from tests.api.helpers import assert_error, sqlite_only, with_config
from tests.support.client import Client, Response
from tests.support.server import RunningServer

__all__ = ["assert_error", "sqlite_only", "with_config"]

MEDIA_V3 = "/_matrix/media/v3"
CLIENT_MEDIA = "/_matrix/client/v1/media"
SERVER = "test.local"


async def user(server: RunningServer, name: str) -> Client:
    client = server.client()
    await client.register(name, "correct horse")
    return client


async def upload(
    client: Client,
    data: bytes,
    content_type: str | None = "application/octet-stream",
    filename: str | None = None,
) -> Response:
    headers = {"Content-Type": content_type} if content_type is not None else {}
    params = {"filename": filename} if filename is not None else None
    return await client.request(
        "POST", f"{MEDIA_V3}/upload", raw=data, headers=headers, params=params
    )


async def upload_ok(client: Client, data: bytes, content_type: str = "image/png", **kw: Any) -> str:
    """Upload and return the media id."""
    resp = await upload(client, data, content_type, **kw)
    assert resp.code == 200, resp
    mxc = resp.json["content_uri"]
    assert mxc.startswith(f"mxc://{SERVER}/"), mxc
    return str(mxc.rsplit("/", 1)[1])


async def download(client: Client, media_id: str, **kw: Any) -> Response:
    return await client.get(f"{CLIENT_MEDIA}/download/{SERVER}/{media_id}", **kw)


async def thumbnail(
    client: Client, media_id: str, width: int, height: int, method: str = "scale", **params: Any
) -> Response:
    query: dict[str, Any] = {"width": width, "height": height, "method": method, **params}
    return await client.get(f"{CLIENT_MEDIA}/thumbnail/{SERVER}/{media_id}", params=query)


def image_bytes(fmt: str, size: tuple[int, int], *, mode: str = "RGB", **save: Any) -> bytes:
    out = io.BytesIO()
    image = Image.new(mode, size, (200, 30, 30) if mode == "RGB" else None)
    if mode == "RGB":
        # Some structure, so encoders do real work and crops are distinguishable.
        for x in range(0, size[0], max(1, size[0] // 8)):
            image.paste((20, 200, 20), (x, 0, min(size[0], x + 2), size[1]))
    image.save(out, fmt, **save)
    return out.getvalue()


def animated_gif(size: tuple[int, int], frames: int = 4) -> bytes:
    images = [Image.new("RGB", size, (40 * i % 255, 80, 160)) for i in range(frames)]
    out = io.BytesIO()
    images[0].save(out, "GIF", save_all=True, append_images=images[1:], duration=80, loop=0)
    return out.getvalue()


def open_image(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data))


def stored_files(server: RunningServer) -> list[str]:
    """Every file under the media store (temporary files included)."""
    base = server.hs.config.media_store_path
    found = []
    for root, _dirs, files in os.walk(base):
        found.extend(os.path.relpath(os.path.join(root, f), base) for f in files)
    return sorted(found)


_pool = None


def pool() -> HTTPConnectionPool:
    global _pool
    if _pool is None:
        from twisted.internet import reactor

        _pool = HTTPConnectionPool(reactor, persistent=False)
    return _pool


async def download_digest(url: str, token: str) -> tuple[int, str, int, Any]:
    """(status, sha256, size, headers) of a download, hashed as it arrives."""
    resp = await treq.get(url, headers={"Authorization": f"Bearer {token}"}, pool=pool())
    digest = hashlib.sha256()
    size = [0]

    def collect(data: bytes) -> None:
        digest.update(data)
        size[0] += len(data)

    await treq.collect(resp, collect)
    return resp.code, digest.hexdigest(), size[0], resp.headers
