"""Shutting a room down (Synapse's ``DELETE /_synapse/admin/v1/rooms/{roomId}``).

A server admin takes a room away from this server's users: optionally blocks it (no
local joins, invites or knocks from then on), makes every local member leave (and
forget it), and, given ``new_room_user_id``, creates a read-only notice room that those
members are joined to and that the room's local aliases now point at. Remote members
are not touched: the room lives on elsewhere, without us.
"""

from __future__ import annotations

import logging
from typing import Any

from homeserver.errors import Codes, MatrixError
from homeserver.requester import Requester
from homeserver.rooms.handler import RoomHandler
from homeserver.rooms.room_cache import RoomCache
from storage.storage import Storage

logger = logging.getLogger(__name__)

JsonDict = dict[str, Any]

DEFAULT_ROOM_NAME = "Content Violation Notification"
DEFAULT_MESSAGE = (
    "Sharing illegal content on this server is not permitted and rooms in violation"
    " will be blocked."
)


class RoomShutdown:
    def __init__(self, storage: Storage, rooms: RoomCache, handler: RoomHandler) -> None:
        self._storage = storage
        self._rooms = rooms
        self._handler = handler

    async def shutdown(
        self,
        admin: Requester,
        room_id: str,
        *,
        new_room_user_id: str | None,
        room_name: str,
        message: str,
        block: bool,
    ) -> JsonDict:
        handler = self._handler
        if new_room_user_id is not None:
            if not handler.is_mine(new_room_user_id):
                raise MatrixError(400, Codes.INVALID_PARAM, "new_room_user_id must be local")
            record = await self._storage.users.get_user(new_room_user_id)
            if record is None or record.deactivated:
                raise MatrixError(404, Codes.NOT_FOUND, f"Unknown user {new_room_user_id}")
        room = await self._rooms.get(room_id)
        if room is None and not block:
            raise MatrixError(404, Codes.NOT_FOUND, "Unknown room")
        if block:
            await self._storage.rooms.block(room_id, admin.user_id)
        if room is None:
            return {
                "kicked_users": [],
                "failed_to_kick_users": [],
                "local_aliases": [],
                "new_room_id": None,
            }

        new_room_id: str | None = None
        if new_room_user_id is not None:
            creator = Requester(new_room_user_id, None, None, ratelimited=False)
            new_room_id, _ = await handler.create_room(
                creator,
                {
                    "preset": "public_chat",
                    "name": room_name,
                    "power_level_content_override": {"users_default": -10},
                },
            )
            await handler.send_message(
                creator,
                new_room_id,
                "m.room.message",
                {"msgtype": "m.text", "body": message},
                None,
            )

        kicked: list[str] = []
        failed: list[str] = []
        for user_id in sorted(room.joined_members()):
            if not handler.is_mine(user_id):
                continue
            member = Requester(user_id, None, None, ratelimited=False)
            try:
                await handler.update_membership(member, room_id, user_id, "leave")
                await handler.forget(member, room_id)
                if new_room_id is not None:
                    await handler.update_membership(member, new_room_id, user_id, "join")
                kicked.append(user_id)
            except Exception:
                logger.exception("Shutting down %s: removing %s failed", room_id, user_id)
                failed.append(user_id)

        aliases = await self._storage.aliases.get_for_room(room_id)
        if new_room_id is not None:
            await self._storage.room_directory.move_room(room_id, new_room_id, move_listing=False)
        else:
            for alias in aliases:
                await self._storage.aliases.delete(alias)
        return {
            "kicked_users": kicked,
            "failed_to_kick_users": failed,
            "local_aliases": aliases,
            "new_room_id": new_room_id,
        }
