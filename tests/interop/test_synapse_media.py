"""Remote media between our server and Synapse, both ways, over real federation."""

from __future__ import annotations

import os

import pytest_twisted

from tests.interop.test_synapse import users
from tests.media.helpers import image_bytes, open_image
from tests.support.client import Client
from tests.support.server import RunningServer
from tests.support.synapse import SynapsePeer

CLIENT_MEDIA = "/_matrix/client/v1/media"


async def upload(client: Client, data: bytes, content_type: str, filename: str) -> str:
    resp = await client.request(
        "POST",
        "/_matrix/media/v3/upload",
        raw=data,
        headers={"Content-Type": content_type},
        params={"filename": filename},
    )
    assert resp.code == 200, resp
    return str(resp.json["content_uri"]).rsplit("/", 1)[1]


@pytest_twisted.ensureDeferred
async def test_our_user_downloads_media_uploaded_on_synapse(
    synapse: SynapsePeer, ours: RunningServer
) -> None:
    s_user, o_user = await users(synapse, ours)
    data = os.urandom(200_000)
    media_id = await upload(s_user, data, "application/pdf", "from synapse.pdf")
    resp = await o_user.get(f"{CLIENT_MEDIA}/download/{synapse.server_name}/{media_id}")
    assert resp.code == 200, (resp, synapse.tail_log())
    assert resp.raw == data
    assert resp.header("Content-Type") == "application/pdf"
    assert "from%20synapse.pdf" in (resp.header("Content-Disposition") or "")

    png = image_bytes("PNG", (640, 480))
    image_id = await upload(s_user, png, "image/png", "pic.png")
    resp = await o_user.get(
        f"{CLIENT_MEDIA}/thumbnail/{synapse.server_name}/{image_id}",
        params={"width": 96, "height": 96, "method": "crop"},
    )
    assert resp.code == 200, resp
    assert open_image(resp.raw).size == (96, 96)

    resp = await o_user.get(f"{CLIENT_MEDIA}/download/{synapse.server_name}/NoSuchMediaIdHere")
    assert resp.code == 404 and resp.json["errcode"] == "M_NOT_FOUND", resp


@pytest_twisted.ensureDeferred
async def test_synapse_user_downloads_our_media(synapse: SynapsePeer, ours: RunningServer) -> None:
    s_user, o_user = await users(synapse, ours)
    data = os.urandom(150_000)
    our_name = ours.hs.config.server_name
    media_id = await upload(o_user, data, "application/octet-stream", "ours.bin")
    resp = await s_user.get(f"{CLIENT_MEDIA}/download/{our_name}/{media_id}")
    assert resp.code == 200, (resp, synapse.tail_log())
    assert resp.raw == data
    assert "ours.bin" in (resp.header("Content-Disposition") or "")

    png = image_bytes("PNG", (640, 480))
    image_id = await upload(o_user, png, "image/png", "pic.png")
    resp = await s_user.get(
        f"{CLIENT_MEDIA}/thumbnail/{our_name}/{image_id}",
        params={"width": 96, "height": 96, "method": "crop"},
    )
    assert resp.code == 200, (resp, synapse.tail_log())
    assert open_image(resp.raw).size == (96, 96)
