"""``/_synapse/admin/v2/users/{userId}/devices`` (list, create), ``.../devices/{deviceId}``
(read, rename, delete) and ``.../delete_devices``: an admin manages a local user's
devices, as Synapse; deleting a device kills its tokens at once, renaming one is a
device list change, as for the user's own requests."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from twisted.web.server import Request

from homeserver.api.client.devices import MAX_DEVICE_DISPLAY_NAME_LEN
from homeserver.e2ee.locality import Locality
from homeserver.errors import Codes, MatrixError
from homeserver.handlers.auth import AuthHandler
from homeserver.http.server import JsonResource
from homeserver.http.servlet import field, parse_json_body
from storage.users import DeviceRecord, UserStore
from synapse_compat.admin_common import ADMIN_V2, require_admin, require_existing, require_local


def admin_device_json(device: DeviceRecord) -> dict[str, Any]:
    return {
        "user_id": device.user_id,
        "device_id": device.device_id,
        "display_name": device.display_name,
        "last_seen_ip": device.last_seen_ip,
        "last_seen_ts": device.last_seen_ts,
        "last_seen_user_agent": device.last_seen_user_agent,
    }


class AdminDeviceServlets:
    def __init__(
        self,
        auth: AuthHandler,
        locality: Locality,
        users: UserStore,
        on_renamed: Callable[[str, str], Awaitable[None]] | None = None,
    ) -> None:
        self._auth = auth
        self._locality = locality
        self._users = users
        self._on_renamed = on_renamed

    def register(self, r: JsonResource) -> None:
        devices = f"{ADMIN_V2}/users/{{userId}}/devices"
        r.register("GET", devices, self.on_list)
        r.register("POST", devices, self.on_create)
        r.register("GET", devices + "/{deviceId}", self.on_get)
        r.register("PUT", devices + "/{deviceId}", self.on_put)
        r.register("DELETE", devices + "/{deviceId}", self.on_delete)
        r.register("POST", f"{ADMIN_V2}/users/{{userId}}/delete_devices", self.on_delete_many)

    async def _target(self, request: Request, user_id: str) -> None:
        await require_admin(self._auth, request)
        require_local(self._locality, user_id, "Can only lookup local users")
        await require_existing(self._users, user_id, "Unknown user")

    async def on_list(self, request: Request, userId: str) -> tuple[int, Any]:
        await self._target(request, userId)
        devices = [admin_device_json(d) for d in await self._users.get_devices(userId)]
        return 200, {"devices": devices, "total": len(devices)}

    async def on_create(self, request: Request, userId: str) -> tuple[int, Any]:
        await self._target(request, userId)
        body = parse_json_body(request)
        device_id = body.get("device_id")
        if not device_id:
            raise MatrixError(400, Codes.UNKNOWN, "Missing device_id")
        if not isinstance(device_id, str):
            raise MatrixError(400, Codes.UNKNOWN, "device_id must be a string")
        await self._users.store_device(userId, device_id, None)
        return 201, {}

    async def on_get(self, request: Request, userId: str, deviceId: str) -> tuple[int, Any]:
        await self._target(request, userId)
        device = await self._users.get_device(userId, deviceId)
        if device is None:
            raise MatrixError(404, Codes.NOT_FOUND, "No device found")
        return 200, admin_device_json(device)

    async def on_put(self, request: Request, userId: str, deviceId: str) -> tuple[int, Any]:
        await self._target(request, userId)
        body = parse_json_body(request, allow_empty=True)
        name = field(body, "display_name", str)
        if name is not None and len(name) > MAX_DEVICE_DISPLAY_NAME_LEN:
            raise MatrixError(400, Codes.TOO_LARGE, "Device display name is too long")
        if "display_name" in body:
            found = await self._users.update_device_display_name(userId, deviceId, name)
            if found and self._on_renamed is not None:
                await self._on_renamed(userId, deviceId)
        else:
            found = await self._users.get_device(userId, deviceId) is not None
        if not found:
            raise MatrixError(404, Codes.NOT_FOUND, "Unknown device")
        return 200, {}

    async def on_delete(self, request: Request, userId: str, deviceId: str) -> tuple[int, Any]:
        await self._target(request, userId)
        await self._delete(userId, [deviceId])
        return 200, {}

    async def on_delete_many(self, request: Request, userId: str) -> tuple[int, Any]:
        await self._target(request, userId)
        body = parse_json_body(request)
        devices = field(body, "devices", list, required=True)
        if not all(isinstance(d, str) for d in devices):
            raise MatrixError(400, Codes.BAD_JSON, "'devices' must be a list of strings")
        await self._delete(userId, devices)
        return 200, {}

    async def _delete(self, user_id: str, device_ids: list[str]) -> None:
        removed = await self._users.delete_devices(user_id, device_ids)
        self._auth.invalidate_token_ids(removed)
