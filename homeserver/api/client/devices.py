"""/devices, /devices/{deviceId} and /delete_devices."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from twisted.web.server import Request

from homeserver.api.client.paths import client_paths
from homeserver.errors import Codes, MatrixError
from homeserver.handlers.auth import AuthHandler
from homeserver.handlers.ui_auth import PASSWORD, UiAuthHandler
from homeserver.http.server import JsonResource
from homeserver.http.servlet import field, parse_json_body
from storage.storage import Storage
from storage.users import DeviceRecord

MAX_DEVICE_DISPLAY_NAME_LEN = 100


def device_json(device: DeviceRecord) -> dict[str, Any]:
    return {
        "device_id": device.device_id,
        "display_name": device.display_name,
        "last_seen_ip": device.last_seen_ip,
        "last_seen_ts": device.last_seen_ts,
    }


class DeviceServlets:
    def __init__(
        self,
        storage: Storage,
        auth: AuthHandler,
        ui_auth: UiAuthHandler,
        on_renamed: Callable[[str, str], Awaitable[None]] | None = None,
    ) -> None:
        self._storage = storage
        self._auth = auth
        self._ui_auth = ui_auth
        # Told (user, device) after a display name change: a device list change.
        self._on_renamed = on_renamed

    def register(self, resource: JsonResource) -> None:
        resource.register_many("GET", client_paths("/devices"), self.on_list)
        resource.register_many("GET", client_paths("/devices/{deviceId}"), self.on_get)
        resource.register_many("PUT", client_paths("/devices/{deviceId}"), self.on_put)
        resource.register_many("DELETE", client_paths("/devices/{deviceId}"), self.on_delete)
        resource.register_many("POST", client_paths("/delete_devices"), self.on_delete_many)

    async def on_list(self, request: Request) -> tuple[int, Any]:
        requester = await self._auth.get_user_by_req(request, allow_guest=True)
        devices = await self._storage.users.get_devices(requester.user_id)
        return 200, {"devices": [device_json(d) for d in devices]}

    async def on_get(self, request: Request, deviceId: str) -> tuple[int, Any]:
        requester = await self._auth.get_user_by_req(request, allow_guest=True)
        device = await self._storage.users.get_device(requester.user_id, deviceId)
        if device is None:
            raise MatrixError(404, Codes.NOT_FOUND, "No device found")
        return 200, device_json(device)

    async def on_put(self, request: Request, deviceId: str) -> tuple[int, Any]:
        requester = await self._auth.get_user_by_req(request, allow_guest=True)
        body = parse_json_body(request)
        name = field(body, "display_name", str)
        if name is not None and len(name) > MAX_DEVICE_DISPLAY_NAME_LEN:
            raise MatrixError(400, Codes.TOO_LARGE, "Device display name is too long")
        if "display_name" in body:
            found = await self._storage.users.update_device_display_name(
                requester.user_id, deviceId, name
            )
            if found and self._on_renamed is not None:
                await self._on_renamed(requester.user_id, deviceId)
        else:
            # The spec: "If not given, the display name is unchanged."
            found = await self._storage.users.get_device(requester.user_id, deviceId) is not None
        if not found:
            if requester.device_id == deviceId:
                # The spec lets the current device create itself this way.
                await self._storage.users.store_device(requester.user_id, deviceId, name)
            else:
                raise MatrixError(404, Codes.NOT_FOUND, "No device found")
        return 200, {}

    async def on_delete(self, request: Request, deviceId: str) -> tuple[int, Any]:
        requester = await self._auth.get_user_by_req(request)
        body = parse_json_body(request, allow_empty=True)
        if await self._storage.users.get_device(requester.user_id, deviceId) is None:
            raise MatrixError(404, Codes.NOT_FOUND, "No device found")
        await self._delete(request, requester.user_id, [deviceId], body, requester)
        return 200, {}

    async def on_delete_many(self, request: Request) -> tuple[int, Any]:
        requester = await self._auth.get_user_by_req(request)
        body = parse_json_body(request)
        devices = field(body, "devices", list, required=True)
        if not all(isinstance(d, str) for d in devices):
            raise MatrixError(400, Codes.BAD_JSON, "'devices' must be a list of strings")
        await self._delete(request, requester.user_id, devices, body, requester)
        return 200, {}

    async def _delete(
        self,
        request: Request,
        user_id: str,
        device_ids: list[str],
        body: dict[str, Any],
        requester: Any,
    ) -> None:
        _, _, session_id = await self._ui_auth.check(
            body,
            [[PASSWORD]],
            uri=request.path.decode(),
            method=request.method.decode(),
            description="remove device(s) from your account",
            requester=requester,
        )
        removed = await self._storage.users.delete_devices(user_id, device_ids)
        self._auth.invalidate_token_ids(removed)
        await self._ui_auth.finish(session_id)
