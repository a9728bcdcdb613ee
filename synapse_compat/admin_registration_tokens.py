"""``/_synapse/admin/v1/registration_tokens``: create, list, read, change and delete the
tokens ``m.login.registration_token`` registration asks for; server admins only, with
Synapse's validation and messages."""

from __future__ import annotations

from typing import Any

from twisted.web.server import Request

from homeserver.errors import Codes, MatrixError
from homeserver.handlers.auth import AuthHandler
from homeserver.handlers.registration_tokens import TOKEN_CHARS, RegistrationTokensAdmin
from homeserver.http.server import JsonResource
from homeserver.http.servlet import parse_json_body
from synapse_compat.admin_common import require_admin
from synapse_compat.admin_rooms import parse_optional_boolean

_ALLOWED = set(TOKEN_CHARS)


def _invalid(message: str) -> MatrixError:
    return MatrixError(400, Codes.INVALID_PARAM, message)


def _uses_allowed(body: dict[str, Any]) -> int | None:
    value = body.get("uses_allowed")
    if not (value is None or (type(value) is int and value >= 0)):
        raise _invalid("uses_allowed must be a non-negative integer or null")
    return value


def _expiry_time(body: dict[str, Any], now_ms: int) -> int | None:
    value = body.get("expiry_time")
    if value is not None and type(value) is not int:
        raise _invalid("expiry_time must be an integer or null")
    if value is not None and value < now_ms:
        raise _invalid("expiry_time must not be in the past")
    return value


class AdminRegistrationTokenServlets:
    PATH = "/_synapse/admin/v1/registration_tokens"

    def __init__(self, auth: AuthHandler, tokens: RegistrationTokensAdmin) -> None:
        self._auth = auth
        self._tokens = tokens

    def register(self, r: JsonResource) -> None:
        r.register("GET", self.PATH, self.on_list)
        r.register("POST", self.PATH + "/new", self.on_new)
        r.register("GET", self.PATH + "/{token}", self.on_get)
        r.register("PUT", self.PATH + "/{token}", self.on_put)
        r.register("DELETE", self.PATH + "/{token}", self.on_delete)

    async def on_list(self, request: Request) -> tuple[int, Any]:
        await require_admin(self._auth, request)
        tokens = await self._tokens.list(parse_optional_boolean(request, "valid"))
        return 200, {"registration_tokens": tokens}

    async def on_new(self, request: Request) -> tuple[int, Any]:
        await require_admin(self._auth, request)
        body = parse_json_body(request)
        token: str | None = None
        length = 16
        if "token" in body:
            token = body["token"]
            if not isinstance(token, str):
                raise _invalid("token must be a string")
            if not 0 < len(token) <= 64:
                raise _invalid("token must not be empty and must not be longer than 64 characters")
            if not set(token) <= _ALLOWED:
                raise _invalid(
                    "token must consist only of characters matched by the regex [A-Za-z0-9-_]"
                )
        else:
            length = body.get("length", 16)
            if type(length) is not int:
                raise _invalid("length must be an integer")
            if not 0 < length <= 64:
                raise _invalid("length must be greater than zero and not greater than 64")
        uses_allowed = _uses_allowed(body)
        expiry_time = _expiry_time(body, self._tokens.now_ms())
        return 200, await self._tokens.create(token, length, uses_allowed, expiry_time)

    async def on_get(self, request: Request, token: str) -> tuple[int, Any]:
        await require_admin(self._auth, request)
        return 200, await self._tokens.get(token)

    async def on_put(self, request: Request, token: str) -> tuple[int, Any]:
        await require_admin(self._auth, request)
        body = parse_json_body(request)
        changes: dict[str, int | None] = {}
        if "uses_allowed" in body:
            changes["uses_allowed"] = _uses_allowed(body)
        if "expiry_time" in body:
            changes["expiry_time"] = _expiry_time(body, self._tokens.now_ms())
        return 200, await self._tokens.update(token, changes)

    async def on_delete(self, request: Request, token: str) -> tuple[int, Any]:
        await require_admin(self._auth, request)
        await self._tokens.delete(token)
        return 200, {}
