"""The extensions of simplified sliding sync (MSC4186), from /sync's own sources.

- ``to_device`` (MSC3885): the device's messages after the extension's ``since`` (its
  last ``next_batch``, which acknowledges and deletes those at or below it), at most
  ``limit`` of them: ``next_batch`` is then the last one's position (as Synapse).
- ``e2ee`` (MSC3884): one-time key counts, unused fallback key types, and on an
  incremental request the device list changes since ``pos``.
- ``account_data`` (MSC3959), ``receipts`` (MSC3960), ``typing`` (MSC3961): changes
  since ``pos`` (everything on a first request, and receipts and typing whole for rooms
  sent ``initial``), for the rooms the extension is scoped to (``lists`` / ``rooms``;
  by default every room of the response's windows and subscriptions).
"""

from __future__ import annotations

from typing import Any

from homeserver.e2ee.keys import one_time_key_counts
from homeserver.events.filtering import FilterCollection
from homeserver.rooms.membership_changes import membership_changes
from homeserver.rooms.room_cache import RoomCache
from homeserver.sync.handler import SyncHandler, SyncToken
from homeserver.sync.sliding_config import Extensions, ExtensionScope, SlidingSyncRequest
from homeserver.sync.sources import SyncContext
from storage.account_data import GLOBAL
from storage.memberships import MembershipRow
from storage.storage import Storage

JsonDict = dict[str, Any]

_NO_FILTERS = FilterCollection.from_json({})
NO_EXTENSIONS = Extensions()


class ExtensionsBuilder:
    def __init__(self, storage: Storage, rooms: RoomCache, sync: SyncHandler) -> None:
        self._storage = storage
        self._rooms = rooms
        self._sync = sync

    async def build(
        self,
        req: SlidingSyncRequest,
        candidates: dict[str, MembershipRow],
        in_lists: dict[str, list[str]],
        rooms_out: JsonDict,
        since: SyncToken | None,
        now: SyncToken,
    ) -> tuple[JsonDict, bool]:
        """The ``extensions`` object, and whether it holds anything new."""
        ext = req.extensions
        out: JsonDict = {}
        updates = False
        if ext == NO_EXTENSIONS:
            return out, updates  # (and no pass over every room for ``joined``)
        joined = frozenset(r for r, row in candidates.items() if row.membership == "join")
        start = since if since is not None else SyncToken((0,) * len(now.positions))
        if ext.to_device is not None and req.device_id:
            # As Synapse: a ``since`` ahead of the stream gets nothing, and keeps it.
            acked = ext.to_device.since or 0
            if acked > now.get("to_device"):
                out["to_device"] = {"next_batch": str(acked), "events": []}
            else:
                events, reached = await self._storage.e2ee.sync_inbox_page(
                    req.user_id, req.device_id, acked, now.get("to_device"), ext.to_device.limit
                )
                out["to_device"] = {"next_batch": str(reached), "events": events}
                updates = updates or bool(events)
        if ext.e2ee and req.device_id:
            counts = await self._storage.e2ee.get_key_counts(req.user_id, req.device_id)
            e2ee: JsonDict = {
                "device_one_time_keys_count": one_time_key_counts(counts.one_time_keys),
                "device_unused_fallback_key_types": list(counts.unused_fallback_algorithms),
            }
            if since is not None:
                moved = {r for r, row in candidates.items() if row.stream_ordering > since.events}
                changes = await membership_changes(
                    self._rooms,
                    self._storage.events,
                    self._storage.state_groups,
                    joined | moved,
                    since.events,
                    now.events,
                )
                ctx = SyncContext(
                    user_id=req.user_id,
                    device_id=req.device_id,
                    joined_room_ids=joined,
                    filters=_NO_FILTERS,
                    initial=False,
                    newly_joined_room_ids=frozenset(
                        r for r in joined if candidates[r].stream_ordering > since.events
                    ),
                    membership_changes=changes,
                )
                fragment = await self._sync.source_updates("device_lists", ctx, since, now)
                lists = fragment.top_level.get("device_lists") if fragment else None
                e2ee["device_lists"] = lists or {"changed": [], "left": []}
                updates = updates or bool(lists and (lists["changed"] or lists["left"]))
            out["e2ee"] = e2ee
        if ext.account_data is not None:
            scope = self._scope(ext.account_data, req, in_lists, rooms_out)
            changes_ad = await self._storage.account_data.get_changes(
                req.user_id, start.account_data, now.account_data
            )
            global_data = [
                {"type": c.data_type, "content": c.content}
                for c in changes_ad
                if c.room_id == GLOBAL
            ]
            # Rooms new to the connection get their room account data whole.
            fresh = {r for r in scope if rooms_out.get(r, {}).get("initial")}
            if since is not None and fresh:
                whole = await self._storage.account_data.get_changes(
                    req.user_id, 0, now.account_data
                )
                changes_ad = [
                    c for c in whole if c.room_id in fresh or c.stream_id > start.account_data
                ]
            by_room: dict[str, list[JsonDict]] = {}
            for c in changes_ad:
                if c.room_id != GLOBAL and c.room_id in scope and c.room_id in candidates:
                    by_room.setdefault(c.room_id, []).append(
                        {"type": c.data_type, "content": c.content}
                    )
            out["account_data"] = {"global": global_data, "rooms": by_room}
            updates = updates or bool(global_data or by_room)
        for name, scope_config in (("receipts", ext.receipts), ("typing", ext.typing)):
            if scope_config is None:
                continue
            scope = self._scope(scope_config, req, in_lists, rooms_out) & joined
            initial_rooms = frozenset(r for r in scope if rooms_out.get(r, {}).get("initial"))
            ctx = self._context(req, frozenset(scope), since, initial_rooms)
            fragment = await self._sync.source_updates(name, ctx, start, now)
            rooms: JsonDict = {}
            if fragment is not None:
                for room_id, events in fragment.ephemeral.items():
                    if events:
                        rooms[room_id] = events[-1]
            out[name] = {"rooms": rooms}
            updates = updates or bool(rooms)
        return out, updates

    @staticmethod
    def _context(
        req: SlidingSyncRequest,
        rooms: frozenset[str],
        since: SyncToken | None,
        initial_rooms: frozenset[str],
    ) -> SyncContext:
        return SyncContext(
            user_id=req.user_id,
            device_id=req.device_id,
            joined_room_ids=rooms,
            filters=_NO_FILTERS,
            initial=since is None,
            newly_joined_room_ids=initial_rooms,
        )

    @staticmethod
    def _scope(
        scope: ExtensionScope,
        req: SlidingSyncRequest,
        in_lists: dict[str, list[str]],
        rooms_out: JsonDict,
    ) -> set[str]:
        """The rooms an extension covers: those of its lists' windows and its room
        subscriptions (``None``: all of them)."""
        out: set[str] = set()
        for name, room_ids in in_lists.items():
            if scope.lists is None or name in scope.lists:
                out.update(room_ids)
        for room_id in req.room_subscriptions:
            if scope.rooms is None or room_id in scope.rooms:
                out.add(room_id)
        return out
