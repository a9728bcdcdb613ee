"""User directory: ``POST /user_directory/search``."""

from __future__ import annotations

from typing import Any

from twisted.web.server import Request

from homeserver.api.client.paths import client_paths
from homeserver.ephemeral.user_directory import DEFAULT_LIMIT, MAX_LIMIT, UserDirectoryHandler
from homeserver.errors import Codes, MatrixError
from homeserver.handlers.auth import AuthHandler
from homeserver.http.server import JsonResource
from homeserver.http.servlet import field, parse_json_body


class UserDirectoryServlets:
    def __init__(self, auth: AuthHandler, directory: UserDirectoryHandler) -> None:
        self._auth = auth
        self._directory = directory

    def register(self, r: JsonResource) -> None:
        r.register_many("POST", client_paths("/user_directory/search"), self.on_search)

    async def on_search(self, request: Request) -> tuple[int, Any]:
        requester = await self._auth.get_user_by_req(request)
        body = parse_json_body(request)
        term = field(body, "search_term", str, required=True)
        limit = field(body, "limit", int, default=DEFAULT_LIMIT)
        if limit < 0:
            raise MatrixError(400, Codes.INVALID_PARAM, "limit must not be negative")
        return 200, await self._directory.search(requester.user_id, term, min(limit, MAX_LIMIT))
