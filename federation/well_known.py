"""Fetching ``https://<host>/.well-known/matrix/server`` for server discovery.

Invariants:
- Every connection, the first and each redirect's, goes to an address allowed by the
  outbound IP range policy (``ip_range_blacklist`` / ``ip_range_whitelist``, the check
  every federation request makes), and to the very IP that was checked: the name is
  resolved once, checked, and the connection made to that IP (no second lookup that a
  rebinding DNS server could answer differently).
- At most ``WELL_KNOWN_MAX_BYTES`` + 1 bytes of a body are read (as Synapse: 50 KiB);
  a longer body fails the fetch and its connection is dropped unread.
- At most ``MAX_REDIRECTS`` redirects are followed, to ``https`` URLs only.
- The whole fetch, redirects and body included, is bounded by one timeout.
"""

from __future__ import annotations

import logging
import re
from typing import Any
from urllib.parse import urljoin, urlsplit

from twisted.internet import defer
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.http_headers import Headers
from twisted.web.iweb import IResponse

from federation.discovery import WELL_KNOWN_MAX_BYTES
from federation.http_client import (
    BodyTooLarge,
    FixedNamePolicy,
    discard_body,
    read_limited,
    resolve_ip,
)
from homeserver.http.ip_filter import IpFilter

logger = logging.getLogger(__name__)

MAX_REDIRECTS = 5
REDIRECT_CODES = (301, 302, 303, 307, 308)
TIMEOUT_S = 10.0


class WellKnownError(Exception):
    """The fetch failed: blocked address, too many redirects, bad URL, connection."""


class WellKnownFetcher:
    """``await fetcher(host) -> (status, body, ttl)`` as ``ServerResolver`` wants it.

    ``https_port`` is the port of ``https://host/`` (443; tests serve elsewhere).
    """

    def __init__(
        self,
        reactor: Any,
        ip_policy: IpFilter,
        *,
        verify_certificates: bool,
        https_port: int = 443,
        timeout_s: float = TIMEOUT_S,
    ) -> None:
        self._reactor = reactor
        self._ip_policy = ip_policy
        self._verify = verify_certificates
        self._https_port = https_port
        self._timeout_s = timeout_s
        self._pool = HTTPConnectionPool(reactor, persistent=False)

    async def __call__(self, host: str) -> tuple[int, bytes, float | None]:
        d = defer.ensureDeferred(self._fetch(host))
        d.addTimeout(self._timeout_s, self._reactor)
        return await d

    async def _fetch(self, host: str) -> tuple[int, bytes, float | None]:
        url = f"https://{host}/.well-known/matrix/server"
        for _ in range(MAX_REDIRECTS + 1):
            response = await self._get(url)
            if response.code not in REDIRECT_CODES:
                try:
                    body = await read_limited(response, WELL_KNOWN_MAX_BYTES)
                except BodyTooLarge as e:
                    raise WellKnownError(str(e)) from None
                return response.code, body, max_age(response)
            discard_body(response)
            location = response.headers.getRawHeaders(b"location") or []
            if not location:
                raise WellKnownError(f"{url}: redirect without a Location")
            url = urljoin(url, location[0].decode("ascii", "replace"))
        raise WellKnownError(f"More than {MAX_REDIRECTS} redirects looking up {host}")

    async def _get(self, url: str) -> IResponse:
        parts = urlsplit(url)
        hostname = parts.hostname
        if parts.scheme != "https" or not hostname:
            raise WellKnownError(f"Refusing to fetch {url!r}")
        try:
            port = parts.port or self._https_port
        except ValueError:
            raise WellKnownError(f"Bad port in {url!r}") from None
        ip = await resolve_ip(self._reactor, hostname)
        if not self._ip_policy.allows(ip):
            raise WellKnownError(f"{hostname} resolves to {ip}, which is blacklisted")
        target = f"[{ip}]" if ":" in ip else ip
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        host_header = f"[{hostname}]" if ":" in hostname else hostname
        if parts.port is not None:
            host_header += f":{parts.port}"
        agent = Agent(
            self._reactor,
            contextFactory=FixedNamePolicy(hostname, self._verify),
            pool=self._pool,
            connectTimeout=self._timeout_s,
        )
        headers = Headers({b"Host": [host_header.encode()], b"User-Agent": [b"homeserver"]})
        response: IResponse = await agent.request(
            b"GET", f"https://{target}:{port}{path}".encode(), headers
        )
        return response


def max_age(response: IResponse) -> float | None:
    for value in response.headers.getRawHeaders(b"cache-control") or []:
        m = re.search(rb"max-age=(\d+)", value)
        if m:
            return float(m.group(1))
    return None
