"""Device list tracking: who must re-query whose keys.

Invariants:
- Every change to a user's devices or keys is a row in the device list stream
  (``E2eeStore``), written in the transaction that makes the change; afterwards
  ``notify`` wakes the user and every local user sharing a joined room with them (or
  only ``for_user_id`` for a change meant for one user). For a remote user's change
  (from federation), that is every local user sharing a joined room with them.
- Every change to a local user's devices or cross-signing keys is also handed to the
  ``publishers`` (federation sends it to the servers sharing a room); a failing
  publisher is logged and does not fail the change, which is already committed.
- ``changes`` answers for one user and one window: users with device list rows in the
  window who share a room with them (or the user themselves), users who joined a room
  they share or whose room they joined (``changed``), and users with whom they no
  longer share any room (``left``). Shared rooms come from memory (``RoomCache``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from homeserver.e2ee.locality import Locality
from homeserver.e2ee.remote import DeviceListPublisher
from homeserver.rooms.membership_changes import MembershipChange
from homeserver.rooms.memberships import MembershipCache
from homeserver.rooms.room_cache import RoomCache
from homeserver.sync.notifier import Notifier
from storage.e2ee import DeviceListChange, E2eeStore

logger = logging.getLogger(__name__)

JOINING = ("join", "invite", "knock")
LEAVING = ("leave", "ban")


@dataclass(frozen=True, slots=True)
class DeviceListUpdates:
    changed: frozenset[str]
    left: frozenset[str]


class DeviceLists:
    def __init__(
        self,
        store: E2eeStore,
        rooms: RoomCache,
        memberships: MembershipCache,
        notifier: Notifier,
        locality: Locality,
    ) -> None:
        self._store = store
        self._rooms = rooms
        self._memberships = memberships
        self._notifier = notifier
        self._locality = locality
        self.publishers: list[DeviceListPublisher] = []
        # The main process tells reader processes whom to wake (set by the composition
        # root there; a reader's own wake-ups stay local).
        self.on_notified: Callable[[list[DeviceListChange]], None] | None = None

    async def joined_room_ids(self, user_id: str) -> set[str]:
        rooms = await self._memberships.rooms_for_user(user_id)
        return {room_id for room_id, row in rooms.items() if row.membership == "join"}

    async def members_of(self, room_ids: Iterable[str]) -> set[str]:
        """Users joined to any of the rooms (from memory)."""
        out: set[str] = set()
        for room_id in room_ids:
            room = await self._rooms.get(room_id)
            if room is not None:
                out |= room.joined_members()
        return out

    async def notify(self, changes: Iterable[DeviceListChange]) -> None:
        """Wake the syncs of every local user who may be told of these changes."""
        changes = list(changes)
        if self.on_notified is not None:
            self.on_notified(changes)
        to_wake: set[str] = set()
        for change in changes:
            if change.for_user_id is not None:
                to_wake.add(change.for_user_id)
                continue
            to_wake.add(change.user_id)
            to_wake |= await self.members_of(await self.joined_room_ids(change.user_id))
        self._notifier.notify_users(u for u in to_wake if self._locality.is_mine(u))

    async def shares_room_with_local_user(self, user_id: str) -> bool:
        members = await self.members_of(await self.joined_room_ids(user_id))
        return any(self._locality.is_mine(u) for u in members if u != user_id)

    async def publish_devices(
        self, user_id: str, device_ids: list[str], deleted: bool = False, *, wait_sent: bool = False
    ) -> None:
        for publisher in self.publishers:
            try:
                await publisher.devices_changed(user_id, device_ids, deleted, wait_sent=wait_sent)
            except Exception:
                logger.exception("Publishing device changes of %s failed", user_id)

    async def publish_signing_keys(self, user_id: str) -> None:
        for publisher in self.publishers:
            try:
                await publisher.signing_keys_changed(user_id)
            except Exception:
                logger.exception("Publishing cross-signing keys of %s failed", user_id)

    async def on_devices_changed(self, user_id: str, device_ids: list[str], created: bool) -> None:
        """``UserStore`` listener: a device was created, or devices were deleted."""
        if created:
            await self._store.record_device_list_changes([DeviceListChange(user_id)])
        else:
            await self._store.delete_devices(user_id, device_ids)
        await self.notify([DeviceListChange(user_id)])
        await self.publish_devices(user_id, device_ids, deleted=not created)

    async def on_device_renamed(self, user_id: str, device_id: str) -> None:
        """A device's display name changed: others see it in /keys/query."""
        await self._store.record_device_list_changes([DeviceListChange(user_id)])
        await self.notify([DeviceListChange(user_id)])
        await self.publish_devices(user_id, [device_id])

    async def changes(
        self,
        user_id: str,
        since: int,
        now: int,
        joined_room_ids: Iterable[str],
        newly_joined_room_ids: Iterable[str],
        membership_changes: Iterable[MembershipChange],
    ) -> DeviceListUpdates:
        """What ``user_id`` is told for device list positions (since, now] and the
        membership changes of the same window."""
        joined = set(joined_room_ids)
        shared: set[str] | None = None
        changed: set[str] = set()
        left_candidates: set[str] = set()
        if since < now:
            broadcast, targeted = await self._store.get_device_list_changes(since, now, user_id)
            changed |= targeted
            if broadcast:
                shared = await self.members_of(joined)
                changed |= {u for u in broadcast if u in shared or u == user_id}
        for room_id in newly_joined_room_ids:
            changed |= await self.members_of([room_id])
        for room_id, member, membership in membership_changes:
            if member == user_id:
                if membership in LEAVING:
                    room = await self._rooms.get(room_id)
                    if room is not None:
                        left_candidates |= room.joined_members()
            elif membership in JOINING:
                changed.add(member)
            elif membership in LEAVING:
                left_candidates.add(member)
        left: set[str] = set()
        if left_candidates:
            if shared is None:
                shared = await self.members_of(joined)
            left = {u for u in left_candidates if u not in shared and u != user_id}
        return DeviceListUpdates(frozenset(changed - left), frozenset(left))
