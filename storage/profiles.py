"""Per-user profile fields: display name and avatar URL in columns, others as JSON."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from storage.database import Database, Transaction

COLUMN_FIELDS = ("displayname", "avatar_url")


@dataclass(frozen=True, slots=True)
class Profile:
    displayname: str | None
    avatar_url: str | None
    custom: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.custom)
        if self.displayname is not None:
            out["displayname"] = self.displayname
        if self.avatar_url is not None:
            out["avatar_url"] = self.avatar_url
        return out


class ProfileStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def get_profile(self, user_id: str) -> Profile | None:
        def _txn(txn: Transaction) -> Profile | None:
            row = txn.select_one(
                "SELECT displayname, avatar_url, custom_fields FROM profiles WHERE user_id = ?",
                (user_id,),
            )
            if row is None:
                return None
            return Profile(row[0], row[1], json.loads(row[2]) if row[2] else {})

        return await self._db.run_interaction("get_profile", _txn)

    async def set_field(self, user_id: str, name: str, value: Any) -> None:
        """Set (or with ``None`` remove) one field."""

        def _txn(txn: Transaction) -> None:
            if not txn.select_one("SELECT 1 FROM profiles WHERE user_id = ?", (user_id,)):
                txn.execute("INSERT INTO profiles (user_id) VALUES (?)", (user_id,))
            if name in COLUMN_FIELDS:
                txn.execute(f"UPDATE profiles SET {name} = ? WHERE user_id = ?", (value, user_id))
                return
            row = txn.select_one("SELECT custom_fields FROM profiles WHERE user_id = ?", (user_id,))
            custom = json.loads(row[0]) if row and row[0] else {}
            if value is None:
                custom.pop(name, None)
            else:
                custom[name] = value
            txn.execute(
                "UPDATE profiles SET custom_fields = ? WHERE user_id = ?",
                (json.dumps(custom) if custom else None, user_id),
            )

        await self._db.run_interaction("set_profile_field", _txn)
