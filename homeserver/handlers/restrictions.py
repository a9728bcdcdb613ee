"""Suspended and locked accounts, as Synapse (MSC3823 and account locking).

- A **locked** user's access tokens answer 401 ``M_USER_LOCKED`` with
  ``soft_logout: true`` (except for logging out); their sessions survive unlocking.
- A **suspended** user can still read, leave rooms and log out, but cannot send
  events, set state, create, join, knock or invite: 403 ``M_USER_SUSPENDED``.

Invariants: memory holds both sets whole (loaded at start-up; one writer process), and
a change is written to the database before memory, so a restart never undoes it.
"""

from __future__ import annotations

from homeserver.errors import MatrixError
from storage.user_restrictions import UserRestrictionsStore

USER_LOCKED = "M_USER_LOCKED"
USER_SUSPENDED = "M_USER_SUSPENDED"


class UserRestrictions:
    def __init__(self, store: UserRestrictionsStore, suspended: set[str], locked: set[str]) -> None:
        self._store = store
        self._suspended = suspended
        self._locked = locked

    @classmethod
    async def load(cls, store: UserRestrictionsStore) -> UserRestrictions:
        return cls(
            store, await store.get_restricted("suspended"), await store.get_restricted("locked")
        )

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
