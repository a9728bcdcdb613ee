"""Server-server endpoints of third-party invites.

- ``PUT /_matrix/federation/v1/exchange_third_party_invite/{roomId}``: another server
  (the invitee's) hands us a signed third-party invite for a room we are in; we send the
  invite from our user who made the third-party invite. X-Matrix authenticated.
- ``POST /_matrix/federation/v1/3pid/onbind``: an identity server tells us an address
  was bound to one of our users, with the pending invites it signed. Identity servers
  have no server keys, so this request is not authenticated: each invite only takes
  effect if its signature matches the keys in the room's ``m.room.third_party_invite``
  and the identity server still vouches for them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from twisted.web.server import Request

from homeserver.http.server import JsonResource
from homeserver.http.servlet import parse_json_body
from homeserver.rooms.third_party_invite import ThirdPartyInviteHandler

PREFIX = "/_matrix/federation/v1"


class ThirdPartyInviteServlets:
    def __init__(
        self,
        authenticate: Callable[[Request], Awaitable[str]],
        handler: ThirdPartyInviteHandler,
    ) -> None:
        self._authenticate = authenticate
        self._handler = handler

    def register(self, r: JsonResource) -> None:
        r.register("PUT", f"{PREFIX}/exchange_third_party_invite/{{roomId}}", self.on_exchange)
        r.register("POST", f"{PREFIX}/3pid/onbind", self.on_bind)

    async def on_exchange(self, request: Request, roomId: str) -> tuple[int, Any]:
        origin = await self._authenticate(request)
        body = parse_json_body(request)
        await self._handler.on_exchange_request(origin, roomId, body)
        return 200, {}

    async def on_bind(self, request: Request) -> tuple[int, Any]:
        body = parse_json_body(request)
        await self._handler.on_bind(body)
        return 200, {}
