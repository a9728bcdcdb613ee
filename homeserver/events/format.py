"""PDU format checks and identifier grammars (spec appendices, room versions 1-12).

A PDU failing :func:`validate_pdu_format` is dropped, not rejected: this runs
before signature, hash and auth checks.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from typing import Any

from canonicaljson import encode_canonical_json

from homeserver.events.room_versions import EVENT_FORMAT_V3, RoomVersion

__all__ = [
    "CANONICALJSON_MAX_INT",
    "CANONICALJSON_MIN_INT",
    "MAX_AUTH_EVENTS",
    "MAX_ID_BYTES",
    "MAX_PDU_SIZE",
    "MAX_PREV_EVENTS",
    "EventFormatError",
    "event_reference_ids",
    "references_for_version",
    "is_valid_event_id",
    "is_valid_localpart",
    "is_valid_room_id",
    "is_valid_server_name",
    "is_valid_user_id",
    "validate_canonical_json_values",
    "validate_pdu_format",
]

MAX_PDU_SIZE = 65536
MAX_ID_BYTES = 255
MAX_AUTH_EVENTS = 10
MAX_PREV_EVENTS = 20
CANONICALJSON_MAX_INT = 2**53 - 1
CANONICALJSON_MIN_INT = -CANONICALJSON_MAX_INT


class EventFormatError(Exception):
    """A PDU does not match its room version's event format."""

    def __init__(self, errcode: str, message: str) -> None:
        super().__init__(message)
        self.errcode = errcode
        self.message = message

    def __repr__(self) -> str:
        return f"EventFormatError({self.errcode!r}, {self.message!r})"


# --- identifier grammars -------------------------------------------------------

_LOCALPART_RE = re.compile(r"[a-z0-9._=/+\-]+")
_PORT_RE = re.compile(r"[0-9]{1,5}")
_IPV4_SHAPE_RE = re.compile(r"[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}")
_IPV6_CHARS_RE = re.compile(r"[0-9A-Fa-f:.]{2,45}")
_DNS_NAME_RE = re.compile(r"[0-9A-Za-z\-.]{1,255}")
# 32-byte sha256 as URL-safe unpadded base64.
_HASH_ID_RE = re.compile(r"[A-Za-z0-9_\-]{43}")
# The same in standard unpadded base64 (room version 3 event ids).
_HASH_ID_STD_RE = re.compile(r"[A-Za-z0-9+/]{43}")


def _utf8_len(s: str) -> int | None:
    """UTF-8 length of ``s``, or None if it holds lone surrogates (not encodable)."""
    try:
        return len(s.encode("utf-8"))
    except UnicodeEncodeError:
        return None


def _is_historical_opaque(s: str) -> bool:
    """Historical localpart grammar: any code points except ``:`` and NUL (may be empty)."""
    return ":" not in s and "\x00" not in s


def is_valid_server_name(server_name: str) -> bool:
    """``hostname [ ":" port ]`` with hostname an IPv4 literal, ``[IPv6]`` or DNS name."""
    if not isinstance(server_name, str):
        return False
    if server_name.startswith("["):
        end = server_name.find("]")
        if end < 0:
            return False
        host, rest = server_name[1:end], server_name[end + 1 :]
        if not _IPV6_CHARS_RE.fullmatch(host):
            return False
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            return False
    else:
        host, sep, port = server_name.partition(":")
        rest = sep + port
        if _IPV4_SHAPE_RE.fullmatch(host):
            if any(int(octet) > 255 for octet in host.split(".")):
                return False
        elif not _DNS_NAME_RE.fullmatch(host):
            return False
    if rest:
        return rest.startswith(":") and _PORT_RE.fullmatch(rest[1:]) is not None
    return True


_HOSTNAME_RE = re.compile(r"[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*")


