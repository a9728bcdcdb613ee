"""The HTTP edge: routing, JSON out, Matrix errors, CORS and body limits.

Handlers are ``async def handler(request, **path_params) -> (status, json_body)``; a
handler whose body is not JSON (media) returns a ``RawResponse`` as the body, which
writes itself. Request bodies are limited by ``max_request_body_size``, except media
uploads (``MEDIA_UPLOAD_PATH``), limited by ``max_upload_size``; bodies past 100 KB are
spooled to an anonymous temporary file (uploads: in the site's ``upload_spool_dir``, the
media store's own disk), never held in memory.
Every error leaves through ``respond_error`` exactly once: ``MatrixError`` becomes its
status and body, anything else is logged with the request id and answered
500 ``M_UNKNOWN`` without a traceback.
"""

from __future__ import annotations

import abc
import itertools
import json
import logging
import re
import tempfile
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from twisted.internet import defer
from twisted.internet.protocol import connectionDone
from twisted.python.failure import Failure
from twisted.web import resource, server
from twisted.web.http import HTTPChannel
from twisted.web.http_headers import Headers
from twisted.web.server import NOT_DONE_YET

from homeserver.clock import DelayedCall
from homeserver.errors import Codes, MatrixError
from homeserver.logging_context import current_request_id
from homeserver.metrics import (
    REQUESTS_RECEIVED,
    RESPONSE_COUNT,
    RESPONSE_DB_SCHED_DURATION,
    RESPONSE_DB_TXN_COUNT,
    RESPONSE_DB_TXN_DURATION,
    RESPONSE_SIZE,
    RESPONSE_TIME,
    RESPONSES,
    current_db_usage,
)
from homeserver.untrusted import utf8_json

logger = logging.getLogger(__name__)

JsonDict = dict[str, Any]
Handler = Callable[..., Awaitable[tuple[int, Any]]]

_request_counter = itertools.count(1)

CORS_HEADERS = {
    b"Access-Control-Allow-Origin": b"*",
    b"Access-Control-Allow-Methods": b"GET, HEAD, POST, PUT, DELETE, OPTIONS",
    b"Access-Control-Allow-Headers": b"X-Requested-With, Content-Type, Authorization, Date",
    b"Access-Control-Expose-Headers": b"ETag, Retry-After",
}


# Media uploads: their bodies are limited by max_upload_size, not max_request_body_size.
MEDIA_UPLOAD_PATH = re.compile(rb"^/_matrix/media/(?:r0|v1|v3)/upload(?:[/?]|$)")


