"""Untrusted input into plain values, and stored values back out as JSON, safely.

Invariants:
- ``decode_json`` returns only values every later step can handle: valid Unicode (no
  lone surrogates, which cannot be encoded as UTF-8 and would break every response
  they end up in, e.g. a recipient's /sync), finite numbers, at most
  ``MAX_JSON_DEPTH`` nested containers (deeper trees overflow the recursion of the
  encoders, copies and canonical JSON that handle them later). Anything else is a
  400 ``MatrixError``, never a ``RecursionError`` or an ``UnicodeEncodeError`` later.
- ``parse_int64`` accepts ASCII decimal integers that fit a signed 64-bit column.
- ``utf8_json`` never fails: a value stored before these checks existed (a lone
  surrogate in an old row) is answered with U+FFFD in its place and a log line,
  instead of breaking the response for everyone it is addressed to.
"""

from __future__ import annotations

import json
import logging
import math
import re
from typing import Any, Final

from homeserver.errors import Codes, MatrixError
from homeserver.events.format import has_nul

logger = logging.getLogger(__name__)

# Deeper JSON is refused. Matrix content nests a handful of levels; the recursion limit
# (1000 frames, shared with the handlers' own calls) is well beyond this.
MAX_JSON_DEPTH: Final = 100
INT64_MAX: Final = 2**63 - 1
INT64_MIN: Final = -(2**63)

# A \u escape of a UTF-16 surrogate: the only way JSON text that is valid UTF-8 can
# yield a lone surrogate (a valid pair is joined into one code point by the parser).
_SURROGATE_ESCAPE: Final = re.compile(r"\\u[dD][89a-fA-F]")
_SURROGATE: Final = re.compile("[\ud800-\udfff]")
_INT_RE: Final = re.compile(r"-?[0-9]{1,19}")


class _NonFinite(ValueError):
    pass


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _NonFinite(f"number out of range: {text[:40]}")
    return value


def _reject_constant(name: str) -> None:
    raise ValueError(f"invalid JSON constant {name}")


_DECODER: Final = json.JSONDecoder(parse_constant=_reject_constant, parse_float=_finite_float)


def decode_json(raw: bytes | str, *, forbid_nul: bool = False) -> Any:
    """Parse untrusted JSON text: ``M_NOT_JSON`` if it is not JSON (invalid UTF-8,
    syntax, NaN/Infinity, nested too deep), ``M_BAD_JSON`` if it is JSON that cannot
    be represented (lone surrogates, numbers out of the float range) and, with
    ``forbid_nul``, if a string holds U+0000 (PostgreSQL cannot store it in a text
    column, so a client's values never carry one)."""
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
    except UnicodeDecodeError:
        raise MatrixError(400, Codes.NOT_JSON, "Content not JSON: invalid UTF-8.") from None
    try:
        value = _DECODER.decode(text)
    except _NonFinite as e:
        raise MatrixError(400, Codes.BAD_JSON, f"Bad JSON value: {e}") from None
    except RecursionError:
        raise MatrixError(400, Codes.NOT_JSON, "Content not JSON: nested too deeply.") from None
    except ValueError:
        raise MatrixError(400, Codes.NOT_JSON, "Content not JSON.") from None
    if text.count("{") + text.count("[") > MAX_JSON_DEPTH and _depth_exceeds(value):
        raise MatrixError(400, Codes.NOT_JSON, "Content not JSON: nested too deeply.")
    if _SURROGATE_ESCAPE.search(text) is not None and has_lone_surrogate(value):
        raise MatrixError(400, Codes.BAD_JSON, "Bad JSON value: lone surrogate in a string.")
    # Valid JSON carries U+0000 only as an escape, so text without one needs no walk.
    if forbid_nul and "\\u0000" in text and has_nul(value):
        raise MatrixError(400, Codes.BAD_JSON, "Bad JSON value: U+0000 in a string.")
    return value


def has_lone_surrogate(value: Any) -> bool:
    """Whether a string (key or value) anywhere in ``value`` is not valid Unicode."""
    try:
        json.dumps(value, ensure_ascii=False, check_circular=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _depth_exceeds(value: Any, limit: int = MAX_JSON_DEPTH) -> bool:
    if type(value) is not dict and type(value) is not list:
        return False
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if type(item) is dict else item
        for child in children:
            if type(child) is dict or type(child) is list:
                if depth + 1 > limit:
                    return True
                stack.append((child, depth + 1))
    return False


def int64_or_none(text: str) -> int | None:
    """``text`` as an ASCII decimal integer fitting a signed 64-bit column, or None."""
    if _INT_RE.fullmatch(text) is None:
        return None
    value = int(text)
    return value if INT64_MIN <= value <= INT64_MAX else None


def parse_int64(text: str, what: str) -> int:
    """``int64_or_none`` or 400 ``M_INVALID_PARAM`` naming ``what``."""
    value = int64_or_none(text)
    if value is None:
        raise MatrixError(
            400, Codes.INVALID_PARAM, f"{what} must be an integer that fits in 64 bits"
        )
    return value


def utf8_json(text: str) -> bytes:
    """JSON text (encoded with ``ensure_ascii=False``) as UTF-8. A lone surrogate,
    which only data stored before input was checked can hold, becomes U+FFFD."""
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        logger.warning("Replaced lone surrogates in a response (bad stored data)")
        return _SURROGATE.sub("\ufffd", text).encode("utf-8")
