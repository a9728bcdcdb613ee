"""End-to-end encryption storage: device keys, one-time and fallback keys, cross-signing
keys and signatures, the to-device inbox and the device list change stream.

Invariants:
- A one-time key is handed out at most once: a claim deletes the row it returns in the
  same transaction, and a concurrent claim of the same row either waits (SQLite has one
  writer) or fails with a serialization error and is retried by ``Database`` (PostgreSQL
  at REPEATABLE READ), then takes the next key or the fallback key.
- A change to a user's devices or keys writes a ``device_lists_stream`` row in the same
  transaction, at a position reserved from ``device_lists`` beforehand, so the position
  becomes visible only once the change is committed.
- To-device messages stay in ``device_inbox`` until the recipient device syncs with a
  token past them (``delete_messages``). ``device_inbox_txns`` rows are never deleted, so
  the to-device stream position survives a restart with an empty inbox.
- Replacing a row is DELETE then INSERT ... ON CONFLICT DO NOTHING: a concurrent writer
  of the same row makes PostgreSQL raise a serialization failure (retried), never a
  unique violation.
- One-time key counts are cached per device; every write that changes a device's keys
  invalidates its entry after commit, and a read racing a write does not fill the cache.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from canonicaljson import encode_canonical_json

from storage.database import Database, Transaction
from storage.id_generator import IdGenerator

JsonDict = dict[str, Any]
DeviceKey = tuple[str, str]  # (user_id, device_id)

MAX_CACHED_COUNTS = 100_000
CROSS_SIGNING_TYPES = ("master", "self_signing", "user_signing")


def canonical(obj: Any) -> str:
    return encode_canonical_json(obj).decode("utf-8")


@dataclass(frozen=True, slots=True)
class DeviceKeysRecord:
    user_id: str
    device_id: str
    keys: JsonDict
    display_name: str | None


@dataclass(frozen=True, slots=True)
class KeyCounts:
    one_time_keys: dict[str, int]
    unused_fallback_algorithms: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ClaimedKey:
    user_id: str
    device_id: str
    key_id: str  # "<algorithm>:<key id>"
    key: Any
    fallback: bool


@dataclass(frozen=True, slots=True)
class NewKey:
    algorithm: str
    key_id: str
    key: Any


@dataclass(frozen=True, slots=True)
class UploadResult:
    """``conflict`` names what could not be stored (nothing was written then)."""

    conflict: str | None
    device_keys_changed: bool


@dataclass(frozen=True, slots=True)
class CrossSigningKeyRecord:
    user_id: str
    key_type: str
    key_id: str  # the unpadded base64 public key
    key: JsonDict


@dataclass(frozen=True, slots=True)
class Signature:
    signer_user_id: str
    signer_key_id: str  # "ed25519:<device id or public key>"
    target_user_id: str
    target_key_id: str  # a device id or a master key's public key
    signature: str


@dataclass(frozen=True, slots=True)
class DeviceListChange:
    """``user_id``'s devices or keys changed; only ``for_user_id`` is told when set."""

    user_id: str
    for_user_id: str | None = None


