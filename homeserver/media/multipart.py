"""An incremental parser of the federation media answer (``multipart/mixed``, RFC 2046).

The server-server content repository answers with two parts: JSON metadata, then either
the file (with its own ``Content-Type`` / ``Content-Disposition``) or an empty part whose
``Location`` header says where to fetch the file.

Invariants:
- Bytes are fed as they arrive; nothing of the file part is kept in memory: it goes to
  ``on_file_data`` as soon as it cannot be the start of a delimiter (at most the
  delimiter's length minus one byte is held back across chunks).
- The JSON part and every header block are bounded; past the bound, or on anything
  malformed, ``MultipartError`` is raised and the caller drops the download.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from homeserver.errors import MatrixError
from homeserver.untrusted import decode_json

MAX_JSON = 64 * 1024
MAX_HEADERS = 16 * 1024
_MAX_PADDING = 1024  # transport padding after a delimiter (RFC 2046 LWSP)


class MultipartError(Exception):
    """The answer is not a well-formed two-part ``multipart/mixed`` body."""


@dataclass
class MultipartResult:
    metadata: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)  # the file part's, lower-cased names
    location: str | None = None


def boundary_of(content_type: str | None) -> bytes:
    """The boundary of a ``multipart/mixed`` Content-Type; MultipartError otherwise."""
    if not content_type:
        raise MultipartError("No Content-Type")
    kind, _, params = content_type.partition(";")
    if kind.strip().lower() != "multipart/mixed":
        raise MultipartError(f"Expected multipart/mixed, got {kind.strip()!r}")
    for param in params.split(";"):
        name, _, value = param.strip().partition("=")
        if name.strip().lower() == "boundary":
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = value[1:-1]
            if 1 <= len(value) <= 70:
                return value.encode("ascii", "replace")
    raise MultipartError("No usable boundary in the Content-Type")


_PREAMBLE, _AFTER_DELIMITER, _HEADERS, _BODY, _DONE = range(5)


class MultipartParser:
    def __init__(
        self, boundary: bytes, on_file_data: Callable[[bytes], None], *, max_json: int = MAX_JSON
    ) -> None:
        # Every delimiter is CRLF "--" boundary; the first one may open the body without
        # the CRLF, so the parser pretends one came first.
        self._delimiter = b"\r\n--" + boundary
        self._on_file_data = on_file_data
        self._max_json = max_json
        self._buffer = b"\r\n"
        self._state = _PREAMBLE
        self._part = -1  # index of the part being read
        self._json = bytearray()
        self._result = MultipartResult(metadata={})
        self._file_part_seen = False

    def feed(self, data: bytes) -> None:
        if self._state == _DONE or not data:
            return  # the epilogue is ignored
        self._buffer += data
        while self._step():
            pass

    def finish(self) -> MultipartResult:
        """The parsed answer once every byte was fed; MultipartError if it is incomplete."""
        if self._state != _DONE:
            raise MultipartError("The multipart body ended early")
        if not self._file_part_seen:
            raise MultipartError("The multipart body has no file part")
        return self._result

    # One step of the state machine; False when more input is needed.
    def _step(self) -> bool:
        if self._state == _PREAMBLE:
            at = self._buffer.find(self._delimiter)
            if at < 0:
                # Keep only what could still begin a delimiter.
                self._buffer = self._buffer[-(len(self._delimiter) - 1) :]
                return False
            self._buffer = self._buffer[at + len(self._delimiter) :]
            self._state = _AFTER_DELIMITER
            return True
        if self._state == _AFTER_DELIMITER:
            return self._after_delimiter()
        if self._state == _HEADERS:
            return self._headers()
        if self._state == _BODY:
            return self._body()
        return False

    def _after_delimiter(self) -> bool:
        if len(self._buffer) < 2:
            return False
        if self._buffer.startswith(b"--"):
            self._close_part()
            self._state = _DONE
            self._buffer = b""
            return False
        end = self._buffer.find(b"\r\n")
        if end < 0:
            if len(self._buffer) > _MAX_PADDING:
                raise MultipartError("Garbage after a delimiter")
            return False
        if self._buffer[:end].strip(b" \t"):
            raise MultipartError("Garbage after a delimiter")
        self._close_part()
        self._part += 1
        # Keep the CRLF: with no headers, it and the blank line make the header end.
        self._buffer = self._buffer[end:]
        self._state = _HEADERS
        return True

    def _headers(self) -> bool:
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(self._buffer) > MAX_HEADERS:
                raise MultipartError("Part headers too long")
            return False
        block, self._buffer = self._buffer[2:end], self._buffer[end + 4 :]
        headers: dict[str, str] = {}
        for line in block.split(b"\r\n") if block else []:
            name, sep, value = line.partition(b":")
            if not sep or not name.strip():
                raise MultipartError("Malformed part header")
            headers[name.strip().decode("latin-1").lower()] = value.strip().decode("latin-1")
        if self._part == 1:
            self._file_part_seen = True
            self._result.headers = headers
            self._result.location = headers.get("location") or None
        self._state = _BODY
        return True

    def _body(self) -> bool:
        at = self._buffer.find(self._delimiter)
        if at >= 0:
            self._deliver(self._buffer[:at])
            self._buffer = self._buffer[at + len(self._delimiter) :]
            self._state = _AFTER_DELIMITER
            return True
        keep = len(self._delimiter) - 1
        if len(self._buffer) > keep:
            self._deliver(self._buffer[:-keep])
            self._buffer = self._buffer[-keep:]
        return False

    def _deliver(self, data: bytes) -> None:
        if not data:
            return
        if self._part == 0:
            if len(self._json) + len(data) > self._max_json:
                raise MultipartError("Metadata part too large")
            self._json += data
        elif self._part == 1 and self._result.location is None:
            self._on_file_data(data)
        # Bytes of a redirect part or of parts past the second are ignored.

    def _close_part(self) -> None:
        if self._part == 0:
            try:  # another server's answer: as strict as a request to us
                metadata = decode_json(bytes(self._json))
            except MatrixError:
                raise MultipartError("Metadata part is not JSON") from None
            if not isinstance(metadata, dict):
                raise MultipartError("Metadata part is not a JSON object")
            self._result.metadata = metadata
