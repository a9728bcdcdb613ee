"""URL previews: fetch a page (or image) for a user and describe it with OpenGraph keys.

Invariants:
- Every connection, including each redirect hop, goes through a resolver that refuses
  blocked addresses (``url_preview_ip_range_blacklist`` minus the whitelist; ``0.0.0.0``
  and ``::`` always): if any address a name resolves to is blocked, none is used. IP
  literals go through the same resolver, so no URL form slips past the check.
- A fetch reads at most ``max_spider_size`` bytes and gives up after ``timeout_s``.
- Only http(s) URLs are fetched. Images found are stored as media marked ``url_cache``
  (outside the user's quota) and returned as ``mxc://`` URIs.
"""

from __future__ import annotations

import html.parser
import io
import ipaddress
import logging
import re
import time
import urllib.parse
from dataclasses import dataclass
from typing import Any, cast

import treq
from hyperlink import EncodedURL
from twisted.internet import defer
from twisted.internet.error import DNSLookupError
from twisted.internet.interfaces import IHostnameResolver, IResolutionReceiver
from twisted.web.client import Agent, HTTPConnectionPool, RedirectAgent
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgent
from zope.interface import directlyProvides, implementer, providedBy

from homeserver.errors import Codes, MatrixError
from homeserver.http.ip_filter import IpFilter
from homeserver.media.repository import MediaRepository

logger = logging.getLogger(__name__)

USER_AGENT = b"homeserver (bot; URL preview)"
CACHE_TTL_S = 3600.0
CACHE_SIZE = 1000


class AddressBlocked(Exception):
    pass


@implementer(IResolutionReceiver)
class _FilteringReceiver:
    def __init__(self, receiver: Any, ip_filter: IpFilter, on_blocked: Any) -> None:
        self._receiver = receiver
        self._filter = ip_filter
        self._on_blocked = on_blocked
        self._addresses: list[Any] = []

    def resolutionBegan(self, resolution: Any) -> None:
        self._receiver.resolutionBegan(resolution)

    def addressResolved(self, address: Any) -> None:
        self._addresses.append(address)

    def resolutionComplete(self) -> None:
        addresses = self._addresses
        if any(not self._filter.allows(getattr(a, "host", "")) for a in addresses):
            logger.info("URL preview: refusing blocked address(es) %s", addresses)
            self._on_blocked()
            addresses = []
        for address in addresses:
            self._receiver.addressResolved(address)
        self._receiver.resolutionComplete()


@implementer(IHostnameResolver)
class _BlocklistingResolver:
    def __init__(self, real: Any, ip_filter: IpFilter, on_blocked: Any) -> None:
        self._real = real
        self._filter = ip_filter
        self._on_blocked = on_blocked

    def resolveHostName(
        self,
        resolutionReceiver: Any,
        hostName: str,
        portNumber: int = 0,
        addressTypes: Any = None,
        transportSemantics: str = "TCP",
    ) -> Any:
        receiver = _FilteringReceiver(resolutionReceiver, self._filter, self._on_blocked)
        return self._real.resolveHostName(
            receiver, hostName, portNumber, addressTypes, transportSemantics
        )


class _ResolverReactor:
    """The reactor, but with a name resolver that refuses blocked addresses."""

    def __init__(self, reactor: Any, resolver: _BlocklistingResolver) -> None:
        self._reactor = reactor
        self.nameResolver = resolver
        directlyProvides(self, providedBy(reactor))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._reactor, name)


def filtering_agent(
    reactor: Any,
    ip_filter: IpFilter,
    on_blocked: Any,
    *,
    connect_timeout: float = 10,
    pool: HTTPConnectionPool | None = None,
) -> IAgent:
    """An agent that never connects to a blocked address (no persistent connections
    unless given a ``pool``)."""
    resolver = _BlocklistingResolver(reactor.nameResolver, ip_filter, on_blocked)
    filtered = _ResolverReactor(reactor, resolver)
    return cast(
        IAgent,
        Agent(
            filtered,
            pool=pool or HTTPConnectionPool(filtered, persistent=False),
            connectTimeout=connect_timeout,
        ),
    )


