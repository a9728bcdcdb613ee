"""``/_synapse/admin/v1/register``: shared-secret registration, as Synapse documents it.

GET hands out a nonce (valid for 60 s, usable once). POST carries the nonce, username,
password, admin flag and ``mac``: the hex HMAC-SHA1, keyed by
``registration_shared_secret``, of ``nonce NUL username NUL password NUL admin|notadmin``
(followed by ``NUL user_type`` when a user type is given).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Any

from twisted.web.server import Request

from homeserver.clock import Clock
from homeserver.errors import Codes, MatrixError
from homeserver.handlers.auth import AuthHandler
from homeserver.handlers.register import RegistrationHandler
from homeserver.http.server import JsonResource
from homeserver.http.servlet import field, parse_json_body

NONCE_LIFETIME_S = 60.0


def compute_registration_mac(
    secret: str,
    nonce: str,
    username: str,
    password: str,
    admin: bool,
    user_type: str | None = None,
) -> str:
    mac = hmac.new(secret.encode("utf-8"), digestmod=hashlib.sha1)
    mac.update(nonce.encode("utf-8"))
    mac.update(b"\x00")
    mac.update(username.encode("utf-8"))
    mac.update(b"\x00")
    mac.update(password.encode("utf-8"))
    mac.update(b"\x00")
    mac.update(b"admin" if admin else b"notadmin")
    if user_type:
        mac.update(b"\x00")
        mac.update(user_type.encode("utf-8"))
    return mac.hexdigest()


class SharedSecretRegistrationServlet:
    PATH = "/_synapse/admin/v1/register"

    def __init__(
        self,
        shared_secret: str | None,
        clock: Clock,
        auth: AuthHandler,
        registration: RegistrationHandler,
    ) -> None:
        self._secret = shared_secret
        self._clock = clock
        self._auth = auth
        self._registration = registration
        self._nonces: dict[str, float] = {}

    def register(self, resource: JsonResource) -> None:
        resource.register("GET", self.PATH, self.on_get)
        resource.register("POST", self.PATH, self.on_post)

    def _expire_nonces(self) -> None:
        now = self._clock.seconds()
        for nonce, created in list(self._nonces.items()):
            if now - created > NONCE_LIFETIME_S:
                del self._nonces[nonce]

    async def on_get(self, request: Request) -> tuple[int, Any]:
        self._expire_nonces()
        nonce = secrets.token_hex(32)
        self._nonces[nonce] = self._clock.seconds()
        return 200, {"nonce": nonce}

    async def on_post(self, request: Request) -> tuple[int, Any]:
        self._expire_nonces()
        if not self._secret:
            raise MatrixError(400, Codes.UNKNOWN, "Shared secret registration is not enabled")
        body = parse_json_body(request)
        nonce = field(body, "nonce", str, required=True)
        if nonce not in self._nonces:
            raise MatrixError(400, Codes.UNKNOWN, "unrecognised nonce")
        del self._nonces[nonce]  # a nonce works once, whatever happens next
        username = field(body, "username", str, required=True)
        password = field(body, "password", str, required=True)
        admin = bool(field(body, "admin", bool, default=False))
        user_type = field(body, "user_type", str)
        displayname = field(body, "displayname", str)
        got_mac = field(body, "mac", str, required=True)
        want = compute_registration_mac(self._secret, nonce, username, password, admin, user_type)
        if not hmac.compare_digest(want.encode(), got_mac.encode()):
            raise MatrixError(403, Codes.FORBIDDEN, "HMAC incorrect")
        localpart = username.lower()
        await self._registration.check_available(localpart)
        user_id = await self._registration.register_user(
            localpart, password, admin=admin, displayname=displayname
        )
        session = await self._auth.create_session(user_id, None, None)
        return 200, {
            "user_id": user_id,
            "home_server": user_id.split(":", 1)[1],
            "access_token": session.access_token,
            "device_id": session.device_id,
        }
