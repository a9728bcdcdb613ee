"""``GET /_matrix/client/v1/mutual_rooms?user_id=`` (MSC2666; Synapse serves it under
its unstable prefix): the rooms the requester and another user are both joined to."""

from __future__ import annotations

from typing import Any

from twisted.web.server import Request

from homeserver.api.client.paths import CLIENT_PREFIX, client_v1_paths
from homeserver.errors import Codes, MatrixError
from homeserver.events.format import is_valid_room_id, is_valid_user_id
from homeserver.handlers.auth import AuthHandler
from homeserver.http.server import JsonResource
from homeserver.http.servlet import parse_string
from homeserver.rooms.memberships import MembershipCache
from homeserver.rooms.mutual import mutual_rooms_page

UNSTABLE_PATH = f"{CLIENT_PREFIX}/unstable/uk.half-shot.msc2666/user/mutual_rooms"


class MutualRoomsServlets:
    def __init__(self, auth: AuthHandler, memberships: MembershipCache) -> None:
        self._auth = auth
        self._memberships = memberships

    def register(self, r: JsonResource) -> None:
        r.register_many("GET", [*client_v1_paths("/mutual_rooms"), UNSTABLE_PATH], self.on_get)

    async def on_get(self, request: Request) -> tuple[int, Any]:
        requester = await self._auth.get_user_by_req(request)
        other = parse_string(request, "user_id", required=True)
        assert other is not None
        if not is_valid_user_id(other):
            raise MatrixError(400, Codes.INVALID_PARAM, "user_id is not a valid user id")
        if other == requester.user_id:
            raise MatrixError(
                422, Codes.UNKNOWN, "You cannot request a list of shared rooms with yourself"
            )
        from_room = parse_string(request, "from")
        if from_room is not None and not is_valid_room_id(from_room):
            raise MatrixError(400, Codes.INVALID_PARAM, "Malformed from token")
        page, next_batch = mutual_rooms_page(
            await self._joined(requester.user_id), await self._joined(other), from_room
        )
        body: dict[str, Any] = {"joined": page}
        if next_batch is not None:
            body["next_batch"] = next_batch
        return 200, body

    async def _joined(self, user_id: str) -> list[str]:
        rooms = await self._memberships.rooms_for_user(user_id)
        return [room_id for room_id, row in rooms.items() if row.membership == "join"]
