"""A 50 MB upload and download, streamed both ways, byte-identical; prints throughput."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import pytest_twisted

from tests.media.helpers import CLIENT_MEDIA, MEDIA_V3, SERVER, download_digest, sqlite_only, user
from tests.media.streaming import file_upload
from tests.support.server import RunningServer

SIZE = 50 * 1000 * 1000


@sqlite_only
@pytest_twisted.ensureDeferred
async def test_50mb_upload_and_download_are_byte_identical(
    server: RunningServer, tmp_path: Path
) -> None:
    alice = await user(server, "alice")
    assert alice.access_token is not None
    source = tmp_path / "big.bin"
    digest = hashlib.sha256()
    with open(source, "wb") as f:
        for _ in range(SIZE // (1000 * 1000)):
            block = os.urandom(1000 * 1000)
            digest.update(block)
            f.write(block)

    started = time.monotonic()
    code, body = await file_upload(
        server.base_url + f"{MEDIA_V3}/upload", alice.access_token, str(source), "video/mp4"
    )
    upload_s = time.monotonic() - started
    assert code == 200, body
    media_id = body["content_uri"].rsplit("/", 1)[1]

    started = time.monotonic()
    status, got_digest, got_size, headers = await download_digest(
        server.base_url + f"{CLIENT_MEDIA}/download/{SERVER}/{media_id}", alice.access_token
    )
    download_s = time.monotonic() - started
    assert status == 200
    assert got_size == SIZE
    assert got_digest == digest.hexdigest()
    record = await server.hs.storage.media.get_media(SERVER, media_id)
    assert record is not None and record.sha256 == digest.hexdigest()
    print(
        f"\n50 MB upload: {upload_s:.2f}s = {SIZE / 1e6 / upload_s:.0f} MB/s;"
        f" download: {download_s:.2f}s = {SIZE / 1e6 / download_s:.0f} MB/s"
    )
