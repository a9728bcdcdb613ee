"""What every Synapse admin servlet starts with: an admin requester, a local user."""

from __future__ import annotations

from twisted.web.server import Request

from homeserver.e2ee.locality import Locality
from homeserver.errors import Codes, MatrixError
from homeserver.handlers.auth import AuthHandler
from homeserver.http.servlet import parse_strings
from homeserver.requester import Requester
from storage.users import UserRecord, UserStore

ADMIN_V1 = "/_synapse/admin/v1"
ADMIN_V2 = "/_synapse/admin/v2"
ADMIN_V3 = "/_synapse/admin/v3"


async def require_admin(auth: AuthHandler, request: Request) -> Requester:
    """The requester, if a server admin; 403 ``M_FORBIDDEN`` otherwise (as Synapse)."""
    requester = await auth.get_user_by_req(request)
    if not requester.is_admin:
        raise MatrixError(403, Codes.FORBIDDEN, "You are not a server admin")
    return requester


def require_local(locality: Locality, user_id: str, message: str) -> None:
    """400 ``M_INVALID_PARAM`` for a malformed id, 400 ``M_UNKNOWN`` with Synapse's
    ``message`` for another server's user."""
    if not locality.is_mine(user_id):
        raise MatrixError(400, Codes.UNKNOWN, message)


async def require_existing(
    users: UserStore, user_id: str, message: str = "User not found"
) -> UserRecord:
    user = await users.get_user(user_id)
    if user is None:
        raise MatrixError(404, Codes.NOT_FOUND, message)
    return user


def parse_optional_boolean(request: Request, name: str) -> bool | None:
    """A ``true``/``false`` query parameter, None when absent (Synapse's tri-state)."""
    values = parse_strings(request, name)
    if not values:
        return None
    if values[0] == "true":
        return True
    if values[0] == "false":
        return False
    raise MatrixError(
        400,
        Codes.INVALID_PARAM,
        f"Boolean query parameter {name!r} must be one of ['true', 'false']",
    )
