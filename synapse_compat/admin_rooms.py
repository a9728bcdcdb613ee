"""``DELETE /_synapse/admin/v1/rooms/{roomId}``: a server admin shuts a room down, as
Synapse's admin API documents it (``new_room_user_id``, ``room_name``, ``message``,
``block``, and ``purge``, true by default: the room is then deleted from the database,
refused while local users are still joined unless ``force_purge``)."""

from __future__ import annotations

from typing import Any

from twisted.web.server import Request

from homeserver.errors import Codes, MatrixError
from homeserver.events.format import is_valid_room_id
from homeserver.handlers.auth import AuthHandler
from homeserver.http.server import JsonResource
from homeserver.http.servlet import field, parse_json_body
from homeserver.rooms.purge import RoomPurger
from homeserver.rooms.shutdown import DEFAULT_MESSAGE, DEFAULT_ROOM_NAME, RoomShutdown


class AdminRoomServlets:
    PATH = "/_synapse/admin/v1/rooms/{roomId}"

    def __init__(self, auth: AuthHandler, shutdown: RoomShutdown, purger: RoomPurger) -> None:
        self._auth = auth
        self._shutdown = shutdown
        self._purger = purger

    def register(self, resource: JsonResource) -> None:
        resource.register("DELETE", self.PATH, self.on_delete)

    async def on_delete(self, request: Request, roomId: str) -> tuple[int, Any]:
        requester = await self._auth.get_user_by_req(request)
        if not requester.is_admin:
            raise MatrixError(403, Codes.FORBIDDEN, "You are not a server admin")
        if not is_valid_room_id(roomId):
            raise MatrixError(400, Codes.INVALID_PARAM, f"{roomId} is not a legal room ID")
        body = parse_json_body(request, allow_empty=True)
        purge = field(body, "purge", bool, default=True)
        force_purge = field(body, "force_purge", bool, default=False)
        result = await self._shutdown.shutdown(
            requester,
            roomId,
            new_room_user_id=field(body, "new_room_user_id", str),
            room_name=field(body, "room_name", str, default=DEFAULT_ROOM_NAME),
            message=field(body, "message", str, default=DEFAULT_MESSAGE),
            block=field(body, "block", bool, default=False),
        )
        if purge:
            await self._purger.purge_room(roomId, force=force_purge)
        return 200, result
