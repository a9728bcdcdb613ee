"""Receipts, read markers and typing notifications."""

from __future__ import annotations

from typing import Any

from twisted.web.server import Request

from homeserver.api.client.paths import client_paths
from homeserver.ephemeral.presence import PresenceHandler
from homeserver.ephemeral.receipts import RECEIPT_TYPES, ReceiptsHandler
from homeserver.ephemeral.typing import DEFAULT_TIMEOUT_MS, TypingHandler
from homeserver.errors import Codes, MatrixError
from homeserver.handlers.auth import AuthHandler
from homeserver.http.server import JsonResource
from homeserver.http.servlet import JsonDict, field, parse_json_body
from homeserver.requester import Requester


class EphemeralServlets:
    def __init__(
        self,
        auth: AuthHandler,
        receipts: ReceiptsHandler,
        typing: TypingHandler,
        presence: PresenceHandler,
    ) -> None:
        self._auth = auth
        self._receipts = receipts
        self._typing = typing
        self._presence = presence

    def register(self, r: JsonResource) -> None:
        r.register_many(
            "POST",
            client_paths("/rooms/{roomId}/receipt/{receiptType}/{eventId}"),
            self.on_receipt,
        )
        r.register_many("POST", client_paths("/rooms/{roomId}/read_markers"), self.on_read_markers)
        r.register_many("PUT", client_paths("/rooms/{roomId}/typing/{userId}"), self.on_typing)

    async def on_receipt(
        self, request: Request, roomId: str, receiptType: str, eventId: str
    ) -> tuple[int, Any]:
        requester = await self._auth.get_user_by_req(request)
        await self.receipt(
            requester, roomId, receiptType, eventId, parse_json_body(request, allow_empty=True)
        )
        return 200, {}

    async def on_read_markers(self, request: Request, roomId: str) -> tuple[int, Any]:
        requester = await self._auth.get_user_by_req(request)
        await self.read_markers(requester, roomId, parse_json_body(request))
        return 200, {}

    async def on_typing(self, request: Request, roomId: str, userId: str) -> tuple[int, Any]:
        requester = await self._auth.get_user_by_req(request)
        await self.typing(requester, roomId, userId, parse_json_body(request))
        return 200, {}

    # Shared with the WebSocket transport: an authenticated requester and a parsed body.

    async def receipt(
        self, requester: Requester, room_id: str, receipt_type: str, event_id: str, body: JsonDict
    ) -> None:
        if receipt_type not in RECEIPT_TYPES:
            raise MatrixError(
                400, Codes.INVALID_PARAM, f"Receipt type must be one of {', '.join(RECEIPT_TYPES)}"
            )
        thread_id = None
        if "thread_id" in body:
            thread_id = body["thread_id"]
            if not isinstance(thread_id, str) or not thread_id:
                raise MatrixError(
                    400, Codes.INVALID_PARAM, "thread_id field must be a non-empty string"
                )
        await self._receipts.send_receipt(
            requester.user_id, room_id, receipt_type, event_id, thread_id
        )
        self._presence.bump_active(requester.user_id)

    async def read_markers(self, requester: Requester, room_id: str, body: JsonDict) -> None:
        markers = []
        for key in ("m.fully_read", "m.read", "m.read.private"):
            value = field(body, key, str)
            if value is not None and not value:
                raise MatrixError(400, Codes.INVALID_PARAM, f"{key} must be an event ID")
            markers.append(value)
        await self._receipts.set_read_markers(requester.user_id, room_id, *markers)
        self._presence.bump_active(requester.user_id)

    async def typing(
        self, requester: Requester, room_id: str, user_id: str, body: JsonDict
    ) -> None:
        typing = field(body, "typing", bool, required=True)
        timeout = field(body, "timeout", int, default=DEFAULT_TIMEOUT_MS)
        if timeout < 0:
            raise MatrixError(400, Codes.INVALID_PARAM, "timeout must not be negative")
        if requester.shadow_banned:
            return  # as Synapse: answered as done, nobody sees it
        await self._typing.set_typing(requester.user_id, user_id, room_id, typing, timeout)
        if typing:
            self._presence.bump_active(requester.user_id)
