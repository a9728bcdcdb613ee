"""The media repository: uploads, pending media ids, lookups and thumbnail choice.

Invariants:
- Content is written to the media store before its metadata is committed; if recording
  fails (quota, a concurrent upload to the same id) the stored files are deleted again.
  A committed row therefore always has its file.
- One process writes media (like every other stream here): two uploads to one pending
  media id in this process are refused with 409 before either touches the store.
- Image work (decoding, resizing) only ever runs on worker threads. Thumbnails of the
  configured sizes are made at upload time; other sizes are made on demand only for
  animated thumbnails, ``dynamic_thumbnails``, or when no configured size fits.
- Thumbnails are never upscaled; an image smaller than the requested size is answered
  with the original (unless it is animated and animation was not asked for).
- Other servers' media is fetched (``remote.py``) at most once at a time per mxc URI:
  concurrent requests share one download, which the requests' own cancellation does not
  stop. It is cached like an upload (file under ``remote_content/<server>/``, thumbnails
  of the configured sizes, then the row), so a recorded row always has its file, and
  later requests are served from the cache without asking the other server.
"""

from __future__ import annotations

import logging
import os
import secrets
import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, BinaryIO

from twisted.internet import defer, threads

from homeserver.async_utils import observe
from homeserver.clock import Clock, now_ms
from homeserver.config import HomeserverConfig
from homeserver.errors import Codes, MatrixError
from homeserver.http.ratelimit import Ratelimiter
from homeserver.media import thumbnailer
from homeserver.media.storage import (
    MediaStorage,
    MediaTooLarge,
    is_valid_media_id,
    local_content_key,
    local_thumbnail_key,
    remote_content_key,
    remote_thumbnail_key,
)
from homeserver.media.thumbnailer import ThumbnailError, ThumbnailSpec
from storage.media import (
    AlreadyUploaded,
    ImageFacts,
    MediaRecord,
    MediaStore,
    NewUpload,
    QuotaExceeded,
    ThumbnailRecord,
    UploadLimit,
)

if TYPE_CHECKING:
    from homeserver.media.remote import RemoteMediaFetcher

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT_MS = 20_000
MAX_TIMEOUT_MS = 60_000
_POLL_MS = 1_000  # re-check pending media at least this often (uploads in other processes)
_ID_ALPHABET = string.ascii_letters
_MIB = 1024 * 1024


def random_media_id() -> str:
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(24))


@dataclass(frozen=True, slots=True)
class MediaSettings:
    server_name: str
    max_upload_size: int
    max_image_pixels: int
    thumbnail_specs: tuple[ThumbnailSpec, ...]
    dynamic_thumbnails: bool
    upload_limits: tuple[UploadLimit, ...]
    max_pending_uploads: int
    unused_expiration_ms: int
    authenticated_media: bool

    @classmethod
    def from_config(cls, config: HomeserverConfig) -> MediaSettings:
        return cls(
            server_name=config.server_name,
            max_upload_size=config.max_upload_size,
            max_image_pixels=config.max_image_pixels,
            thumbnail_specs=tuple(
                ThumbnailSpec(s["width"], s["height"], s["method"]) for s in config.thumbnail_sizes
            ),
            dynamic_thumbnails=config.dynamic_thumbnails,
            # Longest period first: when it is not exceeded, shorter ones rarely are.
            upload_limits=tuple(
                sorted(
                    (
                        UploadLimit(x["time_period"], x["max_size"])
                        for x in config.media_upload_limits
                    ),
                    key=lambda limit: -limit.time_period_ms,
                )
            ),
            max_pending_uploads=config.max_pending_media_uploads,
            unused_expiration_ms=config.unused_expiration_time,
            authenticated_media=config.enable_authenticated_media,
        )


@dataclass(frozen=True, slots=True)
class ServedFile:
    """A file to answer with: the original or one thumbnail."""

    key: str
    size: int
    content_type: str
    etag: str
    is_thumbnail: bool


def cannot_thumbnail() -> MatrixError:
    return MatrixError(400, Codes.UNKNOWN, "Cannot generate thumbnails for the requested content")


def not_found() -> MatrixError:
    return MatrixError(404, Codes.NOT_FOUND, "Not found")


