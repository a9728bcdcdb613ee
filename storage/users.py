"""Users, their devices and their access and refresh tokens.

Tokens are stored as SHA-256 hex digests only; the clear token exists solely in the
response that hands it out. Deleting a device deletes its tokens in the same
transaction, so a deleted device can never authenticate again.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

from homeserver.bus import Bus, DevicesChanged
from storage.database import Database, Transaction
from storage.id_generator import IdGenerator

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class UserRecord:
    user_id: str
    password_hash: str | None
    creation_ts: int
    admin: bool
    is_guest: bool
    deactivated: bool
    appservice_id: str | None
    user_type: str | None = None


@dataclass(frozen=True, slots=True)
class DeviceRecord:
    user_id: str
    device_id: str
    display_name: str | None
    last_seen_ts: int | None
    last_seen_ip: str | None
    last_seen_user_agent: str | None


@dataclass(frozen=True, slots=True)
class AccessTokenRecord:
    token_id: int
    user_id: str
    device_id: str | None
    valid_until_ms: int | None
    refresh_token_id: int | None


@dataclass(frozen=True, slots=True)
class RefreshTokenRecord:
    token_id: int
    user_id: str
    device_id: str
    next_token_id: int | None
    expiry_ts: int | None


_USER_COLUMNS = (
    "user_id, password_hash, creation_ts, admin, is_guest, deactivated, appservice_id, user_type"
)
_DEVICE_COLUMNS = (
    "user_id, device_id, display_name, last_seen_ts, last_seen_ip, last_seen_user_agent"
)


def _user(row: tuple[object, ...]) -> UserRecord:
    return UserRecord(
        str(row[0]),
        row[1] if row[1] is None else str(row[1]),
        int(row[2]),  # type: ignore[call-overload]
        bool(row[3]),
        bool(row[4]),
        bool(row[5]),
        row[6] if row[6] is None else str(row[6]),
        row[7] if row[7] is None else str(row[7]),
    )


def _device(row: tuple[object, ...]) -> DeviceRecord:
    return DeviceRecord(*row)  # type: ignore[arg-type]


class UserStore:
    def __init__(self, db: Database, token_ids: IdGenerator, bus: Bus) -> None:
        self._db = db
        self._token_ids = token_ids
        self._bus = bus

    async def _devices_changed(self, user_id: str, device_ids: list[str], created: bool) -> None:
        if not device_ids:
            return
        # Awaited: the request that changed the devices answers after the follow-ups
        # (device list stream, pushers) are written.
        await self._bus.publish_and_wait(DevicesChanged(user_id, tuple(device_ids), created))

    # Users ---------------------------------------------------------------

    async def create_user(
        self,
        user_id: str,
        password_hash: str | None,
        now_ms: int,
        *,
        admin: bool = False,
        is_guest: bool = False,
        appservice_id: str | None = None,
        user_type: str | None = None,
    ) -> bool:
        """Insert the user; False if the id is taken (case-insensitively)."""

        def _txn(txn: Transaction) -> bool:
            if txn.select_one("SELECT 1 FROM users WHERE LOWER(user_id) = LOWER(?)", (user_id,)):
                return False
            txn.execute(
                "INSERT INTO users (user_id, password_hash, creation_ts, admin, is_guest,"
                " deactivated, appservice_id, user_type) VALUES (?, ?, ?, ?, ?, 0, ?, ?)",
                (
                    user_id,
                    password_hash,
                    now_ms,
                    int(admin),
                    int(is_guest),
                    appservice_id,
                    user_type,
                ),
            )
            txn.execute("INSERT INTO profiles (user_id) VALUES (?)", (user_id,))
            return True

        return await self._db.run_interaction("create_user", _txn)

    async def get_user(self, user_id: str) -> UserRecord | None:
        def _txn(txn: Transaction) -> UserRecord | None:
            row = txn.select_one(f"SELECT {_USER_COLUMNS} FROM users WHERE user_id = ?", (user_id,))
            return _user(row) if row else None

        return await self._db.run_interaction("get_user", _txn)

    async def find_user_case_insensitive(self, user_id: str) -> list[str]:
        def _txn(txn: Transaction) -> list[str]:
            rows = txn.select_all(
                "SELECT user_id FROM users WHERE LOWER(user_id) = LOWER(?)", (user_id,)
            )
            return [str(r[0]) for r in rows]

        return await self._db.run_interaction("find_user_ci", _txn)

    async def set_password_hash(self, user_id: str, password_hash: str | None) -> None:
        await self._db.run_interaction(
            "set_password_hash",
            lambda txn: txn.execute(
                "UPDATE users SET password_hash = ? WHERE user_id = ?", (password_hash, user_id)
            ),
        )

    async def upgrade_guest(self, user_id: str, password_hash: str | None) -> bool:
        """A guest account becomes a full user with ``password_hash``; False if
        ``user_id`` is not a guest (any more)."""

        def _txn(txn: Transaction) -> bool:
            txn.execute(
                "UPDATE users SET password_hash = ?, is_guest = 0"
                " WHERE user_id = ? AND is_guest = 1 AND deactivated = 0",
                (password_hash, user_id),
            )
            return txn.rowcount == 1

        return await self._db.run_interaction("upgrade_guest", _txn)

    async def set_admin(self, user_id: str, admin: bool) -> None:
        await self._db.run_interaction(
            "set_admin",
            lambda txn: txn.execute(
                "UPDATE users SET admin = ? WHERE user_id = ?", (int(admin), user_id)
            ),
        )

    async def set_user_type(self, user_id: str, user_type: str | None) -> None:
        await self._db.run_interaction(
            "set_user_type",
            lambda txn: txn.execute(
                "UPDATE users SET user_type = ? WHERE user_id = ?", (user_type, user_id)
            ),
        )

    async def reactivate_user(self, user_id: str) -> None:
        """Undo ``deactivate_user`` (the password, devices and profile stay gone) and
        any erasure, as Synapse's ``activate_account``."""

        def _txn(txn: Transaction) -> None:
            txn.execute("UPDATE users SET deactivated = 0 WHERE user_id = ?", (user_id,))
            txn.execute("DELETE FROM erased_users WHERE user_id = ?", (user_id,))

        await self._db.run_interaction("reactivate_user", _txn)

    async def is_erased(self, user_id: str) -> bool:
        return bool(await self.get_erased([user_id]))

    async def get_last_seen(self, user_id: str) -> int | None:
        """The latest ``last_seen_ts`` of the user's devices."""

        def _txn(txn: Transaction) -> int | None:
            row = txn.select_one(
                "SELECT MAX(last_seen_ts) FROM devices WHERE user_id = ?", (user_id,)
            )
            return int(row[0]) if row and row[0] is not None else None  # type: ignore[call-overload]

        return await self._db.run_interaction("get_last_seen", _txn)

    async def mark_erased(self, user_id: str) -> None:
        """Record a deactivation with ``erase`` (idempotent)."""
        await self._db.run_interaction(
            "mark_erased",
            lambda txn: txn.execute(
                "INSERT INTO erased_users (user_id) VALUES (?) ON CONFLICT DO NOTHING",
                (user_id,),
            ),
        )

    async def get_erased(self, user_ids: Iterable[str]) -> set[str]:
        """Which of ``user_ids`` are erased."""
        wanted = sorted(set(user_ids))

        def _txn(txn: Transaction) -> set[str]:
            out: set[str] = set()
            for i in range(0, len(wanted), 100):
                chunk = wanted[i : i + 100]
                marks = ",".join("?" * len(chunk))
                rows = txn.select_all(
                    f"SELECT user_id FROM erased_users WHERE user_id IN ({marks})", chunk
                )
                out.update(str(r[0]) for r in rows)
            return out

        if not wanted:
            return set()
        return await self._db.run_interaction("get_erased", _txn)

    async def deactivate_user(self, user_id: str) -> None:
        """Mark deactivated, drop the password, every device and every token at once."""

        def _txn(txn: Transaction) -> list[str]:
            devices = [
                str(r[0])
                for r in txn.select_all(
                    "SELECT device_id FROM devices WHERE user_id = ?", (user_id,)
                )
            ]
            txn.execute(
                "UPDATE users SET deactivated = 1, password_hash = NULL WHERE user_id = ?",
                (user_id,),
            )
            txn.execute("DELETE FROM access_tokens WHERE user_id = ?", (user_id,))
            txn.execute("DELETE FROM refresh_tokens WHERE user_id = ?", (user_id,))
            txn.execute("DELETE FROM devices WHERE user_id = ?", (user_id,))
            txn.execute(
                "UPDATE profiles SET displayname = NULL, avatar_url = NULL, custom_fields = NULL WHERE user_id = ?",
                (user_id,),
            )
            return devices

        devices = await self._db.run_interaction("deactivate_user", _txn)
        await self._devices_changed(user_id, devices, False)

    async def count_users(self) -> int:
        def _txn(txn: Transaction) -> int:
            row = txn.select_one("SELECT COUNT(*) FROM users")
            return int(row[0]) if row else 0

        return await self._db.run_interaction("count_users", _txn)

    # Devices -------------------------------------------------------------

    async def store_device(self, user_id: str, device_id: str, display_name: str | None) -> bool:
        """Create the device if new; True if it was created."""

        def _txn(txn: Transaction) -> bool:
            if txn.select_one(
                "SELECT 1 FROM devices WHERE user_id = ? AND device_id = ?", (user_id, device_id)
            ):
                return False
            txn.execute(
                "INSERT INTO devices (user_id, device_id, display_name) VALUES (?, ?, ?)",
                (user_id, device_id, display_name),
            )
            return True

        created = await self._db.run_interaction("store_device", _txn)
        if created:
            await self._devices_changed(user_id, [device_id], True)
        return created

    async def get_device(self, user_id: str, device_id: str) -> DeviceRecord | None:
        def _txn(txn: Transaction) -> DeviceRecord | None:
            row = txn.select_one(
                f"SELECT {_DEVICE_COLUMNS} FROM devices WHERE user_id = ? AND device_id = ?",
                (user_id, device_id),
            )
            return _device(row) if row else None

        return await self._db.run_interaction("get_device", _txn)

    async def get_devices(self, user_id: str) -> list[DeviceRecord]:
        def _txn(txn: Transaction) -> list[DeviceRecord]:
            rows = txn.select_all(
                f"SELECT {_DEVICE_COLUMNS} FROM devices WHERE user_id = ? ORDER BY device_id",
                (user_id,),
            )
            return [_device(r) for r in rows]

        return await self._db.run_interaction("get_devices", _txn)

    async def update_device_display_name(
        self, user_id: str, device_id: str, display_name: str | None
    ) -> bool:
        def _txn(txn: Transaction) -> bool:
            txn.execute(
                "UPDATE devices SET display_name = ? WHERE user_id = ? AND device_id = ?",
                (display_name, user_id, device_id),
            )
            return txn.rowcount > 0

        return await self._db.run_interaction("update_device", _txn)

    async def update_devices_last_seen(
        self, rows: list[tuple[str, str, int, str, str | None]]
    ) -> None:
        """(user id, device id, ts, ip, user agent) rows, in one transaction."""
        await self._db.run_interaction(
            "devices_last_seen",
            lambda txn: txn.execute_many(
                "UPDATE devices SET last_seen_ts = ?, last_seen_ip = ?, last_seen_user_agent = ?"
                " WHERE user_id = ? AND device_id = ?",
                [(ts, ip, ua, user_id, device_id) for user_id, device_id, ts, ip, ua in rows],
            ),
        )

    async def delete_devices(self, user_id: str, device_ids: list[str]) -> list[int]:
        """Delete devices and their tokens; return the ids of the access tokens removed."""

        def _txn(txn: Transaction) -> tuple[list[int], list[str]]:
            removed: list[int] = []
            deleted: list[str] = []
            for device_id in device_ids:
                rows = txn.select_all(
                    "SELECT id FROM access_tokens WHERE user_id = ? AND device_id = ?",
                    (user_id, device_id),
                )
                removed.extend(int(r[0]) for r in rows)
                txn.execute(
                    "DELETE FROM access_tokens WHERE user_id = ? AND device_id = ?",
                    (user_id, device_id),
                )
                txn.execute(
                    "DELETE FROM refresh_tokens WHERE user_id = ? AND device_id = ?",
                    (user_id, device_id),
                )
                txn.execute(
                    "DELETE FROM devices WHERE user_id = ? AND device_id = ?", (user_id, device_id)
                )
                if txn.rowcount > 0:
                    deleted.append(device_id)
            return removed, deleted

        removed, deleted = await self._db.run_interaction("delete_devices", _txn)
        await self._devices_changed(user_id, deleted, False)
        return removed

    # Tokens --------------------------------------------------------------

    async def add_access_token(
        self,
        user_id: str,
        device_id: str | None,
        token_hash: str,
        valid_until_ms: int | None = None,
        refresh_token_id: int | None = None,
    ) -> int:
        token_id = self._token_ids.next_id()
        await self._db.run_interaction(
            "add_access_token",
            lambda txn: txn.execute(
                "INSERT INTO access_tokens (id, token_hash, user_id, device_id, valid_until_ms,"
                " refresh_token_id) VALUES (?, ?, ?, ?, ?, ?)",
                (token_id, token_hash, user_id, device_id, valid_until_ms, refresh_token_id),
            ),
        )
        return token_id

    async def get_access_token(self, token_hash: str) -> AccessTokenRecord | None:
        def _txn(txn: Transaction) -> AccessTokenRecord | None:
            row = txn.select_one(
                "SELECT id, user_id, device_id, valid_until_ms, refresh_token_id"
                " FROM access_tokens WHERE token_hash = ?",
                (token_hash,),
            )
            return AccessTokenRecord(*row) if row else None  # type: ignore[arg-type]

        return await self._db.run_interaction("get_access_token", _txn)

    async def delete_access_token(self, token_id: int) -> None:
        """Remove the token and the refresh token it came with, if any."""

        def _txn(txn: Transaction) -> None:
            row = txn.select_one(
                "SELECT refresh_token_id FROM access_tokens WHERE id = ?", (token_id,)
            )
            txn.execute("DELETE FROM access_tokens WHERE id = ?", (token_id,))
            if row and row[0] is not None:
                txn.execute("DELETE FROM refresh_tokens WHERE id = ?", (row[0],))

        await self._db.run_interaction("delete_access_token", _txn)

    async def delete_access_tokens_for_user(
        self, user_id: str, except_token_id: int | None = None, device_id: str | None = None
    ) -> list[tuple[int, str | None]]:
        """Delete the user's tokens (optionally only a device's); return (id, device)."""

        def _txn(txn: Transaction) -> list[tuple[int, str | None]]:
            sql = "SELECT id, device_id FROM access_tokens WHERE user_id = ?"
            args: list[object] = [user_id]
            if device_id is not None:
                sql += " AND device_id = ?"
                args.append(device_id)
            rows = [(int(r[0]), r[1]) for r in txn.select_all(sql, args)]
            rows = [r for r in rows if r[0] != except_token_id]
            txn.execute_many("DELETE FROM access_tokens WHERE id = ?", [(r[0],) for r in rows])
            return rows

        return await self._db.run_interaction("delete_user_tokens", _txn)

    async def add_refresh_token(
        self, user_id: str, device_id: str, token_hash: str, expiry_ts: int | None
    ) -> int:
        token_id = self._token_ids.next_id()
        await self._db.run_interaction(
            "add_refresh_token",
            lambda txn: txn.execute(
                "INSERT INTO refresh_tokens (id, token_hash, user_id, device_id, expiry_ts)"
                " VALUES (?, ?, ?, ?, ?)",
                (token_id, token_hash, user_id, device_id, expiry_ts),
            ),
        )
        return token_id

    async def get_refresh_token(self, token_hash: str) -> RefreshTokenRecord | None:
        def _txn(txn: Transaction) -> RefreshTokenRecord | None:
            row = txn.select_one(
                "SELECT id, user_id, device_id, next_token_id, expiry_ts FROM refresh_tokens"
                " WHERE token_hash = ?",
                (token_hash,),
            )
            return RefreshTokenRecord(*row) if row else None  # type: ignore[arg-type]

        return await self._db.run_interaction("get_refresh_token", _txn)

    async def replace_refresh_token(
        self,
        old: RefreshTokenRecord,
        new_refresh_hash: str,
        new_refresh_expiry: int | None,
        new_access_hash: str,
        new_access_valid_until: int | None,
    ) -> list[int] | None:
        """Rotate: a new refresh/access pair; the old pair dies in the same transaction.

        Returns the ids of the access tokens removed, or None if the old refresh token
        was already gone (used by a concurrent refresh).
        """
        refresh_id = self._token_ids.next_id()
        access_id = self._token_ids.next_id()

        def _txn(txn: Transaction) -> list[int] | None:
            txn.execute("DELETE FROM refresh_tokens WHERE id = ?", (old.token_id,))
            if txn.rowcount != 1:
                return None
            txn.execute(
                "INSERT INTO refresh_tokens (id, token_hash, user_id, device_id, expiry_ts)"
                " VALUES (?, ?, ?, ?, ?)",
                (refresh_id, new_refresh_hash, old.user_id, old.device_id, new_refresh_expiry),
            )
            txn.execute(
                "INSERT INTO access_tokens (id, token_hash, user_id, device_id, valid_until_ms,"
                " refresh_token_id) VALUES (?, ?, ?, ?, ?, ?)",
                (
                    access_id,
                    new_access_hash,
                    old.user_id,
                    old.device_id,
                    new_access_valid_until,
                    refresh_id,
                ),
            )
            removed = [
                int(r[0])
                for r in txn.select_all(
                    "SELECT id FROM access_tokens WHERE refresh_token_id = ?", (old.token_id,)
                )
            ]
            txn.execute("DELETE FROM access_tokens WHERE refresh_token_id = ?", (old.token_id,))
            return removed

        return await self._db.run_interaction("replace_refresh_token", _txn)
