"""Deactivating and reactivating accounts: one path for the user's own request
(``/account/deactivate``) and an admin's (``/_synapse/admin/v1/deactivate``, the user
admin ``PUT``).

Invariant: a deactivated account keeps no password, device or token, and its cached
tokens die in the same call, so it cannot authenticate again.
"""

from __future__ import annotations

from homeserver.handlers.auth import AuthHandler
from homeserver.handlers.threepid import ThreePidHandler
from storage.storage import Storage


class DeactivationHandler:
    def __init__(
        self, storage: Storage, auth: AuthHandler, threepids: ThreePidHandler | None
    ) -> None:
        self._storage = storage
        self._auth = auth
        self._threepids = threepids

    async def deactivate(self, user_id: str, *, erase: bool, id_server: str | None = None) -> str:
        """Deactivate ``user_id``; the ``id_server_unbind_result`` (``success`` or
        ``no-support``) of unbinding its 3PIDs from identity servers."""
        unbind_result = "no-support"
        if self._threepids is not None:
            unbind_result = await self._threepids.on_deactivate(user_id, id_server)
        if erase:
            await self._storage.users.mark_erased(user_id)
        await self._storage.users.deactivate_user(user_id)
        self._auth.invalidate_user(user_id)
        return unbind_result

    async def reactivate(self, user_id: str) -> None:
        """The account may log in again (with a password set afterwards), as Synapse's
        ``activate_account``; erasure is undone."""
        await self._storage.users.reactivate_user(user_id)
