"""Copy a stopped Synapse server's accounts into our (empty) database, through our stores.

Imported: users (password hashes, admin, guest, deactivated, user type, creation time),
devices (display names, last seen), access and refresh tokens, profiles, global and
per-room account data, push rules (user-defined rules, default-rule action and
enabled changes), pushers, E2EE device/one-time/fallback keys, cross-signing keys and
signatures, current key backups, local media and the signing key. Rooms and events are
not imported yet.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from twisted.internet import threads

from crypto.signing_key import key_id, read_signing_keys
from homeserver.handlers.auth import SYNAPSE_HASH_PREFIX, hash_token
from homeserver.media import thumbnailer
from homeserver.media.storage import (
    is_valid_media_id,
    local_content_key,
    local_thumbnail_key,
    remote_content_key,
    remote_thumbnail_key,
)
from homeserver.push.default_rules import KINDS
from homeserver.push.rules import PushRuleError, PushRuleSet
from storage.e2ee import CrossSigningKeyRecord, NewKey, Signature
from storage.key_backup import RoomKey
from storage.media import ImageFacts, NewUpload, ThumbnailRecord
from storage.push import PusherRecord
from storage.storage import Storage
from synapse_compat.import_synapse.source import SynapseDatabase

# Synapse's push rule priority classes (synapse/push/rulekinds.py).
_PRIORITY_CLASS_KIND = {1: "underride", 2: "sender", 3: "room", 4: "content", 5: "override"}


class ImportRefused(Exception):
    """The import cannot run; the message says why."""


@dataclass
class ImportReport:
    # table -> (rows in Synapse, rows written on our side)
    counts: dict[str, tuple[int, int]] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)


def _json(value: Any) -> Any:
    if isinstance(value, (bytes, memoryview)):
        value = bytes(value).decode("utf-8")
    if isinstance(value, str):
        return json.loads(value)
    return value


def _local_user_id(localpart_or_id: str, server_name: str) -> str:
    if localpart_or_id.startswith("@"):
        return localpart_or_id
    return f"@{localpart_or_id}:{server_name}"


async def target_is_empty(storage: Storage) -> bool:
    def _txn(txn: Any) -> bool:
        return (
            txn.select_one("SELECT 1 FROM users LIMIT 1") is None
            and txn.select_one("SELECT 1 FROM rooms LIMIT 1") is None
        )

    return bool(await storage.db.run_interaction("import_target_empty", _txn))


async def count_ours(storage: Storage, table: str, where: str = "") -> int:
    def _txn(txn: Any) -> int:
        row = txn.select_one(f"SELECT COUNT(*) FROM {table} {where}")
        return int(row[0]) if row else 0

    return int(await storage.db.run_interaction("import_count", _txn))


class SynapseImporter:
    def __init__(
        self,
        source: SynapseDatabase,
        storage: Storage,
        server_name: str,
        progress: Callable[[str], None] = print,
    ) -> None:
        self._src = source
        self._storage = storage
        self._server_name = server_name
        self._progress = progress
        self.report = ImportReport()
        self._users: set[str] = set()
        self._active: set[str] = set()

    def _count(self, name: str, theirs: int, ours: int) -> None:
        self.report.counts[name] = (theirs, ours)
        self._progress(f"  {name}: {ours} of {theirs} imported")

    def _skip(self, message: str) -> None:
        self.report.skipped.append(message)
        self._progress(f"  skipped: {message}")

    async def run(self) -> ImportReport:
        await self.import_users()
        await self.import_devices()
        await self.import_tokens()
        await self.import_profiles()
        await self.import_account_data()
        await self.import_push_rules()
        await self.import_pushers()
        await self.import_device_keys()
        await self.import_cross_signing()
        await self.import_key_backups()
        return self.report

    async def import_key_backups(self) -> None:
        """Each user's current (newest undeleted) server-side key backup with its keys.
        Its version number is a new one of ours (Synapse numbers per user)."""
        self._progress("Importing key backups...")
        if not self._src.has_table("e2e_room_keys_versions"):
            return
        versions = self._src.select(
            "SELECT user_id, version, algorithm, auth_data FROM e2e_room_keys_versions"
            " WHERE deleted = 0"
        )
        current: dict[str, tuple[int, str, Any]] = {}
        for user_id, version, algorithm, auth_data in versions:
            number = int(version)
            if user_id in self._active and (user_id not in current or number > current[user_id][0]):
                current[str(user_id)] = (number, str(algorithm), _json(auth_data))
        keys_total = 0
        keys_written = 0
        for user_id, (theirs, algorithm, auth_data) in sorted(current.items()):
            ours = await self._storage.key_backup.create_version(user_id, algorithm, auth_data)
            rows = self._src.select(
                "SELECT room_id, session_id, first_message_index, forwarded_count, is_verified,"
                " session_data FROM e2e_room_keys WHERE user_id = ? AND version = ?",
                (user_id, theirs),
            )
            keys_total += len(rows)
            keys = [
                RoomKey(str(r[0]), str(r[1]), int(r[2]), int(r[3]), bool(r[4]), _json(r[5]))
                for r in rows
            ]
            if keys:
                await self._storage.key_backup.put_keys(
                    user_id, ours, keys, lambda _old, _new: True
                )
                keys_written += len(keys)
        self._count("e2e_room_keys_versions", len(versions), len(current))
        self._count("e2e_room_keys (current versions)", keys_total, keys_written)

    async def import_cross_signing(self) -> None:
        """Each user's latest cross-signing keys, and the signatures made with them."""
        self._progress("Importing cross-signing keys and signatures...")
        if not self._src.has_table("e2e_cross_signing_keys"):
            return
        rows = self._src.select(
            "SELECT user_id, keytype, keydata FROM e2e_cross_signing_keys ORDER BY stream_id"
        )
        latest: dict[tuple[str, str], Any] = {}
        for user_id, key_type, keydata in rows:
            latest[(str(user_id), str(key_type))] = _json(keydata)  # later rows win
        by_user: dict[str, list[CrossSigningKeyRecord]] = {}
        for (user_id, key_type), key in latest.items():
            if user_id not in self._active:
                continue
            keys = key.get("keys") if isinstance(key, dict) else None
            if not isinstance(keys, dict) or len(keys) != 1:
                self._skip(f"{key_type} cross-signing key of {user_id}: malformed")
                continue
            public = str(next(iter(keys.values())))
            by_user.setdefault(user_id, []).append(
                CrossSigningKeyRecord(user_id, key_type, public, key)
            )
        for user_id, records in by_user.items():
            await self._storage.e2ee.set_cross_signing_keys(user_id, records, [])
        self._count("e2e_cross_signing_keys", len(latest), sum(len(r) for r in by_user.values()))
        sig_rows = self._src.select(
            "SELECT user_id, key_id, target_user_id, target_device_id, signature"
            " FROM e2e_cross_signing_signatures"
        )
        sigs = [
            Signature(str(u), str(k), str(tu), str(td), str(sig))
            for u, k, tu, td, sig in sig_rows
            if u in self._active
        ]
        if sigs:
            await self._storage.e2ee.store_signatures(sigs, [])
        self._count("e2e_cross_signing_signatures", len(sig_rows), len(sigs))

    async def import_device_keys(self) -> None:
        """Each device's E2EE identity keys, unclaimed one-time keys and fallback keys."""
        self._progress("Importing E2EE device, one-time and fallback keys...")
        devices: set[tuple[str, str]] = set()
        for user_id in self._active:
            devices.update(
                (user_id, d.device_id) for d in await self._storage.users.get_devices(user_id)
            )
        device_keys: dict[tuple[str, str], Any] = {}
        otks: dict[tuple[str, str], list[NewKey]] = {}
        fallbacks: dict[tuple[str, str], list[NewKey]] = {}
        rows = self._src.select("SELECT user_id, device_id, key_json FROM e2e_device_keys_json")
        for user_id, device_id, key_json in rows:
            if (user_id, device_id) in devices:
                device_keys[(user_id, device_id)] = _json(key_json)
        otk_rows = self._src.select(
            "SELECT user_id, device_id, algorithm, key_id, key_json FROM e2e_one_time_keys_json"
        )
        for user_id, device_id, algorithm, kid, key_json in otk_rows:
            if (user_id, device_id) in devices:
                otks.setdefault((user_id, device_id), []).append(
                    NewKey(str(algorithm), str(kid), _json(key_json))
                )
        fb_rows = []
        if self._src.has_table("e2e_fallback_keys_json"):
            fb_rows = self._src.select(
                "SELECT user_id, device_id, algorithm, key_id, key_json FROM e2e_fallback_keys_json"
            )
            for user_id, device_id, algorithm, kid, key_json in fb_rows:
                if (user_id, device_id) in devices:
                    fallbacks.setdefault((user_id, device_id), []).append(
                        NewKey(str(algorithm), str(kid), _json(key_json))
                    )
        written = {"device": 0, "otk": 0, "fallback": 0}
        for user_id, device_id in sorted(set(device_keys) | set(otks) | set(fallbacks)):
            result = await self._storage.e2ee.upload_keys(
                user_id,
                device_id,
                int(time.time() * 1000),
                device_keys.get((user_id, device_id)),
                otks.get((user_id, device_id), []),
                fallbacks.get((user_id, device_id), []),
            )
            if result.conflict:
                self._skip(f"E2EE keys of {user_id}/{device_id}: {result.conflict}")
                continue
            written["device"] += (user_id, device_id) in device_keys
            written["otk"] += len(otks.get((user_id, device_id), []))
            written["fallback"] += len(fallbacks.get((user_id, device_id), []))
        self._count("e2e_device_keys", len(rows), written["device"])
        self._count("e2e_one_time_keys", len(otk_rows), written["otk"])
        self._count("e2e_fallback_keys", len(fb_rows), written["fallback"])

    async def import_media(
        self, synapse_media_path: str, our_media_path: str, max_image_pixels: int
    ) -> None:
        """Local media: the files (Synapse's media store has our layout) and their rows,
        with their thumbnails."""
        self._progress("Importing local media...")
        cols = self._src.columns("local_media_repository")
        optional = [c for c in ("url_cache", "authenticated", "quarantined_by") if c in cols]
        rows = self._src.select(
            "SELECT media_id, media_type, media_length, created_ts, upload_name, user_id"
            + "".join(f", {c}" for c in optional)
            + " FROM local_media_repository ORDER BY created_ts"
        )
        thumbs: dict[str, list[ThumbnailRecord]] = {}
        if self._src.has_table("local_media_repository_thumbnails"):
            for media_id, w, h, ctype, method, length in self._src.select(
                "SELECT media_id, thumbnail_width, thumbnail_height, thumbnail_type,"
                " thumbnail_method, thumbnail_length FROM local_media_repository_thumbnails"
            ):
                thumbs.setdefault(str(media_id), []).append(
                    ThumbnailRecord(int(w), int(h), str(method), str(ctype), int(length or 0))
                )
        written = 0
        for row in rows:
            extra = dict(zip(optional, row[6:], strict=True))
            media_id = str(row[0])
            if not is_valid_media_id(media_id) or len(media_id) < 5:
                self._skip(f"media {media_id}: an id we cannot store")
                continue
            key = local_content_key(media_id)
            source = os.path.join(synapse_media_path, key)
            if row[2] is None or not os.path.exists(source):
                continue  # never finished uploading, or its file is gone
            content_type = str(row[1] or "application/octet-stream")
            copied = await threads.deferToThread(
                _copy_media, synapse_media_path, our_media_path, key, media_id, thumbs
            )
            sha256, size = copied[0], copied[1]
            image = await threads.deferToThread(
                _image_facts, os.path.join(our_media_path, key), content_type, max_image_pixels
            )
            await self._storage.media.store_upload(
                NewUpload(
                    server_name=self._server_name,
                    media_id=media_id,
                    user_id=row[5],
                    content_type=content_type,
                    upload_name=row[4],
                    size=size,
                    sha256=sha256,
                    authenticated=bool(extra.get("authenticated", False)),
                    url_cache=bool(extra.get("url_cache")),
                    image=image,
                    thumbnails=tuple(copied[2]),
                ),
                int(row[3] or 0),
                [],
                False,
            )
            if extra.get("quarantined_by"):
                await self._storage.media.set_quarantined(
                    self._server_name, media_id, str(extra["quarantined_by"])
                )
            written += 1
        self._count("local_media", len(rows), written)

    async def import_remote_media(
        self, synapse_media_path: str, our_media_path: str, max_image_pixels: int
    ) -> None:
        """The cache of other servers' media with its thumbnails. Synapse files them
        under a ``filesystem_id`` of its own, we under the media id."""
        self._progress("Importing the remote media cache...")
        if not self._src.has_table("remote_media_cache"):
            return
        cols = self._src.columns("remote_media_cache")
        optional = [c for c in ("authenticated", "quarantined_by") if c in cols]
        rows = self._src.select(
            "SELECT media_origin, media_id, media_type, created_ts, upload_name,"
            " media_length, filesystem_id"
            + "".join(f", {c}" for c in optional)
            + " FROM remote_media_cache ORDER BY created_ts"
        )
        thumbs: dict[tuple[str, str], list[ThumbnailRecord]] = {}
        if self._src.has_table("remote_media_cache_thumbnails"):
            for origin, media_id, w, h, ctype, method, length in self._src.select(
                "SELECT media_origin, media_id, thumbnail_width, thumbnail_height,"
                " thumbnail_type, thumbnail_method, thumbnail_length"
                " FROM remote_media_cache_thumbnails"
            ):
                thumbs.setdefault((str(origin), str(media_id)), []).append(
                    ThumbnailRecord(int(w), int(h), str(method), str(ctype), int(length or 0))
                )
        written = 0
        for row in rows:
            origin, media_id, fid = str(row[0]), str(row[1]), str(row[6] or "")
            extra = dict(zip(optional, row[7:], strict=True))
            if not is_valid_media_id(media_id) or len(fid) < 5:
                self._skip(f"remote media {origin}/{media_id}: an id we cannot store")
                continue
            try:
                ours_key = remote_content_key(origin, media_id)
            except ValueError:
                self._skip(f"remote media {origin}/{media_id}: not a server name")
                continue
            theirs = f"remote_content/{origin}/{fid[0:2]}/{fid[2:4]}/{fid[4:]}"
            if not os.path.exists(os.path.join(synapse_media_path, theirs)):
                continue  # evicted from Synapse's cache: fetched again on demand
            content_type = str(row[2] or "application/octet-stream")
            copied = await threads.deferToThread(
                _copy_remote_media,
                synapse_media_path,
                our_media_path,
                (origin, media_id, fid, theirs, ours_key),
                thumbs.get((origin, media_id), []),
            )
            image = await threads.deferToThread(
                _image_facts,
                os.path.join(our_media_path, ours_key),
                content_type,
                max_image_pixels,
            )
            await self._storage.media.store_remote(
                NewUpload(
                    server_name=origin,
                    media_id=media_id,
                    user_id=None,
                    content_type=content_type,
                    upload_name=row[4],
                    size=copied[1],
                    sha256=copied[0],
                    authenticated=bool(extra.get("authenticated", False)),
                    url_cache=False,
                    image=image,
                    thumbnails=tuple(copied[2]),
                ),
                int(row[3] or 0),
            )
            if extra.get("quarantined_by"):
                await self._storage.media.set_quarantined(
                    origin, media_id, str(extra["quarantined_by"])
                )
            written += 1
        self._count("remote_media_cache", len(rows), written)

    async def import_users(self) -> None:
        self._progress("Importing users...")
        cols = self._src.columns("users")
        optional = [c for c in ("deactivated", "user_type", "appservice_id") if c in cols]
        rows = self._src.select(
            "SELECT name, password_hash, creation_ts, admin, is_guest"
            + "".join(f", {c}" for c in optional)
            + " FROM users ORDER BY name"
        )
        written = 0
        for row in rows:
            extra = dict(zip(optional, row[5:], strict=True))
            user_id = str(row[0])
            password_hash = row[1]
            stored_hash = (
                SYNAPSE_HASH_PREFIX.decode("ascii") + str(password_hash) if password_hash else None
            )
            created = await self._storage.users.create_user(
                user_id,
                stored_hash,
                int(row[2] or 0) * 1000,  # Synapse stores seconds
                admin=bool(row[3]),
                is_guest=bool(row[4]),
                appservice_id=extra.get("appservice_id"),
                user_type=extra.get("user_type"),
            )
            if not created:
                self._skip(f"user {user_id}: clashes with another user case-insensitively")
                continue
            written += 1
            self._users.add(user_id)
            if extra.get("deactivated"):
                await self._storage.users.deactivate_user(user_id)
            else:
                self._active.add(user_id)
        self._count("users", len(rows), written)

    async def import_devices(self) -> None:
        self._progress("Importing devices...")
        cols = self._src.columns("devices")
        hidden = ", hidden" if "hidden" in cols else ""
        rows = self._src.select(
            "SELECT user_id, device_id, display_name, last_seen, ip, user_agent"
            + hidden
            + " FROM devices"
        )
        written = 0
        seen: list[tuple[str, str, int, str, str | None]] = []
        total = 0
        for row in rows:
            if hidden and row[6]:
                continue  # Synapse's cross-signing key pseudo-devices
            total += 1
            user_id, device_id = str(row[0]), str(row[1])
            if user_id not in self._active:
                continue
            await self._storage.users.store_device(user_id, device_id, row[2])
            written += 1
            if row[3] is not None:
                seen.append((user_id, device_id, int(row[3]), str(row[4] or ""), row[5]))
        if seen:
            await self._storage.users.update_devices_last_seen(seen)
        self._count("devices", total, written)

    async def import_tokens(self) -> None:
        self._progress("Importing refresh and access tokens...")
        refresh_ids: dict[int, int] = {}
        if self._src.has_table("refresh_tokens"):
            rows = self._src.select(
                "SELECT id, user_id, device_id, token, expiry_ts FROM refresh_tokens"
            )
            written = 0
            for rid, user_id, device_id, token, expiry in rows:
                if user_id not in self._active:
                    continue
                refresh_ids[int(rid)] = await self._storage.users.add_refresh_token(
                    user_id, device_id, hash_token(token), expiry
                )
                written += 1
            self._count("refresh_tokens", len(rows), written)
        cols = self._src.columns("access_tokens")
        puppets = ", puppets_user_id" if "puppets_user_id" in cols else ", NULL"
        rows = self._src.select(
            "SELECT user_id, device_id, token, valid_until_ms, refresh_token_id"
            + puppets
            + " FROM access_tokens ORDER BY id"
        )
        written = 0
        for user_id, device_id, token, valid_until, refresh_id, puppet in rows:
            if user_id not in self._active:
                continue
            if puppet:
                # An admin's token acting as another user: we have no such tokens.
                self._skip(f"an access token of {user_id} puppeting {puppet}")
                continue
            await self._storage.users.add_access_token(
                user_id,
                device_id,
                hash_token(token),
                valid_until_ms=valid_until,
                refresh_token_id=refresh_ids.get(int(refresh_id)) if refresh_id else None,
            )
            written += 1
        self._count("access_tokens", len(rows), written)

    async def import_profiles(self) -> None:
        self._progress("Importing profiles...")
        cols = self._src.columns("profiles")
        user_col = "full_user_id" if "full_user_id" in cols else "user_id"
        fields = ", fields" if "fields" in cols else ", NULL"
        rows = self._src.select(f"SELECT {user_col}, displayname, avatar_url{fields} FROM profiles")
        written = 0
        for row in rows:
            user_id = _local_user_id(str(row[0]), self._server_name)
            if user_id not in self._active:
                continue
            if row[1] is not None:
                await self._storage.profiles.set_field(user_id, "displayname", row[1])
            if row[2] is not None:
                await self._storage.profiles.set_field(user_id, "avatar_url", row[2])
            custom = _json(row[3]) if row[3] is not None else None
            if isinstance(custom, dict):
                for name, value in custom.items():
                    await self._storage.profiles.set_field(user_id, str(name), value)
            written += 1
        self._count("profiles", len(rows), written)

    async def import_account_data(self) -> None:
        self._progress("Importing account data...")
        rows = [
            (u, "", t, c)
            for u, t, c in self._src.select(
                "SELECT user_id, account_data_type, content FROM account_data ORDER BY stream_id"
            )
        ]
        room_rows = self._src.select(
            "SELECT user_id, room_id, account_data_type, content FROM room_account_data"
            " ORDER BY stream_id"
        )
        for name, batch in (("account_data", rows), ("room_account_data", room_rows)):
            written = 0
            for user_id, room_id, data_type, content in batch:
                if user_id not in self._users:
                    continue
                value = _json(content)
                if not isinstance(value, dict):
                    self._skip(f"{name} {data_type} of {user_id}: not a JSON object")
                    continue
                await self._storage.account_data.put(user_id, room_id, data_type, value)
                written += 1
            self._count(name, len(batch), written)

    async def import_push_rules(self) -> None:
        self._progress("Importing push rules...")
        rulesets: dict[str, PushRuleSet] = {}

        def ruleset(user_id: str) -> PushRuleSet:
            if user_id not in rulesets:
                rulesets[user_id] = PushRuleSet.from_storage_json(user_id, None)
            return rulesets[user_id]

        rows = self._src.select(
            "SELECT user_name, rule_id, priority_class, conditions, actions FROM push_rules"
            " ORDER BY user_name, priority_class, priority"
        )
        written = 0
        for user_id, full_rule_id, priority_class, conditions, actions in rows:
            if user_id not in self._users:
                continue
            scope, _, rest = str(full_rule_id).partition("/")
            kind, _, rule_id = rest.partition("/")
            kind = _PRIORITY_CLASS_KIND.get(int(priority_class), kind)
            if scope != "global" or kind not in KINDS or not rule_id:
                self._skip(f"push rule {full_rule_id} of {user_id}")
                continue
            try:
                if rule_id.startswith("."):
                    # A server-default rule whose actions the user changed.
                    ruleset(user_id).set_actions(kind, rule_id, _json(actions))
                else:
                    body: dict[str, Any] = {"actions": _json(actions)}
                    conds = _json(conditions)
                    if kind in ("override", "underride"):
                        body["conditions"] = conds
                    elif kind == "content":
                        body["pattern"] = next(
                            (c.get("pattern") for c in conds if c.get("key") == "content.body"),
                            None,
                        )
                    # Ascending priority: each added rule becomes the most important.
                    ruleset(user_id).add_rule(kind, rule_id, body)
                written += 1
            except (PushRuleError, ValueError, AttributeError, TypeError) as e:
                self._skip(f"push rule {full_rule_id} of {user_id}: {e}")
        self._count("push_rules", len(rows), written)

        enables = self._src.select("SELECT user_name, rule_id, enabled FROM push_rules_enable")
        written = 0
        for user_id, full_rule_id, enabled in enables:
            if user_id not in self._users or enabled is None:
                continue
            scope, _, rest = str(full_rule_id).partition("/")
            kind, _, rule_id = rest.partition("/")
            try:
                ruleset(user_id).set_enabled(kind, rule_id, bool(enabled))
                written += 1
            except PushRuleError as e:
                self._skip(f"push rule enable {full_rule_id} of {user_id}: {e}")
        self._count("push_rules_enable", len(enables), written)
        for user_id, rules in rulesets.items():
            await self._storage.push.set_push_rules(user_id, rules.to_storage_json())

    async def import_pushers(self) -> None:
        self._progress("Importing pushers...")
        cols = self._src.columns("pushers")
        optional = [c for c in ("enabled", "device_id") if c in cols]
        rows = self._src.select(
            "SELECT user_name, app_id, pushkey, kind, app_display_name, device_display_name,"
            " profile_tag, lang, data, ts"
            + "".join(f", {c}" for c in optional)
            + " FROM pushers ORDER BY id"
        )
        written = 0
        for row in rows:
            extra = dict(zip(optional, row[10:], strict=True))
            user_id = str(row[0])
            if user_id not in self._active:
                continue
            if "enabled" in extra and extra["enabled"] is not None and not extra["enabled"]:
                self._skip(f"a disabled pusher of {user_id}")
                continue
            data = _json(row[8]) if row[8] is not None else {}
            await self._storage.push.add_pusher(
                PusherRecord(
                    user_id=user_id,
                    app_id=str(row[1]),
                    pushkey=str(row[2]),
                    kind=str(row[3]),
                    device_id=extra.get("device_id"),
                    app_display_name=str(row[4] or ""),
                    device_display_name=str(row[5] or ""),
                    profile_tag=row[6],
                    lang=str(row[7] or "en"),
                    data=data if isinstance(data, dict) else {},
                    pushkey_ts=int(row[9] or 0),
                ),
                append=True,
            )
            written += 1
        self._count("pushers", len(rows), written)

    async def verify(self) -> list[tuple[str, int, int]]:
        """Rows per imported table on both sides: (name, Synapse, ours)."""
        hidden = "WHERE hidden = FALSE" if "hidden" in self._src.columns("devices") else ""
        # (name, Synapse table, its filter, our table, our filter)
        pairs = [
            ("users", "users", "", "users", ""),
            ("devices", "devices", hidden, "devices", ""),
            ("access_tokens", "access_tokens", "", "access_tokens", ""),
            ("profiles", "profiles", "", "profiles", ""),
            ("account_data", "account_data", "", "account_data", "WHERE room_id = ''"),
            ("room_account_data", "room_account_data", "", "account_data", "WHERE room_id <> ''"),
            ("pushers", "pushers", "", "pushers", ""),
            ("e2e_device_keys", "e2e_device_keys_json", "", "e2e_device_keys", ""),
            ("e2e_one_time_keys", "e2e_one_time_keys_json", "", "e2e_one_time_keys", ""),
            (
                "e2e_cross_signing_sigs",
                "e2e_cross_signing_signatures",
                "",
                "e2e_cross_signing_signatures",
                "",
            ),
            ("local_media", "local_media_repository", "", "media", ""),
            (
                "local_media_thumbnails",
                "local_media_repository_thumbnails",
                "",
                "media_thumbnails",
                "",
            ),
            ("rooms", "rooms", "", "rooms", ""),
            ("events", "events", "", "events", ""),
            ("event_edges", "event_edges", "", "event_edges", ""),
            # Ours: plus a group for the state before some state events.
            ("state_groups", "state_groups", "", "state_groups", ""),
            ("current_state_events", "current_state_events", "", "current_state_events", ""),
            (
                "forward_extremities",
                "event_forward_extremities",
                "",
                "event_forward_extremities",
                "",
            ),
            ("room_memberships", "room_memberships", "", "room_memberships", ""),
            ("room_aliases", "room_aliases", "", "room_aliases", ""),
            ("public_rooms", "rooms", "WHERE is_public = TRUE", "rooms", "WHERE is_public = 1"),
            ("receipts", "receipts_linearized", "", "receipts", ""),
            ("to_device", "device_inbox", "", "device_inbox", ""),
        ]
        out = []
        for name, theirs, their_where, ours, where in pairs:
            out.append(
                (
                    name,
                    self._src.count(theirs, their_where),
                    await count_ours(self._storage, ours, where),
                )
            )
        return out


