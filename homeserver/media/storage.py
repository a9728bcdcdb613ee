"""Where media bytes live: a ``MediaStorage`` protocol and its file-system implementation.

Invariants:
- A stored file is complete or absent: content is written to a temporary file in the
  store's own ``tmp`` directory (same file system), flushed and fsynced, then renamed
  into place atomically. On any error the temporary file is removed; nothing
  half-written is ever visible under a final path.
- Keys are relative paths built by ``local_content_key`` / ``local_thumbnail_key`` from
  validated media ids only (``[A-Za-z0-9_-]``), sharded like Synapse's media store
  (``local_content/ab/cd/rest``), so an existing Synapse ``media_store`` lays out the same.
- Every blocking file operation runs on a worker thread; ``open_blocking`` is the only
  method that blocks and must only be called off the reactor thread.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO, Protocol

from twisted.internet import threads

COPY_CHUNK = 1024 * 1024

MEDIA_ID_RE = re.compile(r"^[A-Za-z0-9_-]+$")


class MediaTooLarge(Exception):
    """The source held more bytes than the limit given to ``store``."""


@dataclass(frozen=True, slots=True)
class StoredFile:
    size: int
    sha256: str


def is_valid_media_id(media_id: str) -> bool:
    return bool(MEDIA_ID_RE.match(media_id))


def _shard(media_id: str) -> str:
    if not is_valid_media_id(media_id) or len(media_id) < 5:
        raise ValueError(f"invalid media id {media_id!r}")
    return f"{media_id[0:2]}/{media_id[2:4]}/{media_id[4:]}"


def local_content_key(media_id: str) -> str:
    return f"local_content/{_shard(media_id)}"


def local_thumbnail_key(
    media_id: str, width: int, height: int, content_type: str, method: str, animated: bool
) -> str:
    top, _, sub = content_type.partition("/")
    suffix = "-animated" if animated else ""
    return f"local_thumbnails/{_shard(media_id)}/{width}-{height}-{top}-{sub}-{method}{suffix}"


def _remote_shard(media_id: str) -> str:
    # Other servers may hand out ids too short to shard; they live apart ("_short"
    # cannot be a two-character shard directory).
    if is_valid_media_id(media_id) and len(media_id) < 5:
        return f"_short/{media_id}"
    return _shard(media_id)


def _server_dir(server_name: str) -> str:
    # A valid server name has no "/", but ".." style names must not climb out.
    if not server_name or "/" in server_name or server_name in (".", ".."):
        raise ValueError(f"invalid server name {server_name!r}")
    return server_name


def remote_content_key(server_name: str, media_id: str) -> str:
    return f"remote_content/{_server_dir(server_name)}/{_remote_shard(media_id)}"


def remote_thumbnail_key(
    server_name: str,
    media_id: str,
    width: int,
    height: int,
    content_type: str,
    method: str,
    animated: bool,
) -> str:
    top, _, sub = content_type.partition("/")
    suffix = "-animated" if animated else ""
    shard = _remote_shard(media_id)
    return (
        f"remote_thumbnails/{_server_dir(server_name)}/{shard}/"
        f"{width}-{height}-{top}-{sub}-{method}{suffix}"
    )


class MediaStorage(Protocol):
    @property
    def spool_dir(self) -> str:
        """A directory on the store's file system for files being received."""
        ...

    async def adopt(self, key: str, path: str) -> None:
        """Move a complete, fsynced file at ``path`` (in ``spool_dir``) to ``key``."""
        ...

    async def store(self, key: str, source: BinaryIO, *, max_size: int | None = None) -> StoredFile:
        """Copy ``source`` (from its current position) to ``key``, hashing it on the way.

        Raises ``MediaTooLarge`` (nothing stored) when more than ``max_size`` bytes come.
        """
        ...

    async def store_bytes(self, key: str, data: bytes) -> None: ...

    async def exists(self, key: str) -> bool: ...

    async def delete(self, key: str) -> None: ...

    def open_blocking(self, key: str) -> BinaryIO:
        """Open ``key`` for reading; raises FileNotFoundError. Never on the reactor."""
        ...


class FileSystemMediaStorage:
    """Media under one directory, written atomically, read and written on threads."""

    def __init__(self, base_path: str, *, fsync: bool = True) -> None:
        self.base_path = os.path.abspath(base_path)
        self._tmp_dir = os.path.join(self.base_path, "tmp")
        self._fsync = fsync
        os.makedirs(self._tmp_dir, exist_ok=True)

    @property
    def spool_dir(self) -> str:
        """Where the HTTP edge may spool upload bodies: same disk, never the final paths."""
        return self._tmp_dir

    def path_of(self, key: str) -> str:
        parts = key.split("/")
        if not key or any(p in ("", ".", "..") for p in parts) or key.startswith("/"):
            raise ValueError(f"invalid media key {key!r}")
        return os.path.join(self.base_path, *parts)

    async def store(self, key: str, source: BinaryIO, *, max_size: int | None = None) -> StoredFile:
        return await threads.deferToThread(self._write, key, source.read, max_size)

    async def store_bytes(self, key: str, data: bytes) -> None:
        chunks = iter((data,))
        await threads.deferToThread(self._write, key, lambda _n: next(chunks, b""), None)

    async def adopt(self, key: str, path: str) -> None:
        await threads.deferToThread(self._adopt, key, path)

    async def exists(self, key: str) -> bool:
        return bool(await threads.deferToThread(os.path.isfile, self.path_of(key)))

    async def delete(self, key: str) -> None:
        await threads.deferToThread(self._delete, key)

    def open_blocking(self, key: str) -> BinaryIO:
        return open(self.path_of(key), "rb")

    # On worker threads ---------------------------------------------------------

    def _write(self, key: str, read: Callable[[int], bytes], max_size: int | None) -> StoredFile:
        final_path = self.path_of(key)
        fd, tmp_path = tempfile.mkstemp(dir=self._tmp_dir, prefix="upload-")
        try:
            digest = hashlib.sha256()
            size = 0
            with os.fdopen(fd, "wb") as out:
                while True:
                    chunk = read(COPY_CHUNK)
                    if not chunk:
                        break
                    size += len(chunk)
                    if max_size is not None and size > max_size:
                        raise MediaTooLarge(key)
                    digest.update(chunk)
                    out.write(chunk)
                out.flush()
                if self._fsync:
                    os.fsync(out.fileno())
            os.makedirs(os.path.dirname(final_path), exist_ok=True)
            os.replace(tmp_path, final_path)
        except BaseException:
            try:
                os.unlink(tmp_path)
            except FileNotFoundError:
                pass
            raise
        return StoredFile(size=size, sha256=digest.hexdigest())

    def _adopt(self, key: str, path: str) -> None:
        final_path = self.path_of(key)
        os.makedirs(os.path.dirname(final_path), exist_ok=True)
        os.replace(path, final_path)

    def _delete(self, key: str) -> None:
        try:
            os.unlink(self.path_of(key))
        except FileNotFoundError:
            pass