def is_reachable_server_name(server_name: str) -> bool:
    """A server name a request can be sent to: valid by the grammar above, and a DNS
    name made of non-empty labels (as Synapse's ``is_valid_hostname``). ``..``, ``.``
    or ``a..b`` pass the spec's loose ``dns-name`` but name no host: looking them up
    only waits for timeouts."""
    if not is_valid_server_name(server_name):
        return False
    if server_name.startswith("["):
        return True
    host = server_name.partition(":")[0]
    return bool(_IPV4_SHAPE_RE.fullmatch(host) or _HOSTNAME_RE.fullmatch(host))


def is_valid_localpart(localpart: str) -> bool:
    """Strict user id localpart grammar ``[a-z0-9._=/+-]+``, for new registrations."""
    return isinstance(localpart, str) and _LOCALPART_RE.fullmatch(localpart) is not None


def is_valid_user_id(user_id: str, *, strict: bool = False) -> bool:
    """``@localpart:server_name`` of at most 255 bytes.

    The localpart may use the historical character set (anything but ``:`` and
    NUL, even empty), as servers must accept from remote users; ``strict=True``
    requires the current grammar (:func:`is_valid_localpart`).
    """
    if not isinstance(user_id, str) or not user_id.startswith("@"):
        return False
    size = _utf8_len(user_id)
    if size is None or size > MAX_ID_BYTES:
        return False
    localpart, sep, server_name = user_id[1:].partition(":")
    if not sep or not is_valid_server_name(server_name):
        return False
    return is_valid_localpart(localpart) if strict else _is_historical_opaque(localpart)


def is_valid_event_id(event_id: str, room_version: RoomVersion | None = None) -> bool:
    """An event id in the form of ``room_version`` (v4+ without one).

    v4+: ``$`` + 43 URL-safe base64 characters (a sha256); v3: the same in standard
    base64; v1, v2: ``$opaque:server_name`` of at most 255 bytes.
    """
    if not isinstance(event_id, str) or not event_id.startswith("$"):
        return False
    if room_version is not None and room_version.event_id_in_event:
        size = _utf8_len(event_id)
        if size is None or size > MAX_ID_BYTES:
            return False
        opaque, sep, server_name = event_id[1:].partition(":")
        return bool(sep) and _is_historical_opaque(opaque) and is_valid_server_name(server_name)
    if room_version is not None and room_version.event_format == EVENT_FORMAT_V3:
        return _HASH_ID_STD_RE.fullmatch(event_id[1:]) is not None
    return _HASH_ID_RE.fullmatch(event_id[1:]) is not None


def event_reference_ids(refs: Any) -> list[str]:
    """The event ids of a PDU's ``prev_events`` or ``auth_events``, in either format.

    v3+ events list ids; v1/v2 events list ``[event_id, {"sha256": ...}]`` pairs. The
    PDU is kept as received (its hashes and signatures cover these lists), and every
    reader goes through here. Entries of neither shape are skipped (the format check
    refuses such PDUs before anything reads them).
    """
    if not isinstance(refs, (list, tuple)):
        return []
    out: list[str] = []
    for ref in refs:
        if isinstance(ref, str):
            out.append(ref)
        elif isinstance(ref, (list, tuple)) and ref and isinstance(ref[0], str):
            out.append(ref[0])
    return out


def references_for_version(
    event_ids: list[str], room_version: RoomVersion, hashes: Mapping[str, Mapping[str, Any]]
) -> list[Any]:
    """``prev_events`` / ``auth_events`` of a new event in the room version's format.

    v1/v2: ``[event_id, {"sha256": ...}]`` pairs, with the referenced event's content
    hash where ``hashes`` (event id -> its ``hashes``) knows it, as Synapse does;
    ``{}`` otherwise (no server checks it). v3+: the ids.
    """
    if not room_version.event_id_in_event:
        return list(event_ids)
    out: list[Any] = []
    for event_id in event_ids:
        known = hashes.get(event_id)
        sha256 = known.get("sha256") if isinstance(known, Mapping) else None
        out.append([event_id, {"sha256": sha256} if isinstance(sha256, str) else {}])
    return out


