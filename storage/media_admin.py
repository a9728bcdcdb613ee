"""What the Synapse media admin API reads and changes in the ``media`` tables.

Invariants:
- Quarantine goes by content: quarantining media marks every row (local or cached
  remote) with the same SHA-256, as Synapse does, so a re-upload of the same bytes stays
  blocked; rows without a hash are marked by id alone. Local media protected by an admin
  (``safe_from_quarantine``) is never quarantined, whatever path asks for it.
  Unquarantining clears every row sharing the hash.
- A room's media are the ``mxc://`` URIs its (non-outlier) events name in
  ``content.url``, ``content.info.thumbnail_url`` and, for encrypted attachments,
  ``content.file.url`` / ``content.info.thumbnail_file.url``.
- Deleting media here removes only rows (the media and its thumbnails, and the
  uploader's ``media_usage`` totals in the same transaction); the caller deletes the
  files from the media store before, so a row never outlives nothing but its file.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from storage.database import Database, Transaction
from storage.id_generator import IdGenerator
from storage.media import _COLUMNS, MediaRecord, ThumbnailRecord, _record

MXC_RE = re.compile(r"^mxc://([^/]+)/([^/#?]+)")
_BATCH = 100
_IN_LIST = 200  # ids per IN (...) clause

# Synapse's statistics ``order_by`` values -> our column.
MEDIA_STATISTICS_ORDER = {
    "media_length": "media_length",
    "media_count": "media_count",
    "user_id": "m.user_id",
    "displayname": "p.displayname",
}


@dataclass(frozen=True, slots=True)
class UserMediaStatistics:
    user_id: str
    displayname: str | None
    media_count: int
    media_length: int


@dataclass(frozen=True, slots=True)
class RoomMedia:
    local: list[str]  # media ids on this server
    remote: list[tuple[str, str]]  # (server name, media id)


def mxc_parts(value: Any) -> tuple[str, str] | None:
    if not isinstance(value, str):
        return None
    m = MXC_RE.match(value)
    return (m.group(1), m.group(2)) if m else None


def media_uris_of_content(content: Any) -> list[tuple[str, str]]:
    """The (server, media id) pairs an event's content refers to."""
    if not isinstance(content, dict):
        return []
    candidates: list[Any] = [content.get("url")]
    info = content.get("info")
    if isinstance(info, dict):
        candidates.append(info.get("thumbnail_url"))
        thumb_file = info.get("thumbnail_file")
        if isinstance(thumb_file, dict):
            candidates.append(thumb_file.get("url"))
    file = content.get("file")
    if isinstance(file, dict):
        candidates.append(file.get("url"))
    return [p for p in (mxc_parts(c) for c in candidates) if p is not None]


def _chunks(items: Sequence[Any]) -> Iterable[Sequence[Any]]:
    for i in range(0, len(items), _IN_LIST):
        yield items[i : i + _IN_LIST]


def _placeholders(n: int) -> str:
    return ", ".join("?" for _ in range(n))


