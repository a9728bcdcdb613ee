"""Creating accounts: id rules, the password hash, the first session."""

from __future__ import annotations

import secrets
import string

from homeserver.errors import Codes, MatrixError
from homeserver.events.format import is_valid_localpart
from homeserver.handlers.auth import AuthHandler, Session
from homeserver.handlers.password_policy import check_new_password
from storage.storage import Storage

MAX_USER_ID_LENGTH = 255


SESSION_PASSWORD_HASH = "org.homeserver.password_hash"


class RegistrationHandler:
    def __init__(self, storage: Storage, auth: AuthHandler, server_name: str) -> None:
        self._storage = storage
        self._auth = auth
        self._server_name = server_name

    def user_id_for(self, localpart: str) -> str:
        return f"@{localpart}:{self._server_name}"

    def check_localpart(self, localpart: str, *, allow_numeric: bool = False) -> str:
        """The user id for ``localpart`` if it may be registered, else ``M_INVALID_USERNAME``."""
        if not localpart:
            raise MatrixError(400, Codes.INVALID_USERNAME, "User ID cannot be empty")
        if not is_valid_localpart(localpart):
            raise MatrixError(
                400,
                Codes.INVALID_USERNAME,
                "User ID can only contain characters a-z, 0-9, or '=_-./+'",
            )
        if localpart.startswith("_"):
            raise MatrixError(400, Codes.INVALID_USERNAME, "User ID may not begin with _")
        if localpart.isdigit() and not allow_numeric:
            raise MatrixError(
                400, Codes.INVALID_USERNAME, "Numeric user IDs are reserved for guest users"
            )
        user_id = self.user_id_for(localpart)
        if len(user_id.encode("utf-8")) > MAX_USER_ID_LENGTH:
            raise MatrixError(
                400,
                Codes.INVALID_USERNAME,
                f"User ID may not be longer than {MAX_USER_ID_LENGTH} characters",
            )
        return user_id

    async def check_available(self, localpart: str, guest_access_token: str | None = None) -> str:
        """The user id for ``localpart`` if it may be registered: free, or (with
        ``guest_access_token``) the id of the guest account that token belongs to."""
        user_id = self.check_localpart(localpart, allow_numeric=guest_access_token is not None)
        if guest_access_token is not None:
            await self.check_guest_token(user_id, guest_access_token)
        elif await self._storage.users.find_user_case_insensitive(user_id):
            raise MatrixError(400, Codes.USER_IN_USE, "User ID already taken.")
        return user_id

    async def check_guest_token(self, user_id: str, guest_access_token: str) -> None:
        """As Synapse: only a guest's own token lets its account be registered over."""
        requester = await self._auth.get_user_by_access_token(guest_access_token, allow_guest=True)
        if not requester.is_guest or requester.user_id != user_id:
            raise MatrixError(
                403,
                Codes.FORBIDDEN,
                "Cannot register taken user ID without valid guest credentials for that user.",
            )

    async def upgrade_guest(
        self, localpart: str, guest_access_token: str, password_hash: str | None
    ) -> str:
        """The guest account ``localpart`` becomes a full user (same id, profile, rooms
        and devices) with ``password_hash``, as Synapse's ``guest_access_token``."""
        user_id = self.check_localpart(localpart, allow_numeric=True)
        await self.check_guest_token(user_id, guest_access_token)
        if not await self._storage.users.upgrade_guest(user_id, password_hash):
            raise MatrixError(400, Codes.USER_IN_USE, "User ID already taken.")
        # Its tokens were cached as a guest's.
        self._auth.invalidate_user(user_id)
        return user_id

    async def register_user(
        self,
        localpart: str | None,
        password: str | None,
        *,
        admin: bool = False,
        is_guest: bool = False,
        appservice_id: str | None = None,
        displayname: str | None = None,
        password_hash: str | None = None,
        user_type: str | None = None,
    ) -> str:
        """Create an account with ``password`` (hashed here) or an already computed
        ``password_hash``; neither: no password login. No password policy here (as
        Synapse: the shared-secret admin path), only the empty and length checks."""
        if password is not None:
            check_new_password(password)
        if localpart is None:
            # A generated id: letters only, so it never collides with the guest range.
            for _ in range(10):
                candidate = "u" + "".join(
                    secrets.choice(string.ascii_lowercase + string.digits) for _ in range(11)
                )
                if not await self._storage.users.find_user_case_insensitive(
                    self.user_id_for(candidate)
                ):
                    localpart = candidate
                    break
            else:  # pragma: no cover - astronomically unlikely
                raise MatrixError(500, Codes.UNKNOWN, "Could not generate a user id")
        user_id = self.check_localpart(localpart, allow_numeric=is_guest)
        if password is not None:
            password_hash = await self._auth.hash_password(password)
        created = await self._storage.users.create_user(
            user_id,
            password_hash,
            self._auth.now_ms(),
            admin=admin,
            is_guest=is_guest,
            appservice_id=appservice_id,
            user_type=user_type,
        )
        if not created:
            raise MatrixError(400, Codes.USER_IN_USE, "User ID already taken.")
        await self._storage.profiles.set_field(user_id, "displayname", displayname or localpart)
        return user_id

    async def login_new_user(
        self,
        user_id: str,
        device_id: str | None,
        initial_device_display_name: str | None,
        *,
        with_refresh_token: bool,
    ) -> Session:
        return await self._auth.create_session(
            user_id, device_id, initial_device_display_name, with_refresh_token=with_refresh_token
        )
