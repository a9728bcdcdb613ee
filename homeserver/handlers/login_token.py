"""Login tokens (MSC3882): a logged-in device asks for a one-time ``m.login.token``
that a new device exchanges at ``/login``; it expires after ``token_timeout``."""

from __future__ import annotations

from homeserver.clock import Clock, now_ms
from homeserver.errors import Codes, MatrixError
from homeserver.handlers.auth import generate_token, hash_token
from storage.login_tokens import LoginTokenStore


class LoginTokenHandler:
    def __init__(self, store: LoginTokenStore, clock: Clock, timeout_ms: int) -> None:
        self._store = store
        self._clock = clock
        self.timeout_ms = timeout_ms

    async def issue(self, user_id: str) -> str:
        token = generate_token("mlt")
        now = now_ms(self._clock)
        await self._store.add_token(hash_token(token), user_id, now + self.timeout_ms, now)
        return token

    async def consume(self, token: str) -> str:
        """The token's user; 403 ``M_FORBIDDEN`` for an unknown, used or expired token."""
        user_id = await self._store.consume_token(hash_token(token), now_ms(self._clock))
        if user_id is None:
            raise MatrixError(403, Codes.FORBIDDEN, "Invalid login token")
        return user_id
