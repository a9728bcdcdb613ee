"""Server discovery: from a server name to the host, port and Host header to use.

Follows the spec's order: IP literal (with or without port) → explicit port →
``/.well-known/matrix/server`` (cached per its Cache-Control, 24 h by default, 1 h on
errors) → SRV ``_matrix-fed._tcp`` then ``_matrix._tcp`` → port 8448.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from dataclasses import dataclass
from typing import Any

from homeserver.clock import Clock
from homeserver.errors import MatrixError
from homeserver.untrusted import decode_json

logger = logging.getLogger(__name__)

WELL_KNOWN_DEFAULT_TTL_S = 24 * 3600.0
WELL_KNOWN_ERROR_TTL_S = 3600.0
WELL_KNOWN_MAX_TTL_S = 48 * 3600.0
WELL_KNOWN_MAX_BYTES = 50 * 1024


@dataclass(frozen=True, slots=True)
class ResolvedServer:
    host: str  # what to connect to (hostname or IP)
    port: int
    host_header: str  # the Host header and TLS SNI / certificate name
    tls_server_name: str


def split_server_name(server_name: str) -> tuple[str, int | None]:
    if server_name.startswith("["):
        end = server_name.index("]")
        host = server_name[1:end]
        rest = server_name[end + 1 :]
        return host, int(rest[1:]) if rest.startswith(":") else None
    if server_name.count(":") == 1:
        host, port = server_name.split(":")
        return host, int(port)
    return server_name, None


def is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


class ServerResolver:
    """Resolves server names; ``fetch_well_known(host) -> (status, body, ttl)`` and
    ``lookup_srv(name) -> [(host, port)]`` are injected so tests need no network."""

    def __init__(self, clock: Clock, fetch_well_known: Any, lookup_srv: Any) -> None:
        self._clock = clock
        self._fetch_well_known = fetch_well_known
        self._lookup_srv = lookup_srv
        self._cache: dict[str, tuple[float, ResolvedServer]] = {}

    async def resolve(self, server_name: str) -> ResolvedServer:
        cached = self._cache.get(server_name)
        if cached is not None and cached[0] > self._clock.seconds():
            return cached[1]
        resolved, ttl = await self._resolve(server_name)
        self._cache[server_name] = (self._clock.seconds() + ttl, resolved)
        return resolved

    async def _resolve(self, server_name: str) -> tuple[ResolvedServer, float]:
        host, port = split_server_name(server_name)
        if is_ip_literal(host):
            return ResolvedServer(host, port or 8448, server_name, host), WELL_KNOWN_MAX_TTL_S
        if port is not None:
            return ResolvedServer(host, port, server_name, host), WELL_KNOWN_MAX_TTL_S
        delegated, ttl = await self._well_known(host)
        if delegated is not None:
            d_host, d_port = split_server_name(delegated)
            if is_ip_literal(d_host) or d_port is not None:
                return ResolvedServer(d_host, d_port or 8448, delegated, d_host), ttl
            target = await self._srv(d_host)
            if target is not None:
                return ResolvedServer(target[0], target[1], delegated, d_host), ttl
            return ResolvedServer(d_host, 8448, delegated, d_host), ttl
        target = await self._srv(host)
        if target is not None:
            return ResolvedServer(target[0], target[1], server_name, host), ttl
        return ResolvedServer(host, 8448, server_name, host), ttl

    async def _well_known(self, host: str) -> tuple[str | None, float]:
        try:
            status, body, ttl = await self._fetch_well_known(host)
        except Exception as e:  # unreachable: no delegation, retry later
            logger.debug("well-known lookup for %s failed: %s", host, e)
            return None, WELL_KNOWN_ERROR_TTL_S
        if status != 200 or len(body) > WELL_KNOWN_MAX_BYTES:
            return None, WELL_KNOWN_ERROR_TTL_S
        try:
            data = decode_json(body)
        except MatrixError:  # not JSON, or JSON no one could use (deep, lone surrogates)
            return None, WELL_KNOWN_ERROR_TTL_S
        server = data.get("m.server") if isinstance(data, dict) else None
        if not isinstance(server, str) or not re.fullmatch(r"[A-Za-z0-9.\-\[\]:]+", server):
            return None, WELL_KNOWN_ERROR_TTL_S
        ttl_value = ttl if ttl is not None else WELL_KNOWN_DEFAULT_TTL_S
        return server, min(max(ttl_value, 60.0), WELL_KNOWN_MAX_TTL_S)

    async def _srv(self, host: str) -> tuple[str, int] | None:
        for prefix in ("_matrix-fed._tcp.", "_matrix._tcp."):
            try:
                records = await self._lookup_srv(prefix + host)
            except Exception:
                records = []
            if records:
                host, port = records[0]
                return str(host), int(port)
        return None
