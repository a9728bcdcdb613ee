"""OpenID tokens: a user proves their identity to a third party (an integration
manager, a widget), which asks our federation API who the token belongs to. Tokens
live one hour, as Synapse's."""

from __future__ import annotations

from typing import Any

from homeserver.clock import Clock, now_ms
from homeserver.errors import Codes, MatrixError
from homeserver.handlers.auth import generate_token, hash_token
from homeserver.requester import Requester
from storage.openid import OpenIdStore

JsonDict = dict[str, Any]

TOKEN_LIFETIME_MS = 3_600_000


class OpenIdHandler:
    def __init__(self, store: OpenIdStore, clock: Clock, server_name: str) -> None:
        self._store = store
        self._clock = clock
        self._server_name = server_name

    async def request_token(self, requester: Requester, user_id: str) -> JsonDict:
        if user_id != requester.user_id:
            raise MatrixError(403, Codes.FORBIDDEN, "Cannot request tokens for other users.")
        token = generate_token("moi")
        now = now_ms(self._clock)
        await self._store.insert_token(hash_token(token), user_id, now + TOKEN_LIFETIME_MS, now)
        return {
            "access_token": token,
            "token_type": "Bearer",
            "matrix_server_name": self._server_name,
            "expires_in": TOKEN_LIFETIME_MS // 1000,
        }

    async def user_for_token(self, token: str) -> str | None:
        return await self._store.get_user_for_token(hash_token(token), now_ms(self._clock))