@dataclass(frozen=True, slots=True)
class Fetched:
    url: str
    content_type: str
    body: bytes


class UrlPreviewer:
    def __init__(
        self,
        repository: MediaRepository,
        reactor: Any,
        *,
        ip_blacklist: list[str],
        ip_whitelist: list[str],
        max_size: int,
        timeout_s: float = 20.0,
    ) -> None:
        self._repo = repository
        self._reactor = reactor
        self._filter = IpFilter(ip_blacklist, ip_whitelist)
        self._max_size = max_size
        self._timeout_s = timeout_s
        self._cache: dict[str, tuple[float, dict[str, Any]]] = {}

    async def preview(self, url: str, user_id: str) -> dict[str, Any]:
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise MatrixError(400, Codes.UNKNOWN, "Invalid URL")
        now = self._reactor.seconds()
        cached = self._cache.get(url)
        if cached is not None and cached[0] > now:
            return dict(cached[1])
        fetched = await self._fetch(url)
        media_type = fetched.content_type.split(";", 1)[0].strip().lower()
        og: dict[str, Any]
        if media_type.startswith("image/"):
            og = await self._image_og(fetched, user_id)
        elif media_type in ("text/html", "application/xhtml+xml"):
            og = parse_html(fetched.body, _charset(fetched.content_type))
            image_url = og.get("og:image")
            og.pop("og:image", None)
            if isinstance(image_url, str) and image_url:
                og.update(await self._linked_image(fetched.url, image_url, user_id))
        else:
            og = {}
        if len(self._cache) >= CACHE_SIZE:
            self._cache = {k: v for k, v in self._cache.items() if v[0] > now}
            if len(self._cache) >= CACHE_SIZE:
                self._cache.clear()
        self._cache[url] = (now + CACHE_TTL_S, og)
        return dict(og)

    async def _linked_image(self, page_url: str, image_url: str, user_id: str) -> dict[str, Any]:
        absolute = urllib.parse.urljoin(page_url, image_url)
        if urllib.parse.urlsplit(absolute).scheme not in ("http", "https"):
            return {}
        try:
            image = await self._fetch(absolute)
        except MatrixError as e:
            logger.info("URL preview: no image from %s: %s", absolute, e.message)
            return {}
        if not image.content_type.lower().startswith("image/"):
            return {}
        return await self._image_og(image, user_id)

    async def _image_og(self, fetched: Fetched, user_id: str) -> dict[str, Any]:
        content_type = fetched.content_type.split(";", 1)[0].strip()
        name = urllib.parse.unquote(urllib.parse.urlsplit(fetched.url).path.rsplit("/", 1)[-1])
        mxc = await self._repo.upload(
            user_id, io.BytesIO(fetched.body), content_type, name or None, url_cache=True
        )
        og: dict[str, Any] = {
            "og:image": mxc,
            "og:image:type": content_type,
            "matrix:image:size": len(fetched.body),
        }
        record = await self._repo.get_local_media(mxc.rsplit("/", 1)[1], 0)
        if record.image_width and record.image_height:
            og["og:image:width"] = record.image_width
            og["og:image:height"] = record.image_height
        return og

    async def _fetch(self, url: str) -> Fetched:
        blocked: list[bool] = []
        agent = filtering_agent(self._reactor, self._filter, lambda: blocked.append(True))
        d = defer.ensureDeferred(self._get(agent, url))
        d.addTimeout(self._timeout_s, self._reactor)
        started = time.monotonic()
        try:
            return await d
        except MatrixError:
            raise
        except DNSLookupError:
            if blocked:
                raise MatrixError(403, Codes.UNKNOWN, "IP address blocked") from None
            raise MatrixError(502, Codes.UNKNOWN, "Could not resolve the URL's host") from None
        except defer.TimeoutError:
            raise MatrixError(504, Codes.UNKNOWN, "Timed out fetching the URL") from None
        except Exception as e:
            if blocked:
                raise MatrixError(403, Codes.UNKNOWN, "IP address blocked") from None
            logger.info(
                "URL preview of %s failed after %.1fs: %r", url, time.monotonic() - started, e
            )
            raise MatrixError(502, Codes.UNKNOWN, "Failed to fetch the URL") from None

    async def _get(self, agent: IAgent, url: str) -> Fetched:
        # The agent itself, not treq.get: treq IDNA-encodes every host, which an IPv6
        # literal (http://[2001:db8::1]/) fails.
        response = await RedirectAgent(agent).request(
            b"GET",
            request_uri(url),
            Headers({b"User-Agent": [USER_AGENT], b"Accept-Language": [b"en"]}),
        )
        if response.code != 200:
            await treq.content(response)  # drain
            raise MatrixError(502, Codes.UNKNOWN, f"The URL answered {response.code}")
        length = response.length
        if isinstance(length, int) and length > self._max_size:
            raise MatrixError(502, Codes.TOO_LARGE, "The URL's content is too large")
        chunks: list[bytes] = []
        received = [0]

        def collect(data: bytes) -> None:
            received[0] += len(data)
            if received[0] > self._max_size:
                raise _TooLarge()
            chunks.append(data)

        try:
            await treq.collect(response, collect)
        except _TooLarge:
            raise MatrixError(502, Codes.TOO_LARGE, "The URL's content is too large") from None
        content_type = (response.headers.getRawHeaders("content-type") or [""])[0]
        return Fetched(str(response.request.absoluteURI.decode()), content_type, b"".join(chunks))


