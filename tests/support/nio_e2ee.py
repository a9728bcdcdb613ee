"""matrix-nio clients with real Olm/Megolm (vodozemac) for end-to-end encryption tests,
and a way to read a SQLite homeserver database's raw bytes to search them for plaintext.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import nio

PASSWORD = "correct horse battery staple"


def nio_client(base_url: str, store: Path, user: str = "") -> nio.AsyncClient:
    """An encryption-enabled nio client keeping its Olm account under ``store`` (``user``
    for logging in to an existing account)."""
    store.mkdir()
    config = nio.AsyncClientConfig(
        encryption_enabled=True,
        store_sync_tokens=True,
        max_limit_exceeded=0,
        max_timeouts=2,
        request_timeout=20,
    )
    return nio.AsyncClient(base_url, user, store_path=str(store), config=config)


async def sync(client: nio.AsyncClient, timeout_ms: int = 200) -> nio.SyncResponse:
    resp = await client.sync(timeout=timeout_ms, full_state=False)
    assert isinstance(resp, nio.SyncResponse), resp
    return resp


async def sync_until(
    client: nio.AsyncClient,
    done: Callable[[nio.SyncResponse], bool],
    what: str,
    timeout: float = 30.0,
) -> nio.SyncResponse:
    """Sync (long-polling briefly) until ``done`` holds for a response, at most ``timeout``
    seconds; fail naming ``what`` otherwise."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        resp = await sync(client, timeout_ms=500)
        if done(resp):
            return resp
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{client.user_id}: {what} did not happen in {timeout}s")


async def register_with_keys(client: nio.AsyncClient, name: str) -> nio.KeysUploadResponse:
    """Register ``name``, upload its device keys and one-time keys, then sync once."""
    reg = await client.register(name, PASSWORD, device_name=f"{name}'s laptop")
    assert isinstance(reg, nio.RegisterResponse), reg
    assert client.olm is not None, "nio has no Olm machine: is matrix-nio[e2e] installed?"
    assert client.should_upload_keys
    up = await client.keys_upload()
    assert isinstance(up, nio.KeysUploadResponse), up
    assert up.signed_curve25519_count > 0
    await sync(client)
    return up


def sqlite_bytes(data_dir: Path) -> bytes:
    out = b""
    for path in sorted(data_dir.glob("homeserver.db*")):  # the database, its WAL and SHM
        out += path.read_bytes()
    return out
