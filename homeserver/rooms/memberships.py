"""Each local user's current membership per room, in memory.

Loaded from the database the first time a user is asked about, then kept up to date
by ``on_membership`` for every persisted membership event of a local user, so /sync
learns which rooms a user is in without a query.
"""

from __future__ import annotations

from homeserver.events.event import Event
from storage.memberships import MembershipRow, MembershipStore


class MembershipCache:
    def __init__(self, memberships: MembershipStore) -> None:
        self._memberships = memberships
        self._by_user: dict[str, dict[str, MembershipRow]] = {}
        # Membership events persisted while a user's rows were being read.
        self._loading: dict[str, list[Event]] = {}
        # Moves when rooms change other than by a persisted event (forget, purge): what
        # is derived from users' rooms and kept up to date from those events (sliding
        # sync's recency orders) starts afresh.
        self.epoch = 0

    async def rooms_for_user(self, user_id: str) -> dict[str, MembershipRow]:
        rooms = self._by_user.get(user_id)
        if rooms is not None:
            return rooms
        buffered = self._loading.setdefault(user_id, [])
        try:
            rows = await self._memberships.get_rooms_for_user(user_id)
        finally:
            self._loading.pop(user_id, None)
        rooms = self._by_user.get(user_id)
        if rooms is None:
            rooms = {row.room_id: row for row in rows}
            self._by_user[user_id] = rooms
            for event in buffered:
                self._record(rooms, event)
        return rooms

    @staticmethod
    def _record(rooms: dict[str, MembershipRow], event: Event) -> None:
        current = rooms.get(event.room_id)
        if current is not None and current.stream_ordering >= event.stream_ordering:
            return
        assert event.membership is not None
        rooms[event.room_id] = MembershipRow(
            event.room_id, event.membership, event.event_id, event.stream_ordering, event.sender
        )

    def on_membership(self, event: Event) -> None:
        user_id = event.state_key
        membership = event.membership
        if user_id is None or membership is None:
            return
        loading = self._loading.get(user_id)
        if loading is not None:
            loading.append(event)
        rooms = self._by_user.get(user_id)
        if rooms is None:
            return  # not loaded: the database has it
        self._record(rooms, event)

    def forget(self, user_id: str, room_id: str) -> None:
        self.epoch += 1
        rooms = self._by_user.get(user_id)
        if rooms is not None:
            rooms.pop(room_id, None)

    def drop_user(self, user_id: str) -> None:
        self.epoch += 1
        self._by_user.pop(user_id, None)

    def drop_all(self) -> None:
        self.epoch += 1
        self._by_user.clear()

    def drop_room(self, room_id: str) -> None:
        """The room was purged from the database: no user is in it any more."""
        self.epoch += 1
        for rooms in self._by_user.values():
            rooms.pop(room_id, None)

    def history_changed(self) -> None:
        """A room lost events (a history purge): its recency may have moved back."""
        self.epoch += 1
