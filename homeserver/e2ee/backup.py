"""Server-side key backups: versions and the room keys stored in them.

Invariants:
- Versions are opaque strings to clients; ours are decimal integers, and anything else
  names no version (404).
- Keys are written only to the current version (403 ``M_WRONG_ROOM_KEYS_VERSION`` with
  ``current_version`` otherwise). An uploaded key for a session already held replaces it
  only by the spec's rules (``replaces``): a verified key beats an unverified one, then
  the lower ``first_message_index`` wins, then the lower ``forwarded_count``.
"""

from __future__ import annotations

from typing import Any

from homeserver.e2ee.signatures import WRONG_ROOM_KEYS_VERSION
from homeserver.errors import Codes, MatrixError
from storage.key_backup import BackupVersion, KeyBackupStore, KeysWriteResult, RoomKey

JsonDict = dict[str, Any]


def replaces(existing: RoomKey, new: RoomKey) -> bool:
    """Whether ``new`` should replace the stored ``existing`` key for the same session."""
    if new.is_verified != existing.is_verified:
        return new.is_verified
    if new.first_message_index != existing.first_message_index:
        return new.first_message_index < existing.first_message_index
    return new.forwarded_count < existing.forwarded_count


def parse_version(version: str) -> int:
    if not version.isdigit() or len(version) > 18:
        raise MatrixError(404, Codes.NOT_FOUND, "Unknown backup version")
    return int(version)


def version_json(info: BackupVersion) -> JsonDict:
    return {
        "algorithm": info.algorithm,
        "auth_data": info.auth_data,
        "count": info.count,
        "etag": str(info.etag),
        "version": str(info.version),
    }


class KeyBackupHandler:
    def __init__(self, store: KeyBackupStore) -> None:
        self._store = store

    async def create_version(self, user_id: str, algorithm: str, auth_data: Any) -> str:
        return str(await self._store.create_version(user_id, algorithm, auth_data))

    async def get_version(self, user_id: str, version: str | None) -> JsonDict:
        info = await self._store.get_version(
            user_id, parse_version(version) if version is not None else None
        )
        if info is None:
            message = "No current backup version" if version is None else "Unknown backup version"
            raise MatrixError(404, Codes.NOT_FOUND, message)
        return version_json(info)

    async def update_version(
        self, user_id: str, version: str, algorithm: str, auth_data: Any, body_version: Any
    ) -> None:
        if body_version is not None and body_version != version:
            raise MatrixError(400, Codes.INVALID_PARAM, "Version in body does not match")
        number = parse_version(version)
        info = await self._store.get_version(user_id, number)
        if info is None:
            raise MatrixError(404, Codes.NOT_FOUND, "Unknown backup version")
        if info.algorithm != algorithm:
            raise MatrixError(400, Codes.INVALID_PARAM, "Algorithm does not match")
        await self._store.update_auth_data(user_id, number, auth_data)

    async def delete_version(self, user_id: str, version: str | None) -> None:
        number = parse_version(version) if version is not None else None
        if not await self._store.delete_version(user_id, number):
            raise MatrixError(404, Codes.NOT_FOUND, "Unknown backup version")

    async def put_keys(self, user_id: str, version: str, keys: list[RoomKey]) -> JsonDict:
        result = await self._store.put_keys(user_id, parse_version(version), keys, replaces)
        if not result.found:
            raise MatrixError(404, Codes.NOT_FOUND, "Unknown backup version")
        if result.current_version is not None:
            raise MatrixError(
                403,
                WRONG_ROOM_KEYS_VERSION,
                "Wrong backup version.",
                {"current_version": str(result.current_version)},
            )
        return self._counts(result)

    async def get_keys(
        self, user_id: str, version: str, room_id: str | None, session_id: str | None
    ) -> list[RoomKey]:
        keys = await self._store.get_keys(user_id, parse_version(version), room_id, session_id)
        if keys is None:
            raise MatrixError(404, Codes.NOT_FOUND, "Unknown backup version")
        return keys

    async def delete_keys(
        self, user_id: str, version: str, room_id: str | None, session_id: str | None
    ) -> JsonDict:
        result = await self._store.delete_keys(user_id, parse_version(version), room_id, session_id)
        if not result.found:
            raise MatrixError(404, Codes.NOT_FOUND, "Unknown backup version")
        return self._counts(result)

    @staticmethod
    def _counts(result: KeysWriteResult) -> JsonDict:
        return {"etag": str(result.etag), "count": result.count}