def is_valid_room_id(room_id: str, room_version: RoomVersion | None = None) -> bool:
    """Room id of at most 255 bytes, in the form the room version uses.

    Version 12: ``!`` + the create event's hash (43 URL-safe base64 characters).
    Earlier versions: ``!opaque:server_name``. Without a room version, either.
    """
    if not isinstance(room_id, str) or not room_id.startswith("!"):
        return False
    size = _utf8_len(room_id)
    if size is None or size > MAX_ID_BYTES:
        return False
    hash_form = _HASH_ID_RE.fullmatch(room_id[1:]) is not None
    if room_version is not None and room_version.room_id_is_create_event_hash:
        return hash_form
    opaque, sep, server_name = room_id[1:].partition(":")
    domain_form = bool(sep) and _is_historical_opaque(opaque) and is_valid_server_name(server_name)
    if room_version is not None:
        return domain_form
    return hash_form or domain_form


# --- canonical JSON -------------------------------------------------------------


def validate_canonical_json_values(value: object) -> None:
    """Check every value is JSON with canonical-JSON integers (no floats, |n| <= 2**53-1)
    and strings (keys included) that are valid Unicode (no lone surrogates).

    Raises ``EventFormatError('M_BAD_JSON', ...)``.
    """
    stack: list[object] = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if _utf8_len(item) is None:
                raise EventFormatError("M_BAD_JSON", "lone surrogate in a string")
            continue
        if item is None or isinstance(item, bool):
            continue
        if isinstance(item, int):
            if not CANONICALJSON_MIN_INT <= item <= CANONICALJSON_MAX_INT:
                raise EventFormatError("M_BAD_JSON", f"integer out of canonical JSON range: {item}")
        elif isinstance(item, float):
            raise EventFormatError(
                "M_BAD_JSON", f"floats are not allowed in canonical JSON: {item}"
            )
        elif isinstance(item, Mapping):
            for k in item:
                if not isinstance(k, str):
                    raise EventFormatError("M_BAD_JSON", f"non-string object key: {k!r}")
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
        else:
            raise EventFormatError("M_BAD_JSON", f"not a JSON value: {type(item).__name__}")


# --- PDU format -----------------------------------------------------------------


def _bad(message: str) -> EventFormatError:
    return EventFormatError("M_BAD_JSON", message)


def _check_str_field(event: Mapping[str, Any], key: str) -> str:
    value = event.get(key)
    if not isinstance(value, str):
        raise _bad(f"'{key}' must be a string")
    size = _utf8_len(value)
    if size is None:
        raise _bad(f"'{key}' is not valid UTF-8")
    if size > MAX_ID_BYTES:
        raise _bad(f"'{key}' is longer than {MAX_ID_BYTES} bytes")
    return value


def _check_int_field(event: Mapping[str, Any], key: str) -> int:
    value = event.get(key)
    if type(value) is not int:
        raise _bad(f"'{key}' must be an integer")
    return value


def _check_event_id_list(
    event: Mapping[str, Any],
    key: str,
    limit: int,
    room_version: RoomVersion,
    *,
    unique: bool = False,
) -> None:
    value = event.get(key)
    if not isinstance(value, list):
        raise _bad(f"'{key}' must be a list of event ids")
    if len(value) > limit:
        raise _bad(f"'{key}' has more than {limit} entries")
    ids: list[str] = []
    for entry in value:
        if room_version.event_id_in_event:
            # v1/v2: [event_id, {"sha256": hash}] pairs.
            if not (
                isinstance(entry, list)
                and len(entry) == 2
                and isinstance(entry[0], str)
                and isinstance(entry[1], Mapping)
            ):
                raise _bad(f"'{key}' must contain [event_id, hashes] pairs")
            entry = entry[0]
        elif not isinstance(entry, str):
            raise _bad(f"'{key}' must contain only strings")
        if not is_valid_event_id(entry, room_version):
            raise _bad(f"'{key}' contains an invalid event id: {entry!r}")
        ids.append(entry)
    if unique and len(set(ids)) != len(ids):
        raise _bad(f"'{key}' lists the same event more than once")


