"""Suspended, locked and shadow-banned accounts, and per-user rate limit overrides,
as Synapse (MSC3823, account locking, the user admin API).

- A **locked** user's access tokens answer 401 ``M_USER_LOCKED`` with
  ``soft_logout: true`` (except for logging out); their sessions survive unlocking.
- A **suspended** user can still read, leave rooms and log out, but cannot send
  events, set state, create, join, knock or invite: 403 ``M_USER_SUSPENDED``.
- A **shadow-banned** user's event sends and invites are answered as if they
  succeeded (a made-up event id) and nothing is persisted or sent.
- A **rate limit override** (admin ``override_ratelimit``): zero messages per second
  exempts the user from every per-user rate limiter; other values replace
  ``rc_message`` for that user (as Synapse, only the message limiter honours them).

Invariants: memory holds every set and the overrides whole (loaded at start-up; one writer process), and
a change is written to the database before memory, so a restart never undoes it.
"""

from __future__ import annotations

import secrets
import string

from homeserver.config import RateLimit
from homeserver.errors import MatrixError
from storage.user_restrictions import UserRestrictionsStore

USER_LOCKED = "M_USER_LOCKED"
USER_SUSPENDED = "M_USER_SUSPENDED"


class UserRestrictions:
    def __init__(
        self,
        store: UserRestrictionsStore,
        suspended: set[str],
        locked: set[str],
        shadow_banned: set[str] | None = None,
        ratelimit_overrides: dict[str, tuple[int, int]] | None = None,
    ) -> None:
        self._store = store
        self._suspended = suspended
        self._locked = locked
        self._shadow_banned = shadow_banned if shadow_banned is not None else set()
        self._overrides = ratelimit_overrides if ratelimit_overrides is not None else {}

    @classmethod
    async def load(cls, store: UserRestrictionsStore) -> UserRestrictions:
        return cls(
            store,
            await store.get_restricted("suspended"),
            await store.get_restricted("locked"),
            await store.get_restricted("shadow_banned"),
            await store.get_ratelimit_overrides(),
        )

    def is_shadow_banned(self, user_id: str) -> bool:
        return user_id in self._shadow_banned

    async def set_shadow_banned(self, user_id: str, shadow_banned: bool) -> None:
        await self._store.set_flag(user_id, "shadow_banned", shadow_banned)
        (self._shadow_banned.add if shadow_banned else self._shadow_banned.discard)(user_id)

    def ratelimit_override(self, user_id: str) -> tuple[int, int] | None:
        """(messages per second, burst count) set by an admin for ``user_id``, if any."""
        return self._overrides.get(user_id)

    def override_limit(self, user_id: str) -> RateLimit | None:
        """The ``RateLimit`` an override sets (zero messages per second: unlimited)."""
        override = self._overrides.get(user_id)
        if override is None:
            return None
        return RateLimit(per_second=override[0], burst_count=override[1])

    async def set_ratelimit_override(
        self, user_id: str, messages_per_second: int, burst_count: int
    ) -> None:
        await self._store.set_ratelimit_override(user_id, messages_per_second, burst_count)
        self._overrides[user_id] = (messages_per_second, burst_count)

    async def delete_ratelimit_override(self, user_id: str) -> None:
        await self._store.delete_ratelimit_override(user_id)
        self._overrides.pop(user_id, None)

    def is_suspended(self, user_id: str) -> bool:
        return user_id in self._suspended

    def is_locked(self, user_id: str) -> bool:
        return user_id in self._locked

    async def set_suspended(self, user_id: str, suspended: bool) -> None:
        await self._store.set_flag(user_id, "suspended", suspended)
        (self._suspended.add if suspended else self._suspended.discard)(user_id)

    async def set_locked(self, user_id: str, locked: bool) -> None:
        await self._store.set_flag(user_id, "locked", locked)
        (self._locked.add if locked else self._locked.discard)(user_id)

    def check_not_suspended(self, user_id: str) -> None:
        if user_id in self._suspended:
            raise MatrixError(
                403, USER_SUSPENDED, "This action is not allowed while the account is suspended"
            )

    def check_not_locked(self, user_id: str) -> None:
        if user_id in self._locked:
            raise MatrixError(
                401, USER_LOCKED, "User account has been locked", {"soft_logout": True}
            )


def fake_event_id() -> str:
    """An event id shaped like a real one, answered to a shadow-banned sender."""
    return "$" + "".join(secrets.choice(string.ascii_letters) for _ in range(43))
