"""Simplified sliding sync (MSC4186) at Synapse's unstable path; see docs/sliding_sync.md."""

from __future__ import annotations

from typing import Any

from twisted.web.server import Request

from homeserver.api.client.paths import CLIENT_PREFIX
from homeserver.api.client.sync import MAX_TIMEOUT_MS
from homeserver.handlers.auth import AuthHandler
from homeserver.http.server import JsonResource
from homeserver.http.servlet import parse_integer, parse_json_body, parse_string
from homeserver.sync.sliding import SlidingSyncHandler
from homeserver.sync.sliding_config import Position, parse_request

# Advertised in /versions ``unstable_features``, as Synapse does.
SLIDING_SYNC_FEATURE = "org.matrix.simplified_msc3575"
SLIDING_SYNC_PATH = f"{CLIENT_PREFIX}/unstable/{SLIDING_SYNC_FEATURE}/sync"


class SlidingSyncServlet:
    def __init__(self, auth: AuthHandler, handler: SlidingSyncHandler) -> None:
        self._auth = auth
        self._handler = handler

    def register(self, r: JsonResource) -> None:
        r.register("POST", SLIDING_SYNC_PATH, self.on_post)

    async def on_post(self, request: Request) -> tuple[int, Any]:
        requester = await self._auth.get_user_by_req(request, allow_guest=True)
        raw_pos = parse_string(request, "pos")
        timeout = parse_integer(request, "timeout", default=0, minimum=0, maximum=MAX_TIMEOUT_MS)
        assert timeout is not None
        body = parse_json_body(request)
        req = parse_request(
            body,
            requester.user_id,
            requester.device_id or "",
            Position.parse(raw_pos) if raw_pos else None,
            timeout,
        )
        return 200, await self._handler.sync(req)
