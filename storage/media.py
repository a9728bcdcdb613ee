"""Media repository metadata: stored files, their thumbnails, pending uploads, usage.

Invariants:
- A ``media`` row with ``size`` NULL is a pending upload (``POST /media/v1/create``);
  it gets its content at most once (``complete_pending`` only updates a row whose size
  is still NULL).
- Recording an upload, its thumbnails and the uploader's ``media_usage`` totals happens
  in one transaction, which also re-checks the upload quotas: the uploader's usage row is
  updated first, so concurrent uploads of one user serialise on it and none of them can
  slip past a quota the others already filled.
- Media uploaded by the URL previewer (``url_cache``) counts toward no quota.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from storage.database import Database, Transaction


@dataclass(frozen=True, slots=True)
class MediaRecord:
    server_name: str
    media_id: str
    user_id: str | None
    created_ts: int
    content_type: str | None
    upload_name: str | None
    size: int | None  # None: a pending upload
    sha256: str | None
    authenticated: bool
    url_cache: bool
    quarantined_by: str | None
    image_width: int | None
    image_height: int | None
    image_animated: bool
    thumbnail_error: str | None
    safe_from_quarantine: bool = False

    @property
    def is_pending(self) -> bool:
        return self.size is None


@dataclass(frozen=True, slots=True)
class ThumbnailRecord:
    width: int
    height: int
    method: str  # "crop" | "scale"
    content_type: str
    size: int
    animated: bool = False


@dataclass(frozen=True, slots=True)
class ImageFacts:
    """What the thumbnailer learnt about an uploaded file."""

    width: int | None = None
    height: int | None = None
    animated: bool = False
    thumbnail_error: str | None = None  # "too_large" | "unreadable"


@dataclass(frozen=True, slots=True)
class UploadLimit:
    time_period_ms: int
    max_bytes: int


@dataclass(frozen=True, slots=True)
class MediaUsage:
    media_count: int
    total_bytes: int


class QuotaExceeded(Exception):
    def __init__(self, limit: UploadLimit, used: int) -> None:
        super().__init__(f"{used} bytes used of {limit.max_bytes} in {limit.time_period_ms} ms")
        self.limit = limit
        self.used = used


class AlreadyUploaded(Exception):
    """The pending media id got its content from another request first."""


# Synapse's media `order_by` values -> our column. Access times are not tracked (the
# creation time stands in).
USER_MEDIA_ORDER = {
    "media_id": "media_id",
    "upload_name": "upload_name",
    "created_ts": "created_ts",
    "last_access_ts": "created_ts",
    "media_length": "size",
    "media_type": "content_type",
    "quarantined_by": "quarantined_by",
    "safe_from_quarantine": "safe_from_quarantine",
}

_COLUMNS = (
    "server_name, media_id, user_id, created_ts, content_type, upload_name, size, sha256,"
    " authenticated, url_cache, quarantined_by, image_width, image_height, image_animated,"
    " thumbnail_error, safe_from_quarantine"
)


def _record(row: tuple[Any, ...]) -> MediaRecord:
    return MediaRecord(
        server_name=str(row[0]),
        media_id=str(row[1]),
        user_id=row[2],
        created_ts=int(row[3]),
        content_type=row[4],
        upload_name=row[5],
        size=None if row[6] is None else int(row[6]),
        sha256=row[7],
        authenticated=bool(row[8]),
        url_cache=bool(row[9]),
        quarantined_by=row[10],
        image_width=row[11],
        image_height=row[12],
        image_animated=bool(row[13]),
        thumbnail_error=row[14],
        safe_from_quarantine=bool(row[15]),
    )


@dataclass(frozen=True, slots=True)
class NewUpload:
    """The content of one upload, already written to the media store."""

    server_name: str
    media_id: str
    user_id: str | None  # None for another server's media
    content_type: str
    upload_name: str | None
    size: int
    sha256: str
    authenticated: bool
    url_cache: bool
    image: ImageFacts
    thumbnails: tuple[ThumbnailRecord, ...]


class MediaStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    # Reading ----------------------------------------------------------------------

    async def get_media(self, server_name: str, media_id: str) -> MediaRecord | None:
        def _txn(txn: Transaction) -> MediaRecord | None:
            row = txn.select_one(
                f"SELECT {_COLUMNS} FROM media WHERE server_name = ? AND media_id = ?",
                (server_name, media_id),
            )
            return _record(row) if row is not None else None

        return await self._db.run_interaction("get_media", _txn)

    async def list_user_media(
        self, user_id: str, *, start: int, limit: int, order_by: str, backwards: bool
    ) -> tuple[list[MediaRecord], int]:
        """One page of ``user_id``'s uploads (URL previews left out) and their count, as
        Synapse's admin ``GET /users/{userId}/media``; ``order_by`` is a key of
        ``USER_MEDIA_ORDER``."""
        column = USER_MEDIA_ORDER[order_by]
        direction = "DESC" if backwards else "ASC"

        def _txn(txn: Transaction) -> tuple[list[MediaRecord], int]:
            where = "FROM media WHERE user_id = ? AND url_cache = 0"
            row = txn.select_one(f"SELECT COUNT(*) {where}", (user_id,))
            total = int(row[0]) if row else 0
            rows = txn.select_all(
                f"SELECT {_COLUMNS} {where} ORDER BY {column} {direction}, media_id ASC"
                " LIMIT ? OFFSET ?",
                (user_id, limit, start),
            )
            return [_record(r) for r in rows], total

        return await self._db.run_interaction("list_user_media", _txn)

    async def get_thumbnails(self, server_name: str, media_id: str) -> list[ThumbnailRecord]:
        def _txn(txn: Transaction) -> list[ThumbnailRecord]:
            rows = txn.select_all(
                "SELECT width, height, method, content_type, size, animated"
                " FROM media_thumbnails WHERE server_name = ? AND media_id = ?"
                " ORDER BY width, height, method, content_type",
                (server_name, media_id),
            )
            return [
                ThumbnailRecord(int(r[0]), int(r[1]), str(r[2]), str(r[3]), int(r[4]), bool(r[5]))
                for r in rows
            ]

        return await self._db.run_interaction("get_thumbnails", _txn)

    async def get_usage(self, user_id: str) -> MediaUsage:
        def _txn(txn: Transaction) -> MediaUsage:
            row = txn.select_one(
                "SELECT media_count, total_bytes FROM media_usage WHERE user_id = ?", (user_id,)
            )
            return MediaUsage(int(row[0]), int(row[1])) if row else MediaUsage(0, 0)

        return await self._db.run_interaction("get_media_usage", _txn)

    async def get_uploaded_size(self, user_id: str, since_ts: int) -> int:
        """Bytes ``user_id`` uploaded (excluding URL-preview media) since ``since_ts``."""
        return await self._db.run_interaction(
            "get_uploaded_size", _uploaded_size, user_id, since_ts
        )

    async def count_pending(self, user_id: str, created_after_ts: int) -> tuple[int, int | None]:
        """(unexpired pending uploads of ``user_id``, creation time of the oldest)."""

        def _txn(txn: Transaction) -> tuple[int, int | None]:
            row = txn.select_one(
                "SELECT COUNT(*), MIN(created_ts) FROM media"
                " WHERE user_id = ? AND size IS NULL AND created_ts > ?",
                (user_id, created_after_ts),
            )
            assert row is not None
            return int(row[0]), None if row[1] is None else int(row[1])

        return await self._db.run_interaction("count_pending_media", _txn)

    async def is_hash_quarantined(self, sha256: str) -> bool:
        def _txn(txn: Transaction) -> bool:
            row = txn.select_one(
                "SELECT 1 FROM media WHERE sha256 = ? AND quarantined_by IS NOT NULL LIMIT 1",
                (sha256,),
            )
            return row is not None

        return await self._db.run_interaction("is_hash_quarantined", _txn)

    # Writing ----------------------------------------------------------------------

    async def create_pending(
        self,
        server_name: str,
        media_id: str,
        user_id: str,
        now_ms: int,
        *,
        authenticated: bool,
        expired_before_ts: int,
    ) -> None:
        """Record a media id without content; drop the user's expired pending ids."""

        def _txn(txn: Transaction) -> None:
            txn.execute(
                "DELETE FROM media WHERE user_id = ? AND size IS NULL AND created_ts <= ?",
                (user_id, expired_before_ts),
            )
            txn.execute(
                "INSERT INTO media (server_name, media_id, user_id, created_ts, authenticated)"
                " VALUES (?, ?, ?, ?, ?)",
                (server_name, media_id, user_id, now_ms, int(authenticated)),
            )

        await self._db.run_interaction("create_pending_media", _txn)

    async def store_upload(
        self, upload: NewUpload, now_ms: int, limits: Sequence[UploadLimit], quarantine: bool
    ) -> None:
        """Record new content; raise ``QuotaExceeded`` (nothing recorded) if over a limit."""

        def _txn(txn: Transaction) -> None:
            _check_and_count(txn, upload, now_ms, limits)
            txn.execute(
                "INSERT INTO media (server_name, media_id, user_id, created_ts, content_type,"
                " upload_name, size, sha256, authenticated, url_cache, quarantined_by)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    upload.server_name,
                    upload.media_id,
                    upload.user_id,
                    now_ms,
                    upload.content_type,
                    upload.upload_name,
                    upload.size,
                    upload.sha256,
                    int(upload.authenticated),
                    int(upload.url_cache),
                    "system" if quarantine else None,
                ),
            )
            _record_image(txn, upload)

        await self._db.run_interaction("store_upload", _txn)

    async def complete_pending(
        self, upload: NewUpload, now_ms: int, limits: Sequence[UploadLimit], quarantine: bool
    ) -> None:
        """Give a pending media id its content; ``AlreadyUploaded`` if it already has one."""

        def _txn(txn: Transaction) -> None:
            _check_and_count(txn, upload, now_ms, limits)
            txn.execute(
                "UPDATE media SET content_type = ?, upload_name = ?, size = ?, sha256 = ?,"
                " quarantined_by = ?"
                " WHERE server_name = ? AND media_id = ? AND user_id = ? AND size IS NULL",
                (
                    upload.content_type,
                    upload.upload_name,
                    upload.size,
                    upload.sha256,
                    "system" if quarantine else None,
                    upload.server_name,
                    upload.media_id,
                    upload.user_id,
                ),
            )
            if txn.rowcount != 1:
                raise AlreadyUploaded(upload.media_id)
            _record_image(txn, upload)

        await self._db.run_interaction("complete_pending_media", _txn)

    async def store_remote(self, media: NewUpload, now_ms: int) -> None:
        """Record another server's media fetched into the cache (replacing a stale row).

        ``media.user_id`` is not stored: the uploader is the other server's business.
        """

        def _txn(txn: Transaction) -> None:
            txn.execute(
                "INSERT INTO media (server_name, media_id, user_id, created_ts, content_type,"
                " upload_name, size, sha256, authenticated, url_cache, image_width,"
                " image_height, image_animated, thumbnail_error)"
                " VALUES (?, ?, NULL, ?, ?, ?, ?, ?, ?, 0, ?, ?, ?, ?)"
                " ON CONFLICT (server_name, media_id) DO UPDATE SET"
                " created_ts = excluded.created_ts, content_type = excluded.content_type,"
                " upload_name = excluded.upload_name, size = excluded.size,"
                " sha256 = excluded.sha256, authenticated = excluded.authenticated,"
                " image_width = excluded.image_width, image_height = excluded.image_height,"
                " image_animated = excluded.image_animated,"
                " thumbnail_error = excluded.thumbnail_error",
                (
                    media.server_name,
                    media.media_id,
                    now_ms,
                    media.content_type,
                    media.upload_name,
                    media.size,
                    media.sha256,
                    int(media.authenticated),
                    media.image.width,
                    media.image.height,
                    int(media.image.animated),
                    media.image.thumbnail_error,
                ),
            )
            txn.execute_many(
                "INSERT INTO media_thumbnails (server_name, media_id, width, height, method,"
                " content_type, size, animated) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT DO NOTHING",
                [
                    (media.server_name, media.media_id, *_thumbnail_values(t))
                    for t in media.thumbnails
                ],
            )

        await self._db.run_interaction("store_remote_media", _txn)

    async def add_thumbnail(
        self, server_name: str, media_id: str, thumbnail: ThumbnailRecord
    ) -> None:
        """Record a thumbnail made on demand (a concurrent identical one is kept)."""

        def _txn(txn: Transaction) -> None:
            txn.execute(
                "INSERT INTO media_thumbnails (server_name, media_id, width, height, method,"
                " content_type, size, animated) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT DO NOTHING",
                (server_name, media_id, *_thumbnail_values(thumbnail)),
            )

        await self._db.run_interaction("add_thumbnail", _txn)

    async def set_quarantined(self, server_name: str, media_id: str, by: str | None) -> None:
        def _txn(txn: Transaction) -> None:
            txn.execute(
                "UPDATE media SET quarantined_by = ? WHERE server_name = ? AND media_id = ?",
                (by, server_name, media_id),
            )

        await self._db.run_interaction("set_media_quarantined", _txn)


