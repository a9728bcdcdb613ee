"""Device lists across servers: the update stream we announce for our users and the
cache of remote users' device lists.

Invariants:
- ``device_lists_outbound`` holds, per local user, the stream id of the last
  ``m.device_list_update`` handed to the outbox; the next update names it as its
  ``prev_id``. Ids come from one increasing generator, so they are unique per user and
  grow across restarts. Callers serialise updates of one user (the ids and the row
  move together in one transaction).
- A cached remote list is changed only by a full resync (``replace_remote_list``) or
  by an update whose prev_id is the stored extremity (``apply_remote_update`` checks
  this inside its transaction); either writes a ``device_lists_stream`` row in the same
  transaction, so local users' syncs learn of the change exactly when it is committed.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from storage.database import Database, Transaction
from storage.e2ee import DeviceListChange, E2eeStore, canonical
from storage.id_generator import IdGenerator

JsonDict = dict[str, Any]


@dataclass(frozen=True, slots=True)
class RemoteDevice:
    device_id: str
    display_name: str | None
    keys: JsonDict | None


@dataclass(frozen=True, slots=True)
class RemoteDeviceList:
    user_id: str
    stream_id: int
    devices: dict[str, RemoteDevice] = field(default_factory=dict)
    master_key: JsonDict | None = None
    self_signing_key: JsonDict | None = None


def _load(value: Any) -> Any:
    return json.loads(value) if value is not None else None


def _dump(value: Any) -> str | None:
    return canonical(value) if value is not None else None


class DeviceFederationStore:
    def __init__(self, db: Database, outbound_ids: IdGenerator, device_lists: IdGenerator) -> None:
        self._db = db
        self._outbound_ids = outbound_ids
        self._device_lists = device_lists

    @classmethod
    async def open(cls, db: Database, e2ee: E2eeStore) -> DeviceFederationStore:
        outbound = await IdGenerator.load(db, "device_lists_outbound", "stream_id")
        return cls(db, outbound, e2ee.device_lists)

    # Outbound ------------------------------------------------------------------------

    async def next_outbound_ids(self, user_id: str, count: int) -> tuple[int | None, list[int]]:
        """``count`` new stream ids for ``user_id``'s updates and the previous last one."""
        ids = [self._outbound_ids.next_id() for _ in range(count)]

        def _txn(txn: Transaction) -> int | None:
            row = txn.select_one(
                "SELECT stream_id FROM device_lists_outbound WHERE user_id = ?", (user_id,)
            )
            if row is None:
                txn.execute(
                    "INSERT INTO device_lists_outbound (user_id, stream_id) VALUES (?, ?)",
                    (user_id, ids[-1]),
                )
                return None
            txn.execute(
                "UPDATE device_lists_outbound SET stream_id = ? WHERE user_id = ?",
                (ids[-1], user_id),
            )
            return int(row[0])

        prev = await self._db.run_interaction("next_outbound_device_list_ids", _txn)
        return prev, ids

    async def outbound_stream_id(self, user_id: str) -> int:
        def _txn(txn: Transaction) -> int:
            row = txn.select_one(
                "SELECT stream_id FROM device_lists_outbound WHERE user_id = ?", (user_id,)
            )
            return int(row[0]) if row else 0

        return await self._db.run_interaction("outbound_device_list_id", _txn)

    # Remote cache --------------------------------------------------------------------

    async def get_remote_lists(self, user_ids: Iterable[str]) -> dict[str, RemoteDeviceList]:
        users = list(user_ids)

        def _txn(txn: Transaction) -> dict[str, RemoteDeviceList]:
            out: dict[str, RemoteDeviceList] = {}
            for user_id in users:
                row = txn.select_one(
                    "SELECT stream_id, master_key, self_signing_key FROM remote_device_lists"
                    " WHERE user_id = ?",
                    (user_id,),
                )
                if row is None:
                    continue
                devices = {
                    str(r[0]): RemoteDevice(str(r[0]), r[1], _load(r[2]))
                    for r in txn.select_all(
                        "SELECT device_id, display_name, keys_json FROM remote_devices"
                        " WHERE user_id = ? ORDER BY device_id",
                        (user_id,),
                    )
                }
                out[user_id] = RemoteDeviceList(
                    user_id, int(row[0]), devices, _load(row[1]), _load(row[2])
                )
            return out

        return await self._db.run_interaction("get_remote_device_lists", _txn)

    async def replace_remote_list(self, remote: RemoteDeviceList) -> None:
        """Store the result of a resync, replacing whatever was cached."""

        def _txn(txn: Transaction, stream_id: int) -> None:
            user_id = remote.user_id
            txn.execute("DELETE FROM remote_devices WHERE user_id = ?", (user_id,))
            txn.execute("DELETE FROM remote_device_lists WHERE user_id = ?", (user_id,))
            txn.execute(
                "INSERT INTO remote_device_lists (user_id, stream_id, master_key,"
                " self_signing_key) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
                (
                    user_id,
                    remote.stream_id,
                    _dump(remote.master_key),
                    _dump(remote.self_signing_key),
                ),
            )
            txn.execute_many(
                "INSERT INTO remote_devices (user_id, device_id, display_name, keys_json)"
                " VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
                [
                    (user_id, d.device_id, d.display_name, _dump(d.keys))
                    for d in remote.devices.values()
                ],
            )
            E2eeStore.record_changes_txn(txn, stream_id, [DeviceListChange(user_id)])

        with self._device_lists.reserve() as stream_id:
            await self._db.run_interaction("replace_remote_device_list", _txn, stream_id)

    async def apply_remote_update(
        self,
        user_id: str,
        prev_stream_id: int,
        stream_id: int,
        device_id: str,
        device: RemoteDevice | None,
    ) -> bool:
        """Apply one update (``device`` None: deleted) if the cached extremity is still
        ``prev_stream_id``; False (nothing written) otherwise."""

        def _txn(txn: Transaction, position: int) -> bool:
            row = txn.select_one(
                "SELECT stream_id FROM remote_device_lists WHERE user_id = ?", (user_id,)
            )
            if row is None or int(row[0]) != prev_stream_id:
                return False
            txn.execute(
                "UPDATE remote_device_lists SET stream_id = ? WHERE user_id = ?",
                (stream_id, user_id),
            )
            txn.execute(
                "DELETE FROM remote_devices WHERE user_id = ? AND device_id = ?",
                (user_id, device_id),
            )
            if device is not None:
                txn.execute(
                    "INSERT INTO remote_devices (user_id, device_id, display_name, keys_json)"
                    " VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
                    (user_id, device_id, device.display_name, _dump(device.keys)),
                )
            E2eeStore.record_changes_txn(txn, position, [DeviceListChange(user_id)])
            return True

        with self._device_lists.reserve() as position:
            return await self._db.run_interaction("apply_remote_device_update", _txn, position)

    async def set_remote_signing_keys(
        self, user_id: str, master_key: JsonDict | None, self_signing_key: JsonDict | None
    ) -> bool:
        """Replace the cached cross-signing keys given (None: keep); False if not cached."""

        def _txn(txn: Transaction, position: int) -> bool:
            row = txn.select_one("SELECT 1 FROM remote_device_lists WHERE user_id = ?", (user_id,))
            if row is None:
                return False
            if master_key is not None:
                txn.execute(
                    "UPDATE remote_device_lists SET master_key = ? WHERE user_id = ?",
                    (canonical(master_key), user_id),
                )
            if self_signing_key is not None:
                txn.execute(
                    "UPDATE remote_device_lists SET self_signing_key = ? WHERE user_id = ?",
                    (canonical(self_signing_key), user_id),
                )
            E2eeStore.record_changes_txn(txn, position, [DeviceListChange(user_id)])
            return True

        with self._device_lists.reserve() as position:
            return await self._db.run_interaction("set_remote_signing_keys", _txn, position)

    async def forget_remote_list(self, user_id: str) -> None:
        """Drop a cached list (we no longer share a room, so EDUs stop coming)."""

        def _txn(txn: Transaction) -> None:
            txn.execute("DELETE FROM remote_devices WHERE user_id = ?", (user_id,))
            txn.execute("DELETE FROM remote_device_lists WHERE user_id = ?", (user_id,))

        await self._db.run_interaction("forget_remote_device_list", _txn)
