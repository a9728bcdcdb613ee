"""Users a user ignores (``m.ignored_user_list`` account data), kept in memory.

The spec: servers must not send the client events from ignored users. As Synapse, that
means their non-state events (timelines of /sync, /messages, /context) and their
invites; state events stay, since the room's state is the room's.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable

from homeserver.events.event import Event
from storage.account_data import GLOBAL, AccountDataStore

IGNORED_USER_LIST = "m.ignored_user_list"
MAX_USERS = 50_000
NOBODY: frozenset[str] = frozenset()


def parse_ignored(content: object) -> frozenset[str]:
    """The user ids of an ``m.ignored_user_list`` content (malformed parts ignored)."""
    if not isinstance(content, dict):
        return NOBODY
    users = content.get("ignored_users")
    if not isinstance(users, dict):
        return NOBODY
    return frozenset(u for u in users if isinstance(u, str))


def without_ignored(events: Iterable[Event], ignored: frozenset[str]) -> list[Event]:
    """``events`` less the non-state events sent by ``ignored`` users."""
    return [ev for ev in events if ev.sender not in ignored or ev.is_state()]


class IgnoredUsers:
    def __init__(self, account_data: AccountDataStore, *, max_users: int = MAX_USERS) -> None:
        self._store = account_data
        self._cache: OrderedDict[str, frozenset[str]] = OrderedDict()
        self._max_users = max_users
        # Bumped by every account data change of any cached-or-loading user: a load that
        # saw a change happen meanwhile is not cached (it may predate the change).
        self._changes = 0

    def on_account_data_changed(self, user_id: str) -> None:
        self._changes += 1
        self._cache.pop(user_id, None)

    async def get(self, user_id: str) -> frozenset[str]:
        cached = self._cache.get(user_id)
        if cached is not None:
            self._cache.move_to_end(user_id)
            return cached
        before = self._changes
        ignored = parse_ignored(await self._store.get(user_id, GLOBAL, IGNORED_USER_LIST))
        if self._changes == before:
            self._cache[user_id] = ignored
            while len(self._cache) > self._max_users:
                self._cache.popitem(last=False)
        return ignored
