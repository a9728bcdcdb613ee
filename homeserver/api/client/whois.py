"""``GET /admin/whois/{userId}``: a user's devices and where they were last seen, for
server admins and for the user themselves (as Synapse)."""

from __future__ import annotations

from typing import Any

from twisted.web.server import Request

from homeserver.api.client.paths import client_paths
from homeserver.e2ee.locality import Locality
from homeserver.errors import Codes, MatrixError
from homeserver.handlers.auth import AuthHandler
from homeserver.http.server import JsonResource
from storage.users import DeviceRecord, UserStore

JsonDict = dict[str, Any]


async def require_local_user(locality: Locality, users: UserStore, user_id: str) -> None:
    """400 for a user of another server, 404 for a local user who does not exist."""
    if not locality.is_mine(user_id):
        raise MatrixError(400, Codes.INVALID_PARAM, "Only local users can be asked about")
    if await users.get_user(user_id) is None:
        raise MatrixError(404, Codes.NOT_FOUND, "User not found")


def whois_devices(devices: list[DeviceRecord]) -> JsonDict:
    """The ``devices`` map: one session per device, holding its last-seen connection."""
    out: JsonDict = {}
    for device in devices:
        connections = []
        if device.last_seen_ts is not None:
            connections.append(
                {
                    "ip": device.last_seen_ip,
                    "last_seen": device.last_seen_ts,
                    "user_agent": device.last_seen_user_agent,
                }
            )
        out[device.device_id] = {"sessions": [{"connections": connections}]}
    return out


class WhoisServlets:
    def __init__(self, auth: AuthHandler, users: UserStore, locality: Locality) -> None:
        self._auth = auth
        self._users = users
        self._locality = locality

    def register(self, r: JsonResource) -> None:
        r.register_many("GET", client_paths("/admin/whois/{userId}"), self.on_whois)
        # Synapse serves the same answer under its admin API.
        r.register("GET", "/_synapse/admin/v1/whois/{userId}", self.on_whois)

    async def on_whois(self, request: Request, userId: str) -> tuple[int, Any]:
        requester = await self._auth.get_user_by_req(request)
        if not requester.is_admin and requester.user_id != userId:
            raise MatrixError(403, Codes.FORBIDDEN, "You are not a server admin")
        await require_local_user(self._locality, self._users, userId)
        return 200, {
            "user_id": userId,
            "devices": whois_devices(await self._users.get_devices(userId)),
        }
