"""Path helpers: client endpoints are served under v3 and the legacy r0 prefix."""

from __future__ import annotations

CLIENT_PREFIX = "/_matrix/client"


def client_paths(path: str, *, versions: tuple[str, ...] = ("v3", "r0")) -> list[str]:
    return [f"{CLIENT_PREFIX}/{v}{path}" for v in versions]


def client_v1_paths(path: str) -> list[str]:
    return [f"{CLIENT_PREFIX}/v1{path}"]


# The WebSocket transport's unstable namespace (docs/websocket.md), advertised in /versions.
WEBSOCKET_FEATURE = "org.homeserver.ws"
