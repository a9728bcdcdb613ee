"""User directory search over current room memberships and profiles.

Invariant: a user is returned only if they are joined to a room the searcher is joined
to, or to a room whose current join rule is ``public`` or whose history visibility is
``world_readable``; deactivated local users are never returned. The query reads
``current_state_events`` directly, so the directory is never stale.

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


def _content_field(engine: str, key: str) -> str:
    """SQL reading ``content.<key>`` of the JSON in ``e.json`` as text."""
    if engine == "sqlite":
        return f"json_extract(e.json, '$.content.{key}')"
    return f"(e.json::json -> 'content' ->> '{key}')"


def _like_pattern(word: str) -> str:
    escaped = word.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


class UserDirectoryStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def search(self, searcher: str, words: list[str]) -> list[DirectoryEntry]:
        """Visible users whose user id or display name contains every word.

        ``words`` must be lower-case ASCII: SQLite's LOWER() folds nothing else.
        """

        def _txn(txn: Transaction) -> list[DirectoryEntry]:
            engine = txn.database_engine
            join_rule = _content_field(engine, "join_rule")
            visibility = _content_field(engine, "history_visibility")
            clauses: list[str] = []
            args: list[object] = [searcher]
            for word in words:
                clauses.append(
                    "(LOWER(m.state_key) LIKE ? ESCAPE '\\'"
                    " OR LOWER(p.displayname) LIKE ? ESCAPE '\\')"
                )
                args += [_like_pattern(word), _like_pattern(word)]
            match = "".join(f" AND {c}" for c in clauses)
            rows = txn.select_all(
                "SELECT m.state_key, p.displayname, p.avatar_url,"
                " MAX(CASE WHEN mine.room_id IS NULL THEN 0 ELSE 1 END)"
                " FROM current_state_events m"
                " LEFT JOIN profiles p ON p.user_id = m.state_key"
                " LEFT JOIN users u ON u.user_id = m.state_key"
                " LEFT JOIN current_state_events mine ON mine.room_id = m.room_id"
                "  AND mine.type = 'm.room.member' AND mine.state_key = ?"
                "  AND mine.membership = 'join'"
                " WHERE m.type = 'm.room.member' AND m.membership = 'join'"
                " AND (u.deactivated IS NULL OR u.deactivated = 0)"
                " AND (mine.room_id IS NOT NULL OR m.room_id IN ("
                "  SELECT c.room_id FROM current_state_events c"
                "  JOIN events e ON e.event_id = c.event_id"
                "  WHERE c.state_key = '' AND ("
                f"   (c.type = 'm.room.join_rules' AND {join_rule} = 'public')"
                f"   OR (c.type = 'm.room.history_visibility' AND {visibility} = 'world_readable'))"
                " ))" + match + " GROUP BY m.state_key, p.displayname, p.avatar_url",
                args,
            )
            return [DirectoryEntry(r[0], r[1], r[2], bool(r[3])) for r in rows]

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
