"""Federation queries: /version, profiles, aliases, the public room list, user devices."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from typing import Any

from twisted.web.server import Request

from homeserver.api.client.directory import public_rooms_body
from homeserver.errors import Codes, MatrixError
from homeserver.handlers.profile import ProfileHandler
from homeserver.http.server import JsonResource
from homeserver.http.servlet import parse_boolean, parse_integer, parse_json_body, parse_string
from homeserver.rooms.directory import PublicRoomsQuery, RoomDirectory
from storage.storage import Storage

JsonDict = dict[str, Any]
Authenticator = Callable[[Request], Awaitable[str]]
DeviceListProvider = Callable[[str], Awaitable[JsonDict]]

SERVER_VERSION = "0.1.0"


class FederationQueryServlets:
    def __init__(
        self,
        server_name: str,
        authenticate: Authenticator,
        storage: Storage,
        profiles: ProfileHandler,
        directory: RoomDirectory,
        *,
        allow_public_rooms_over_federation: bool,
        allow_profile_lookup_over_federation: bool = True,
    ) -> None:
        self._server_name = server_name
        self._authenticate = authenticate
        self._storage = storage
        self._profiles = profiles
        self._directory = directory
        self._public_rooms = allow_public_rooms_over_federation
        self._profile_lookup = allow_profile_lookup_over_federation
        # Replaced by the end-to-end encryption module when it is present.
        self.device_list_provider: DeviceListProvider | None = None

    def register(self, r: JsonResource) -> None:
        p = "/_matrix/federation/v1"
        r.register("GET", f"{p}/version", self.on_version)
        r.register("GET", f"{p}/query/profile", self.on_query_profile)
        r.register("GET", f"{p}/query/directory", self.on_query_directory)
        r.register("GET", f"{p}/publicRooms", self.on_get_public_rooms)
        r.register("POST", f"{p}/publicRooms", self.on_post_public_rooms)
        r.register("GET", f"{p}/user/devices/{{userId}}", self.on_user_devices)

    async def on_version(self, request: Request) -> tuple[int, Any]:
        return 200, {"server": {"name": "homeserver", "version": SERVER_VERSION}}

    async def on_query_profile(self, request: Request) -> tuple[int, Any]:
        await self._authenticate(request)
        if not self._profile_lookup:
            raise MatrixError(
                403,
                Codes.FORBIDDEN,
                "Profile lookup over federation is disabled on this homeserver",
            )
        user_id = parse_string(request, "user_id", required=True)
        assert user_id is not None
        field_name = parse_string(request, "field")
        if not user_id.endswith(f":{self._server_name}"):
            raise MatrixError(400, Codes.INVALID_PARAM, "User is not on this server")
        profile = await self._profiles.get_profile(user_id)  # 404 for unknown users
        if field_name is not None:
            # An unset field is left out of the answer (as Synapse), not a 404.
            return 200, {field_name: profile[field_name]} if field_name in profile else {}
        return 200, profile

    async def on_query_directory(self, request: Request) -> tuple[int, Any]:
        await self._authenticate(request)
        alias = parse_string(request, "room_alias", required=True)
        assert alias is not None
        # Only our aliases: never ask a third server on another's behalf.
        if not alias.endswith(f":{self._server_name}"):
            raise MatrixError(400, Codes.INVALID_PARAM, "Room alias is not hosted on this server")
        return 200, await self._directory.resolve_alias(alias)

    async def on_get_public_rooms(self, request: Request) -> tuple[int, Any]:
        await self._authenticate(request)
        self._check_public_rooms_allowed()
        query = PublicRoomsQuery(
            limit=_no_limit_if_zero(parse_integer(request, "limit", minimum=0)),
            since=parse_string(request, "since"),
            include_all_networks=parse_boolean(request, "include_all_networks"),
            third_party_instance_id=parse_string(request, "third_party_instance_id"),
        )
        return 200, await self._directory.public_rooms(query)

    async def on_post_public_rooms(self, request: Request) -> tuple[int, Any]:
        await self._authenticate(request)
        self._check_public_rooms_allowed()
        query = public_rooms_body(parse_json_body(request, allow_empty=True))
        return 200, await self._directory.public_rooms(
            dataclasses.replace(query, limit=_no_limit_if_zero(query.limit))
        )

    def _check_public_rooms_allowed(self) -> None:
        if not self._public_rooms:
            raise MatrixError(
                403, Codes.FORBIDDEN, "Public room list is not available over federation"
            )

    async def on_user_devices(self, request: Request, userId: str) -> tuple[int, Any]:
        await self._authenticate(request)
        if not userId.endswith(f":{self._server_name}"):
            raise MatrixError(400, Codes.INVALID_PARAM, "User is not on this server")
        if self.device_list_provider is not None:
            return 200, await self.device_list_provider(userId)
        devices = await self._storage.users.get_devices(userId)
        return 200, {
            "user_id": userId,
            "stream_id": 0,
            "devices": [
                {"device_id": d.device_id, "device_display_name": d.display_name, "keys": {}}
                for d in devices
            ],
        }


def _no_limit_if_zero(limit: int | None) -> int | None:
    """The federation API's ``limit``: 0 (its default) means no limit."""
    return limit or None
