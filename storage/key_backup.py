"""Server-side key backups: versions per user and the room keys stored in each.

Invariants:
- Version numbers come from one in-process counter and are never reused: a deleted
  version keeps its row (``deleted = 1``) and its keys are dropped.
- Keys can only be written to the user's current (newest undeleted) version; writing
  and the replace decision for an existing key happen in one transaction, and the
  version's ``etag`` moves whenever the stored keys change.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from storage.database import Database, Transaction
from storage.id_generator import IdGenerator

JsonDict = dict[str, Any]


@dataclass(frozen=True, slots=True)
class BackupVersion:
    user_id: str
    version: int
    algorithm: str
    auth_data: Any  # opaque to the server: any JSON value, as Synapse stores it
    etag: int
    count: int


@dataclass(frozen=True, slots=True)
class RoomKey:
    room_id: str
    session_id: str
    first_message_index: int
    forwarded_count: int
    is_verified: bool
    session_data: Any  # opaque to the server: any JSON value


@dataclass(frozen=True, slots=True)
class KeysWriteResult:
    """The version's etag and key count after a write; ``current_version`` is set (and
    nothing written) when the version asked for exists but is not the current one;
    ``found`` is False when it does not exist."""

    found: bool
    etag: int = 0
    count: int = 0
    current_version: int | None = None


# (existing, new) -> whether the new key replaces the stored one.
ReplaceRule = Callable[[RoomKey, RoomKey], bool]


class KeyBackupStore:
    def __init__(self, db: Database, versions: IdGenerator) -> None:
        self._db = db
        self._versions = versions

    @classmethod
    async def open(cls, db: Database) -> KeyBackupStore:
        return cls(db, await IdGenerator.load(db, "e2e_room_keys_versions", "version"))

    async def create_version(self, user_id: str, algorithm: str, auth_data: Any) -> int:
        version = self._versions.next_id()
        await self._db.run_interaction(
            "create_backup_version",
            lambda txn: txn.execute(
                "INSERT INTO e2e_room_keys_versions (user_id, version, algorithm, auth_data,"
                " etag, deleted) VALUES (?, ?, ?, ?, 0, 0)",
                (user_id, version, algorithm, json.dumps(auth_data)),
            ),
        )
        return version

    @staticmethod
    def _current_txn(txn: Transaction, user_id: str) -> int | None:
        row = txn.select_one(
            "SELECT MAX(version) FROM e2e_room_keys_versions WHERE user_id = ? AND deleted = 0",
            (user_id,),
        )
        return int(row[0]) if row and row[0] is not None else None

    @staticmethod
    def _version_txn(txn: Transaction, user_id: str, version: int) -> BackupVersion | None:
        row = txn.select_one(
            "SELECT algorithm, auth_data, etag FROM e2e_room_keys_versions"
            " WHERE user_id = ? AND version = ? AND deleted = 0",
            (user_id, version),
        )
        if row is None:
            return None
        count = txn.select_one(
            "SELECT COUNT(*) FROM e2e_room_keys WHERE user_id = ? AND version = ?",
            (user_id, version),
        )
        return BackupVersion(
            user_id,
            version,
            str(row[0]),
            json.loads(row[1]),
            int(row[2]),
            int(count[0]) if count else 0,
        )

    async def get_version(self, user_id: str, version: int | None) -> BackupVersion | None:
        """The given version, or the current one when ``version`` is None."""

        def _txn(txn: Transaction) -> BackupVersion | None:
            wanted = version if version is not None else self._current_txn(txn, user_id)
            return None if wanted is None else self._version_txn(txn, user_id, wanted)

        return await self._db.run_interaction("get_backup_version", _txn)

    async def update_auth_data(self, user_id: str, version: int, auth_data: Any) -> None:
        await self._db.run_interaction(
            "update_backup_version",
            lambda txn: txn.execute(
                "UPDATE e2e_room_keys_versions SET auth_data = ? WHERE user_id = ?"
                " AND version = ? AND deleted = 0",
                (json.dumps(auth_data), user_id, version),
            ),
        )

    async def delete_version(self, user_id: str, version: int | None) -> bool:
        """Mark deleted and drop its keys; False if the version never existed.

        A version deleted before counts as found, so deleting twice succeeds.
        """

        def _txn(txn: Transaction) -> bool:
            wanted = version if version is not None else self._current_txn(txn, user_id)
            if wanted is None:
                return False
            txn.execute(
                "UPDATE e2e_room_keys_versions SET deleted = 1 WHERE user_id = ? AND version = ?",
                (user_id, wanted),
            )
            if txn.rowcount == 0:
                return False
            txn.execute(
                "DELETE FROM e2e_room_keys WHERE user_id = ? AND version = ?", (user_id, wanted)
            )
            return True

        return await self._db.run_interaction("delete_backup_version", _txn)

    async def put_keys(
        self, user_id: str, version: int, keys: list[RoomKey], replaces: ReplaceRule
    ) -> KeysWriteResult:
        def _txn(txn: Transaction) -> KeysWriteResult:
            info = self._version_txn(txn, user_id, version)
            if info is None:
                return KeysWriteResult(False)
            current = self._current_txn(txn, user_id)
            if current != version:
                return KeysWriteResult(True, current_version=current)
            changed = False
            for key in keys:
                row = txn.select_one(
                    "SELECT first_message_index, forwarded_count, is_verified, session_data"
                    " FROM e2e_room_keys WHERE user_id = ? AND version = ? AND room_id = ?"
                    " AND session_id = ?",
                    (user_id, version, key.room_id, key.session_id),
                )
                values = (
                    key.first_message_index,
                    key.forwarded_count,
                    int(key.is_verified),
                    json.dumps(key.session_data),
                    user_id,
                    version,
                    key.room_id,
                    key.session_id,
                )
                if row is None:
                    txn.execute(
                        "INSERT INTO e2e_room_keys (first_message_index, forwarded_count,"
                        " is_verified, session_data, user_id, version, room_id, session_id)"
                        " VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                        values,
                    )
                    changed = True
                    continue
                existing = RoomKey(
                    key.room_id,
                    key.session_id,
                    int(row[0]),
                    int(row[1]),
                    bool(row[2]),
                    json.loads(row[3]),
                )
                if replaces(existing, key):
                    txn.execute(
                        "UPDATE e2e_room_keys SET first_message_index = ?, forwarded_count = ?,"
                        " is_verified = ?, session_data = ? WHERE user_id = ? AND version = ?"
                        " AND room_id = ? AND session_id = ?",
                        values,
                    )
                    changed = True
            return self._after_write_txn(txn, user_id, version, info.etag, changed)

        return await self._db.run_interaction("put_room_keys", _txn)

    @staticmethod
    def _after_write_txn(
        txn: Transaction, user_id: str, version: int, etag: int, changed: bool
    ) -> KeysWriteResult:
        if changed:
            etag += 1
            txn.execute(
                "UPDATE e2e_room_keys_versions SET etag = ? WHERE user_id = ? AND version = ?",
                (etag, user_id, version),
            )
        row = txn.select_one(
            "SELECT COUNT(*) FROM e2e_room_keys WHERE user_id = ? AND version = ?",
            (user_id, version),
        )
        return KeysWriteResult(True, etag, int(row[0]) if row else 0)

    async def get_keys(
        self, user_id: str, version: int, room_id: str | None, session_id: str | None
    ) -> list[RoomKey] | None:
        """Keys of the version (optionally one room or one session); None if no version."""

        def _txn(txn: Transaction) -> list[RoomKey] | None:
            if self._version_txn(txn, user_id, version) is None:
                return None
            sql = (
                "SELECT room_id, session_id, first_message_index, forwarded_count, is_verified,"
                " session_data FROM e2e_room_keys WHERE user_id = ? AND version = ?"
            )
            args: list[Any] = [user_id, version]
            if room_id is not None:
                sql += " AND room_id = ?"
                args.append(room_id)
            if session_id is not None:
                sql += " AND session_id = ?"
                args.append(session_id)
            rows = txn.select_all(sql + " ORDER BY room_id, session_id", args)
            return [
                RoomKey(r[0], r[1], int(r[2]), int(r[3]), bool(r[4]), json.loads(r[5]))
                for r in rows
            ]

        return await self._db.run_interaction("get_room_keys", _txn)

    async def delete_keys(
        self, user_id: str, version: int, room_id: str | None, session_id: str | None
    ) -> KeysWriteResult:
        def _txn(txn: Transaction) -> KeysWriteResult:
            info = self._version_txn(txn, user_id, version)
            if info is None:
                return KeysWriteResult(False)
            sql = "DELETE FROM e2e_room_keys WHERE user_id = ? AND version = ?"
            args: list[Any] = [user_id, version]
            if room_id is not None:
                sql += " AND room_id = ?"
                args.append(room_id)
            if session_id is not None:
                sql += " AND session_id = ?"
                args.append(session_id)
            txn.execute(sql, args)
            return self._after_write_txn(txn, user_id, version, info.etag, txn.rowcount > 0)

        return await self._db.run_interaction("delete_room_keys", _txn)