class MediaAdminStore:
    def __init__(self, db: Database) -> None:
        self._db = db
        self._change_ids: IdGenerator | None = None  # loaded on the first change

    # Rooms ------------------------------------------------------------------------

    async def media_in_room(self, room_id: str, server_name: str) -> RoomMedia:
        return await self._db.run_interaction(
            "media_in_room", _media_in_room_txn, room_id, server_name
        )

    # Quarantine -------------------------------------------------------------------

    async def quarantine(
        self,
        server_name: str,
        local_ids: Sequence[str],
        remote: Sequence[tuple[str, str]],
        by: str | None,
    ) -> int:
        """Quarantine (``by`` a user id) or release (``by`` None) the named media; rows
        changed. Each named media whose state changed gets a change record
        (``quarantine_changes``)."""
        if self._change_ids is None:
            self._change_ids = await IdGenerator.load(
                self._db, "media_quarantine_changes", "stream_id"
            )
        ids = self._change_ids
        named = [(server_name, m) for m in dict.fromkeys(local_ids)] + list(dict.fromkeys(remote))

        def _states(txn: Transaction) -> dict[tuple[str, str], bool]:
            states = {}
            for origin, media_id in named:
                row = txn.select_one(
                    "SELECT quarantined_by FROM media WHERE server_name = ? AND media_id = ?",
                    (origin, media_id),
                )
                if row is not None:
                    states[(origin, media_id)] = row[0] is not None
            return states

        def _txn(txn: Transaction) -> int:
            before = _states(txn)
            count = _quarantine_txn(txn, server_name, local_ids, remote, by)
            # Recorded when the named media's state changed (not for unknown media, nor
            # for protected media a quarantine left alone).
            for key, quarantined in _states(txn).items():
                if before.get(key) != quarantined:
                    txn.execute(
                        "INSERT INTO media_quarantine_changes (stream_id, origin, media_id,"
                        " quarantined) VALUES (?, ?, ?, ?)",
                        (ids.next_id(), key[0], key[1], 1 if quarantined else 0),
                    )
            return count

        return await self._db.run_interaction("quarantine_media", _txn)

    async def quarantine_changes(self, after: int, limit: int) -> list[tuple[int, str, str, bool]]:
        """(stream id, origin, media id, quarantined) of the changes after ``after``."""
        rows = await self._db.run_interaction(
            "quarantine_changes",
            lambda txn: txn.select_all(
                "SELECT stream_id, origin, media_id, quarantined FROM media_quarantine_changes"
                " WHERE stream_id > ? ORDER BY stream_id LIMIT ?",
                (after, limit),
            ),
        )
        return [(int(r[0]), str(r[1]), str(r[2]), bool(r[3])) for r in rows]  # type: ignore[call-overload]

    async def quarantine_room(self, room_id: str, server_name: str, by: str) -> int:
        def _txn(txn: Transaction) -> int:
            media = _media_in_room_txn(txn, room_id, server_name)
            return _quarantine_txn(txn, server_name, media.local, media.remote, by)

        return await self._db.run_interaction("quarantine_room_media", _txn)

    async def quarantine_user(self, user_id: str, server_name: str, by: str) -> int:
        def _txn(txn: Transaction) -> int:
            rows = txn.select_all(
                "SELECT media_id FROM media WHERE server_name = ? AND user_id = ?"
                " AND quarantined_by IS NULL",
                (server_name, user_id),
            )
            return _quarantine_txn(txn, server_name, [str(r[0]) for r in rows], [], by)

        return await self._db.run_interaction("quarantine_user_media", _txn)

    async def set_protected(self, server_name: str, media_id: str, safe: bool) -> None:
        def _txn(txn: Transaction) -> None:
            txn.execute(
                "UPDATE media SET safe_from_quarantine = ? WHERE server_name = ? AND media_id = ?",
                (int(safe), server_name, media_id),
            )

        await self._db.run_interaction("protect_media", _txn)

    # Deletion ---------------------------------------------------------------------

    async def old_local_media(
        self, server_name: str, before_ts: int, size_gt: int, keep_profiles: bool
    ) -> list[str]:
        """Local media created before ``before_ts`` and larger than ``size_gt`` bytes,
        neither quarantined nor protected (as Synapse's admin deletion); with
        ``keep_profiles``, not a user's or a room's current avatar."""

        def _txn(txn: Transaction) -> list[str]:
            rows = txn.select_all(
                "SELECT media_id FROM media WHERE server_name = ? AND created_ts < ?"
                " AND size IS NOT NULL AND size > ? AND quarantined_by IS NULL"
                " AND safe_from_quarantine = 0 ORDER BY created_ts, media_id",
                (server_name, before_ts, size_gt),
            )
            ids = [str(r[0]) for r in rows]
            if keep_profiles and ids:
                avatars = _local_avatar_ids(txn, server_name)
                ids = [i for i in ids if i not in avatars]
            return ids

        return await self._db.run_interaction("old_local_media", _txn)

    async def old_remote_media(self, server_name: str, before_ts: int) -> list[tuple[str, str]]:
        """Other servers' media cached before ``before_ts`` and not quarantined."""

        def _txn(txn: Transaction) -> list[tuple[str, str]]:
            rows = txn.select_all(
                "SELECT server_name, media_id FROM media WHERE server_name <> ?"
                " AND created_ts < ? AND size IS NOT NULL AND quarantined_by IS NULL"
                " ORDER BY created_ts",
                (server_name, before_ts),
            )
            return [(str(r[0]), str(r[1])) for r in rows]

        return await self._db.run_interaction("old_remote_media", _txn)

    async def get_media_with_thumbnails(
        self, server_name: str, media_id: str
    ) -> tuple[MediaRecord, list[ThumbnailRecord]] | None:
        def _txn(txn: Transaction) -> tuple[MediaRecord, list[ThumbnailRecord]] | None:
            row = txn.select_one(
                f"SELECT {_COLUMNS} FROM media WHERE server_name = ? AND media_id = ?",
                (server_name, media_id),
            )
            if row is None:
                return None
            thumbs = txn.select_all(
                "SELECT width, height, method, content_type, size, animated"
                " FROM media_thumbnails WHERE server_name = ? AND media_id = ?",
                (server_name, media_id),
            )
            return _record(row), [
                ThumbnailRecord(int(t[0]), int(t[1]), str(t[2]), str(t[3]), int(t[4]), bool(t[5]))
                for t in thumbs
            ]

        return await self._db.run_interaction("get_media_with_thumbnails", _txn)

    async def delete_media(self, server_name: str, media_id: str) -> bool:
        """Forget one media and its thumbnails; False when it was not there."""

        def _txn(txn: Transaction) -> bool:
            row = txn.select_one(
                "SELECT user_id, size, url_cache FROM media WHERE server_name = ? AND media_id = ?",
                (server_name, media_id),
            )
            if row is None:
                return False
            txn.execute(
                "DELETE FROM media_thumbnails WHERE server_name = ? AND media_id = ?",
                (server_name, media_id),
            )
            txn.execute(
                "DELETE FROM media WHERE server_name = ? AND media_id = ?",
                (server_name, media_id),
            )
            user_id, size, url_cache = row
            if user_id is not None and size is not None and not url_cache:
                txn.execute(
                    "UPDATE media_usage SET media_count = media_count - 1,"
                    " total_bytes = total_bytes - ? WHERE user_id = ?",
                    (int(size), user_id),
                )
            return True

        return await self._db.run_interaction("delete_media", _txn)

    # Statistics -------------------------------------------------------------------

    async def user_media_statistics(
        self,
        server_name: str,
        *,
        start: int,
        limit: int,
        order_by: str,
        backwards: bool,
        from_ts: int,
        until_ts: int | None,
        search_term: str | None,
    ) -> tuple[list[UserMediaStatistics], int]:
        """Synapse's ``GET /statistics/users/media``: per local uploader, the count and
        bytes of their media (URL previews left out); ``order_by`` is a key of
        ``MEDIA_STATISTICS_ORDER``."""
        column = MEDIA_STATISTICS_ORDER[order_by]
        direction = "DESC" if backwards else "ASC"
        filters = ["m.server_name = ?", "m.user_id IS NOT NULL", "m.size IS NOT NULL"]
        filters.append("m.url_cache = 0")
        args: list[Any] = [server_name]
        if search_term:
            filters.append("(m.user_id LIKE ? OR p.displayname LIKE ?)")
            args += [f"@%{search_term}%:%", f"%{search_term}%"]
        if from_ts:
            filters.append("m.created_ts >= ?")
            args.append(from_ts)
        if until_ts is not None:
            filters.append("m.created_ts <= ?")
            args.append(until_ts)
        base = (
            "FROM media AS m LEFT JOIN profiles AS p ON m.user_id = p.user_id"
            f" WHERE {' AND '.join(filters)} GROUP BY m.user_id, p.displayname"
        )

        def _txn(txn: Transaction) -> tuple[list[UserMediaStatistics], int]:
            row = txn.select_one(f"SELECT COUNT(*) FROM (SELECT m.user_id {base}) AS c", args)
            total = int(row[0]) if row else 0
            rows = txn.select_all(
                "SELECT m.user_id, p.displayname, COUNT(m.media_id) AS media_count,"
                f" SUM(m.size) AS media_length {base}"
                f" ORDER BY {column} {direction}, m.user_id ASC LIMIT ? OFFSET ?",
                [*args, limit, start],
            )
            return [
                UserMediaStatistics(str(r[0]), r[1], int(r[2]), int(r[3] or 0)) for r in rows
            ], total

        return await self._db.run_interaction("user_media_statistics", _txn)


