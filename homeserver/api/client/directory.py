"""Room aliases, the room directory and /publicRooms."""

from __future__ import annotations

from typing import Any

from twisted.web.server import Request

from homeserver.api.client.paths import client_paths
from homeserver.appservice.handler import parse_third_party_instance_id
from homeserver.errors import Codes, MatrixError
from homeserver.handlers.auth import AuthHandler
from homeserver.http.server import JsonResource
from homeserver.http.servlet import (
    field,
    parse_boolean,
    parse_integer,
    parse_json_body,
    parse_string,
)
from homeserver.rooms.directory import RoomDirectory
from homeserver.rooms.handler import RoomHandler


class DirectoryServlets:
    def __init__(self, auth: AuthHandler, rooms: RoomHandler, directory: RoomDirectory) -> None:
        self._auth = auth
        self._rooms = rooms
        self._directory = directory

    def register(self, r: JsonResource) -> None:
        alias = "/directory/room/{roomAlias}"
        r.register_many("PUT", client_paths(alias), self.on_put_alias)
        r.register_many("GET", client_paths(alias), self.on_get_alias)
        r.register_many("DELETE", client_paths(alias), self.on_delete_alias)
        r.register_many("GET", client_paths("/rooms/{roomId}/aliases"), self.on_room_aliases)
        vis = "/directory/list/room/{roomId}"
        r.register_many("GET", client_paths(vis), self.on_get_visibility)
        r.register_many("PUT", client_paths(vis), self.on_put_visibility)
        r.register_many("GET", client_paths("/publicRooms"), self.on_get_public_rooms)
        r.register_many("POST", client_paths("/publicRooms"), self.on_post_public_rooms)

    async def on_put_alias(self, request: Request, roomAlias: str) -> tuple[int, Any]:
        requester = await self._auth.get_user_by_req(request)
        body = parse_json_body(request)
        room_id = field(body, "room_id", str, required=True)
        await self._rooms.create_alias(requester, roomAlias, room_id)
        return 200, {}

    async def on_get_alias(self, request: Request, roomAlias: str) -> tuple[int, Any]:
        return 200, await self._directory.resolve_alias(roomAlias)

    async def on_delete_alias(self, request: Request, roomAlias: str) -> tuple[int, Any]:
        requester = await self._auth.get_user_by_req(request)
        await self._rooms.delete_alias(requester, roomAlias)
        return 200, {}

    async def on_room_aliases(self, request: Request, roomId: str) -> tuple[int, Any]:
        requester = await self._auth.get_user_by_req(request, allow_guest=True)
        return 200, {"aliases": await self._directory.room_aliases(requester.user_id, roomId)}

    async def on_get_visibility(self, request: Request, roomId: str) -> tuple[int, Any]:
        return 200, {"visibility": await self._directory.get_visibility(roomId)}

    async def on_put_visibility(self, request: Request, roomId: str) -> tuple[int, Any]:
        requester = await self._auth.get_user_by_req(request)
        body = parse_json_body(request)
        visibility = field(body, "visibility", str, default="public")
        if visibility not in ("public", "private"):
            raise MatrixError(400, Codes.INVALID_PARAM, "visibility must be public or private")
        await self._directory.set_visibility(requester, roomId, visibility)
        return 200, {}

    async def on_get_public_rooms(self, request: Request) -> tuple[int, Any]:
        server = parse_string(request, "server")
        self._check_server(server)
        limit = parse_integer(request, "limit", minimum=0)
        since = parse_string(request, "since")
        include_all = parse_boolean(request, "include_all_networks")
        network = _network(include_all, parse_string(request, "third_party_instance_id"))
        return 200, await self._directory.public_rooms(limit, since, None, include_all, network)

    async def on_post_public_rooms(self, request: Request) -> tuple[int, Any]:
        await self._auth.get_user_by_req(request, allow_guest=True)
        self._check_server(parse_string(request, "server"))
        body = parse_json_body(request, allow_empty=True)
        limit = field(body, "limit", int)
        since = field(body, "since", str)
        search = field(body, "filter", dict, default={})
        term = field(search, "generic_search_term", str)
        include_all = bool(field(body, "include_all_networks", bool, default=False))
        network = _network(include_all, field(body, "third_party_instance_id", str))
        if limit is not None and limit < 0:
            raise MatrixError(400, Codes.INVALID_PARAM, "limit must not be negative")
        return 200, await self._directory.public_rooms(limit, since, term, include_all, network)

    def _check_server(self, server: str | None) -> None:
        if server is not None and server != self._rooms.server_name:
            raise MatrixError(404, Codes.NOT_FOUND, "Remote room directories need federation")


def _network(include_all: bool, instance_id: str | None) -> tuple[str, str] | None:
    """The application service network asked for (``third_party_instance_id``)."""
    if instance_id is None:
        return None
    if include_all:
        raise MatrixError(
            400, Codes.INVALID_PARAM, "Can't use include_all_networks with an explicit network"
        )
    return parse_third_party_instance_id(instance_id)
