"""Non-JSON responses: files (with ranges and validators) and multipart documents.

Invariants:
- File bytes are read on worker threads and written through a push producer, so a slow
  client pauses the reading instead of filling memory, and the reactor never blocks
  on the disk. The file is opened before any header is set: a missing file is still
  answered as an ordinary error.
- Ranges: one ``bytes=`` range is answered 206 with ``Content-Range``; a range starting
  past the end is 416 with ``Content-Range: bytes */size``; several ranges, malformed
  ranges and an ``If-Range`` that does not match the strong ETag get the whole file.
- ``If-None-Match`` matching the ETag is answered 304 without a body.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from twisted.internet import defer, threads
from twisted.internet.interfaces import IPushProducer
from zope.interface import implementer

from homeserver.http.server import MatrixRequest, RawResponse

READ_CHUNK = 256 * 1024

# Possessive quantifiers: adjacent optional runs (``\s*`` around ``(\d*)``) backtrack
# quadratically over a header of 16 KB of spaces (seconds of reactor time) otherwise.
# At most 30 digits: int() of a longer run is refused (ValueError) past 4300 digits.
_RANGE_RE = re.compile(
    r"\s*+bytes\s*+=\s*+([0-9]{0,30}+)\s*+-\s*+([0-9]{0,30}+)\s*+", re.IGNORECASE
)


@implementer(IPushProducer)
class _FileProducer:
    """Copies ``length`` bytes of an open file into a request, reading on threads."""

    def __init__(self, request: MatrixRequest, file: BinaryIO, length: int) -> None:
        self._request = request
        self._file = file
        self._length = length
        self._paused: defer.Deferred[None] | None = None
        self._stopped = False

    def pauseProducing(self) -> None:
        if self._paused is None:
            self._paused = defer.Deferred()

    def resumeProducing(self) -> None:
        paused, self._paused = self._paused, None
        if paused is not None:
            paused.callback(None)

    def stopProducing(self) -> None:
        self._stopped = True
        self.resumeProducing()

    async def run(self) -> bool:
        """Stream the bytes; False if the client went away first."""
        self._request.registerProducer(self, True)
        try:
            remaining = self._length
            while remaining > 0:
                if self._paused is not None:
                    await self._paused
                if self._stopped:
                    return False
                chunk = await threads.deferToThread(self._file.read, min(READ_CHUNK, remaining))
                if not chunk:
                    raise OSError(f"file ended {remaining} bytes early")
                if self._stopped:
                    return False
                self._request.write(chunk)
                remaining -= len(chunk)
            return True
        finally:
            self._file.close()
            if self._request.channel is not None:
                self._request.unregisterProducer()


async def stream_file(request: MatrixRequest, file: BinaryIO, length: int) -> bool:
    return await _FileProducer(request, file, length).run()


def _quoted(etag: str) -> str:
    return f'"{etag}"'


def _etag_matches(header: str | None, etag: str) -> bool:
    if header is None:
        return False
    if header.strip() == "*":
        return True
    for candidate in header.split(","):
        candidate = candidate.strip()
        if candidate.startswith("W/"):
            candidate = candidate[2:]
        if candidate == _quoted(etag):
            return True
    return False


class RangeNotSatisfiable(Exception):
    pass


def parse_range(header: str, size: int) -> tuple[int, int] | None:
    """(first byte, length) of a single satisfiable range, None to serve everything.

    Raises ``RangeNotSatisfiable`` for a well-formed range beyond the content.
    """
    if "," in header:
        return None  # several ranges: the whole representation is a valid answer
    m = _RANGE_RE.fullmatch(header)
    if m is None or (not m.group(1) and not m.group(2)):
        return None
    first, last = m.group(1), m.group(2)
    if not first:  # suffix range: the last N bytes
        suffix = int(last)
        if suffix == 0 or size == 0:
            raise RangeNotSatisfiable()
        return max(0, size - suffix), min(suffix, size)
    start = int(first)
    if last and int(last) < start:
        return None  # syntactically invalid: ignored
    if start >= size:
        raise RangeNotSatisfiable()
    end = int(last) if last else size - 1
    end = min(end, size - 1)
    return start, end - start + 1


def _set_headers(request: MatrixRequest, headers: Mapping[str, str]) -> None:
    for name, value in headers.items():
        request.setHeader(name.encode("ascii"), value.encode("ascii"))


@dataclass(frozen=True)
class FileResponse(RawResponse):
    """A stored file: ``open_file`` is blocking and called on a worker thread."""

    open_file: Callable[[], BinaryIO]
    size: int
    content_type: str
    headers: Mapping[str, str] = field(default_factory=dict)
    etag: str | None = None

    async def write(self, request: MatrixRequest, status: int) -> None:
        if self.etag is not None and _etag_matches(request.getHeader("if-none-match"), self.etag):
            _set_headers(request, self._validator_headers())
            request.setResponseCode(304)
            request.finish()
            return
        start, length, code = 0, self.size, status
        range_header = request.getHeader("range")
        if range_header is not None and status == 200 and self._if_range_holds(request):
            try:
                chosen = parse_range(range_header, self.size)
            except RangeNotSatisfiable:
                _set_headers(request, {"Content-Range": f"bytes */{self.size}"})
                request.setHeader(b"Content-Length", b"0")
                request.setResponseCode(416)
                request.finish()
                return
            if chosen is not None:
                start, length = chosen
                code = 206
        file = await threads.deferToThread(self.open_file)
        try:
            if start:
                await threads.deferToThread(file.seek, start)
        except BaseException:
            file.close()
            raise
        request.setResponseCode(code)
        request.setHeader(b"Content-Type", self.content_type.encode("ascii"))
        request.setHeader(b"Content-Length", str(length).encode())
        request.setHeader(b"Accept-Ranges", b"bytes")
        if code == 206:
            last = start + length - 1
            _set_headers(request, {"Content-Range": f"bytes {start}-{last}/{self.size}"})
        _set_headers(request, self._validator_headers())
        _set_headers(request, self.headers)
        if request.method == b"HEAD" or length == 0:
            file.close()
            request.finish()
            return
        if await stream_file(request, file, length):
            request.finish()

    def _validator_headers(self) -> dict[str, str]:
        out = {k: v for k, v in self.headers.items() if k.lower() == "cache-control"}
        if self.etag is not None:
            out["ETag"] = _quoted(self.etag)
        return out

    def _if_range_holds(self, request: MatrixRequest) -> bool:
        if_range = request.getHeader("if-range")
        if if_range is None:
            return True
        return self.etag is not None and if_range.strip() == _quoted(self.etag)


@dataclass(frozen=True)
class MultipartFileResponse(RawResponse):
    """``multipart/mixed``: a JSON metadata part, then the file with its own headers.

    The form of the federation media endpoints (server-server API, content repository).
    """

    open_file: Callable[[], BinaryIO]
    size: int
    part_headers: Mapping[str, str]
    metadata: Mapping[str, Any] = field(default_factory=dict)

    async def write(self, request: MatrixRequest, status: int) -> None:
        boundary = secrets.token_hex(16)
        head_lines = [
            f"--{boundary}",
            "Content-Type: application/json",
            "",
            json.dumps(dict(self.metadata), separators=(",", ":")),
            f"--{boundary}",
            *(f"{name}: {value}" for name, value in self.part_headers.items()),
            "",
            "",
        ]
        prefix = "\r\n".join(head_lines).encode("utf-8")
        suffix = f"\r\n--{boundary}--\r\n".encode("ascii")
        file = await threads.deferToThread(self.open_file)
        request.setResponseCode(status)
        request.setHeader(b"Content-Type", f"multipart/mixed; boundary={boundary}".encode())
        request.setHeader(b"Content-Length", str(len(prefix) + self.size + len(suffix)).encode())
        if request.method == b"HEAD":
            file.close()
            request.finish()
            return
        request.write(prefix)
        if await stream_file(request, file, self.size):
            request.write(suffix)
            request.finish()
