"""Typing notifications, held in memory only, and the ``typing`` /sync source.

Invariants:
- A user is listed as typing in a room from a ``typing: true`` request until the
  earliest of: their ``typing: false``, the timeout (on the injected clock, at most
  ``MAX_TIMEOUT_MS``), a non-state event they send to the room, or their leaving it.
- Every change of a room's typing list takes the next position of an in-memory
  stream and records it as the room's last change; a restart starts the stream again
  at 0, and the sync handler treats a ``since`` above it as "nothing new".
- Renewing a timeout of someone already typing changes no list, so it wakes nobody.
- ``m.typing`` always carries a room's whole current list (clients replace theirs).
- Remote users' typing (from federation) lives in the same lists, with the federation
  timeout; every start (renewals too), stop and expiry of anyone is published as
  ``TypingChanged``, and the federation side sends on only its own users'.
"""

from __future__ import annotations

import logging
from typing import Any

from homeserver.bus import Bus, TypingChanged
from homeserver.clock import Clock
from homeserver.errors import Codes, MatrixError
from homeserver.events.event import Event
from homeserver.rooms.room_cache import RoomCache
from homeserver.sync.notifier import Notifier
from homeserver.sync.sources import SyncContext, SyncFragment

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT_MS = 30_000
MAX_TIMEOUT_MS = 120_000  # Synapse's clamp
# A remote user's typing ends this long after their server's last notice (Synapse's).
FEDERATION_TIMEOUT_MS = 60_000


class TypingHandler:
    def __init__(self, rooms: RoomCache, notifier: Notifier, clock: Clock, bus: Bus) -> None:
        self._rooms = rooms
        self._notifier = notifier
        self._clock = clock
        # room id -> user id -> the timer that ends their typing (insertion order kept)
        self._typing: dict[str, dict[str, Any]] = {}
        self._room_changed_at: dict[str, int] = {}
        self._position = 0
        # Told of every start, renewal, stop and expiry.
        self._bus = bus

    @property
    def position(self) -> int:
        return self._position

    async def set_typing(
        self, user_id: str, target_user_id: str, room_id: str, typing: bool, timeout_ms: int
    ) -> None:
        if user_id != target_user_id:
            raise MatrixError(403, Codes.FORBIDDEN, "Cannot set another user's typing state")
        if not room_id.startswith("!"):
            raise MatrixError(400, Codes.INVALID_PARAM, f"{room_id} is not a valid room ID")
        room = await self._rooms.get(room_id)
        if room is None:
            raise MatrixError(404, Codes.NOT_FOUND, "Unknown room")
        if room.membership_of(user_id) != "join":
            raise MatrixError(403, Codes.FORBIDDEN, f"User {user_id} not in room {room_id}")
        if typing:
            self._start(room_id, user_id, min(max(timeout_ms, 0), MAX_TIMEOUT_MS))
        else:
            self._stop(room_id, user_id)

    def set_remote_typing(self, room_id: str, user_id: str, typing: bool) -> None:
        """A typing notice from another server (the caller checked the user may send it)."""
        if typing:
            self._start(room_id, user_id, FEDERATION_TIMEOUT_MS)
        else:
            self._stop(room_id, user_id)

    def typing_users(self, room_id: str) -> list[str]:
        return list(self._typing.get(room_id, ()))

    def _start(self, room_id: str, user_id: str, timeout_ms: int) -> None:
        users = self._typing.setdefault(room_id, {})
        previous = users.get(user_id)
        users[user_id] = self._clock.callLater(timeout_ms / 1000.0, self._expire, room_id, user_id)
        if previous is not None:
            if previous.active():
                previous.cancel()
        else:
            self._changed(room_id)  # a renewal moves only the timeout: no list change
        self._tell(room_id, user_id, True)

    def _stop(self, room_id: str, user_id: str) -> None:
        users = self._typing.get(room_id)
        timer = users.pop(user_id, None) if users is not None else None
        if timer is None:
            return
        if timer.active():
            timer.cancel()
        if not users:
            del self._typing[room_id]
        self._changed(room_id)
        self._tell(room_id, user_id, False)

    def _expire(self, room_id: str, user_id: str) -> None:
        users = self._typing.get(room_id)
        if users is None or user_id not in users:
            return
        del users[user_id]
        if not users:
            del self._typing[room_id]
        self._changed(room_id)
        self._tell(room_id, user_id, False)

    def mirror(self, room_id: str, user_id: str, typing: bool) -> None:
        """A reader process: the main process's change (told by the bus), applied
        without a timer (the main process ends it and says so) and told to no one."""
        users = self._typing.get(room_id)
        if typing:
            if users is not None and user_id in users:
                return  # a renewal
            self._typing.setdefault(room_id, {})[user_id] = None
        else:
            if users is None or user_id not in users:
                return
            del users[user_id]
            if not users:
                del self._typing[room_id]
        self._changed(room_id)

    def _tell(self, room_id: str, user_id: str, typing: bool) -> None:
        self._bus.publish(TypingChanged(room_id, user_id, typing))

    def _changed(self, room_id: str) -> None:
        self._position += 1
        self._room_changed_at[room_id] = self._position
        room = self._rooms.get_if_loaded(room_id)
        if room is not None:
            self._notifier.notify_users(room.joined_members())

    def on_event_accepted(self, event: Event) -> None:
        """EventCreator hook: leaving the room ends the member's typing. Sending a
        message does not (as Synapse: clients say when they stop typing).

        The change is made on the next reactor turn: the hook runs inside the event
        creator's no-await section, which must not resume waiting syncs.
        """
        users = self._typing.get(event.room_id)
        if not users:
            return
        if event.membership not in (None, "join") and event.state_key in users:
            self._clock.callLater(0, self._stop, event.room_id, event.state_key)

    async def stop(self) -> None:
        """Cancel every timer (server shutdown)."""
        for users in self._typing.values():
            for timer in users.values():
                if timer is not None and timer.active():
                    timer.cancel()
        self._typing.clear()

    def changed_since(self, room_id: str, since: int, now: int) -> bool:
        changed_at = self._room_changed_at.get(room_id)
        return changed_at is not None and since < changed_at <= now


class TypingSource:
    """``m.typing`` for rooms whose list changed in the window; whole for new rooms."""

    name = "typing"
    quiet_when_still = True

    def __init__(self, handler: TypingHandler) -> None:
        self._handler = handler

    def current_position(self) -> int:
        return self._handler.position

    async def get_updates(self, ctx: SyncContext, since: int, now: int) -> SyncFragment:
        fragment = SyncFragment()
        if ctx.filters.blocks_all_room_ephemeral():
            return fragment
        for room_id in ctx.joined_room_ids:
            users = self._handler.typing_users(room_id)
            # As Synapse: a room whose list changed in the window gets it, emptied too;
            # for a first sync (since 0) that is any room with typing since the start.
            whole = bool(users) and (ctx.initial or room_id in ctx.newly_joined_room_ids)
            if not whole and not self._handler.changed_since(room_id, since, now):
                continue
            event = {"type": "m.typing", "content": {"user_ids": users}}
            events = ctx.filters.filter_ephemeral([event], room_id)
            if events:
                fragment.ephemeral[room_id] = events
                fragment.has_updates = True
        return fragment
