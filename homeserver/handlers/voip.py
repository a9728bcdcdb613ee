"""TURN credentials for VoIP clients (``GET /voip/turnServer``), as Synapse hands them out.

With a shared secret (coturn's ``use-auth-secret``), the username is
``<expiry seconds>:<user id>`` and the password the base64 HMAC-SHA1 of it under the
secret, so the TURN server checks them without asking us. Otherwise a fixed
username and password are handed out as configured.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass
from typing import Any

JsonDict = dict[str, Any]


@dataclass(frozen=True, slots=True)
class TurnConfig:
    uris: tuple[str, ...]
    shared_secret: str | None
    username: str | None
    password: str | None
    lifetime_ms: int


def turn_credentials(config: TurnConfig, user_id: str, now_ms: int) -> JsonDict:
    """The ``/voip/turnServer`` answer for ``user_id`` at ``now_ms``; ``{}`` when nothing
    usable is configured (as Synapse)."""
    if not config.uris or config.lifetime_ms <= 0:
        return {}
    if config.shared_secret:
        expiry = (now_ms + config.lifetime_ms) // 1000
        username = f"{expiry}:{user_id}"
        mac = hmac.new(config.shared_secret.encode(), username.encode(), hashlib.sha1)
        password = base64.b64encode(mac.digest()).decode("ascii")
    elif config.username and config.password:
        username, password = config.username, config.password
    else:
        return {}
    return {
        "username": username,
        "password": password,
        "ttl": config.lifetime_ms // 1000,
        "uris": list(config.uris),
    }
