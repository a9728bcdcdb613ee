"""/room_keys/version[/{version}] and /room_keys/keys[/{roomId}[/{sessionId}]]."""

from __future__ import annotations

from typing import Any

from twisted.web.server import Request

from homeserver.api.client.paths import client_paths
from homeserver.e2ee.backup import KeyBackupHandler
from homeserver.errors import Codes, MatrixError
from homeserver.handlers.auth import AuthHandler
from homeserver.http.server import JsonResource
from homeserver.http.servlet import field, parse_json_body, parse_string
from storage.key_backup import RoomKey

JsonDict = dict[str, Any]


def _opaque(body: JsonDict, name: str) -> Any:
    """A value the server keeps but never reads (``auth_data``, ``session_data``): the spec
    describes objects, but Synapse stores any JSON value, and SyTest sends strings."""
    if body.get(name) is None:
        raise MatrixError(400, Codes.MISSING_PARAM, f"Missing parameter: {name}")
    return body[name]


def _key_data(room_id: str, session_id: str, data: Any) -> RoomKey:
    if not isinstance(data, dict):
        raise MatrixError(400, Codes.BAD_JSON, "Key backup data must be an object")
    for name in ("first_message_index", "forwarded_count"):
        value = field(data, name, int, required=True)
        if value < 0:
            raise MatrixError(400, Codes.INVALID_PARAM, f"'{name}' must not be negative")
    return RoomKey(
        room_id,
        session_id,
        data["first_message_index"],
        data["forwarded_count"],
        field(data, "is_verified", bool, required=True),
        _opaque(data, "session_data"),
    )


def _sessions(room_id: str, room: Any) -> list[RoomKey]:
    if not isinstance(room, dict):
        raise MatrixError(400, Codes.BAD_JSON, "Room key backup must be an object")
    sessions = field(room, "sessions", dict, required=True)
    return [_key_data(room_id, session_id, data) for session_id, data in sessions.items()]


def _key_json(key: RoomKey) -> JsonDict:
    return {
        "first_message_index": key.first_message_index,
        "forwarded_count": key.forwarded_count,
        "is_verified": key.is_verified,
        "session_data": key.session_data,
    }


class RoomKeysServlets:
    def __init__(self, auth: AuthHandler, backup: KeyBackupHandler) -> None:
        self._auth = auth
        self._backup = backup

    def register(self, r: JsonResource) -> None:
        r.register_many("POST", client_paths("/room_keys/version"), self.on_create_version)
        r.register_many("GET", client_paths("/room_keys/version"), self.on_get_version)
        r.register_many("GET", client_paths("/room_keys/version/{version}"), self.on_get_version)
        r.register_many("PUT", client_paths("/room_keys/version/{version}"), self.on_update_version)
        # Without a version: the current one, as Synapse allows.
        r.register_many("DELETE", client_paths("/room_keys/version"), self.on_delete_version)
        r.register_many(
            "DELETE", client_paths("/room_keys/version/{version}"), self.on_delete_version
        )
        for path in (
            "/room_keys/keys",
            "/room_keys/keys/{roomId}",
            "/room_keys/keys/{roomId}/{sessionId}",
        ):
            r.register_many("PUT", client_paths(path), self.on_put_keys)
            r.register_many("GET", client_paths(path), self.on_get_keys)
            r.register_many("DELETE", client_paths(path), self.on_delete_keys)

    async def _user(self, request: Request) -> str:
        return (await self._auth.get_user_by_req(request)).user_id

    async def on_create_version(self, request: Request) -> tuple[int, Any]:
        user_id = await self._user(request)
        body = parse_json_body(request)
        algorithm = field(body, "algorithm", str, required=True)
        auth_data = _opaque(body, "auth_data")
        return 200, {"version": await self._backup.create_version(user_id, algorithm, auth_data)}

    async def on_get_version(self, request: Request, version: str | None = None) -> tuple[int, Any]:
        user_id = await self._user(request)
        return 200, await self._backup.get_version(user_id, version)

    async def on_update_version(self, request: Request, version: str) -> tuple[int, Any]:
        user_id = await self._user(request)
        body = parse_json_body(request)
        algorithm = field(body, "algorithm", str, required=True)
        auth_data = _opaque(body, "auth_data")
        body_version = field(body, "version", str)
        await self._backup.update_version(user_id, version, algorithm, auth_data, body_version)
        return 200, {}

    async def on_delete_version(
        self, request: Request, version: str | None = None
    ) -> tuple[int, Any]:
        user_id = await self._user(request)
        await self._backup.delete_version(user_id, version)
        return 200, {}

    @staticmethod
    def _version(request: Request) -> str:
        version = parse_string(request, "version", required=True)
        assert version is not None
        return version

    async def on_put_keys(
        self, request: Request, roomId: str | None = None, sessionId: str | None = None
    ) -> tuple[int, Any]:
        user_id = await self._user(request)
        version = self._version(request)
        body = parse_json_body(request)
        if sessionId is not None and roomId is not None:
            keys = [_key_data(roomId, sessionId, body)]
        elif roomId is not None:
            keys = _sessions(roomId, body)
        else:
            rooms = field(body, "rooms", dict, required=True)
            keys = [k for room_id, room in rooms.items() for k in _sessions(room_id, room)]
        return 200, await self._backup.put_keys(user_id, version, keys)

    async def on_get_keys(
        self, request: Request, roomId: str | None = None, sessionId: str | None = None
    ) -> tuple[int, Any]:
        user_id = await self._user(request)
        keys = await self._backup.get_keys(user_id, self._version(request), roomId, sessionId)
        if sessionId is not None:
            if not keys:
                raise MatrixError(404, Codes.NOT_FOUND, "No room_keys found")
            return 200, _key_json(keys[0])
        rooms: JsonDict = {}
        for key in keys:
            rooms.setdefault(key.room_id, {"sessions": {}})["sessions"][key.session_id] = _key_json(
                key
            )
        if roomId is not None:
            return 200, rooms.get(roomId, {"sessions": {}})
        return 200, {"rooms": rooms}

    async def on_delete_keys(
        self, request: Request, roomId: str | None = None, sessionId: str | None = None
    ) -> tuple[int, Any]:
        user_id = await self._user(request)
        version = self._version(request)
        return 200, await self._backup.delete_keys(user_id, version, roomId, sessionId)
