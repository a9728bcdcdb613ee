"""m.room.server_acl evaluation (pure), and the check every room-scoped inbound path makes."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from homeserver.errors import Codes, MatrixError
from homeserver.events.glob import compile_glob


def _matches(pattern: object, host: str) -> bool:
    return isinstance(pattern, str) and compile_glob(pattern, ignore_case=True).fullmatch(host)


def _host(server_name: str) -> str:
    if server_name.startswith("["):
        return server_name[: server_name.index("]") + 1] if "]" in server_name else server_name
    return server_name.rsplit(":", 1)[0] if server_name.count(":") == 1 else server_name


def server_allowed_by_acl(server_name: str, acl_content: Mapping[str, Any] | None) -> bool:
    """Whether ``server_name`` may take part in a room with this ACL (no ACL: yes).

    Port is ignored; IP literals are refused when ``allow_ip_literals`` is false;
    ``deny`` wins over ``allow``; a missing ``allow`` allows nothing.
    """
    if not acl_content:
        return True
    host = _host(server_name)
    allow_ip = acl_content.get("allow_ip_literals", True)
    if allow_ip is False and (
        host.startswith("[") or re.fullmatch(r"\d{1,3}(\.\d{1,3}){3}", host) is not None
    ):
        return False
    deny = acl_content.get("deny", [])
    if isinstance(deny, list) and any(_matches(p, host) for p in deny):
        return False
    allow = acl_content.get("allow", [])
    return isinstance(allow, list) and any(_matches(p, host) for p in allow)


def check_server_acl(server_name: str, acl_content: Mapping[str, Any] | None) -> None:
    """Raise 403 ``M_FORBIDDEN`` unless the room's ACL lets ``server_name`` take part:
    the one check of every room-scoped inbound request (reads, membership handshakes,
    invites), as Synapse's ``check_server_matches_acl``."""
    if not server_allowed_by_acl(server_name, acl_content):
        raise MatrixError(403, Codes.FORBIDDEN, "Server is banned from this room")
