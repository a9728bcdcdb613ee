"""Fetching another server's media over federation, streamed into our media store.

``GET /_matrix/federation/v1/media/download/{mediaId}`` (signed with X-Matrix) answers
``multipart/mixed``: JSON metadata, then the file or a ``Location`` to fetch it from with
a plain GET. Servers that do not know that endpoint (404/400 ``M_UNRECOGNIZED``) are
asked the old way, ``/_matrix/media/v3/download/{server}/{id}?allow_remote=false``.

Invariants:
- Nothing of the file sits in memory: it is parsed as it arrives and written, in arrival
  order, to a temporary file in the store's spool directory on worker threads (reading
  pauses while too much waits to be written). The caller gets a complete, fsynced file
  or an error; every failure removes the temporary file.
- At most ``max_size`` bytes are accepted (a larger declared length is refused before
  reading); past it the connection is dropped: 502 ``M_TOO_LARGE``, as Synapse.
- Errors are Synapse's: the remote's 404 is 404 ``M_NOT_FOUND``, anything else
  (unreachable, timeout, malformed answer, other statuses) is 502.
- A ``Location`` (and its redirects, at most ``MAX_REDIRECTS``) is only followed over
  http(s), and only to addresses the federation IP range policy allows.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, BinaryIO, cast

import treq
from twisted.internet import defer, threads
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.web.client import BrowserLikeRedirectAgent, ResponseDone
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgent, IResponse

from federation.http_client import MatrixFederationHttpClient, error_from_response
from federation.interfaces import FederationRequestError
from homeserver.errors import Codes, MatrixError
from homeserver.http.ip_filter import IpFilter
from homeserver.media.headers import filename_from_disposition, is_valid_content_type
from homeserver.media.multipart import MultipartError, MultipartParser, boundary_of
from homeserver.media.preview import filtering_agent

logger = logging.getLogger(__name__)

FETCH_TIMEOUT_S = 120.0  # the whole transfer, past the remote's own wait (timeout_ms)
MAX_REDIRECTS = 5
MAX_ERROR_BODY = 64 * 1024
WRITE_CHUNK = 512 * 1024
_PAUSE_ABOVE = 4 * 1024 * 1024  # bytes waiting for a writer thread
_RESUME_BELOW = 1024 * 1024


@dataclass(frozen=True, slots=True)
class FetchedMedia:
    path: str  # complete and fsynced, in the store's spool directory; the caller owns it
    size: int
    sha256: str
    content_type: str
    upload_name: str | None


def failed_to_fetch() -> MatrixError:
    return MatrixError(502, Codes.UNKNOWN, "Failed to fetch remote media")


def too_large(max_size: int) -> MatrixError:
    return MatrixError(502, Codes.TOO_LARGE, f"Requested file is too large > {max_size} bytes")


class _TooLarge(Exception):
    pass


class _Spool:
    """A temporary file written on threads in arrival order, hashed and size-bounded."""

    def __init__(self, file: BinaryIO, path: str, max_size: int) -> None:
        self.path = path
        self.size = 0
        self.producer: Any = None  # the body's transport, paused while writes lag
        self._file = file
        self._max_size = max_size
        self._hash = hashlib.sha256()
        self._buffer: list[bytes] = []
        self._buffered = 0
        self._in_flight = 0
        self._paused = False
        self._tail: defer.Deferred[Any] = defer.succeed(None)

    @classmethod
    async def create(cls, directory: str, max_size: int) -> _Spool:
        def _open() -> tuple[BinaryIO, str]:
            fd, path = tempfile.mkstemp(dir=directory, prefix="remote-")
            return os.fdopen(fd, "wb"), path

        file, path = await threads.deferToThread(_open)
        return cls(file, path, max_size)

    def write(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > self._max_size:
            raise _TooLarge()
        self._hash.update(data)
        self._buffer.append(data)
        self._buffered += len(data)
        if self._buffered >= WRITE_CHUNK:
            self._flush()

    def _flush(self) -> None:
        if not self._buffer:
            return
        chunk = b"".join(self._buffer)
        self._buffer, self._buffered = [], 0
        self._in_flight += len(chunk)
        if self._in_flight > _PAUSE_ABOVE and not self._paused and self.producer is not None:
            self._paused = True
            self.producer.pauseProducing()
        self._tail.addCallback(lambda _: threads.deferToThread(self._file.write, chunk))
        self._tail.addCallback(self._written, len(chunk))

    def _written(self, _result: object, n: int) -> None:
        self._in_flight -= n
        if self._paused and self._in_flight < _RESUME_BELOW:
            self._paused = False
            try:
                self.producer.resumeProducing()
            except Exception:  # the body finished or was dropped meanwhile
                pass

    async def finish(self) -> tuple[int, str]:
        self._flush()
        await self._tail

        def _close() -> None:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()

        await threads.deferToThread(_close)
        return self.size, self._hash.hexdigest()

    async def discard(self) -> None:
        try:
            await self._tail
        except Exception:
            pass

        def _remove() -> None:
            self._file.close()
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass

        await threads.deferToThread(_remove)


class _BodyReceiver(Protocol):
    """Feeds a response body to ``feed``; ``finished`` fires at its end or first error."""

    def __init__(self, feed: Callable[[bytes], None], spool: _Spool) -> None:
        self._feed = feed
        self._spool = spool
        self.finished: defer.Deferred[None] = defer.Deferred(self._cancel)

    def connectionMade(self) -> None:
        self._spool.producer = self.transport

    def _cancel(self, _d: defer.Deferred[None]) -> None:
        if self.transport is not None:
            cast(Any, self.transport).stopProducing()

    def dataReceived(self, data: bytes) -> None:
        if self.finished.called:
            return
        try:
            self._feed(data)
        except Exception:
            failure = Failure()
            cast(Any, self.transport).stopProducing()
            if not self.finished.called:
                self.finished.errback(failure)

    def connectionLost(self, reason: Failure = Failure(ResponseDone())) -> None:
        self._spool.producer = None
        if self.finished.called:
            return
        if reason.check(ResponseDone, PotentialDataLoss):
            self.finished.callback(None)
        else:
            self.finished.errback(reason)


class RemoteMediaFetcher:
    def __init__(
        self,
        reactor: Any,
        client: MatrixFederationHttpClient,
        spool_dir: str,
        max_size: int,
        ip_filter: IpFilter,
    ) -> None:
        self._reactor = reactor
        self._client = client
        self._spool_dir = spool_dir
        self._max_size = max_size
        self._ip_filter = ip_filter

    def destination_allowed(self, server_name: str) -> bool:
        return self._client.destination_allowed(server_name)

    async def fetch(self, server_name: str, media_id: str, timeout_ms: int) -> FetchedMedia:
        """Download ``mxc://server_name/media_id``; a ``MatrixError`` when it cannot."""
        spool = await _Spool.create(self._spool_dir, self._max_size)
        try:
            work = defer.ensureDeferred(self._fetch(spool, server_name, media_id, timeout_ms))
            work.addTimeout(FETCH_TIMEOUT_S + timeout_ms / 1000, self._reactor)
            try:
                content_type, upload_name = await work
            except defer.TimeoutError:
                logger.info("Fetching %s/%s timed out", server_name, media_id)
                raise failed_to_fetch() from None
            size, sha256 = await spool.finish()
        except BaseException:
            await spool.discard()
            raise
        return FetchedMedia(spool.path, size, sha256, content_type, upload_name)

    async def _fetch(
        self, spool: _Spool, server_name: str, media_id: str, timeout_ms: int
    ) -> tuple[str, str | None]:
        quoted = urllib.parse.quote(media_id, safe="")
        response = await self._send(
            server_name, f"/_matrix/federation/v1/media/download/{quoted}", timeout_ms, {}
        )
        if response.code != 200:
            error = await self._error(server_name, response)
            if error.errcode == Codes.UNRECOGNIZED and error.code in (400, 404):
                return await self._fetch_legacy(spool, server_name, media_id, timeout_ms)
            raise self._matrix_error(server_name, media_id, error)
        self._check_length(response)
        try:
            parser = MultipartParser(
                boundary_of(_header(response.headers, b"content-type")), spool.write
            )
            await self._receive(response, parser.feed, spool)
            result = parser.finish()
        except MultipartError as e:
            logger.info("Malformed media answer from %s: %s", server_name, e)
            raise failed_to_fetch() from None
        if result.location is not None:
            return await self._follow(spool, result.location)
        return _describe(result.headers.get("content-type"), result.headers)

    async def _fetch_legacy(
        self, spool: _Spool, server_name: str, media_id: str, timeout_ms: int
    ) -> tuple[str, str | None]:
        path = "/_matrix/media/v3/download/{}/{}".format(
            urllib.parse.quote(server_name, safe=""), urllib.parse.quote(media_id, safe="")
        )
        # allow_remote=false: a server that does not know the name must not ask on.
        args = {"allow_remote": "false", "allow_redirect": "true"}
        response = await self._send(server_name, path, timeout_ms, args)
        if response.code in (301, 302, 303, 307, 308):
            location = _header(response.headers, b"location")
            await _drain(response)
            if location is None:
                raise failed_to_fetch()
            return await self._follow(spool, location)
        if response.code != 200:
            error = await self._error(server_name, response)
            raise self._matrix_error(server_name, media_id, error)
        self._check_length(response)
        await self._receive(response, spool.write, spool)
        return _describe_response(response)

    async def _follow(self, spool: _Spool, location: str) -> tuple[str, str | None]:
        """A plain GET of ``location`` (the file part said to fetch it from there)."""
        if urllib.parse.urlsplit(location).scheme not in ("http", "https"):
            raise failed_to_fetch()
        blocked: list[bool] = []
        agent = cast(
            IAgent,
            BrowserLikeRedirectAgent(
                filtering_agent(self._reactor, self._ip_filter, lambda: blocked.append(True)),
                redirectLimit=MAX_REDIRECTS,
            ),
        )
        try:
            response = await treq.get(
                location,
                agent=agent,
                headers=Headers({b"User-Agent": [b"homeserver"]}),
                unbuffered=True,
            )
        except Exception as e:
            logger.info("Fetching media from %s failed (blocked: %s): %r", location, blocked, e)
            raise failed_to_fetch() from None
        if response.code != 200:
            await _drain(response)
            raise failed_to_fetch()
        self._check_length(response)
        await self._receive(response, spool.write, spool)
        return _describe_response(response)

    async def _send(
        self, server_name: str, path: str, timeout_ms: int, args: dict[str, str]
    ) -> IResponse:
        try:
            return await self._client.send(
                "GET",
                server_name,
                path,
                args={**args, "timeout_ms": str(timeout_ms)},
                timeout_s=timeout_ms / 1000 + 20,
            )
        except FederationRequestError as e:
            logger.info("Fetching media from %s failed: %s", server_name, e)
            raise failed_to_fetch() from None

    async def _receive(
        self, response: IResponse, feed: Callable[[bytes], None], spool: _Spool
    ) -> None:
        receiver = _BodyReceiver(feed, spool)
        cast(Any, response).deliverBody(receiver)
        try:
            await receiver.finished
        except _TooLarge:
            raise too_large(self._max_size) from None
        except MultipartError:
            raise
        except defer.CancelledError:
            raise
        except Exception as e:
            logger.info("Reading remote media failed: %r", e)
            raise failed_to_fetch() from None

    def _check_length(self, response: IResponse) -> None:
        # The multipart framing adds a little to the file; the parser checks the file.
        if isinstance(response.length, int) and response.length > self._max_size + 64 * 1024:
            cast(Any, response).deliverBody(_Discard())
            raise too_large(self._max_size)

    async def _error(self, server_name: str, response: IResponse) -> FederationRequestError:
        chunks: list[bytes] = []
        received = [0]

        def collect(data: bytes) -> None:
            received[0] += len(data)
            if received[0] > MAX_ERROR_BODY:
                raise _TooLarge()
            chunks.append(data)

        try:
            await treq.collect(response, collect)
        except Exception:
            pass
        return error_from_response(server_name, response.code, b"".join(chunks))

    @staticmethod
    def _matrix_error(
        server_name: str, media_id: str, error: FederationRequestError
    ) -> MatrixError:
        logger.info("Fetching %s/%s: the remote answered %s", server_name, media_id, error)
        if error.code == 404:
            return MatrixError(404, Codes.NOT_FOUND, "Not found")
        return failed_to_fetch()


class _Discard(Protocol):
    def connectionMade(self) -> None:
        cast(Any, self.transport).stopProducing()


async def _drain(response: IResponse) -> None:
    cast(Any, response).deliverBody(_Discard())


def _header(headers: Headers, name: bytes) -> str | None:
    values = headers.getRawHeaders(name)
    return values[0].decode("latin-1") if values else None


def _describe(content_type: str | None, headers: dict[str, str]) -> tuple[str, str | None]:
    if not content_type or not is_valid_content_type(content_type.strip()):
        content_type = "application/octet-stream"
    return content_type.strip(), filename_from_disposition(headers.get("content-disposition"))


def _describe_response(response: IResponse) -> tuple[str, str | None]:
    headers = {
        "content-disposition": _header(response.headers, b"content-disposition") or "",
    }
    return _describe(_header(response.headers, b"content-type"), headers)