class MatrixRequest(server.Request):
    """A request that stops buffering once its body passes its limit.

    Once it ends (answered, or its connection lost first) it is counted in the request
    metrics and written to the access log, exactly once (``_log_finished``).
    """

    max_body_size: int = 10 * 1024 * 1024
    max_upload_size: int = 50 * 1024 * 1024
    upload_spool_dir: str | None = None
    # Set when known (class defaults until then: no per-request cost for most requests).
    servlet_name = "unrecognised"  # the route pattern that handled it: the metrics label
    requester: str | None = None  # who it was authenticated as, for the access log
    processed_at: float | None = None  # when its handler was done
    user_agent: str | None = None  # kept by release_input for the access log
    # Database transactions run for it (homeserver.metrics.record_db_usage).
    db_txn_count = 0
    db_txn_duration = 0.0
    db_sched_duration = 0.0
    _logged = False

    def __init__(self, channel: HTTPChannel, queued: bool = False) -> None:
        super().__init__(channel, queued)
        self.request_id = f"req-{next(_request_counter)}"
        self.start_time = time.time()
        self.body_too_large = False
        self.body_limit = self.max_body_size
        self._body_bytes = 0
        # The handling of this request, cancelled if the client goes away first (instead
        # of a notifyFinish Deferred and two errback closures per request: a long-poll
        # holds them for its whole wait).
        self.handling: defer.Deferred[None] | PendingResponse | None = None
        # Run once when the handler is done (answered, failed or cancelled): frees what
        # the request held while it ran (its rc_federation slot).
        self.after_handling: Callable[[], None] | None = None

    def release_input(self) -> None:
        """Forget the request's input once it has been parsed: for a request that then
        waits long before answering (a /sync long-poll), which keeps only what
        answering needs (method, path, response headers, the connection) and the user
        agent for its access-log line."""
        self.user_agent = self.getHeader("user-agent")
        self.requestHeaders = Headers()
        self.received_cookies = {}
        self.args = {}
        self.uri = self.path  # the query string may hold an access token, too
        self.prepath = []
        self.postpath = []
        if self.content is not None:
            self.content.close()
            self.content = None

    def connectionLost(self, reason: Failure) -> None:
        super().connectionLost(reason)
        handling, self.handling = self.handling, None
        if handling is not None:
            handling.cancel()
        if not self.finished and getattr(self, "path", None) is not None:
            self._log_finished(completed=False)  # the client left before the answer was sent

    def _log_finished(self, *, completed: bool) -> None:
        """Count the request in the metrics and write its access-log line (Synapse's
        format, ``synapse.access.http.<port>``); the URI without its access token."""
        if self._logged:
            return
        self._logged = True
        site = self.site if isinstance(self.site, MatrixSite) else None
        finish_time = time.time()
        processed = self.processed_at if self.processed_at is not None else finish_time
        method = self.method.decode("ascii", "replace")
        code = str(int(self.code))
        servlet = self.servlet_name
        RESPONSES.labels(method, code).inc()
        RESPONSE_COUNT.labels(method, servlet, "").inc()
        RESPONSE_TIME.labels(method, servlet, "", code).observe(finish_time - self.start_time)
        RESPONSE_SIZE.labels(method, servlet, "").inc(self.sentLength)
        if self.db_txn_count:
            RESPONSE_DB_TXN_COUNT.labels(method, servlet, "").inc(self.db_txn_count)
            RESPONSE_DB_TXN_DURATION.labels(method, servlet, "").inc(self.db_txn_duration)
            RESPONSE_DB_SCHED_DURATION.labels(method, servlet, "").inc(self.db_sched_duration)
        access = site.access_logger if site is not None else _fallback_access_logger
        if not access.isEnabledFor(logging.INFO):
            return
        if not completed:
            code += "!"  # as Synapse: the response was not all sent
        user_agent = self.user_agent or self.getHeader("user-agent")
        access.info(
            "%s - %s - {%s} Processed request: %.3fsec/%.3fsec ru=(%.3fsec, %.3fsec)"
            ' db=(%.3fsec/%.3fsec/%d) %sB %s "%s %s %s" "%s" [%d dbevts]',
            self.client_ip(),
            site.site_tag if site is not None else "-",
            self.requester or "None",
            processed - self.start_time,
            finish_time - processed,
            0.0,
            0.0,
            self.db_sched_duration,
            self.db_txn_duration,
            self.db_txn_count,
            self.sentLength,
            code,
            method,
            redact_uri(self.uri),
            self.clientproto.decode("ascii", "replace"),
            user_agent or "-",
            0,
        )

    def _is_upload(self) -> bool:
        # Called once the headers are in: the request line is still only on the channel.
        method = getattr(self.channel, "_command", b"")
        path = getattr(self.channel, "_path", b"")
        return method in (b"POST", b"PUT") and bool(MEDIA_UPLOAD_PATH.match(path or b""))

    def gotLength(self, length: int | None) -> None:
        upload = self._is_upload()
        self.body_limit = self.max_upload_size if upload else self.max_body_size
        if length is not None and length > self.body_limit:
            self.body_too_large = True
        if upload and not self.body_too_large and (length is None or length >= 100_000):
            self.content = tempfile.TemporaryFile(dir=self.upload_spool_dir)  # noqa: SIM115
            return
        super().gotLength(length if not self.body_too_large else 0)

    def handleContentChunk(self, data: bytes) -> None:
        if self.body_too_large:
            return
        self._body_bytes += len(data)
        if self._body_bytes > self.body_limit:
            self.body_too_large = True
            if self.content is not None:
                self.content.seek(0)
                self.content.truncate()
            return
        super().handleContentChunk(data)

    def client_ip(self) -> str:
        """The peer address, or X-Forwarded-For's first hop behind a trusted proxy."""
        if getattr(self.site, "x_forwarded", False):
            forwarded = self.getHeader("x-forwarded-for")
            if forwarded:
                return forwarded.split(",")[0].strip()
        peer = self.getClientAddress()
        return getattr(peer, "host", "unknown")


