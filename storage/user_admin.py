"""The admin list of local accounts (Synapse's ``GET /_synapse/admin/v2/users``): one
query over users, profiles, erasure, restrictions and devices, filtered, ordered and
paged in the database."""

from __future__ import annotations

from dataclasses import dataclass

from storage.database import Database, Transaction

# The admin API's `order_by` values -> the column each orders by.
ORDER_COLUMNS = {
    "name": "u.user_id",
    "displayname": "p.displayname",
    "is_guest": "u.is_guest",
    "admin": "u.admin",
    "deactivated": "u.deactivated",
    "user_type": "u.user_type",
    "avatar_url": "p.avatar_url",
    "shadow_banned": "COALESCE(r.shadow_banned, 0)",
    "creation_ts": "u.creation_ts",
    "last_seen_ts": "d.last_seen_ts",
    "locked": "COALESCE(r.locked, 0)",
}


@dataclass(frozen=True, slots=True)
class UserListFilter:
    name: str | None = None
    user_id: str | None = None
    guests: bool = True
    deactivated: bool | None = False
    admins: bool | None = None
    locked: bool = False
    not_user_types: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class UserListEntry:
    name: str
    user_type: str | None
    is_guest: bool
    admin: bool
    deactivated: bool
    shadow_banned: bool
    displayname: str | None
    avatar_url: str | None
    creation_ts: int
    erased: bool
    last_seen_ts: int | None
    locked: bool


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _where(f: UserListFilter) -> tuple[str, list[object]]:
    clauses: list[str] = []
    args: list[object] = []
    if f.name:
        needle = _like_escape(f.name.lower())
        clauses.append(
            "(LOWER(u.user_id) LIKE ? ESCAPE '\\' OR LOWER(p.displayname) LIKE ? ESCAPE '\\')"
        )
        args += [f"@%{needle}%:%", f"%{needle}%"]
    elif f.user_id:
        clauses.append("LOWER(u.user_id) LIKE ? ESCAPE '\\'")
        args.append(f"%{_like_escape(f.user_id.lower())}%")
    if not f.guests:
        clauses.append("u.is_guest = 0")
    if f.deactivated is not None:
        clauses.append("u.deactivated = ?")
        args.append(1 if f.deactivated else 0)
    if not f.locked:
        clauses.append("COALESCE(r.locked, 0) = 0")
    if f.admins is not None:
        clauses.append("u.admin = ?")
        args.append(1 if f.admins else 0)
    if f.not_user_types:
        types = [t for t in f.not_user_types if t]
        parts = []
        if types:
            marks = ",".join("?" * len(types))
            parts.append(f"u.user_type NOT IN ({marks})")
            args += types
        if "" in f.not_user_types:
            clauses.append(" AND ".join([*parts, "u.user_type IS NOT NULL"]))
        else:
            clauses.append(f"({parts[0]} OR u.user_type IS NULL)")
    return ("WHERE " + " AND ".join(clauses)) if clauses else "", args


class UserAdminStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def list_users(
        self, f: UserListFilter, *, start: int, limit: int, order_by: str, backwards: bool
    ) -> tuple[list[UserListEntry], int]:
        """One page of local users and the count of all that match."""
        order_column = ORDER_COLUMNS[order_by]
        direction = "DESC" if backwards else "ASC"
        where, args = _where(f)
        base = f"""
            FROM users AS u
            LEFT JOIN profiles AS p ON p.user_id = u.user_id
            LEFT JOIN erased_users AS e ON e.user_id = u.user_id
            LEFT JOIN user_restrictions AS r ON r.user_id = u.user_id
            LEFT JOIN (
                SELECT user_id, MAX(last_seen_ts) AS last_seen_ts FROM devices GROUP BY user_id
            ) AS d ON d.user_id = u.user_id
            {where}
        """

        def _txn(txn: Transaction) -> tuple[list[UserListEntry], int]:
            row = txn.select_one("SELECT COUNT(*) " + base, args)
            total = int(row[0]) if row else 0  # type: ignore[call-overload]
            rows = txn.select_all(
                "SELECT u.user_id, u.user_type, u.is_guest, u.admin, u.deactivated,"
                " COALESCE(r.shadow_banned, 0), p.displayname, p.avatar_url, u.creation_ts,"
                " e.user_id, d.last_seen_ts, COALESCE(r.locked, 0) "
                + base
                + f" ORDER BY {order_column} {direction}, u.user_id ASC LIMIT ? OFFSET ?",
                [*args, limit, start],
            )
            users = [
                UserListEntry(
                    name=str(r[0]),
                    user_type=None if r[1] is None else str(r[1]),
                    is_guest=bool(r[2]),
                    admin=bool(r[3]),
                    deactivated=bool(r[4]),
                    shadow_banned=bool(r[5]),
                    displayname=None if r[6] is None else str(r[6]),
                    avatar_url=None if r[7] is None else str(r[7]),
                    creation_ts=int(r[8]),  # type: ignore[call-overload]
                    erased=r[9] is not None,
                    last_seen_ts=None if r[10] is None else int(r[10]),  # type: ignore[call-overload]
                    locked=bool(r[11]),
                )
                for r in rows
            ]
            return users, total

        return await self._db.run_interaction("list_users", _txn)

    # External ids ------------------------------------------------------------------

    async def get_external_ids(self, user_id: str) -> list[tuple[str, str]]:
        """(auth provider, external id) pairs of the user, sorted."""
        rows = await self._db.run_interaction(
            "get_external_ids",
            lambda txn: txn.select_all(
                "SELECT auth_provider, external_id FROM user_external_ids WHERE user_id = ?"
                " ORDER BY auth_provider, external_id",
                (user_id,),
            ),
        )
        return [(str(r[0]), str(r[1])) for r in rows]

    async def replace_external_ids(self, user_id: str, pairs: list[tuple[str, str]]) -> bool:
        """Make ``pairs`` the user's whole set; False (nothing changed) when another user
        holds one of them."""

        def _txn(txn: Transaction) -> bool:
            for provider, external_id in pairs:
                row = txn.select_one(
                    "SELECT user_id FROM user_external_ids"
                    " WHERE auth_provider = ? AND external_id = ?",
                    (provider, external_id),
                )
                if row is not None and row[0] != user_id:
                    return False
            txn.execute("DELETE FROM user_external_ids WHERE user_id = ?", (user_id,))
            for provider, external_id in dict.fromkeys(pairs):
                txn.execute(
                    "INSERT INTO user_external_ids (auth_provider, external_id, user_id)"
                    " VALUES (?, ?, ?)",
                    (provider, external_id, user_id),
                )
            return True

        return await self._db.run_interaction("replace_external_ids", _txn)

    async def external_ids_free(self, user_id: str, pairs: list[tuple[str, str]]) -> bool:
        """Whether no user but ``user_id`` holds one of ``pairs``."""

        def _txn(txn: Transaction) -> bool:
            for provider, external_id in pairs:
                row = txn.select_one(
                    "SELECT user_id FROM user_external_ids"
                    " WHERE auth_provider = ? AND external_id = ?",
                    (provider, external_id),
                )
                if row is not None and row[0] != user_id:
                    return False
            return True

        return await self._db.run_interaction("external_ids_free", _txn)

    async def user_by_external_id(self, provider: str, external_id: str) -> str | None:
        row = await self._db.run_interaction(
            "user_by_external_id",
            lambda txn: txn.select_one(
                "SELECT user_id FROM user_external_ids WHERE auth_provider = ? AND external_id = ?",
                (provider, external_id),
            ),
        )
        return None if row is None else str(row[0])

    # Activity counts ---------------------------------------------------------------

    async def sent_invite_count(self, user_id: str, from_ts: int) -> int:
        """Invites the user sent since ``from_ts`` (their events' timestamp: we keep no
        separate receive time)."""
        return await self._count(
            "sent_invite_count",
            "SELECT COUNT(m.event_id) FROM room_memberships AS m"
            " JOIN events AS e ON e.event_id = m.event_id"
            " WHERE m.sender = ? AND m.membership = 'invite' AND e.origin_server_ts >= ?",
            (user_id, from_ts),
        )

    async def cumulative_joined_room_count(self, user_id: str, from_ts: int) -> int:
        """Rooms the user joined since ``from_ts``, whether or not they are still there."""
        return await self._count(
            "cumulative_joined_room_count",
            "SELECT COUNT(DISTINCT m.room_id) FROM room_memberships AS m"
            " JOIN events AS e ON e.event_id = m.event_id"
            " WHERE m.sender = ? AND m.user_id = ? AND m.membership = 'join'"
            " AND e.origin_server_ts >= ?",
            (user_id, user_id, from_ts),
        )

    async def _count(self, name: str, sql: str, args: tuple[object, ...]) -> int:
        row = await self._db.run_interaction(name, lambda txn: txn.select_one(sql, args))
        return int(row[0]) if row and row[0] is not None else 0  # type: ignore[call-overload]

    async def search_users(self, term: str) -> list[tuple[str, str | None, bool, bool, str | None]]:
        """Synapse's ``search_users``: local accounts whose id contains ``term``."""
        rows = await self._db.run_interaction(
            "search_users",
            lambda txn: txn.select_all(
                "SELECT user_id, password_hash, is_guest, admin, user_type FROM users"
                " WHERE user_id LIKE ? ESCAPE '\\' ORDER BY user_id",
                (f"%{_like_escape(term)}%",),
            ),
        )
        return [
            (
                str(r[0]),
                None if r[1] is None else str(r[1]),
                bool(r[2]),
                bool(r[3]),
                None if r[4] is None else str(r[4]),
            )
            for r in rows
        ]

    async def events_to_redact(
        self,
        user_id: str,
        room_id: str,
        limit: int,
        after_ts: int | None,
        before_ts: int | None,
    ) -> list[str]:
        """The user's ``limit`` newest events of the room (within the times given) that a
        redaction would change: not redacted yet, not redactions, and of memberships only
        joins (their profile)."""
        clauses = [
            "e.room_id = ?",
            "e.sender = ?",
            "e.outlier = 0",
            "e.rejected_reason IS NULL",
        ]
        args: list[object] = [room_id, user_id]
        if after_ts is not None:
            clauses.append("e.origin_server_ts >= ?")
            args.append(after_ts)
        if before_ts is not None:
            clauses.append("e.origin_server_ts <= ?")
            args.append(before_ts)
        sql = (
            "SELECT e.event_id, e.type, e.redacted_by, m.membership FROM events AS e"
            " LEFT JOIN room_memberships AS m ON m.event_id = e.event_id"
            f" WHERE {' AND '.join(clauses)} ORDER BY e.stream_ordering DESC LIMIT ?"
        )
        rows = await self._db.run_interaction(
            "events_to_redact", lambda txn: txn.select_all(sql, [*args, limit])
        )
        return [
            str(event_id)
            for event_id, event_type, redacted_by, membership in rows
            if redacted_by is None
            and event_type not in ("m.room.redaction", "m.room.create")
            and (event_type != "m.room.member" or membership == "join")
        ]
