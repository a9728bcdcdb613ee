"""Third-party identifiers of accounts, and their bindings on identity servers.

- ``bind``: asks the identity server the client names to bind a 3PID it validated
  (``sid``/``client_secret``) to the user, and records the server, so an unbind without
  ``id_server`` (or account deactivation) knows where to go.
- ``unbind``: on the given identity server, or on every one we bound the 3PID on; the
  answer says whether any did (``success``) or none could (``no-support``), as Synapse.
- ``delete``: unbind, then remove the 3PID from the account.
"""

from __future__ import annotations

import logging

from homeserver.clock import Clock
from homeserver.errors import Codes, MatrixError
from homeserver.handlers.identity import IdentityServerClient, IdentityServerError
from storage.threepids import ThreePid, ThreePidStore

logger = logging.getLogger(__name__)


class ThreePidHandler:
    def __init__(self, store: ThreePidStore, identity: IdentityServerClient, clock: Clock) -> None:
        self._store = store
        self._identity = identity
        self._clock = clock

    async def get_threepids(self, user_id: str) -> list[ThreePid]:
        return await self._store.get_threepids(user_id)

    async def add(self, user_id: str, medium: str, address: str, validated_at: int) -> None:
        now = int(self._clock.seconds() * 1000)
        if not await self._store.add_threepid(user_id, medium, address, validated_at, now):
            raise MatrixError(400, Codes.THREEPID_IN_USE, "This 3PID is already in use")

    async def bind(
        self, user_id: str, id_server: str, id_access_token: str, sid: str, client_secret: str
    ) -> None:
        IdentityServerClient.check_id_server(id_server)
        answer = await self._identity.bind(id_server, id_access_token, sid, client_secret, user_id)
        medium, address = answer.get("medium"), answer.get("address")
        if not isinstance(medium, str) or not isinstance(address, str):
            raise IdentityServerError(
                502, Codes.UNKNOWN, "Identity server bind answer is malformed"
            )
        await self._store.add_binding(user_id, medium, address, id_server)

    async def unbind(self, user_id: str, medium: str, address: str, id_server: str | None) -> str:
        """``success`` if an identity server unbound it, ``no-support`` otherwise."""
        if id_server is not None:
            IdentityServerClient.check_id_server(id_server)
            servers = [id_server]
        else:
            servers = await self._store.get_binding_servers(user_id, medium, address)
        changed = False
        for server in servers:
            try:
                await self._identity.unbind(server, user_id, medium, address)
                changed = True
            except MatrixError as e:
                if e.status not in (400, 404, 501):
                    raise MatrixError(500, Codes.UNKNOWN, "Failed to unbind the 3PID") from None
                logger.info("Identity server %s did not unbind: %s", server, e.message)
            await self._store.remove_binding(user_id, medium, address, server)
        return "success" if changed else "no-support"

    async def delete(self, user_id: str, medium: str, address: str, id_server: str | None) -> str:
        result = await self.unbind(user_id, medium, address, id_server)
        await self._store.delete_threepid(user_id, medium, address)
        return result

    async def on_deactivate(self, user_id: str, id_server: str | None) -> str:
        """Unbind every 3PID bound through us and drop the account's 3PIDs."""
        result = "success"
        for medium, address in await self._store.get_bound_threepids(user_id):
            try:
                if await self.unbind(user_id, medium, address, id_server) != "success":
                    result = "no-support"
            except MatrixError as e:
                logger.warning("Unbinding %s on deactivation failed: %s", address, e.message)
                result = "no-support"
        for threepid in await self._store.get_threepids(user_id):
            await self._store.delete_threepid(user_id, threepid.medium, threepid.address)
        return result