def _copy_media(
    src_root: str,
    dst_root: str,
    key: str,
    media_id: str,
    thumbs: dict[str, list[ThumbnailRecord]],
) -> tuple[str, int, list[ThumbnailRecord]]:
    """Copy one file and its thumbnails; its SHA-256, size and the thumbnails copied."""
    dst = os.path.join(dst_root, key)
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    shutil.copyfile(os.path.join(src_root, key), dst)
    digest = hashlib.sha256()
    size = 0
    with open(dst, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
            size += len(chunk)
    copied = []
    for t in thumbs.get(media_id, []):
        t_key = local_thumbnail_key(media_id, t.width, t.height, t.content_type, t.method, False)
        t_src = os.path.join(src_root, t_key)
        if not os.path.exists(t_src):
            continue
        t_dst = os.path.join(dst_root, t_key)
        os.makedirs(os.path.dirname(t_dst), exist_ok=True)
        shutil.copyfile(t_src, t_dst)
        copied.append(t)
    return digest.hexdigest(), size, copied


def _copy_remote_media(
    src_root: str,
    dst_root: str,
    names: tuple[str, str, str, str, str],
    thumbs: list[ThumbnailRecord],
) -> tuple[str, int, list[ThumbnailRecord]]:
    """Copy one cached remote file from Synapse's layout to ours, with its thumbnails."""
    origin, media_id, fid, theirs, ours = names
    dst = os.path.join(dst_root, ours)
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    shutil.copyfile(os.path.join(src_root, theirs), dst)
    digest = hashlib.sha256()
    size = 0
    with open(dst, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
            size += len(chunk)
    copied = []
    for t in thumbs:
        top, _, sub = t.content_type.partition("/")
        t_src = os.path.join(
            src_root,
            f"remote_thumbnail/{origin}/{fid[0:2]}/{fid[2:4]}/{fid[4:]}/"
            f"{t.width}-{t.height}-{top}-{sub}-{t.method}",
        )
        if not os.path.exists(t_src):
            continue
        t_dst = os.path.join(
            dst_root,
            remote_thumbnail_key(
                origin, media_id, t.width, t.height, t.content_type, t.method, False
            ),
        )
        os.makedirs(os.path.dirname(t_dst), exist_ok=True)
        shutil.copyfile(t_src, t_dst)
        copied.append(t)
    return digest.hexdigest(), size, copied


def _image_facts(path: str, content_type: str, max_pixels: int) -> ImageFacts:
    if thumbnailer.thumbnail_type_for(content_type) is None:
        return ImageFacts()
    try:
        info = thumbnailer.probe(lambda: open(path, "rb"), max_pixels)  # noqa: SIM115
    except thumbnailer.ThumbnailError as e:
        return ImageFacts(thumbnail_error=e.reason)
    return ImageFacts(info.width, info.height, info.animated)


def copy_signing_key(synapse_key_path: str, our_key_path: str) -> str:
    """Install Synapse's signing key as ours (keeping any previous file as ``.bak``);
    returns its key id."""
    keys = read_signing_keys(synapse_key_path)
    if not keys:
        raise ImportRefused(f"{synapse_key_path}: no signing key in the file")
    os.makedirs(os.path.dirname(os.path.abspath(our_key_path)), exist_ok=True)
    if os.path.exists(our_key_path):
        if os.path.samefile(synapse_key_path, our_key_path):
            return key_id(keys[0])
        shutil.copy2(our_key_path, our_key_path + ".bak")
    shutil.copyfile(synapse_key_path, our_key_path)
    os.chmod(our_key_path, 0o600)
    return key_id(keys[0])