class _TooLarge(Exception):
    pass


def request_uri(url: str) -> bytes:
    """``url`` as the ASCII bytes of an HTTP request: the path and query percent-encoded,
    a host name IDNA-encoded, an IP literal (IPv6 in brackets) kept as it is."""
    try:
        parsed = EncodedURL.from_text(url)
        host = parsed.host
        try:
            ipaddress.ip_address(host)
        except ValueError:
            return str(parsed.to_uri().to_text()).encode("ascii")
        encoded = parsed.replace(host="ip-literal.invalid").to_uri().replace(host=host)
        return str(encoded.to_text()).encode("ascii")
    except (ValueError, UnicodeError):
        raise MatrixError(400, Codes.UNKNOWN, "Invalid URL") from None


_CHARSET_RE = re.compile(rb"""<meta[^>]+charset\s*=\s*['"]?([A-Za-z0-9_.:-]+)""", re.IGNORECASE)


def _charset(content_type: str) -> str | None:
    m = re.search(r"charset\s*=\s*['\"]?([A-Za-z0-9_.:-]+)", content_type, re.IGNORECASE)
    return m.group(1) if m else None


class _OgParser(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.og: dict[str, str] = {}
        self.description: str | None = None
        self.title: str | None = None
        self._in_title = False
        self._title_parts: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "title" and self.title is None:
            self._in_title = True
        if tag != "meta":
            return
        attributes = {k.lower(): v for k, v in attrs if v is not None}
        key = attributes.get("property") or attributes.get("name") or ""
        content = attributes.get("content")
        if content is None:
            return
        if key.startswith("og:") and key not in self.og and len(self.og) < 50:
            self.og[key] = content[:1000]
        elif key.lower() == "description" and self.description is None:
            self.description = content[:1000]

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self._title_parts.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "title" and self._in_title:
            self._in_title = False
            self.title = " ".join("".join(self._title_parts).split())[:1000]


def parse_html(body: bytes, charset: str | None) -> dict[str, Any]:
    """OpenGraph keys of a page; ``<title>`` and the meta description fill the gaps."""
    if charset is None:
        m = _CHARSET_RE.search(body[:2048])
        charset = m.group(1).decode("ascii") if m else "utf-8"
    try:
        text = body.decode(charset, errors="replace")
    except LookupError:
        text = body.decode("utf-8", errors="replace")
    parser = _OgParser()
    try:
        parser.feed(text)
        parser.close()
    except Exception as e:  # html.parser is lenient; be safe anyway
        logger.info("URL preview: HTML parse error: %s", e)
    og: dict[str, Any] = dict(parser.og)
    if "og:title" not in og and parser.title:
        og["og:title"] = parser.title
    if "og:description" not in og and parser.description:
        og["og:description"] = parser.description
    return og
