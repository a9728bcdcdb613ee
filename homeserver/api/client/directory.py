"""Room aliases, the room directory and /publicRooms."""

from __future__ import annotations

from typing import Any

from twisted.web.server import Request

from homeserver.api.client.paths import client_paths
from homeserver.errors import Codes, MatrixError
from homeserver.handlers.auth import AuthHandler, get_access_token_from_request
from homeserver.http.server import JsonResource
from homeserver.http.servlet import (
    field,
    parse_boolean,
    parse_integer,
    parse_json_body,
    parse_string,
)
from homeserver.rooms.directory import PublicRoomsQuery, RoomDirectory
from homeserver.rooms.handler import RoomHandler

JsonDict = dict[str, Any]


class DirectoryServlets:
    def __init__(
        self,
        auth: AuthHandler,
        rooms: RoomHandler,
        directory: RoomDirectory,
        *,
        allow_public_rooms_without_auth: bool = False,
    ) -> None:
        self._auth = auth
        self._rooms = rooms
        self._directory = directory
        self._allow_without_auth = allow_public_rooms_without_auth

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
        await self._authenticate_room_list(request, server)
        query = PublicRoomsQuery(
            limit=parse_integer(request, "limit", minimum=0),
            since=parse_string(request, "since"),
            include_all_networks=parse_boolean(request, "include_all_networks"),
            third_party_instance_id=parse_string(request, "third_party_instance_id"),
        )
        return 200, await self._directory.server_public_rooms(server, query)

    async def on_post_public_rooms(self, request: Request) -> tuple[int, Any]:
        server = parse_string(request, "server")
        await self._auth.get_user_by_req(request, allow_guest=True)
        body = parse_json_body(request, allow_empty=True)
        return 200, await self._directory.server_public_rooms(server, public_rooms_body(body))

    async def _authenticate_room_list(self, request: Request, server: str | None) -> None:
        """As Synapse: a token is needed unless ``allow_public_rooms_without_auth``, and
        always to have another server's list fetched."""
        if self._allow_without_auth and get_access_token_from_request(request) is None:
            if server is not None and server != self._rooms.server_name:
                raise MatrixError(401, Codes.MISSING_TOKEN, "Missing access token")
            return
        await self._auth.get_user_by_req(request, allow_guest=True)


def public_rooms_body(body: JsonDict) -> PublicRoomsQuery:
    """The query of a ``POST /publicRooms`` body (client or federation)."""
    limit = field(body, "limit", int)
    if limit is not None and limit < 0:
        raise MatrixError(400, Codes.INVALID_PARAM, "limit must not be negative")
    search = field(body, "filter", dict, default={})
    room_types = field(search, "room_types", list)
    if room_types is not None and not all(t is None or isinstance(t, str) for t in room_types):
        raise MatrixError(400, Codes.BAD_JSON, "room_types must be a list of strings or null")
    include_all = body.get("include_all_networks", False)
    if include_all in ("true", "false"):  # Synapse sends it as a string over federation
        include_all = include_all == "true"
    if not isinstance(include_all, bool):
        raise MatrixError(400, Codes.BAD_JSON, "include_all_networks must be a boolean")
    return PublicRoomsQuery(
        limit=limit,
        since=field(body, "since", str),
        search_term=field(search, "generic_search_term", str),
        room_types=tuple(room_types) if room_types is not None else None,
        include_all_networks=include_all,
        third_party_instance_id=field(body, "third_party_instance_id", str),
    )
