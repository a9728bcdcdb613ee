"""The server admin's media operations (Synapse's media admin API): quarantine,
protection, listing a room's media, deletion and the remote cache purge.

Invariants:
- Quarantined media answers 404 to every download and thumbnail request (the
  repository's lookups refuse it), for everyone, admins included.
- Deletion removes the files (content, then thumbnails) before the rows: a failure
  half-way leaves a row whose file is gone, which answers 404 like a deleted one and is
  deleted again by the next attempt; never a file nobody can find.
- Protected media (``safe_from_quarantine``) is never quarantined nor deleted by age;
  quarantined media is not deleted by age either (as Synapse).
"""

from __future__ import annotations

import logging
from typing import Any

from homeserver.errors import Codes, MatrixError
from homeserver.media.repository import MediaRepository
from storage.media import MediaRecord
from storage.media_admin import MediaAdminStore, RoomMedia, UserMediaStatistics

logger = logging.getLogger(__name__)


def media_info_json(record: MediaRecord, local: bool) -> dict[str, Any]:
    """Synapse's ``media_info`` object for local or cached remote media."""
    return {
        "media_origin": None if local else record.server_name,
        "user_id": record.user_id if local else None,
        "media_id": record.media_id,
        "media_type": record.content_type,
        "media_length": record.size,
        "upload_name": record.upload_name,
        "created_ts": record.created_ts,
        "filesystem_id": None if local else record.media_id,
        "url_cache": record.url_cache if local else None,
        "last_access_ts": None,
        "quarantined_by": record.quarantined_by,
        "authenticated": record.authenticated,
        "safe_from_quarantine": record.safe_from_quarantine if local else None,
        "sha256": record.sha256,
    }


class MediaAdmin:
    def __init__(self, repository: MediaRepository, store: MediaAdminStore) -> None:
        self._repo = repository
        self._store = store
        self.server_name = repository.server_name

    def is_mine(self, server_name: str) -> bool:
        return server_name == self.server_name

    async def media_info(self, server_name: str, media_id: str) -> dict[str, Any]:
        found = await self._store.get_media_with_thumbnails(server_name, media_id)
        if found is None:
            raise MatrixError(404, Codes.NOT_FOUND, "Unknown media")
        return media_info_json(found[0], self.is_mine(server_name))

    # Quarantine and protection ------------------------------------------------------

    async def set_quarantined(self, server_name: str, media_id: str, by: str | None) -> int:
        logger.info("Quarantine of %s/%s set to %s", server_name, media_id, by)
        if self.is_mine(server_name):
            return await self._store.quarantine(self.server_name, [media_id], [], by)
        return await self._store.quarantine(self.server_name, [], [(server_name, media_id)], by)

    async def quarantine_room(self, room_id: str, by: str) -> int:
        logger.info("Quarantining the media of room %s", room_id)
        return await self._store.quarantine_room(room_id, self.server_name, by)

    async def quarantine_user(self, user_id: str, by: str) -> int:
        logger.info("Quarantining the media of user %s", user_id)
        return await self._store.quarantine_user(user_id, self.server_name, by)

    async def quarantine_changes(self, after: int, limit: int) -> tuple[list[dict[str, Any]], int]:
        """A page of (un)quarantine records after position ``after``, and the next one."""
        changes = await self._store.quarantine_changes(after, limit)
        next_batch = changes[-1][0] if changes else after
        return [
            {"origin": origin, "media_id": media_id, "quarantined": quarantined}
            for _, origin, media_id, quarantined in changes
        ], next_batch

    async def set_protected(self, media_id: str, safe: bool) -> None:
        logger.info("Protection of local media %s set to %s", media_id, safe)
        await self._store.set_protected(self.server_name, media_id, safe)

    async def room_media(self, room_id: str) -> dict[str, list[str]]:
        media: RoomMedia = await self._store.media_in_room(room_id, self.server_name)
        return {
            "local": [f"mxc://{self.server_name}/{m}" for m in media.local],
            "remote": [f"mxc://{s}/{m}" for s, m in media.remote],
        }

    # Deletion -----------------------------------------------------------------------

    async def delete_local(self, media_id: str) -> tuple[list[str], int]:
        """Delete one local media (404 ``M_NOT_FOUND`` when unknown)."""
        if not await self._delete(self.server_name, media_id):
            raise MatrixError(404, Codes.NOT_FOUND, "Unknown media")
        return [media_id], 1

    async def delete_many_local(self, media_ids: list[str]) -> tuple[list[str], int]:
        """Delete these local media (a user's page of them); those gone already are left
        out of the answer."""
        deleted = [m for m in media_ids if await self._delete(self.server_name, m)]
        return deleted, len(deleted)

    async def delete_old_local(
        self, before_ts: int, size_gt: int, keep_profiles: bool
    ) -> tuple[list[str], int]:
        ids = await self._store.old_local_media(self.server_name, before_ts, size_gt, keep_profiles)
        deleted = [m for m in ids if await self._delete(self.server_name, m)]
        return deleted, len(deleted)

    async def purge_remote_cache(self, before_ts: int) -> int:
        old = await self._store.old_remote_media(self.server_name, before_ts)
        deleted = 0
        for server_name, media_id in old:
            if await self._delete(server_name, media_id):
                deleted += 1
        return deleted

    async def _delete(self, server_name: str, media_id: str) -> bool:
        found = await self._store.get_media_with_thumbnails(server_name, media_id)
        if found is None:
            return False
        record, thumbnails = found
        logger.info("Deleting media %s/%s", server_name, media_id)
        if not record.is_pending:
            await self._repo.delete_files(record, thumbnails)
        return await self._store.delete_media(server_name, media_id)

    # Statistics ---------------------------------------------------------------------

    async def user_statistics(
        self,
        *,
        start: int,
        limit: int,
        order_by: str,
        backwards: bool,
        from_ts: int,
        until_ts: int | None,
        search_term: str | None,
    ) -> tuple[list[UserMediaStatistics], int]:
        return await self._store.user_media_statistics(
            self.server_name,
            start=start,
            limit=limit,
            order_by=order_by,
            backwards=backwards,
            from_ts=from_ts,
            until_ts=until_ts,
            search_term=search_term,
        )
