"""Registration tokens managed by server admins (Synapse's
``/_synapse/admin/v1/registration_tokens``); registration spends them through the
``m.login.registration_token`` stage (``handlers/ui_auth.py``)."""

from __future__ import annotations

import secrets
import string
from typing import Any

from homeserver.clock import Clock, now_ms
from homeserver.errors import Codes, MatrixError
from storage.registration import RegistrationStore, RegistrationToken

JsonDict = dict[str, Any]

TOKEN_CHARS = string.ascii_letters + string.digits + "._~-"
_GENERATE_ATTEMPTS = 3


def token_json(token: RegistrationToken) -> JsonDict:
    return {
        "token": token.token,
        "uses_allowed": token.uses_allowed,
        "pending": token.pending,
        "completed": token.completed,
        "expiry_time": token.expiry_time,
    }


class RegistrationTokensAdmin:
    def __init__(self, store: RegistrationStore, clock: Clock) -> None:
        self._store = store
        self._clock = clock

    def now_ms(self) -> int:
        return now_ms(self._clock)

    async def list(self, valid: bool | None) -> list[JsonDict]:
        return [
            token_json(t) for t in await self._store.list_registration_tokens(valid, self.now_ms())
        ]

    async def create(
        self, token: str | None, length: int, uses_allowed: int | None, expiry_time: int | None
    ) -> JsonDict:
        """A new token (``token``, or ``length`` random characters)."""
        if token is not None:
            if not await self._store.add_registration_token(token, uses_allowed, expiry_time):
                raise MatrixError(400, Codes.INVALID_PARAM, f"Token already exists: {token}")
        else:
            for _ in range(_GENERATE_ATTEMPTS):
                candidate = "".join(secrets.choice(TOKEN_CHARS) for _ in range(length))
                if await self._store.add_registration_token(candidate, uses_allowed, expiry_time):
                    token = candidate
                    break
            else:
                raise MatrixError(500, Codes.UNKNOWN, "Unable to generate a unique token")
        return {
            "token": token,
            "uses_allowed": uses_allowed,
            "pending": 0,
            "completed": 0,
            "expiry_time": expiry_time,
        }

    async def get(self, token: str) -> JsonDict:
        found = await self._store.get_registration_token(token)
        if found is None:
            raise MatrixError(404, Codes.NOT_FOUND, f"No such registration token: {token}")
        return token_json(found)

    async def update(self, token: str, changes: dict[str, int | None]) -> JsonDict:
        found = await self._store.update_registration_token(token, changes)
        if found is None:
            raise MatrixError(404, Codes.NOT_FOUND, f"No such registration token: {token}")
        return token_json(found)

    async def delete(self, token: str) -> None:
        if not await self._store.delete_registration_token(token):
            raise MatrixError(404, Codes.NOT_FOUND, f"No such registration token: {token}")
