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
