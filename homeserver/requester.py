"""Who is making a request: the authenticated user, device and token behind it.

A plain value with no dependencies on handlers, rooms or application services, so that
any layer can take a ``Requester`` without importing the code that builds one
(``homeserver.handlers.auth.AuthHandler``).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Requester:
    user_id: str
    device_id: str | None
    access_token_id: int | None
    is_guest: bool = False
    is_admin: bool = False
    app_service_id: str | None = None
    # False for an application service's sender and for users of a service registered
    # with `rate_limited: false`; servlets ratelimit through Ratelimiter.ratelimit_requester.
    ratelimited: bool = True
    # Set by an admin: sends are answered as if they succeeded and nothing is sent.
    shadow_banned: bool = False
