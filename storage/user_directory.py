"""User directory search over current room memberships and profiles.

Invariant: a user is returned only if they are joined to a room the searcher is joined
to, or to a room whose current join rule is ``public`` or whose history visibility is
``world_readable``; deactivated local users are never returned. With
``search_all_users`` (as Synapse's option), every local user and every user joined to a
room one of our users is joined to is returned as well, except the searcher. The query
reads ``current_state_events`` directly, so the directory is never stale.

Names and avatars: a local user's come from their profile; a remote user's from their
latest current membership event (we hold no profile of theirs), as Synapse does.

Matching here is a superset (substring, ASCII case-insensitive); the handler applies
the exact word-prefix rule and the ranking.
"""

from __future__ import annotations

from dataclasses import dataclass

from storage.database import Database, Transaction


@dataclass(frozen=True, slots=True)
class DirectoryEntry:
    user_id: str
    display_name: str | None
    avatar_url: str | None
    shares_room: bool  # with the searcher (as opposed to only being in a public room)


@dataclass(frozen=True, slots=True)
class _Row:
    user_id: str
    local: bool
    profile_name: str | None
    profile_avatar: str | None
    member_name: object
    member_avatar: object
    stream: int
    shares_room: bool


def _content_field(engine: str, key: str, table: str = "e") -> str:
    """SQL reading ``content.<key>`` of the JSON in ``<table>.json`` as text."""
    if engine == "sqlite":
        return f"json_extract({table}.json, '$.content.{key}')"
    return f"({table}.json::json -> 'content' ->> '{key}')"


def _like_pattern(word: str) -> str:
    escaped = word.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _merge(rows: list[_Row]) -> list[DirectoryEntry]:
    """One entry per user: a local user's profile, or a remote user's latest
    membership event's name and avatar (when they are strings)."""
    by_user: dict[str, list[_Row]] = {}
    for row in rows:
        by_user.setdefault(row.user_id, []).append(row)
    entries = []
    for user_id, user_rows in by_user.items():
        shares = any(r.shares_room for r in user_rows)
        local = [r for r in user_rows if r.local]
        if local:
            name, avatar = local[0].profile_name, local[0].profile_avatar
        else:
            latest = max(user_rows, key=lambda r: r.stream)
            name = latest.member_name if isinstance(latest.member_name, str) else None
            avatar = latest.member_avatar if isinstance(latest.member_avatar, str) else None
        entries.append(DirectoryEntry(user_id, name or None, avatar or None, shares))
    return entries


class UserDirectoryStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def search(
        self, searcher: str, words: list[str], *, search_all_users: bool = False
    ) -> list[DirectoryEntry]:
        """Visible users whose user id or display name contains every word.

        ``words`` must be lower-case ASCII: SQLite's LOWER() folds nothing else.
        """

        def _txn(txn: Transaction) -> list[DirectoryEntry]:
            engine = txn.database_engine
            join_rule = _content_field(engine, "join_rule")
            visibility = _content_field(engine, "history_visibility")
            member_name = _content_field(engine, "displayname", "me")
            member_avatar = _content_field(engine, "avatar_url", "me")
            clauses: list[str] = []
            match_args: list[object] = []
            for word in words:
                clauses.append(
                    "(LOWER(m.state_key) LIKE ? ESCAPE '\\'"
                    " OR LOWER(p.displayname) LIKE ? ESCAPE '\\'"
                    f" OR (u.user_id IS NULL AND LOWER({member_name}) LIKE ? ESCAPE '\\'))"
                )
                match_args += [_like_pattern(word)] * 3
            match = "".join(f" AND {c}" for c in clauses)
            # Any room one of our users is joined to (a room the server left keeps
            # its last current state, but no longer shows anyone).
            ours = (
                "m.room_id IN (SELECT c.room_id FROM current_state_events c"
                " JOIN users lu ON lu.user_id = c.state_key"
                " WHERE c.type = 'm.room.member' AND c.membership = 'join')"
            )
            visible_args: list[object] = []
            if search_all_users:
                visible = ours
            else:
                # Others in a room with the searcher; anyone (the searcher too) in a
                # public or world-readable room of ours. As Synapse: the searcher does
                # not find themselves through a private room.
                visible = (
                    "((mine.room_id IS NOT NULL AND m.state_key <> ?) OR ("
                    f" {ours} AND m.room_id IN ("
                    "  SELECT c.room_id FROM current_state_events c"
                    "  JOIN events e ON e.event_id = c.event_id"
                    "  WHERE c.state_key = '' AND ("
                    f"   (c.type = 'm.room.join_rules' AND {join_rule} = 'public')"
                    f"   OR (c.type = 'm.room.history_visibility'"
                    f"       AND {visibility} = 'world_readable'))"
                    " )))"
                )
                visible_args.append(searcher)
            rows = txn.select_all(
                "SELECT m.state_key, u.user_id, p.displayname, p.avatar_url,"
                f" {member_name}, {member_avatar}, me.stream_ordering,"
                " CASE WHEN mine.room_id IS NULL THEN 0 ELSE 1 END"
                " FROM current_state_events m"
                " JOIN events me ON me.event_id = m.event_id"
                " LEFT JOIN profiles p ON p.user_id = m.state_key"
                " LEFT JOIN users u ON u.user_id = m.state_key"
                " LEFT JOIN current_state_events mine ON mine.room_id = m.room_id"
                "  AND mine.type = 'm.room.member' AND mine.state_key = ?"
                "  AND mine.membership = 'join'"
                " WHERE m.type = 'm.room.member' AND m.membership = 'join'"
                " AND (u.deactivated IS NULL OR u.deactivated = 0)"
                f" AND {visible}{match}",
                [searcher, *visible_args, *match_args],
            )
            found = [
                _Row(r[0], r[1] is not None, r[2], r[3], r[4], r[5], int(r[6]), bool(r[7]))
                for r in rows
            ]
            if search_all_users:
                local_match = "".join(
                    " AND (LOWER(u.user_id) LIKE ? ESCAPE '\\'"
                    " OR LOWER(p.displayname) LIKE ? ESCAPE '\\')"
                    for _ in words
                )
                for r in txn.select_all(
                    "SELECT u.user_id, p.displayname, p.avatar_url FROM users u"
                    " LEFT JOIN profiles p ON p.user_id = u.user_id"
                    " WHERE (u.deactivated IS NULL OR u.deactivated = 0)" + local_match,
                    [arg for word in words for arg in [_like_pattern(word)] * 2],
                ):
                    found.append(_Row(r[0], True, r[1], r[2], None, None, 0, False))
                found = [row for row in found if row.user_id != searcher]
            return _merge(found)

        return await self._db.run_interaction("search_user_directory", _txn)

    async def share_a_room(self, user_a: str, user_b: str) -> bool:
        """Whether both users are joined to at least one common room."""

        def _txn(txn: Transaction) -> bool:
            row = txn.select_one(
                "SELECT 1 FROM current_state_events a"
                " JOIN current_state_events b ON b.room_id = a.room_id"
                " WHERE a.type = 'm.room.member' AND a.state_key = ? AND a.membership = 'join'"
                " AND b.type = 'm.room.member' AND b.state_key = ? AND b.membership = 'join'"
                " LIMIT 1",
                (user_a, user_b),
            )
            return row is not None

        return await self._db.run_interaction("share_a_room", _txn)

    async def shares_room_with_local_user(self, user_id: str) -> bool:
        """Whether the user is joined to a room one of our users is joined to."""

        def _txn(txn: Transaction) -> bool:
            row = txn.select_one(
                "SELECT 1 FROM current_state_events a"
                " JOIN current_state_events b ON b.room_id = a.room_id"
                " JOIN users u ON u.user_id = b.state_key"
                " WHERE a.type = 'm.room.member' AND a.state_key = ? AND a.membership = 'join'"
                " AND b.type = 'm.room.member' AND b.membership = 'join'"
                " AND b.state_key <> a.state_key"
                " LIMIT 1",
                (user_id,),
            )
            return row is not None

        return await self._db.run_interaction("shares_room_with_local_user", _txn)
