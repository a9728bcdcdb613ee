"""What a server admin does to local accounts (Synapse's user admin API): read one
account whole, create or modify it in one request, list accounts, log in as a user.

Each change goes through the handler that owns it elsewhere (registration, profiles,
passwords, deactivation, restrictions), so an admin's change has the same effects as
the user's own: a new display name reaches the rooms, a new password logs devices out,
a deactivation kills every token at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from homeserver.errors import Codes, MatrixError
from homeserver.handlers.auth import AuthHandler, generate_token, hash_token
from homeserver.handlers.deactivate import DeactivationHandler
from homeserver.handlers.profile import ProfileHandler
from homeserver.handlers.register import RegistrationHandler
from homeserver.handlers.restrictions import UserRestrictions
from homeserver.handlers.threepid import ThreePidHandler
from homeserver.requester import Requester
from storage.storage import Storage
from storage.users import UserRecord

JsonDict = dict[str, Any]

# Synapse's `user_types`: the built-in types (no extra types are configurable here).
USER_TYPES = ("bot", "support")

# Synapse rejects longer passwords on this API.
MAX_PASSWORD_LENGTH = 512


@dataclass(frozen=True, slots=True)
class UserChanges:
    """A ``PUT /_synapse/admin/v2/users/{userId}`` body, validated. A field absent from
    the body is None (``admin``, ``deactivated``, ``locked``, ``user_type_set``: given)."""

    password: str | None = None
    logout_devices: bool = True
    displayname: str | None = None
    displayname_set: bool = False
    avatar_url: str | None = None
    avatar_url_set: bool = False
    threepids: frozenset[tuple[str, str]] | None = None
    # (auth provider, external id) pairs: the user's whole set when given.
    external_ids: tuple[tuple[str, str], ...] | None = None
    admin: bool | None = None
    deactivated: bool | None = None
    locked: bool | None = None
    user_type: str | None = None
    user_type_set: bool = False


def _external_id_in_use() -> MatrixError:
    # Synapse's answer: 409, no specific errcode.
    return MatrixError(409, Codes.UNKNOWN, "External id is already in use.")


class AdminUsersHandler:
    def __init__(
        self,
        storage: Storage,
        auth: AuthHandler,
        registration: RegistrationHandler,
        profiles: ProfileHandler,
        deactivation: DeactivationHandler,
        restrictions: UserRestrictions,
        threepids: ThreePidHandler,
    ) -> None:
        self._storage = storage
        self._auth = auth
        self._registration = registration
        self._profiles = profiles
        self._deactivation = deactivation
        self._restrictions = restrictions
        self._threepids = threepids

    async def get_user(self, user_id: str) -> JsonDict | None:
        """Synapse's admin user object, or None for an unknown user."""
        user = await self._storage.users.get_user(user_id)
        if user is None:
            return None
        return await self._user_json(user)

    async def _user_json(self, user: UserRecord) -> JsonDict:
        user_id = user.user_id
        profile = await self._storage.profiles.get_profile(user_id)
        threepids = await self._storage.threepids.get_threepids(user_id)
        return {
            "name": user_id,
            "admin": user.admin,
            "deactivated": user.deactivated,
            "locked": self._restrictions.is_locked(user_id),
            "shadow_banned": self._restrictions.is_shadow_banned(user_id),
            # Seconds, as Synapse stores it (the list gives milliseconds).
            "creation_ts": user.creation_ts // 1000,
            "appservice_id": user.appservice_id,
            "consent_server_notice_sent": None,
            "consent_version": None,
            "consent_ts": None,
            "user_type": user.user_type,
            "is_guest": user.is_guest,
            "suspended": self._restrictions.is_suspended(user_id),
            "displayname": profile.displayname if profile else None,
            "avatar_url": profile.avatar_url if profile else None,
            "threepids": [t.to_json() for t in threepids],
            "external_ids": [
                {"auth_provider": provider, "external_id": external_id}
                for provider, external_id in await self._storage.user_admin.get_external_ids(
                    user_id
                )
            ],
            "erased": await self._storage.users.is_erased(user_id),
            "last_seen_ts": await self._storage.users.get_last_seen(user_id),
        }

    async def set_admin(self, requester: Requester, user_id: str, admin: bool) -> None:
        if user_id == requester.user_id and not admin:
            raise MatrixError(400, Codes.UNKNOWN, "You may not demote yourself.")
        await self._storage.users.set_admin(user_id, admin)
        # The flag rides in the token cache: the user's next request sees the change.
        self._auth.invalidate_user(user_id)

    async def set_password(
        self, requester: Requester, user_id: str, password: str, logout_devices: bool
    ) -> None:
        """As Synapse's admin path: no password policy, only the hash; an admin changing
        their own password keeps the session that asked."""
        password_hash = await self._auth.hash_password(password)
        own = requester.user_id == user_id
        await self._auth.set_password(
            user_id,
            password_hash,
            logout_devices=logout_devices,
            keep_device=requester.device_id if own else None,
            keep_token=requester.access_token_id if own else None,
        )

    async def create_or_modify(
        self, requester: Requester, user_id: str, localpart: str, changes: UserChanges
    ) -> tuple[bool, JsonDict]:
        """(created, the user object after the change)."""
        if changes.deactivated and changes.locked:
            raise MatrixError(400, Codes.UNKNOWN, "An user can't be deactivated and locked")
        user = await self._storage.users.get_user(user_id)
        if (
            changes.external_ids is not None
            and not await self._storage.user_admin.external_ids_free(
                user_id, list(changes.external_ids)
            )
        ):
            # Checked first, so a refused creation leaves no account behind.
            raise _external_id_in_use()
        if user is None:
            await self._create(requester, user_id, localpart, changes)
            created = True
        else:
            await self._modify(requester, user, changes)
            created = False
        result = await self.get_user(user_id)
        assert result is not None
        return created, result

    async def _create(
        self, requester: Requester, user_id: str, localpart: str, changes: UserChanges
    ) -> None:
        password_hash = None
        if changes.password is not None:
            password_hash = await self._auth.hash_password(changes.password)
        await self._registration.register_user(
            localpart,
            None,
            admin=bool(changes.admin),
            displayname=changes.displayname,
            password_hash=password_hash,
            user_type=changes.user_type,
        )
        now = self._auth.now_ms()
        for medium, address in sorted(changes.threepids or ()):
            if not await self._storage.threepids.add_threepid(user_id, medium, address, now, now):
                raise MatrixError(400, Codes.THREEPID_IN_USE, f"{address} is already in use")
        await self._set_external_ids(user_id, changes)
        if changes.avatar_url_set and changes.avatar_url is not None:
            await self._profiles.set_field(requester, user_id, "avatar_url", changes.avatar_url)

    async def _set_external_ids(self, user_id: str, changes: UserChanges) -> None:
        if changes.external_ids is None:
            return
        if not await self._storage.user_admin.replace_external_ids(
            user_id, list(changes.external_ids)
        ):
            raise _external_id_in_use()

    async def _modify(self, requester: Requester, user: UserRecord, changes: UserChanges) -> None:
        user_id = user.user_id
        if changes.displayname_set:
            await self._profiles.set_field(
                requester, user_id, "displayname", changes.displayname or ""
            )
        if changes.threepids is not None:
            current = {
                (t.medium, t.address) for t in await self._storage.threepids.get_threepids(user_id)
            }
            for medium, address in sorted(current - changes.threepids):
                await self._threepids.delete(user_id, medium, address, None)
            now = self._auth.now_ms()
            for medium, address in sorted(changes.threepids - current):
                if not await self._storage.threepids.add_threepid(
                    user_id, medium, address, now, now
                ):
                    raise MatrixError(400, Codes.THREEPID_IN_USE, f"{address} is already in use")
        await self._set_external_ids(user_id, changes)
        if changes.avatar_url_set:
            await self._profiles.set_field(
                requester, user_id, "avatar_url", changes.avatar_url or ""
            )
        if changes.admin is not None and changes.admin != user.admin:
            await self.set_admin(requester, user_id, changes.admin)
        if changes.password is not None:
            await self.set_password(requester, user_id, changes.password, changes.logout_devices)
        if changes.deactivated is not None:
            if changes.deactivated and not user.deactivated:
                await self._deactivation.deactivate(user_id, erase=False)
            elif not changes.deactivated and user.deactivated:
                await self._deactivation.reactivate(user_id)
        if changes.locked is not None and changes.locked != self._restrictions.is_locked(user_id):
            await self._restrictions.set_locked(user_id, changes.locked)
        if changes.user_type_set:
            await self._storage.users.set_user_type(user_id, changes.user_type)

    async def login_as(self, requester: Requester, user_id: str, valid_until_ms: int | None) -> str:
        """An access token for ``user_id`` (no device, as Synapse's puppet tokens)."""
        if requester.user_id == user_id:
            raise MatrixError(400, Codes.UNKNOWN, "Cannot use admin API to login as self")
        token = generate_token("mat")
        await self._storage.users.add_access_token(
            user_id, None, hash_token(token), valid_until_ms, None
        )
        return token
