"""The E2EE parts of /sync, as ``SyncSource``s.

- ``to_device``: the syncing device's to-device messages in (since, now], oldest first.
  A ``since`` is the client's acknowledgement of everything at or below it, so those
  messages are deleted then; a client that retries with an older ``since`` gets the
  unacknowledged ones again. Also, on every sync, the device's one-time key counts and
  unused fallback key algorithms (read from a cache; see ``E2eeStore``).
- ``device_lists``: on an incremental sync, ``device_lists.changed`` / ``left`` as
  ``DeviceLists.changes`` computes them; nothing on an initial sync (the spec's rule).
"""

from __future__ import annotations

from homeserver.e2ee.device_lists import DeviceLists
from homeserver.e2ee.keys import one_time_key_counts
from homeserver.sync.sources import SyncContext, SyncFragment
from storage.e2ee import E2eeStore


class ToDeviceSource:
    name = "to_device"

    def __init__(self, store: E2eeStore) -> None:
        self._store = store

    def current_position(self) -> int:
        return self._store.to_device.current_position

    async def get_updates(self, ctx: SyncContext, since: int, now: int) -> SyncFragment:
        fragment = SyncFragment()
        if ctx.device_id is None:
            return fragment
        messages = await self._store.sync_inbox(ctx.user_id, ctx.device_id, since, now)
        counts = await self._store.get_key_counts(ctx.user_id, ctx.device_id)
        fragment.top_level = {
            "device_one_time_keys_count": one_time_key_counts(counts.one_time_keys),
            "device_unused_fallback_key_types": list(counts.unused_fallback_algorithms),
        }
        if messages:
            fragment.top_level["to_device"] = {"events": messages}
            fragment.has_updates = True
        return fragment


class DeviceListSource:
    name = "device_lists"
    quiet_when_still = True

    def __init__(self, store: E2eeStore, device_lists: DeviceLists) -> None:
        self._store = store
        self._device_lists = device_lists

    def current_position(self) -> int:
        return self._store.device_lists.current_position

    async def get_updates(self, ctx: SyncContext, since: int, now: int) -> SyncFragment:
        if ctx.initial:
            return SyncFragment()
        updates = await self._device_lists.changes(
            ctx.user_id,
            since,
            now,
            ctx.joined_room_ids,
            ctx.newly_joined_room_ids,
            ctx.membership_changes,
        )
        if not (updates.changed or updates.left):
            return SyncFragment()
        return SyncFragment(
            top_level={
                "device_lists": {"changed": sorted(updates.changed), "left": sorted(updates.left)}
            },
            has_updates=True,
        )