class MediaRepository:
    def __init__(
        self,
        settings: MediaSettings,
        store: MediaStore,
        storage: MediaStorage,
        clock: Clock,
        remote: RemoteMediaFetcher | None = None,
        download_limiter: Ratelimiter | None = None,
    ) -> None:
        self.settings = settings
        self.server_name = settings.server_name
        self.storage = storage
        self._store = store
        self._clock = clock
        self._uploading: set[str] = set()
        self._waiters: dict[str, list[defer.Deferred[None]]] = {}
        self._generating: dict[str, defer.Deferred[ThumbnailRecord]] = {}
        self._remote = remote
        self._download_limiter = download_limiter
        self._fetching: dict[tuple[str, str], defer.Deferred[MediaRecord]] = {}

    def open_file(self, key: str) -> Callable[[], BinaryIO]:
        """A blocking opener of ``key``, for worker threads."""
        return lambda: self.storage.open_blocking(key)

    # Uploads ---------------------------------------------------------------------

    async def create_media_id(self, user_id: str) -> tuple[str, int]:
        """A pending ``mxc://`` URI and when it expires unused (429 past the pending limit)."""
        now = now_ms(self._clock)
        expiry = self.settings.unused_expiration_ms
        pending, oldest = await self._store.count_pending(user_id, now - expiry)
        if pending >= self.settings.max_pending_uploads:
            retry_after = max(1, (oldest or now) + expiry - now)
            raise MatrixError(
                429,
                Codes.LIMIT_EXCEEDED,
                "Too many pending media uploads",
                {"retry_after_ms": retry_after},
            )
        media_id = random_media_id()
        await self._store.create_pending(
            self.server_name,
            media_id,
            user_id,
            now,
            authenticated=self.settings.authenticated_media,
            expired_before_ts=now - expiry,
        )
        return f"mxc://{self.server_name}/{media_id}", now + expiry

    async def check_can_upload_to(self, media_id: str, user_id: str) -> None:
        """Refuse a PUT to a media id that is unknown, expired, someone else's or full."""
        record = None
        if is_valid_media_id(media_id):
            record = await self._store.get_media(self.server_name, media_id)
        if record is None or record.url_cache:
            raise MatrixError(404, Codes.NOT_FOUND, "Unknown media ID")
        if record.user_id != user_id:
            raise MatrixError(
                403, Codes.FORBIDDEN, "Only the creator of the media ID can upload to it"
            )
        if not record.is_pending or media_id in self._uploading:
            raise MatrixError(409, Codes.CANNOT_OVERWRITE_MEDIA, "Media ID already has content")
        if self._expired(record):
            raise MatrixError(404, Codes.NOT_FOUND, "Media ID has expired")

    async def upload(
        self,
        user_id: str,
        source: BinaryIO,
        content_type: str,
        upload_name: str | None,
        *,
        media_id: str | None = None,
        url_cache: bool = False,
    ) -> str:
        """Store ``source`` (read from its current position) as new media; the mxc URI.

        With ``media_id``, fills that pending id (call ``check_can_upload_to`` first).
        """
        size = _remaining_size(source)
        if size is not None and size > self.settings.max_upload_size:
            raise MatrixError(413, Codes.TOO_LARGE, "Upload request body is too large")
        if size is not None and not url_cache:
            await self._check_quota(user_id, size)
        pending = media_id is not None
        if media_id is None:
            media_id = random_media_id()
        elif media_id in self._uploading:
            raise MatrixError(409, Codes.CANNOT_OVERWRITE_MEDIA, "Media ID already has content")
        # Not cancelled with the request: a write already under way on a thread must be
        # recorded or cleaned up by this code, never left behind half-handled.
        work = defer.ensureDeferred(
            self._store_upload(
                user_id, source, content_type, upload_name, media_id, pending, url_cache
            )
        )
        result = observe(work)
        work.addErrback(lambda _failure: None)  # reported through ``result``
        return await result

    async def _store_upload(
        self,
        user_id: str,
        source: BinaryIO,
        content_type: str,
        upload_name: str | None,
        media_id: str,
        pending: bool,
        url_cache: bool,
    ) -> str:
        self._uploading.add(media_id)
        key = local_content_key(media_id)
        written: list[str] = []
        try:
            if pending:
                # Re-checked while holding the id: an upload that finished since the
                # caller's check must not have its file replaced.
                current = await self._store.get_media(self.server_name, media_id)
                if current is None or not current.is_pending:
                    raise AlreadyUploaded(media_id)
            try:
                stored = await self.storage.store(
                    key, source, max_size=self.settings.max_upload_size
                )
            except MediaTooLarge:
                raise MatrixError(
                    413, Codes.TOO_LARGE, "Upload request body is too large"
                ) from None
            written.append(key)
            image, thumbnails = await self._make_thumbnails(
                self.server_name, media_id, key, content_type, written
            )
            upload = NewUpload(
                server_name=self.server_name,
                media_id=media_id,
                user_id=user_id,
                content_type=content_type,
                upload_name=upload_name,
                size=stored.size,
                sha256=stored.sha256,
                authenticated=self.settings.authenticated_media,
                url_cache=url_cache,
                image=image,
                thumbnails=tuple(thumbnails),
            )
            quarantine = await self._store.is_hash_quarantined(stored.sha256)
            if quarantine:
                logger.warning("Media %s matches quarantined media: quarantined", media_id)
            now = now_ms(self._clock)
            limits = () if url_cache else self.settings.upload_limits
            if pending:
                await self._store.complete_pending(upload, now, limits, quarantine)
            else:
                await self._store.store_upload(upload, now, limits, quarantine)
        except BaseException as e:
            for stored_key in written:
                await self.storage.delete(stored_key)
            if isinstance(e, QuotaExceeded):
                raise MatrixError(403, Codes.FORBIDDEN, "Media upload limit exceeded") from None
            if isinstance(e, AlreadyUploaded):
                raise MatrixError(
                    409, Codes.CANNOT_OVERWRITE_MEDIA, "Media ID already has content"
                ) from None
            raise
        finally:
            self._uploading.discard(media_id)
        self._wake(media_id)
        logger.info("Stored media %s (%d bytes) for %s", media_id, stored.size, user_id)
        return f"mxc://{self.server_name}/{media_id}"

    async def _check_quota(self, user_id: str, size: int) -> None:
        now = now_ms(self._clock)
        for limit in self.settings.upload_limits:
            used = await self._store.get_uploaded_size(user_id, now - limit.time_period_ms)
            if used + size > limit.max_bytes:
                raise MatrixError(403, Codes.FORBIDDEN, "Media upload limit exceeded")

    async def _make_thumbnails(
        self, server_name: str, media_id: str, key: str, content_type: str, written: list[str]
    ) -> tuple[ImageFacts, list[ThumbnailRecord]]:
        thumb_type = thumbnailer.thumbnail_type_for(content_type)
        if thumb_type is None:
            return ImageFacts(), []
        try:
            info, thumbs = await threads.deferToThread(
                thumbnailer.make_thumbnails,
                self.open_file(key),
                list(self.settings.thumbnail_specs),
                thumb_type,
                self.settings.max_image_pixels,
            )
        except ThumbnailError as e:
            logger.info("No thumbnails for %s: %s", media_id, e)
            return ImageFacts(thumbnail_error=e.reason), []
        records = []
        for t in thumbs:
            t_key = self._thumbnail_key(
                server_name, media_id, t.width, t.height, t.content_type, t.method, False
            )
            await self.storage.store_bytes(t_key, t.data)
            written.append(t_key)
            records.append(
                ThumbnailRecord(t.width, t.height, t.method, t.content_type, len(t.data))
            )
        return ImageFacts(info.width, info.height, info.animated), records

    # Lookups ---------------------------------------------------------------------

    def _expired(self, record: MediaRecord) -> bool:
        return record.created_ts + self.settings.unused_expiration_ms < now_ms(self._clock)

    async def get_local_media(
        self, media_id: str, timeout_ms: int, *, allow_authenticated: bool = True
    ) -> MediaRecord:
        """Uploaded media, waiting up to ``timeout_ms`` for a pending upload.

        404 for unknown, quarantined, expired or (for unauthenticated endpoints)
        authenticated media; 504 ``M_NOT_YET_UPLOADED`` when the wait runs out.
        """
        if not is_valid_media_id(media_id):
            raise not_found()
        deadline = now_ms(self._clock) + min(max(timeout_ms, 0), MAX_TIMEOUT_MS)
        while True:
            record = await self._store.get_media(self.server_name, media_id)
            if record is None or record.quarantined_by is not None:
                raise not_found()
            if (
                not allow_authenticated
                and self.settings.authenticated_media
                and record.authenticated
            ):
                raise not_found()
            if not record.is_pending:
                return record
            if self._expired(record):
                raise not_found()
            remaining = deadline - now_ms(self._clock)
            if remaining <= 0:
                raise MatrixError(504, Codes.NOT_YET_UPLOADED, "Media has not been uploaded yet")
            await self._wait_for_upload(media_id, min(remaining, _POLL_MS))

    async def get_media(
        self,
        server_name: str,
        media_id: str,
        timeout_ms: int,
        *,
        allow_remote: bool = True,
        allow_authenticated: bool = True,
        requester_ip: str = "",
    ) -> MediaRecord:
        """Media by mxc URI parts: ours (``get_local_media``) or another server's."""
        if server_name == self.server_name:
            return await self.get_local_media(
                media_id, timeout_ms, allow_authenticated=allow_authenticated
            )
        return await self.get_remote_media(
            server_name,
            media_id,
            timeout_ms,
            allow_remote=allow_remote,
            allow_authenticated=allow_authenticated,
            requester_ip=requester_ip,
        )

    async def get_remote_media(
        self,
        server_name: str,
        media_id: str,
        timeout_ms: int,
        *,
        allow_remote: bool = True,
        allow_authenticated: bool = True,
        requester_ip: str = "",
    ) -> MediaRecord:
        """Another server's media from the cache, fetched first when not there.

        404 without asking the other server when ``allow_remote`` is false, for an
        invalid id, or (unauthenticated endpoints) for media cached while authenticated
        media was on; 403 for a server outside ``federation_domain_whitelist``; 429
        when ``requester_ip`` has used up its download allowance (as Synapse: a fetch
        needs 1 MiB of allowance to start and is charged its size when done).
        """
        if not is_valid_media_id(media_id):
            raise not_found()
        record = await self._store.get_media(server_name, media_id)
        # The deprecated endpoints never fetch: they serve old cache entries only.
        legacy_refused = record is None or record.authenticated
        if not allow_authenticated and self.settings.authenticated_media and legacy_refused:
            raise not_found()
        if record is not None and not record.is_pending:
            if record.quarantined_by is not None:
                raise not_found()
            if await self.storage.exists(self._content_key(server_name, media_id)):
                return record
        if not allow_remote or self._remote is None:
            raise not_found()
        if not self._remote.destination_allowed(server_name):
            raise MatrixError(403, Codes.FORBIDDEN, f"Federation denied with {server_name}")
        key = (server_name, media_id)
        running = self._fetching.get(key)
        if running is None:
            if self._download_limiter is not None:
                self._download_limiter.ratelimit(requester_ip, cost=_MIB, update=False)
            running = defer.ensureDeferred(
                self._fetch_remote(server_name, media_id, timeout_ms, requester_ip)
            )
            self._fetching[key] = running
            running.addBoth(lambda r: (self._fetching.pop(key, None), r)[1])
            result = observe(running)
            running.addErrback(lambda _failure: None)  # reported through the observers
            return await result
        return await observe(running)

    async def _fetch_remote(
        self, server_name: str, media_id: str, timeout_ms: int, requester_ip: str
    ) -> MediaRecord:
        assert self._remote is not None
        fetched = await self._remote.fetch(server_name, media_id, timeout_ms)
        if self._download_limiter is not None:
            self._download_limiter.record(requester_ip, cost=fetched.size)
        key = self._content_key(server_name, media_id)
        written: list[str] = []
        try:
            await self.storage.adopt(key, fetched.path)
            written.append(key)
            image, thumbnails = await self._make_thumbnails(
                server_name, media_id, key, fetched.content_type, written
            )
            media = NewUpload(
                server_name=server_name,
                media_id=media_id,
                user_id=None,
                content_type=fetched.content_type,
                upload_name=fetched.upload_name,
                size=fetched.size,
                sha256=fetched.sha256,
                authenticated=self.settings.authenticated_media,
                url_cache=False,
                image=image,
                thumbnails=tuple(thumbnails),
            )
            await self._store.store_remote(media, now_ms(self._clock))
        except BaseException:
            if not written:
                await threads.deferToThread(_unlink_quietly, fetched.path)
            for stored_key in written:
                await self.storage.delete(stored_key)
            raise
        logger.info("Cached remote media %s/%s (%d bytes)", server_name, media_id, fetched.size)
        record = await self._store.get_media(server_name, media_id)
        assert record is not None
        return record

    async def _wait_for_upload(self, media_id: str, wait_ms: int) -> None:
        woken: defer.Deferred[None] = defer.Deferred()
        waiters = self._waiters.setdefault(media_id, [])
        waiters.append(woken)

        def _time_up() -> None:
            if not woken.called:
                woken.callback(None)

        timer = self._clock.callLater(wait_ms / 1000, _time_up)
        try:
            await woken
        finally:
            if timer.active():
                timer.cancel()
            waiters.remove(woken)
            if not waiters:
                self._waiters.pop(media_id, None)

    def _wake(self, media_id: str) -> None:
        for woken in list(self._waiters.get(media_id, [])):
            if not woken.called:
                woken.callback(None)

    def _content_key(self, server_name: str, media_id: str) -> str:
        if server_name == self.server_name:
            return local_content_key(media_id)
        return remote_content_key(server_name, media_id)

    def _thumbnail_key(
        self,
        server_name: str,
        media_id: str,
        width: int,
        height: int,
        content_type: str,
        method: str,
        animated: bool,
    ) -> str:
        if server_name == self.server_name:
            return local_thumbnail_key(media_id, width, height, content_type, method, animated)
        return remote_thumbnail_key(
            server_name, media_id, width, height, content_type, method, animated
        )

    async def delete_files(
        self, record: MediaRecord, thumbnails: Sequence[ThumbnailRecord]
    ) -> None:
        """Remove ``record``'s content and thumbnails from the media store (files that
        are already gone are fine)."""
        for t in thumbnails:
            await self.storage.delete(
                self._thumbnail_key(
                    record.server_name,
                    record.media_id,
                    t.width,
                    t.height,
                    t.content_type,
                    t.method,
                    t.animated,
                )
            )
        await self.storage.delete(self._content_key(record.server_name, record.media_id))

    def original(self, record: MediaRecord) -> ServedFile:
        assert record.size is not None and record.sha256 is not None
        return ServedFile(
            key=self._content_key(record.server_name, record.media_id),
            size=record.size,
            content_type=record.content_type or "application/octet-stream",
            etag=record.sha256,
            is_thumbnail=False,
        )

    # Thumbnails ------------------------------------------------------------------

    async def get_thumbnail(
        self,
        record: MediaRecord,
        width: int,
        height: int,
        method: str,
        animated: bool,
    ) -> ServedFile:
        """The file answering a thumbnail request for ``record`` (already looked up)."""
        if thumbnailer.thumbnail_type_for(record.content_type) is None:
            raise cannot_thumbnail()
        if record.thumbnail_error == "too_large":
            raise MatrixError(413, Codes.TOO_LARGE, "Content is too large to thumbnail")
        if record.image_width is None or record.image_height is None:
            raise cannot_thumbnail()
        img_w, img_h = record.image_width, record.image_height
        still_only = record.image_animated and not animated
        if width >= img_w and height >= img_h and not still_only:
            return self.original(record)  # smaller than asked for: no thumbnail needed
        ideal = thumbnailer.target_size(ThumbnailSpec(width, height, method), img_w, img_h)
        want_animated = animated and record.image_animated
        if self.settings.dynamic_thumbnails:
            return await self._exact(record, ideal[0], ideal[1], method, want_animated)
        candidates = [
            t for t in await self._store.get_thumbnails(record.server_name, record.media_id)
        ]
        thumb_type = thumbnailer.thumbnail_type_for(record.content_type)
        chosen = select_thumbnail(
            [t for t in candidates if not t.animated], width, height, method, thumb_type
        )
        if chosen is None or (chosen.width < ideal[0] and chosen.height < ideal[1]):
            # No configured size is large enough: never answer smaller than asked.
            if not still_only:
                return self.original(record)
            return await self._exact(record, ideal[0], ideal[1], method, False)
        if want_animated:
            return await self._exact(record, chosen.width, chosen.height, chosen.method, True)
        return self._served_thumbnail(record, chosen)

    def _served_thumbnail(self, record: MediaRecord, t: ThumbnailRecord) -> ServedFile:
        key = self._thumbnail_key(
            record.server_name,
            record.media_id,
            t.width,
            t.height,
            t.content_type,
            t.method,
            t.animated,
        )
        subtype = t.content_type.partition("/")[2]
        animated = "-animated" if t.animated else ""
        return ServedFile(
            key=key,
            size=t.size,
            content_type=t.content_type,
            etag=f"{record.sha256}-{t.width}x{t.height}-{t.method}-{subtype}{animated}",
            is_thumbnail=True,
        )

    async def _exact(
        self, record: MediaRecord, width: int, height: int, method: str, animated: bool
    ) -> ServedFile:
        """A thumbnail of exactly this size, made (once, cached) if it does not exist."""
        content_type = (
            thumbnailer.ANIMATED_THUMBNAIL_TYPE
            if animated
            else thumbnailer.thumbnail_type_for(record.content_type)
        )
        assert content_type is not None
        wanted = (width, height, method, animated, content_type)
        for t in await self._store.get_thumbnails(record.server_name, record.media_id):
            if (t.width, t.height, t.method, t.animated, t.content_type) == wanted:
                return self._served_thumbnail(record, t)
        gen_key = f"{record.server_name}/{record.media_id}/{width}x{height}/{method}/{animated}"
        running = self._generating.get(gen_key)
        if running is None:
            running = defer.ensureDeferred(
                self._generate(record, width, height, method, content_type, animated)
            )
            self._generating[gen_key] = running
            running.addBoth(lambda r: (self._generating.pop(gen_key, None), r)[1])
        return self._served_thumbnail(record, await observe(running))

    async def _generate(
        self,
        record: MediaRecord,
        width: int,
        height: int,
        method: str,
        content_type: str,
        animated: bool,
    ) -> ThumbnailRecord:
        try:
            thumb = await threads.deferToThread(
                thumbnailer.make_thumbnail,
                self.open_file(self._content_key(record.server_name, record.media_id)),
                width,
                height,
                method,
                thumbnailer.thumbnail_type_for(record.content_type) or content_type,
                self.settings.max_image_pixels,
                animated=animated,
            )
        except ThumbnailError as e:
            logger.info("Cannot thumbnail %s: %s", record.media_id, e)
            if e.reason == "too_large":
                raise MatrixError(
                    413, Codes.TOO_LARGE, "Content is too large to thumbnail"
                ) from None
            raise cannot_thumbnail() from None
        key = self._thumbnail_key(
            record.server_name,
            record.media_id,
            thumb.width,
            thumb.height,
            thumb.content_type,
            method,
            thumb.animated,
        )
        await self.storage.store_bytes(key, thumb.data)
        row = ThumbnailRecord(
            thumb.width, thumb.height, method, thumb.content_type, len(thumb.data), thumb.animated
        )
        await self._store.add_thumbnail(record.server_name, record.media_id, row)
        return row