class E2eeStore:
    def __init__(
        self,
        db: Database,
        to_device: IdGenerator,
        device_lists: IdGenerator,
        otk_seq: IdGenerator,
    ) -> None:
        self._db = db
        self.to_device = to_device
        self.device_lists = device_lists
        self._otk_seq = otk_seq
        self._counts: dict[DeviceKey, KeyCounts] = {}
        self._counts_gen: dict[DeviceKey, int] = {}
        # To-device inbox facts known since start-up (see ``sync_inbox``).
        self._inbox_checked: set[DeviceKey] = set()
        self._inbox_max: dict[DeviceKey, int] = {}
        self._unacked: dict[DeviceKey, int] = {}
        self._inbox_memory = True

    @classmethod
    async def open(cls, db: Database) -> E2eeStore:
        inbox = await IdGenerator.load(db, "device_inbox", "stream_id")
        txns = await IdGenerator.load(db, "device_inbox_txns", "stream_id")
        federated = await IdGenerator.load(db, "device_federation_inbox", "stream_id")
        return cls(
            db,
            IdGenerator(
                max(inbox.current_position, txns.current_position, federated.current_position)
            ),
            await IdGenerator.load(db, "device_lists_stream", "stream_id"),
            await IdGenerator.load(db, "e2e_one_time_keys", "upload_seq"),
        )

    # Device list stream ---------------------------------------------------------

    @staticmethod
    def record_changes_txn(
        txn: Transaction, stream_id: int, changes: Iterable[DeviceListChange]
    ) -> None:
        txn.execute_many(
            "INSERT INTO device_lists_stream (stream_id, user_id, for_user_id) VALUES (?, ?, ?)",
            [(stream_id, c.user_id, c.for_user_id) for c in set(changes)],
        )

    async def record_device_list_changes(self, changes: list[DeviceListChange]) -> int:
        with self.device_lists.reserve() as stream_id:
            await self._db.run_interaction(
                "record_device_list_changes", self.record_changes_txn, stream_id, changes
            )
        return stream_id

    async def get_device_list_changes(
        self, from_stream: int, to_stream: int, for_user_id: str
    ) -> tuple[set[str], set[str]]:
        """Users whose devices changed in (from, to]: those anyone sharing a room may be
        told of, and those only ``for_user_id`` is told of."""
        if from_stream >= to_stream:
            return set(), set()

        def _txn(txn: Transaction) -> tuple[set[str], set[str]]:
            rows = txn.select_all(
                "SELECT DISTINCT user_id, for_user_id FROM device_lists_stream"
                " WHERE stream_id > ? AND stream_id <= ?"
                " AND (for_user_id IS NULL OR for_user_id = ?)",
                (from_stream, to_stream, for_user_id),
            )
            broadcast = {str(r[0]) for r in rows if r[1] is None}
            return broadcast, {str(r[0]) for r in rows if r[1] is not None}

        return await self._db.run_interaction("get_device_list_changes", _txn)

    async def delete_devices(self, user_id: str, device_ids: list[str]) -> int:
        """Forget deleted devices' keys and inbox; a device list change in the same step."""

        def _txn(txn: Transaction, stream_id: int) -> None:
            for device_id in device_ids:
                for table in (
                    "e2e_device_keys",
                    "e2e_one_time_keys",
                    "e2e_fallback_keys",
                    "device_inbox",
                ):
                    txn.execute(
                        f"DELETE FROM {table} WHERE user_id = ? AND device_id = ?",
                        (user_id, device_id),
                    )
                txn.execute(
                    "DELETE FROM e2e_cross_signing_signatures WHERE target_user_id = ?"
                    " AND target_key_id = ?",
                    (user_id, device_id),
                )
                txn.call_after(self._forget_device, (user_id, device_id))
            self.record_changes_txn(txn, stream_id, [DeviceListChange(user_id)])

        with self.device_lists.reserve() as stream_id:
            await self._db.run_interaction("delete_device_e2e", _txn, stream_id)
        return stream_id

    # Device keys, one-time and fallback keys -------------------------------------

    async def upload_keys(
        self,
        user_id: str,
        device_id: str,
        now_ms: int,
        device_keys: JsonDict | None,
        one_time_keys: list[NewKey],
        fallback_keys: list[NewKey],
    ) -> UploadResult:
        """Store what a device uploaded, all or nothing.

        Device keys replace those held for the device (``device_keys_changed`` when they
        differ). Refused (``conflict`` set) when a one-time key id is reused with a
        different key.
        """
        upload_seq = self._otk_seq.next_id()

        def _txn(txn: Transaction, stream_id: int) -> UploadResult:
            changed = False
            if device_keys is not None:
                row = txn.select_one(
                    "SELECT key_json FROM e2e_device_keys WHERE user_id = ? AND device_id = ?",
                    (user_id, device_id),
                )
                if row is not None:
                    changed = json.loads(row[0]) != device_keys
                    if changed:
                        txn.execute(
                            "UPDATE e2e_device_keys SET key_json = ?, ts_added_ms = ?"
                            " WHERE user_id = ? AND device_id = ?",
                            (canonical(device_keys), now_ms, user_id, device_id),
                        )
                else:
                    changed = True
                    txn.execute(
                        "INSERT INTO e2e_device_keys (user_id, device_id, key_json, ts_added_ms)"
                        " VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
                        (user_id, device_id, canonical(device_keys), now_ms),
                    )
            new_otks = []
            for k in one_time_keys:
                row = txn.select_one(
                    "SELECT key_json FROM e2e_one_time_keys WHERE user_id = ? AND device_id = ?"
                    " AND algorithm = ? AND key_id = ?",
                    (user_id, device_id, k.algorithm, k.key_id),
                )
                if row is None:
                    new_otks.append(k)
                elif json.loads(row[0]) != k.key:
                    return UploadResult(
                        f"one-time key {k.algorithm}:{k.key_id} already exists", False
                    )
            txn.execute_many(
                "INSERT INTO e2e_one_time_keys (user_id, device_id, algorithm, key_id, key_json,"
                " upload_seq, ts_added_ms) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                [
                    (
                        user_id,
                        device_id,
                        k.algorithm,
                        k.key_id,
                        canonical(k.key),
                        upload_seq,
                        now_ms,
                    )
                    for k in new_otks
                ],
            )
            for k in fallback_keys:
                encoded = canonical(k.key)
                row = txn.select_one(
                    "SELECT key_id, key_json FROM e2e_fallback_keys WHERE user_id = ?"
                    " AND device_id = ? AND algorithm = ?",
                    (user_id, device_id, k.algorithm),
                )
                if row is not None and row[0] == k.key_id and row[1] == encoded:
                    continue  # the same key again: keep its used flag
                txn.execute(
                    "DELETE FROM e2e_fallback_keys WHERE user_id = ? AND device_id = ?"
                    " AND algorithm = ?",
                    (user_id, device_id, k.algorithm),
                )
                txn.execute(
                    "INSERT INTO e2e_fallback_keys (user_id, device_id, algorithm, key_id,"
                    " key_json, used) VALUES (?, ?, ?, ?, ?, 0) ON CONFLICT DO NOTHING",
                    (user_id, device_id, k.algorithm, k.key_id, encoded),
                )
            if changed:
                self.record_changes_txn(txn, stream_id, [DeviceListChange(user_id)])
            txn.call_after(self._invalidate_counts, (user_id, device_id))
            return UploadResult(None, changed)

        with self.device_lists.reserve() as stream_id:
            return await self._db.run_interaction("upload_keys", _txn, stream_id)

    async def get_device_keys(self, user_id: str, device_id: str) -> JsonDict | None:
        def _txn(txn: Transaction) -> JsonDict | None:
            row = txn.select_one(
                "SELECT key_json FROM e2e_device_keys WHERE user_id = ? AND device_id = ?",
                (user_id, device_id),
            )
            return json.loads(row[0]) if row else None  # type: ignore[no-any-return]

        return await self._db.run_interaction("get_device_keys", _txn)

    async def query_device_keys(
        self, queries: dict[str, list[str]]
    ) -> dict[str, dict[str, DeviceKeysRecord]]:
        """Keys of existing devices: every device of a user given an empty list."""

        def _txn(txn: Transaction) -> dict[str, dict[str, DeviceKeysRecord]]:
            out: dict[str, dict[str, DeviceKeysRecord]] = {}
            for user_id, device_ids in queries.items():
                rows = txn.select_all(
                    "SELECT k.device_id, k.key_json, d.display_name FROM e2e_device_keys k"
                    " JOIN devices d ON d.user_id = k.user_id AND d.device_id = k.device_id"
                    " WHERE k.user_id = ? ORDER BY k.device_id",
                    (user_id,),
                )
                wanted = set(device_ids)
                found = {
                    str(r[0]): DeviceKeysRecord(user_id, str(r[0]), json.loads(r[1]), r[2])
                    for r in rows
                    if not wanted or r[0] in wanted
                }
                if found:
                    out[user_id] = found
            return out

        return await self._db.run_interaction("query_device_keys", _txn)

    def _forget_device(self, device: DeviceKey) -> None:
        self._invalidate_counts(device)
        self._inbox_max.pop(device, None)
        self._unacked.pop(device, None)

    def _invalidate_counts(self, device: DeviceKey) -> None:
        self._counts.pop(device, None)
        self._counts_gen[device] = self._counts_gen.get(device, 0) + 1

    async def get_key_counts(self, user_id: str, device_id: str) -> KeyCounts:
        """Unclaimed one-time keys per algorithm and unused fallback key algorithms."""
        device = (user_id, device_id)
        cached = self._counts.get(device)
        if cached is not None:
            return cached
        generation = self._counts_gen.get(device, 0)

        def _txn(txn: Transaction) -> KeyCounts:
            rows = txn.select_all(
                "SELECT algorithm, COUNT(*) FROM e2e_one_time_keys WHERE user_id = ?"
                " AND device_id = ? GROUP BY algorithm",
                device,
            )
            fallback = txn.select_all(
                "SELECT algorithm FROM e2e_fallback_keys WHERE user_id = ? AND device_id = ?"
                " AND used = 0 ORDER BY algorithm",
                device,
            )
            return KeyCounts(
                {str(r[0]): int(r[1]) for r in rows}, tuple(str(r[0]) for r in fallback)
            )

        counts = await self._db.run_interaction("get_key_counts", _txn)
        if self._counts_gen.get(device, 0) == generation:
            if len(self._counts) >= MAX_CACHED_COUNTS:
                self._counts.clear()
            self._counts[device] = counts
        return counts

    async def claim_keys(self, wanted: list[tuple[str, str, str]]) -> list[ClaimedKey]:
        """For each (user, device, algorithm): the oldest one-time key, else the fallback key."""

        def _txn(txn: Transaction) -> list[ClaimedKey]:
            claimed: list[ClaimedKey] = []
            for user_id, device_id, algorithm in wanted:
                key = self._claim_one_txn(txn, user_id, device_id, algorithm)
                if key is not None:
                    claimed.append(key)
                    txn.call_after(self._invalidate_counts, (user_id, device_id))
            return claimed

        return await self._db.run_interaction("claim_keys", _txn)

    @staticmethod
    def _claim_one_txn(
        txn: Transaction, user_id: str, device_id: str, algorithm: str
    ) -> ClaimedKey | None:
        while True:
            row = txn.select_one(
                "SELECT key_id, key_json FROM e2e_one_time_keys WHERE user_id = ?"
                " AND device_id = ? AND algorithm = ? ORDER BY upload_seq, key_id LIMIT 1",
                (user_id, device_id, algorithm),
            )
            if row is None:
                break
            txn.execute(
                "DELETE FROM e2e_one_time_keys WHERE user_id = ? AND device_id = ?"
                " AND algorithm = ? AND key_id = ?",
                (user_id, device_id, algorithm, row[0]),
            )
            if txn.rowcount == 1:
                return ClaimedKey(
                    user_id, device_id, f"{algorithm}:{row[0]}", json.loads(row[1]), False
                )
            # Taken by a concurrent claim that committed first: look again.
        row = txn.select_one(
            "SELECT key_id, key_json, used FROM e2e_fallback_keys WHERE user_id = ?"
            " AND device_id = ? AND algorithm = ?",
            (user_id, device_id, algorithm),
        )
        if row is None:
            return None
        if not row[2]:
            txn.execute(
                "UPDATE e2e_fallback_keys SET used = 1 WHERE user_id = ? AND device_id = ?"
                " AND algorithm = ?",
                (user_id, device_id, algorithm),
            )
        return ClaimedKey(user_id, device_id, f"{algorithm}:{row[0]}", json.loads(row[1]), True)

    # Cross-signing -----------------------------------------------------------------

    async def get_cross_signing_keys(
        self, user_ids: Iterable[str], key_types: Iterable[str] = CROSS_SIGNING_TYPES
    ) -> dict[str, dict[str, CrossSigningKeyRecord]]:
        users = list(user_ids)
        types = list(key_types)

        def _txn(txn: Transaction) -> dict[str, dict[str, CrossSigningKeyRecord]]:
            out: dict[str, dict[str, CrossSigningKeyRecord]] = {}
            for user_id in users:
                rows = txn.select_all(
                    "SELECT key_type, key_id, key_json FROM e2e_cross_signing_keys"
                    " WHERE user_id = ?",
                    (user_id,),
                )
                for key_type, key_id, key_json in rows:
                    if key_type in types:
                        out.setdefault(user_id, {})[key_type] = CrossSigningKeyRecord(
                            user_id, key_type, key_id, json.loads(key_json)
                        )
            return out

        return await self._db.run_interaction("get_cross_signing_keys", _txn)

    async def set_cross_signing_keys(
        self, user_id: str, keys: list[CrossSigningKeyRecord], changes: list[DeviceListChange]
    ) -> None:
        def _txn(txn: Transaction, stream_id: int) -> None:
            for key in keys:
                txn.execute(
                    "DELETE FROM e2e_cross_signing_keys WHERE user_id = ? AND key_type = ?",
                    (user_id, key.key_type),
                )
                txn.execute(
                    "INSERT INTO e2e_cross_signing_keys (user_id, key_type, key_id, key_json)"
                    " VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
                    (user_id, key.key_type, key.key_id, canonical(key.key)),
                )
            self.record_changes_txn(txn, stream_id, changes)

        with self.device_lists.reserve() as stream_id:
            await self._db.run_interaction("set_cross_signing_keys", _txn, stream_id)

    async def allow_master_key_replacement(self, user_id: str, until_ms: int) -> bool:
        """Let the user replace their master key without UIA until ``until_ms``; False
        when they have no master key (a replacement stores a new row: the window ends)."""

        def _txn(txn: Transaction) -> bool:
            txn.execute(
                "UPDATE e2e_cross_signing_keys SET updatable_without_uia_before_ms = ?"
                " WHERE user_id = ? AND key_type = 'master'",
                (until_ms, user_id),
            )
            return txn.rowcount > 0

        return await self._db.run_interaction("allow_master_key_replacement", _txn)

    async def master_key_replaceable_until(self, user_id: str) -> int | None:
        row = await self._db.run_interaction(
            "master_key_replaceable_until",
            lambda txn: txn.select_one(
                "SELECT updatable_without_uia_before_ms FROM e2e_cross_signing_keys"
                " WHERE user_id = ? AND key_type = 'master'",
                (user_id,),
            ),
        )
        return None if row is None or row[0] is None else int(row[0])  # type: ignore[call-overload]

    async def get_signatures(self, targets: Iterable[tuple[str, str]]) -> list[Signature]:
        """Stored signatures on (user, key id) targets."""
        wanted = list(targets)

        def _txn(txn: Transaction) -> list[Signature]:
            out: list[Signature] = []
            for target_user, target_key in wanted:
                rows = txn.select_all(
                    "SELECT user_id, key_id, signature FROM e2e_cross_signing_signatures"
                    " WHERE target_user_id = ? AND target_key_id = ?",
                    (target_user, target_key),
                )
                out.extend(Signature(r[0], r[1], target_user, target_key, r[2]) for r in rows)
            return out

        return await self._db.run_interaction("get_signatures", _txn)

    async def store_signatures(
        self, signatures: list[Signature], changes: list[DeviceListChange]
    ) -> None:
        def _txn(txn: Transaction, stream_id: int) -> None:
            for s in signatures:
                txn.execute(
                    "DELETE FROM e2e_cross_signing_signatures WHERE user_id = ? AND key_id = ?"
                    " AND target_user_id = ? AND target_key_id = ?",
                    (s.signer_user_id, s.signer_key_id, s.target_user_id, s.target_key_id),
                )
                txn.execute(
                    "INSERT INTO e2e_cross_signing_signatures (user_id, key_id, target_user_id,"
                    " target_key_id, signature) VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                    (
                        s.signer_user_id,
                        s.signer_key_id,
                        s.target_user_id,
                        s.target_key_id,
                        s.signature,
                    ),
                )
            self.record_changes_txn(txn, stream_id, changes)

        with self.device_lists.reserve() as stream_id:
            await self._db.run_interaction("store_signatures", _txn, stream_id)

    # To-device ---------------------------------------------------------------------

    async def add_to_device_messages(
        self,
        sender_user_id: str,
        sender_device_id: str,
        txn_id: str,
        now_ms: int,
        messages: dict[str, dict[str, JsonDict]],
        origin: str | None = None,
    ) -> set[str] | None:
        """Queue messages (device ``*``: every device of the user; unknown devices are
        skipped). Returns the users given a message, or None if ``txn_id`` was seen.

        With ``origin`` (an ``m.direct_to_device`` EDU), ``txn_id`` is the EDU's
        message id and is deduplicated per origin server instead of per sender device."""

        def _txn(txn: Transaction, stream_id: int) -> set[str] | None:
            if origin is not None:
                txn.execute(
                    "INSERT INTO device_federation_inbox (origin, message_id, stream_id,"
                    " received_ts) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
                    (origin, txn_id, stream_id, now_ms),
                )
            else:
                txn.execute(
                    "INSERT INTO device_inbox_txns (user_id, device_id, txn_id, stream_id,"
                    " inserted_ts) VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                    (sender_user_id, sender_device_id, txn_id, stream_id, now_ms),
                )
            if txn.rowcount != 1:
                return None
            rows: list[tuple[int, str, str, str]] = []
            for user_id, by_device in messages.items():
                existing = {
                    str(r[0])
                    for r in txn.select_all(
                        "SELECT device_id FROM devices WHERE user_id = ?", (user_id,)
                    )
                }
                targets: dict[str, JsonDict] = {}
                for device_id, message in by_device.items():
                    if device_id == "*":
                        targets.update(dict.fromkeys(existing, message))
                    elif device_id in existing:
                        targets[device_id] = message
                rows.extend(
                    (stream_id, user_id, d, json.dumps(m, separators=(",", ":")))
                    for d, m in sorted(targets.items())
                )
            txn.execute_many(
                "INSERT INTO device_inbox (stream_id, user_id, device_id, message_json)"
                " VALUES (?, ?, ?, ?)",
                rows,
            )
            txn.call_after(self._note_queued, stream_id, [(r[1], r[2]) for r in rows])
            return {r[1] for r in rows}

        with self.to_device.reserve() as stream_id:
            return await self._db.run_interaction("add_to_device_messages", _txn, stream_id)

    def read_inbox_from_database(self) -> None:
        """A reader process: another process queues the messages, and this one may learn
        the stream position before the message saying so; every look reads the
        database (memory would answer "nothing new" and the position skip them)."""
        self._inbox_memory = False

    def _note_queued(self, stream_id: int, devices: list[DeviceKey]) -> None:
        for device in devices:
            self._inbox_max[device] = max(self._inbox_max.get(device, 0), stream_id)

    async def sync_inbox(
        self, user_id: str, device_id: str, ack_up_to: int, to_stream: int
    ) -> list[JsonDict]:
        """Delete the device's messages at or below ``ack_up_to`` (the client has them)
        and return those in (ack_up_to, to_stream], oldest first."""
        messages, _ = await self.sync_inbox_page(user_id, device_id, ack_up_to, to_stream)
        return messages

    async def sync_inbox_page(
        self,
        user_id: str,
        device_id: str,
        ack_up_to: int,
        to_stream: int,
        limit: int | None = None,
    ) -> tuple[list[JsonDict], int]:
        """As ``sync_inbox``, at most ``limit`` messages (None: all), with the position
        they reach: ``to_stream``, or the last one's when ``limit`` cut them short.

        Memory says when there is nothing to do, so an idle device costs no query: after
        the first look since start-up, only messages queued since (``_inbox_max``) or
        handed out and not yet acknowledged (``_unacked``) need the database.
        """
        device = (user_id, device_id)
        checked = self._inbox_memory and device in self._inbox_checked
        delete = ack_up_to > 0 and (not checked or device in self._unacked)
        fetch = to_stream > ack_up_to and (
            not checked or self._inbox_max.get(device, 0) > ack_up_to
        )
        if not (delete or fetch):
            return [], to_stream

        def _txn(txn: Transaction) -> list[tuple[int, JsonDict]]:
            if delete:
                txn.execute(
                    "DELETE FROM device_inbox WHERE user_id = ? AND device_id = ?"
                    " AND stream_id <= ?",
                    (user_id, device_id, ack_up_to),
                )
            if not fetch:
                return []
            rows = txn.select_all(
                "SELECT stream_id, message_json FROM device_inbox WHERE user_id = ?"
                " AND device_id = ? AND stream_id > ? AND stream_id <= ? ORDER BY stream_id"
                + ("" if limit is None else " LIMIT ?"),
                (user_id, device_id, ack_up_to, to_stream) + (() if limit is None else (limit,)),
            )
            return [(int(r[0]), json.loads(r[1])) for r in rows]

        rows = await self._db.run_interaction("sync_inbox", _txn)
        self._inbox_checked.add(device)
        if delete and self._unacked.get(device, 0) <= ack_up_to:
            self._unacked.pop(device, None)
        if rows:
            self._unacked[device] = max(self._unacked.get(device, 0), rows[-1][0])
        reached = rows[-1][0] if limit is not None and len(rows) >= limit else to_stream
        return [message for _, message in rows], reached