def _uploaded_size(txn: Transaction, user_id: str, since_ts: int) -> int:
    row = txn.select_one(
        "SELECT COALESCE(SUM(size), 0) FROM media"
        " WHERE user_id = ? AND created_ts > ? AND size IS NOT NULL AND url_cache = 0",
        (user_id, since_ts),
    )
    return int(row[0]) if row else 0


def _check_and_count(
    txn: Transaction, upload: NewUpload, now_ms: int, limits: Sequence[UploadLimit]
) -> None:
    if upload.url_cache:
        return
    assert upload.user_id is not None  # local uploads only
    # Touch the usage row first: it is the per-user lock for the checks below.
    txn.execute(
        "INSERT INTO media_usage (user_id, media_count, total_bytes) VALUES (?, 0, 0)"
        " ON CONFLICT (user_id) DO NOTHING",
        (upload.user_id,),
    )
    txn.execute(
        "UPDATE media_usage SET media_count = media_count + 1, total_bytes = total_bytes + ?"
        " WHERE user_id = ?",
        (upload.size, upload.user_id),
    )
    for limit in limits:
        used = _uploaded_size(txn, upload.user_id, now_ms - limit.time_period_ms)
        if used + upload.size > limit.max_bytes:
            raise QuotaExceeded(limit, used)


def _thumbnail_values(t: ThumbnailRecord) -> tuple[object, ...]:
    return (t.width, t.height, t.method, t.content_type, t.size, int(t.animated))


def _record_image(txn: Transaction, upload: NewUpload) -> None:
    image = upload.image
    txn.execute(
        "UPDATE media SET image_width = ?, image_height = ?, image_animated = ?,"
        " thumbnail_error = ? WHERE server_name = ? AND media_id = ?",
        (
            image.width,
            image.height,
            int(image.animated),
            image.thumbnail_error,
            upload.server_name,
            upload.media_id,
        ),
    )
    txn.execute_many(
        "INSERT INTO media_thumbnails (server_name, media_id, width, height, method,"
        " content_type, size, animated) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [(upload.server_name, upload.media_id, *_thumbnail_values(t)) for t in upload.thumbnails],
    )