class MatrixChannel(HTTPChannel):
    """An HTTP/1.1 connection that leaves its site's ``open_channels`` when it closes.

    Deadlines: a request's line and headers must all arrive within the site's
    ``head_timeout`` of their first byte (Twisted's idle ``timeOut`` restarts on every
    byte, so a header line trickled every few seconds would hold the connection for
    ever); the body, and an idle keep-alive connection, have the idle ``timeOut``; a
    request being answered (a long-poll, a download) has neither.
    """

    site: MatrixSite
    _host: Any = None
    _head_deadline: DelayedCall | None = None
    _in_body = False

    def dataReceived(self, data: bytes) -> None:
        if (
            self._head_deadline is None
            and not self._in_body
            and not self._handlingRequest
            and self.site.head_timeout
        ):
            self._head_deadline = self.callLater(self.site.head_timeout, self._head_timed_out)
        super().dataReceived(data)

    def allHeadersReceived(self) -> None:
        self._cancel_head_deadline()
        self._in_body = True
        super().allHeadersReceived()

    def allContentReceived(self) -> None:
        self._in_body = False
        super().allContentReceived()

    def _head_timed_out(self) -> None:
        self._head_deadline = None
        transport: Any = self.transport
        logger.info("Closing a connection that sent no whole request head in time")
        if transport is not None:
            transport.abortConnection()

    def _cancel_head_deadline(self) -> None:
        deadline, self._head_deadline = self._head_deadline, None
        if deadline is not None and deadline.active():
            deadline.cancel()

    def getHost(self) -> Any:  # type: ignore[misc]  # Twisted declares it as an attribute
        # Each request asks (Request.__init__); the local address of a connection never
        # changes, and asking the transport is a getsockname() system call every time.
        if self._host is None:
            transport: Any = self.transport
            self._host = transport.getHost()
        return self._host

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._cancel_head_deadline()
        self.site.open_channels.discard(self)
        super().connectionLost(reason)


class MatrixSite(server.Site):
    def __init__(
        self,
        root: resource.Resource,
        *,
        max_body_size: int,
        x_forwarded: bool,
        max_upload_size: int | None = None,
        upload_spool_dir: str | None = None,
        head_timeout: float = 30.0,
        idle_timeout: float = 60.0,
        site_tag: str = "-",
    ) -> None:
        super().__init__(root)
        self.x_forwarded = x_forwarded
        # As Synapse: the listener's port tags its access log lines and logger name.
        self.site_tag = site_tag
        self.access_logger = logging.getLogger(f"synapse.access.http.{site_tag}")
        self.noisy = False
        self.head_timeout = head_timeout  # seconds; see MatrixChannel
        self.timeOut = idle_timeout
        limit = max_body_size
        upload_limit = max_upload_size if max_upload_size is not None else max_body_size
        spool_dir = upload_spool_dir

        class _Request(MatrixRequest):
            max_body_size = limit
            max_upload_size = upload_limit
            upload_spool_dir = spool_dir

        self.requestFactory = _Request  # type: ignore[assignment]
        # Tracked, so shutting down can close idle keep-alive connections.
        self.open_channels: set[Any] = set()

    # HTTP/1.1 only: TLS listeners offer no ALPN, so h2 is never negotiated and Twisted's
    # protocol-switching proxy around each channel would be one more object per connection.
    protocol = MatrixChannel  # type: ignore[assignment]

    def buildProtocol(self, addr: Any) -> Any:
        channel = super().buildProtocol(addr)
        if channel is not None:
            self.open_channels.add(channel)
        return channel

    def close_connections(self) -> None:
        for channel in list(self.open_channels):
            # Site wraps each HTTPChannel in a protocol proxy; the transport is on the inner one.
            inner = getattr(channel, "_channel", channel)
            transport = getattr(inner, "transport", None) or getattr(channel, "transport", None)
            if transport is not None:
                transport.abortConnection()

    def log(self, request: Any) -> None:
        # Called by Request.finish (before it sets ``finished``): metrics, access log.
        if isinstance(request, MatrixRequest):
            request._log_finished(completed=True)


_fallback_access_logger = logging.getLogger("synapse.access.http")

_ACCESS_TOKEN_PARAM = re.compile(rb"(?<=[?&])access_token=[^&]*")


def redact_uri(uri: bytes) -> str:
    """The request URI for logs: an ``access_token`` query parameter's value hidden."""
    if b"access_token=" in uri:
        uri = _ACCESS_TOKEN_PARAM.sub(b"access_token=<redacted>", uri)
    return uri.decode("ascii", "replace")


class PendingResponse(abc.ABC):
    """A response not ready yet whose wait needs no coroutine (a parked /sync long-poll).

    A handler returns one as its body; ``_dispatch`` then ends (its coroutine and the
    handler's with it) and calls ``start``, after which the object answers the request
    itself, through ``respond_json`` or ``respond_error``, and clears
    ``request.handling``. ``cancel`` is called instead if the client goes away first.
    """

    __slots__ = ()

    @abc.abstractmethod
    def start(self, request: MatrixRequest) -> None:
        """Wait, then answer ``request``; ``request.handling`` is this object meanwhile."""

    @abc.abstractmethod
    def cancel(self) -> None:
        """The client went away: stop waiting or working, answer nothing."""


