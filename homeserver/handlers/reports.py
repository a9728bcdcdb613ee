"""Abuse reports about events, rooms and users, as Synapse takes them.

What a reporter learns is what they could learn anyway: an event they cannot see (or
that was redacted) and a room we do not hold are 404 ``M_NOT_FOUND``; a report about a
user who is not ours or does not exist is accepted and dropped, so it reveals nothing.
Every report counts against the reporter's ``rc_reports`` bucket.
"""

from __future__ import annotations

from typing import Any

from homeserver.clock import Clock, now_ms
from homeserver.e2ee.locality import Locality
from homeserver.errors import Codes, MatrixError
from homeserver.events.format import is_valid_user_id
from homeserver.http.ratelimit import Ratelimiter
from homeserver.requester import Requester
from homeserver.rooms.history import RoomHistory
from homeserver.rooms.room_cache import RoomCache
from storage.storage import Storage

JsonDict = dict[str, Any]

MAX_REASON_LENGTH = 1000


class ReportsHandler:
    def __init__(
        self,
        storage: Storage,
        rooms: RoomCache,
        history: RoomHistory,
        limiter: Ratelimiter,
        clock: Clock,
        locality: Locality,
    ) -> None:
        self._storage = storage
        self._rooms = rooms
        self._history = history
        self._limiter = limiter
        self._clock = clock
        self._locality = locality

    async def report_event(
        self,
        requester: Requester,
        room_id: str,
        event_id: str,
        reason: str | None,
        content: JsonDict,
    ) -> None:
        self._limiter.ratelimit_requester(requester)
        not_found = MatrixError(
            404,
            Codes.NOT_FOUND,
            "Unable to report event: it does not exist or you aren't able to see it.",
        )
        try:
            event = await self._history.get_event(requester.user_id, room_id, event_id)
        except MatrixError as e:
            if e.status in (403, 404):
                raise not_found from None
            raise
        if event.redacted_by:
            raise not_found
        await self._storage.reports.add_event_report(
            room_id, event_id, requester.user_id, reason, content, now_ms(self._clock)
        )

    async def report_room(self, requester: Requester, room_id: str, reason: str) -> None:
        self._limiter.ratelimit_requester(requester)
        if await self._rooms.get(room_id) is None:
            raise MatrixError(404, Codes.NOT_FOUND, "Room does not exist")
        await self._storage.reports.add_room_report(
            room_id, requester.user_id, reason, now_ms(self._clock)
        )

    async def report_user(self, requester: Requester, target_user_id: str, reason: str) -> None:
        self._limiter.ratelimit_requester(requester)
        if len(reason) > MAX_REASON_LENGTH:
            raise MatrixError(
                400, Codes.BAD_JSON, f"Reason must be at most {MAX_REASON_LENGTH} characters"
            )
        if not is_valid_user_id(target_user_id) or not self._locality.is_mine(target_user_id):
            return  # not ours: nothing we can act on, and nothing to reveal
        if await self._storage.users.get_user(target_user_id) is None:
            return  # hide that they do not exist
        await self._storage.reports.add_user_report(
            target_user_id, requester.user_id, reason, now_ms(self._clock)
        )