def _media_in_room_txn(txn: Transaction, room_id: str, server_name: str) -> RoomMedia:
    local: list[str] = []
    remote: list[tuple[str, str]] = []
    before: int | None = None
    while True:
        where = "" if before is None else " AND stream_ordering < ?"
        args: list[Any] = [room_id, "%mxc://%"]
        if before is not None:
            args.append(before)
        rows = txn.select_all(
            "SELECT stream_ordering, json FROM events WHERE room_id = ? AND outlier = 0"
            f" AND json LIKE ?{where} ORDER BY stream_ordering DESC LIMIT ?",
            [*args, _BATCH],
        )
        for stream_ordering, raw in rows:
            before = int(stream_ordering)
            try:
                content = json.loads(raw).get("content")
            except (ValueError, AttributeError):
                continue
            for origin, media_id in media_uris_of_content(content):
                if origin == server_name:
                    local.append(media_id)
                else:
                    remote.append((origin, media_id))
        if len(rows) < _BATCH:
            return RoomMedia(local, remote)


def _quarantine_txn(
    txn: Transaction,
    server_name: str,
    local_ids: Sequence[str],
    remote: Sequence[tuple[str, str]],
    by: str | None,
) -> int:
    hashes: set[str] = set()
    without_hash: set[tuple[str, str]] = set()
    for chunk in _chunks(list(dict.fromkeys(local_ids))):
        sql = (
            "SELECT sha256, media_id FROM media WHERE server_name = ?"
            f" AND media_id IN ({_placeholders(len(chunk))})"
        )
        if by is not None:
            sql += " AND safe_from_quarantine = 0"
        for sha256, media_id in txn.select_all(sql, [server_name, *chunk]):
            if sha256:
                hashes.add(str(sha256))
            else:
                without_hash.add((server_name, str(media_id)))
    for origin, media_id in dict.fromkeys(remote):
        row = txn.select_one(
            "SELECT sha256 FROM media WHERE server_name = ? AND media_id = ?",
            (origin, media_id),
        )
        if row is None:
            continue
        if row[0]:
            hashes.add(str(row[0]))
        else:
            without_hash.add((origin, media_id))
    # Protected local media keeps its state whichever copy of its bytes is quarantined.
    unprotected = "" if by is None else " AND NOT (server_name = ? AND safe_from_quarantine = 1)"
    extra: list[Any] = [] if by is None else [server_name]
    count = 0
    for chunk in _chunks(sorted(hashes)):
        txn.execute(
            f"UPDATE media SET quarantined_by = ? WHERE sha256 IN ({_placeholders(len(chunk))})"
            + unprotected,
            [by, *chunk, *extra],
        )
        count += txn.rowcount
    for origin, media_id in sorted(without_hash):
        txn.execute(
            "UPDATE media SET quarantined_by = ? WHERE server_name = ? AND media_id = ?",
            (by, origin, media_id),
        )
        count += txn.rowcount
    return count


def _local_avatar_ids(txn: Transaction, server_name: str) -> set[str]:
    """Local media ids in use as a profile avatar, a room member's avatar or a room's
    avatar (current state)."""
    prefix = f"mxc://{server_name}/"
    found: set[str] = set()

    def add(value: Any) -> None:
        if isinstance(value, str) and value.startswith(prefix):
            found.add(value[len(prefix) :].split("#", 1)[0].split("?", 1)[0])

    for (avatar,) in txn.select_all(
        "SELECT avatar_url FROM profiles WHERE avatar_url LIKE ?", (prefix + "%",)
    ):
        add(avatar)
    rows = txn.select_all(
        "SELECT e.type, e.json FROM current_state_events AS c"
        " JOIN events AS e ON e.event_id = c.event_id"
        " WHERE c.type IN ('m.room.member', 'm.room.avatar') AND e.json LIKE ?",
        ("%" + prefix + "%",),
    )
    for event_type, raw in rows:
        try:
            content = json.loads(raw).get("content")
        except (ValueError, AttributeError):
            continue
        if isinstance(content, dict):
            add(content.get("avatar_url" if event_type == "m.room.member" else "url"))
    return found