class RawResponse(abc.ABC):
    """A response body that is not JSON (a file, a multipart document): it writes itself."""

    @abc.abstractmethod
    async def write(self, request: MatrixRequest, status: int) -> None:
        """Set the headers, write the body (none for HEAD) and finish ``request``."""


@dataclass(frozen=True)
class Route:
    method: str
    regex: re.Pattern[str]
    handler: Handler
    pattern: str


def compile_pattern(pattern: str) -> re.Pattern[str]:
    """'/profile/{userId}/displayname' -> a regex with a named group per parameter.
    A parameter written ``{name*}`` matches the rest of the path, slashes and empty
    segments included (a catch-all below a prefix)."""
    parts = re.split(r"(\{[A-Za-z_]+\*?\})", pattern)

    def part_regex(p: str) -> str:
        if not (p.startswith("{") and p.endswith("}")):
            return re.escape(p)
        if p.endswith("*}"):
            return f"(?P<{p[1:-2]}>.*)"
        return f"(?P<{p[1:-1]}>[^/]+)"

    return re.compile(f"^{''.join(part_regex(p) for p in parts)}$")


class EncodedJson:
    """A response body a servlet encoded itself (/sync splices shared parts in)."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data


def refuse_nul(params: dict[str, str], args: dict[bytes, list[bytes]] | None) -> None:
    """No path or query parameter may hold U+0000: no Matrix identifier, token or name
    has one, and PostgreSQL cannot compare or store it (a ValueError, once a 500)."""
    if any("\x00" in value for value in params.values()) or any(
        b"\x00" in name or any(b"\x00" in value for value in values)
        for name, values in (args or {}).items()
    ):
        raise MatrixError(400, Codes.INVALID_PARAM, "NUL characters are not allowed in parameters")


def respond_json(
    request: server.Request, status: int, body: Any, headers: dict[str, str] | None = None
) -> None:
    if request.finished or request._disconnected:  # type: ignore[attr-defined]
        return
    if isinstance(body, EncodedJson):
        payload = body.data
    else:
        payload = utf8_json(json.dumps(body, ensure_ascii=False, separators=(",", ":")))
    request.setResponseCode(status)
    request.setHeader(b"Content-Type", b"application/json")
    request.setHeader(b"Content-Length", str(len(payload)).encode())
    request.setHeader(b"Cache-Control", b"no-cache, no-store, must-revalidate")
    for cors_name, cors_value in CORS_HEADERS.items():
        request.setHeader(cors_name, cors_value)
    for name, value in (headers or {}).items():
        request.setHeader(name.encode(), value.encode())
    if request.method == b"HEAD":
        request.finish()
        return
    request.write(payload)
    request.finish()


def respond_error(request: MatrixRequest, exc: BaseException) -> None:
    """Answer ``request`` with ``exc`` as a Matrix error (nothing if the client left)."""
    if isinstance(exc, MatrixError):
        if exc.status >= 500:
            logger.error("[%s] %s: %s", request.request_id, exc.errcode, exc.message)
        respond_json(request, exc.status, exc.to_json(), exc.headers)
        return
    if isinstance(exc, defer.CancelledError):
        return
    logger.error(
        "[%s] Request failed: %s %s",
        request.request_id,
        request.method.decode(),
        request.path.decode("utf-8", "replace"),
        exc_info=exc,
    )
    respond_json(request, 500, {"errcode": Codes.UNKNOWN, "error": "Internal server error"})


class JsonResource(resource.Resource):
    """A leaf resource routing every path below it to registered handlers."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self._routes: list[Route] = []
        # Paths that are whole patterns without parameters (/sync, /versions, ...):
        # their match, found once by the ordered scan, by (method, path).
        self._literal_paths: set[str] = set()
        self._literal_matches: dict[tuple[str, str], tuple[Route | None, dict[str, str]]] = {}

    def register(self, method: str, pattern: str, handler: Handler) -> None:
        self._routes.append(Route(method, compile_pattern(pattern), handler, pattern))
        if "{" not in pattern:
            self._literal_paths.add(pattern)
        self._literal_matches.clear()

    def register_many(self, method: str, patterns: list[str], handler: Handler) -> None:
        for pattern in patterns:
            self.register(method, pattern, handler)

    def render(self, request: server.Request) -> Any:
        assert isinstance(request, MatrixRequest)
        token = current_request_id.set(request.request_id)
        usage_token = current_db_usage.set(request)
        try:
            handling = defer.ensureDeferred(self._dispatch(request))
            if not handling.called:
                request.handling = handling  # cancelled by request.connectionLost
            return NOT_DONE_YET
        finally:
            current_db_usage.reset(usage_token)
            current_request_id.reset(token)

    async def _dispatch(self, request: MatrixRequest) -> None:
        """Route and answer ``request``; every error is answered here, none escapes.
        One coroutine and no callbacks per request: a long-poll holds them for its wait."""
        parked = False
        try:
            route, params = self._match(request)
            if route is None:  # OPTIONS
                respond_json(request, 200, {})
                return
            request.servlet_name = route.pattern
            REQUESTS_RECEIVED.labels(request.method.decode("ascii", "replace"), route.pattern).inc()
            refuse_nul(params, request.args)
            result = await route.handler(request, **params)
            status, body = result[0], result[1]
            if isinstance(body, PendingResponse):
                parked = True
                request.handling = body
                body.start(request)  # it answers (and clears request.handling) itself
                return
            if isinstance(body, RawResponse):
                await _write_raw(request, status, body)
                return
            headers = result[2] if len(result) > 2 else None  # type: ignore[misc]
            respond_json(request, status, body, headers)
        except Exception as e:  # CancelledError included: the client went away
            request.handling = None
            respond_error(request, e)
        finally:
            if not parked:
                request.handling = None
                request.processed_at = time.time()
            after, request.after_handling = request.after_handling, None
            if after is not None:
                after()

    def _match(self, request: MatrixRequest) -> tuple[Route | None, dict[str, str]]:
        """The route for ``request`` and its path parameters; (None, {}) for OPTIONS."""
        method = request.method.decode("ascii", "replace")
        # request.path keeps percent-encoding, so a %2F inside a parameter stays one segment.
        path = request.path.decode("ascii", "replace")
        if method == "OPTIONS":
            return None, {}
        if request.body_too_large:
            raise MatrixError(413, Codes.TOO_LARGE, "Request body too large")
        lookup_method = "GET" if method == "HEAD" else method
        if path in self._literal_paths:
            key = (lookup_method, path)
            try:
                found = self._literal_matches[key]
            except KeyError:
                found = self._literal_matches[key] = self._scan(lookup_method, path)[:2]
            if found[0] is None:
                raise MatrixError(
                    405, Codes.UNRECOGNIZED, f"Unsupported method {method} for {path}"
                )
            return found[0], dict(found[1])
        route, params, path_matched = self._scan(lookup_method, path)
        if route is not None:
            return route, params
        if path_matched:
            raise MatrixError(405, Codes.UNRECOGNIZED, f"Unsupported method {method} for {path}")
        raise MatrixError(404, Codes.UNRECOGNIZED, "Unrecognized request")

    def _scan(self, lookup_method: str, path: str) -> tuple[Route | None, dict[str, str], bool]:
        """The first route (in registration order) for the method and path, its
        parameters, and whether any route matched the path at all."""
        path_matched = False
        for route in self._routes:
            match = route.regex.match(path)
            if match is None:
                continue
            path_matched = True
            if route.method != lookup_method:
                continue
            return route, _path_params(match), True
        return None, {}, path_matched


def _path_params(match: re.Match[str]) -> dict[str, str]:
    """Percent-decoded path parameters; 400 if one is not UTF-8 (never U+FFFD in a
    room id or state key)."""
    try:
        return {k: urllib.parse.unquote(v, errors="strict") for k, v in match.groupdict().items()}
    except UnicodeDecodeError:
        raise MatrixError(400, Codes.INVALID_PARAM, "Path parameters must be UTF-8") from None


async def _write_raw(request: MatrixRequest, status: int, body: RawResponse) -> None:
    request.defaultContentType = None  # the body sets its own (none for 304/416)
    for cors_name, cors_value in CORS_HEADERS.items():
        request.setHeader(cors_name, cors_value)
    try:
        await body.write(request, status)
    except defer.CancelledError:
        raise  # the client went away
    except Exception:
        if not request.startedWriting:
            raise  # nothing sent yet: answered as any other error
        # Mid-body there is no way to report an error but cutting the connection.
        logger.exception("[%s] Failed while streaming a response", request.request_id)
        if request.channel is not None and request.channel.transport is not None:
            request.channel.transport.abortConnection()