def has_nul(value: Any) -> bool:
    """Whether a string (key or value) anywhere in ``value`` holds U+0000."""
    stack = [value]
    while stack:
        item = stack.pop()
        if type(item) is str:
            if "\x00" in item:
                return True
        elif type(item) is dict:
            for key, child in item.items():
                if "\x00" in key:
                    return True
                stack.append(child)
        elif type(item) is list:
            stack.extend(item)
    return False


def validate_pdu_format(event: Mapping[str, Any], room_version: RoomVersion) -> None:
    """Check a received PDU against the event format of ``room_version`` (1 to 12).

    Raises ``EventFormatError`` with ``M_TOO_LARGE`` if the whole PDU exceeds
    65536 bytes as canonical JSON, and ``M_BAD_JSON`` for any other problem.
    Rules the spec places in the auth rules (e.g. a v12 create event must not
    have a ``room_id``) are left to them.
    """
    if not isinstance(event, Mapping):
        raise _bad("PDU must be a JSON object")

    if room_version.strict_canonicaljson:
        validate_canonical_json_values(event)
    try:
        encoded = encode_canonical_json(event)
    except (TypeError, ValueError) as e:  # includes UnicodeEncodeError (lone surrogates)
        raise _bad(f"PDU is not encodable as canonical JSON: {e}") from e
    size = len(encoded)
    # Canonical JSON escapes U+0000; PostgreSQL cannot keep it in the text columns a
    # PDU's strings reach (state keys, search bodies), so such a PDU is refused alone.
    if b"\\u0000" in encoded and has_nul(event):
        raise _bad("PDU holds U+0000 in a string")
    if size > MAX_PDU_SIZE:
        raise EventFormatError("M_TOO_LARGE", f"PDU is {size} bytes, over {MAX_PDU_SIZE}")

    event_type = _check_str_field(event, "type")

    sender = _check_str_field(event, "sender")
    if not is_valid_user_id(sender):
        raise _bad(f"'sender' is not a valid user id: {sender!r}")

    if "room_id" in event or not (
        room_version.room_id_is_create_event_hash and event_type == "m.room.create"
    ):
        room_id = _check_str_field(event, "room_id")
        if not is_valid_room_id(room_id, room_version):
            raise _bad(f"'room_id' is not a valid room id for this room version: {room_id!r}")

    if "state_key" in event:
        _check_str_field(event, "state_key")

    if room_version.event_id_in_event:
        event_id = _check_str_field(event, "event_id")
        if not is_valid_event_id(event_id, room_version):
            raise _bad(f"'event_id' is not a valid event id: {event_id!r}")
    elif "event_id" in event:  # not part of v3+ PDUs; tolerated but still size-limited
        _check_str_field(event, "event_id")

    if not isinstance(event.get("content"), Mapping):
        raise _bad("'content' must be an object")

    # The auth rules reject duplicate auth events (rule 2.1 / 3.1), as Synapse does for
    # the same id listed twice: refused here, so no path can let one through.
    _check_event_id_list(event, "auth_events", MAX_AUTH_EVENTS, room_version, unique=True)
    _check_event_id_list(event, "prev_events", MAX_PREV_EVENTS, room_version)

    depth = _check_int_field(event, "depth")
    if depth < 0:
        raise _bad("'depth' must not be negative")
    _check_int_field(event, "origin_server_ts")

    hashes = event.get("hashes")
    if not isinstance(hashes, Mapping) or not isinstance(hashes.get("sha256"), str):
        raise _bad("'hashes' must be an object with a string 'sha256'")

    signatures = event.get("signatures")
    if not isinstance(signatures, Mapping):
        raise _bad("'signatures' must be an object")
    for server, by_key in signatures.items():
        if not isinstance(by_key, Mapping) or not all(isinstance(s, str) for s in by_key.values()):
            raise _bad(f"'signatures.{server}' must be an object of strings")

    if "unsigned" in event and not isinstance(event.get("unsigned"), Mapping):
        raise _bad("'unsigned' must be an object")

    if (
        not room_version.updated_redaction_rules
        and "redacts" in event
        and not isinstance(event.get("redacts"), str)
    ):
        raise _bad("'redacts' must be a string")
