"""Parsing and validating request input into plain values, with Matrix errors."""

from __future__ import annotations

from typing import Any

from twisted.web.server import Request

from homeserver.errors import Codes, MatrixError
from homeserver.untrusted import decode_json, parse_int64

JsonDict = dict[str, Any]


def parse_json_body(
    request: Request, *, allow_empty: bool = False, forbid_nul: bool = True
) -> JsonDict:
    """The body as a JSON object: ``M_NOT_JSON`` if unparseable, ``M_BAD_JSON`` if not
    an object or not representable, or holding U+0000 unless ``forbid_nul`` is false
    (see ``homeserver.untrusted.decode_json``)."""
    assert request.content is not None
    request.content.seek(0)
    raw = request.content.read()
    if not raw.strip():
        if allow_empty:
            return {}
        raise MatrixError(400, Codes.NOT_JSON, "Content not JSON.")
    body = decode_json(raw, forbid_nul=forbid_nul)
    if not isinstance(body, dict):
        raise MatrixError(400, Codes.BAD_JSON, "Content must be a JSON object.")
    return body


def parse_strings(request: Request, name: str) -> list[str]:
    """Every value of a repeated query parameter (``?v=a&v=b``), as UTF-8 text."""
    args = request.args or {}
    try:
        return [v.decode("utf-8") for v in args.get(name.encode(), [])]
    except UnicodeDecodeError:
        raise MatrixError(
            400, Codes.INVALID_PARAM, f"Query parameter {name!r} must be UTF-8"
        ) from None


def parse_string(
    request: Request,
    name: str,
    *,
    default: str | None = None,
    required: bool = False,
    allowed: tuple[str, ...] | None = None,
) -> str | None:
    values = parse_strings(request, name)
    if not values:
        if required:
            raise MatrixError(400, Codes.MISSING_PARAM, f"Missing string query parameter {name!r}")
        return default
    value = values[0]
    if allowed is not None and value not in allowed:
        raise MatrixError(
            400,
            Codes.INVALID_PARAM,
            f"Query parameter {name!r} must be one of {', '.join(allowed)}",
        )
    return value


def parse_integer(
    request: Request,
    name: str,
    *,
    default: int | None = None,
    required: bool = False,
    minimum: int | None = None,
    maximum: int | None = None,
) -> int | None:
    values = parse_strings(request, name)
    if not values:
        if required:
            raise MatrixError(400, Codes.MISSING_PARAM, f"Missing integer query parameter {name!r}")
        return default
    value = parse_int64(values[0], f"Query parameter {name!r}")
    if minimum is not None and value < minimum:
        raise MatrixError(
            400, Codes.INVALID_PARAM, f"Query parameter {name!r} must be >= {minimum}"
        )
    if maximum is not None and value > maximum:
        value = maximum
    return value


def parse_boolean(request: Request, name: str, *, default: bool = False) -> bool:
    values = parse_strings(request, name)
    if not values:
        return default
    if values[0] in ("true", "1"):
        return True
    if values[0] in ("false", "0"):
        return False
    raise MatrixError(400, Codes.INVALID_PARAM, f"Query parameter {name!r} must be true or false")


def field(
    body: JsonDict,
    name: str,
    kind: type | tuple[type, ...],
    *,
    required: bool = False,
    default: Any = None,
    what: str | None = None,
) -> Any:
    """``body[name]`` checked against ``kind``; ``M_MISSING_PARAM`` / ``M_BAD_JSON`` otherwise."""
    if name not in body or body[name] is None:
        if required:
            raise MatrixError(400, Codes.MISSING_PARAM, f"Missing parameter: {name}")
        return default
    value = body[name]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        names = what or " or ".join(_TYPE_NAMES.get(k, k.__name__) for k in kinds)
        raise MatrixError(400, Codes.BAD_JSON, f"Parameter {name!r} must be {names}")
    return value


_TYPE_NAMES = {
    str: "a string",
    int: "an integer",
    bool: "a boolean",
    dict: "an object",
    list: "an array",
    float: "a number",
}
