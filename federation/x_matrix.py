"""The ``Authorization: X-Matrix ...`` request signature (pure).

The signed object is ``{method, uri, origin, destination[, content]}`` in canonical
JSON; parameters may come in any order and values may be quoted or bare.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from signedjson.types import SigningKey

from crypto.json_signing import sign_json
from crypto.signing_key import key_id
from homeserver.events.format import is_valid_server_name

JsonDict = dict[str, Any]

_PARAM_RE = re.compile(r'\s*([A-Za-z0-9_-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^,\s]*))\s*(?:,|$)')


class XMatrixParseError(ValueError):
    pass


class NotXMatrixError(XMatrixParseError):
    """The header is of another scheme (ignored), not a malformed X-Matrix one."""


@dataclass(frozen=True, slots=True)
class XMatrixAuth:
    origin: str
    key: str
    sig: str
    destination: str | None


def parse_x_matrix(header: str) -> XMatrixAuth:
    scheme, _, rest = header.strip().partition(" ")
    if scheme.lower() != "x-matrix":
        raise NotXMatrixError("not an X-Matrix authorization")
    params: dict[str, str] = {}
    pos = 0
    rest = rest.strip()
    while pos < len(rest):
        m = _PARAM_RE.match(rest, pos)
        if m is None or m.end() == pos:
            raise XMatrixParseError("malformed X-Matrix parameters")
        value = m.group(2) if m.group(2) is not None else m.group(3)
        params[m.group(1).lower()] = re.sub(r"\\(.)", r"\1", value)
        pos = m.end()
    try:
        auth = XMatrixAuth(
            params["origin"], params["key"], params["sig"], params.get("destination")
        )
    except KeyError as e:
        raise XMatrixParseError(f"X-Matrix authorization lacks {e.args[0]}") from None
    # The origin names the server whose keys are fetched: never a path or a URL.
    if not is_valid_server_name(auth.origin):
        raise XMatrixParseError("X-Matrix origin is not a valid server name")
    if auth.destination is not None and not is_valid_server_name(auth.destination):
        raise XMatrixParseError("X-Matrix destination is not a valid server name")
    return auth


def request_json(
    method: str, uri: str, origin: str, destination: str, content: Any | None
) -> JsonDict:
    obj: JsonDict = {"method": method, "uri": uri, "origin": origin, "destination": destination}
    if content is not None:
        obj["content"] = content
    return obj


def sign_request(
    key: SigningKey, method: str, uri: str, origin: str, destination: str, content: Any | None
) -> str:
    """The Authorization header value for an outbound request."""
    signed = sign_json(request_json(method, uri, origin, destination, content), origin, key)
    kid = key_id(key)
    sig = signed["signatures"][origin][kid]
    return f'X-Matrix origin="{origin}",destination="{destination}",key="{kid}",sig="{sig}"'
