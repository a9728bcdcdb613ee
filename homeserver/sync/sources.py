"""Pluggable /sync sources: each feature (receipts, typing, presence, to-device, device
lists, ...) owns one stream and contributes its part of the response.

Invariants:
- A source's ``current_position`` only covers changes that are complete and visible;
  ``get_updates(ctx, since, now)`` returns exactly the changes in (since, now].
- Sources whose positions are not persisted (typing) must accept a ``since`` above
  their current position (after a restart) and treat it as "nothing new".
- A source wakes waiting syncs through the ``Notifier`` after its position advances.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from homeserver.events.filtering import FilterCollection

JsonDict = dict[str, Any]

# Token order after events and account data; a new source appends here, never reorders.
SOURCE_ORDER = (
    "receipts",
    "typing",
    "presence",
    "to_device",
    "device_lists",
    "unread_counts",
)


@dataclass(frozen=True, slots=True)
class SyncContext:
    user_id: str
    device_id: str | None
    joined_room_ids: frozenset[str]
    filters: FilterCollection
    initial: bool
    # Rooms the user joined within this sync window (their ephemeral state is sent whole).
    newly_joined_room_ids: frozenset[str] = frozenset()
    # Users sharing a room with this user changed membership in the window (for device lists).
    membership_changes: tuple[tuple[str, str, str], ...] = ()  # (room_id, user_id, membership)


@dataclass(slots=True)
class SyncFragment:
    """What one source adds to a response."""

    top_level: JsonDict = field(default_factory=dict)
    # room_id -> ephemeral events for rooms.join[room_id].ephemeral
    ephemeral: dict[str, list[JsonDict]] = field(default_factory=dict)
    # room_id -> extra keys merged into rooms.join[room_id] (unread_notifications, ...)
    room_fields: dict[str, JsonDict] = field(default_factory=dict)
    has_updates: bool = False


class SyncSource(Protocol):
    """``name`` keys its position in the sync token. A source may set a class attribute
    ``quiet_when_still = True``: it promises an empty fragment when its own position
    did not move, the sync is incremental, and no room was joined or membership changed
    in the window — so /sync skips calling it then."""

    name: str

    def current_position(self) -> int: ...

    async def get_updates(self, ctx: SyncContext, since: int, now: int) -> SyncFragment: ...
