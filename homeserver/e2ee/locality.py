"""The one place that decides whether a user is local.

Everything under ``homeserver.e2ee`` asks ``Locality`` instead of comparing server
names itself, so adding remote users (federation) changes this file and the branches
that call ``is_mine``, nothing else.
"""

from __future__ import annotations

from homeserver.errors import Codes, MatrixError
from homeserver.events.format import is_valid_user_id


class Locality:
    def __init__(self, server_name: str) -> None:
        self.server_name = server_name

    @staticmethod
    def server_of(user_id: str) -> str:
        """The server part of a user id; 400 ``M_INVALID_PARAM`` if it is not one."""
        if not is_valid_user_id(user_id):
            raise MatrixError(400, Codes.INVALID_PARAM, f"Invalid user id {user_id!r}")
        return user_id.split(":", 1)[1]

    def is_mine(self, user_id: str) -> bool:
        return self.server_of(user_id) == self.server_name


def remote_failure(server_name: str) -> dict[str, object]:
    """What ``failures`` says for a server we cannot reach (all of them, until federation)."""
    return {
        "status": 503,
        "errcode": Codes.UNKNOWN,
        "error": f"Cannot reach {server_name}: federation is not available yet",
    }