def select_thumbnail(
    thumbnails: list[ThumbnailRecord],
    width: int,
    height: int,
    method: str,
    preferred_type: str | None,
) -> ThumbnailRecord | None:
    """Synapse's choice among generated thumbnails of the requested method.

    Candidates at least as large as requested in one dimension come first; among them,
    crop prefers the closest aspect, then covering both dimensions, then the closest
    size; scale prefers the closest size. Then the preferred type, then fewer bytes.
    """
    big: list[tuple[Any, ...]] = []
    small: list[tuple[Any, ...]] = []
    for t in thumbnails:
        if t.method != method:
            continue
        size_quality = abs((width - t.width) * (height - t.height))
        type_quality = t.content_type != preferred_type
        if method == "crop":
            aspect_quality = abs(width * t.height - height * t.width)
            min_quality = 0 if width <= t.width and height <= t.height else 1
            key: tuple[Any, ...] = (aspect_quality, min_quality, size_quality, type_quality, t.size)
        else:
            key = (size_quality, type_quality, t.size)
        (big if t.width >= width or t.height >= height else small).append((*key, t))
    for group in (big, small):
        if group:
            return min(group, key=lambda entry: entry[:-1])[-1]  # type: ignore[no-any-return]
    return None


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _remaining_size(source: BinaryIO) -> int | None:
    """Bytes left in a seekable ``source``, None when it cannot tell."""
    try:
        here = source.tell()
        end = source.seek(0, 2)
        source.seek(here)
        return end - here
    except (OSError, ValueError, AttributeError):
        return None
