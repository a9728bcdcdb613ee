"""``/pushers``, ``/pushers/set`` and ``/notifications``."""

from __future__ import annotations

import urllib.parse
from typing import Any

from twisted.web.server import Request

from homeserver.api.client.paths import client_paths
from homeserver.clock import Clock, now_ms
from homeserver.errors import Codes, MatrixError
from homeserver.handlers.auth import AuthHandler
from homeserver.http.server import JsonResource
from homeserver.http.servlet import field, parse_integer, parse_json_body, parse_string
from homeserver.push.notifications import NotificationsHandler
from homeserver.push.pusher import PusherPool
from storage.push import PusherRecord

NOTIFY_PATH = "/_matrix/push/v1/notify"
MAX_APP_ID_LENGTH = 64
MAX_PUSHKEY_BYTES = 512
REQUIRED = ("app_display_name", "device_display_name", "lang", "data")


def _check_http_data(data: dict[str, Any]) -> None:
    url = data.get("url")
    if url is None:
        raise MatrixError(400, Codes.MISSING_PARAM, "'url' required in data for HTTP pusher")
    if not isinstance(url, str):
        raise MatrixError(400, Codes.INVALID_PARAM, "'url' must be a string")
    parts = urllib.parse.urlparse(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise MatrixError(400, Codes.INVALID_PARAM, "'url' must be an http(s) URL")
    if parts.path != NOTIFY_PATH:
        raise MatrixError(400, Codes.INVALID_PARAM, f"'url' must have a path of '{NOTIFY_PATH}'")


class PusherServlets:
    def __init__(
        self,
        auth: AuthHandler,
        pushers: PusherPool,
        notifications: NotificationsHandler,
        clock: Clock,
    ) -> None:
        self._auth = auth
        self._pushers = pushers
        self._notifications = notifications
        self._clock = clock

    def register(self, r: JsonResource) -> None:
        r.register_many("GET", client_paths("/pushers"), self.on_get_pushers)
        r.register_many("POST", client_paths("/pushers/set"), self.on_set_pusher)
        r.register_many("GET", client_paths("/notifications"), self.on_notifications)

    async def on_get_pushers(self, request: Request) -> tuple[int, Any]:
        requester = await self._auth.get_user_by_req(request)
        pushers = self._pushers.pushers_of(requester.user_id)
        return 200, {"pushers": [p.to_client_json() for p in pushers]}

    async def on_set_pusher(self, request: Request) -> tuple[int, Any]:
        requester = await self._auth.get_user_by_req(request)
        body = parse_json_body(request)
        app_id = field(body, "app_id", str, required=True)
        pushkey = field(body, "pushkey", str, required=True)
        if "kind" not in body:
            raise MatrixError(400, Codes.MISSING_PARAM, "Missing parameter: kind")
        kind = field(body, "kind", str)
        if kind is None:
            await self._pushers.remove_pusher(requester.user_id, app_id, pushkey)
            return 200, {}
        missing = [name for name in REQUIRED if body.get(name) is None]
        if missing:
            raise MatrixError(400, Codes.MISSING_PARAM, f"Missing parameters: {', '.join(missing)}")
        if len(app_id) > MAX_APP_ID_LENGTH:
            raise MatrixError(400, Codes.INVALID_PARAM, "app_id is longer than 64 characters")
        if len(pushkey.encode("utf-8")) > MAX_PUSHKEY_BYTES:
            raise MatrixError(400, Codes.INVALID_PARAM, "pushkey is longer than 512 bytes")
        data = field(body, "data", dict, required=True)
        if kind != "http":
            raise MatrixError(400, Codes.INVALID_PARAM, f"Unsupported pusher kind {kind!r}")
        _check_http_data(data)
        record = PusherRecord(
            user_id=requester.user_id,
            app_id=app_id,
            pushkey=pushkey,
            kind=kind,
            device_id=requester.device_id,
            app_display_name=field(body, "app_display_name", str, required=True),
            device_display_name=field(body, "device_display_name", str, required=True),
            profile_tag=field(body, "profile_tag", str),
            lang=field(body, "lang", str, required=True),
            data=data,
            pushkey_ts=now_ms(self._clock),
        )
        await self._pushers.set_pusher(record, append=bool(field(body, "append", bool)))
        return 200, {}

    async def on_notifications(self, request: Request) -> tuple[int, Any]:
        requester = await self._auth.get_user_by_req(request)
        limit = parse_integer(request, "limit", default=50, minimum=0)
        only = parse_string(request, "only")
        assert limit is not None
        notifications, next_token = await self._notifications.get(
            requester.user_id, parse_string(request, "from"), limit, only == "highlight"
        )
        out = []
        for n in notifications:
            event = {k: v for k, v in n.event.client_dict().items() if k != "room_id"}
            out.append(
                {
                    "room_id": n.row.room_id,
                    # Pushers' profile tags are not tied to notifications: always null,
                    # present as from Synapse (clients and SyTest read the key).
                    "profile_tag": None,
                    "event": event,
                    "actions": n.row.actions,
                    "ts": n.row.received_ts,
                    "read": n.read,
                }
            )
        body: dict[str, Any] = {"notifications": out}
        if next_token is not None:
            body["next_token"] = next_token
        return 200, body
