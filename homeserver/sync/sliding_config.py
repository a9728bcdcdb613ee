"""The request of simplified sliding sync (MSC4186) as values, parsed from untrusted JSON.

Validation follows Synapse's request model: ``required_state`` and ``timeline_limit``
are required in every list and room subscription, ranges are pairs of inclusive
non-negative integers, at most 100 lists with keys of at most 64 bytes; anything else
is a 400 ``M_BAD_JSON`` naming the field. Unknown extensions are ignored (the MSC).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from homeserver.errors import Codes, MatrixError
from homeserver.events.format import is_valid_room_id

JsonDict = dict[str, Any]

WILDCARD = "*"
LAZY = "$LAZY"
ME = "$ME"
MAX_LISTS = 100
MAX_LIST_KEY_BYTES = 64
MAX_TIMELINE_LIMIT = 1000
MAX_REQUIRED_STATE = 1000
MAX_TO_DEVICE_LIMIT = 1000

_POS_RE = re.compile(r"^(\d{1,18})/(s\d+(?:_\d+)*)$")


def _bad(message: str) -> MatrixError:
    return MatrixError(400, Codes.BAD_JSON, message)


@dataclass(frozen=True, slots=True)
class RoomConfig:
    """What the client wants of a room: ``required_state`` pairs (sorted, no repeats)
    and ``timeline_limit``. A room in several lists and subscriptions gets the union."""

    required_state: tuple[tuple[str, str], ...]
    timeline_limit: int

    def combine(self, other: RoomConfig) -> RoomConfig:
        return RoomConfig(
            tuple(sorted(set(self.required_state) | set(other.required_state))),
            max(self.timeline_limit, other.timeline_limit),
        )

    def key(self) -> str:
        """Canonical JSON, as a connection remembers what a room was sent under."""
        return _config_key(self.required_state, self.timeline_limit)

    @classmethod
    def from_key(cls, key: str) -> RoomConfig:
        """The config of a ``key()`` (stored by this code, so trusted)."""
        pairs, limit = json.loads(key)
        return cls(tuple((str(t), str(k)) for t, k in pairs), int(limit))


# A response's rooms mostly share a config or two: their keys and ``RequiredState`` are
# made once, not per room.
@lru_cache(maxsize=1024)
def _config_key(required_state: tuple[tuple[str, str], ...], timeline_limit: int) -> str:
    return json.dumps([[list(p) for p in required_state], timeline_limit], separators=(",", ":"))


class RequiredState:
    """Which state keys a ``RoomConfig`` asks for, for one user.

    ``["*", "*"]`` is all state (further entries narrow nothing, as in Synapse);
    ``[type, "*"]`` every key of a type; ``["*", key]`` that key of every type;
    ``$ME`` is the user's own id; ``["m.room.member", "$LAZY"]`` the members of the
    timeline's senders and targets (``lazy``)."""

    __slots__ = ("all", "types", "keys", "exact", "lazy")

    def __init__(self, config: RoomConfig, user_id: str) -> None:
        pairs = [(t, user_id if k == ME else k) for t, k in config.required_state]
        self.all = (WILDCARD, WILDCARD) in pairs
        self.types = {t for t, k in pairs if k == WILDCARD and t != WILDCARD}
        self.keys = {k for t, k in pairs if t == WILDCARD and k != WILDCARD}
        self.exact = {(t, k) for t, k in pairs if WILDCARD not in (t, k) and k != LAZY}
        self.lazy = ("m.room.member", LAZY) in pairs

    def wants(self, key: tuple[str, str]) -> bool:
        return self.all or key[0] in self.types or key[1] in self.keys or key in self.exact

    @staticmethod
    @lru_cache(maxsize=1024)
    def of(config: RoomConfig, user_id: str) -> RequiredState:
        """The (read-only, shared) ``RequiredState`` of ``config`` for ``user_id``."""
        return RequiredState(config, user_id)


@dataclass(frozen=True, slots=True)
class ListFilters:
    is_dm: bool | None = None
    is_encrypted: bool | None = None
    is_invite: bool | None = None
    room_types: tuple[str | None, ...] | None = None
    not_room_types: tuple[str | None, ...] | None = None
    spaces: tuple[str, ...] | None = None
    tags: tuple[str, ...] | None = None
    not_tags: tuple[str, ...] | None = None


# A list without filters holds every room (``_build`` then asks nothing of each).
NO_LIST_FILTERS = ListFilters()


@dataclass(frozen=True, slots=True)
class ListConfig:
    room: RoomConfig
    # Inclusive index pairs into the sorted list; None: every room of the list.
    ranges: tuple[tuple[int, int], ...] | None
    filters: ListFilters


@dataclass(frozen=True, slots=True)
class ExtensionScope:
    """An extension scoped to some lists and rooms (``None``: all of them, ``"*"``)."""

    lists: tuple[str, ...] | None = None
    rooms: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class ToDeviceConfig:
    since: int | None
    limit: int


@dataclass(frozen=True, slots=True)
class Extensions:
    to_device: ToDeviceConfig | None = None
    e2ee: bool = False
    account_data: ExtensionScope | None = None
    receipts: ExtensionScope | None = None
    typing: ExtensionScope | None = None


@dataclass(frozen=True, slots=True)
class Position:
    """A ``pos``: the connection's position and the stream token of that response."""

    connection_position: int
    token: str

    @classmethod
    def parse(cls, raw: str) -> Position:
        m = _POS_RE.match(raw)
        if m is None:
            raise MatrixError(400, Codes.INVALID_PARAM, f"Invalid pos {raw!r}")
        return cls(int(m.group(1)), m.group(2))

    def __str__(self) -> str:
        return f"{self.connection_position}/{self.token}"


@dataclass(frozen=True, slots=True)
class SlidingSyncRequest:
    user_id: str
    device_id: str
    conn_id: str
    pos: Position | None
    timeout_ms: int
    lists: dict[str, ListConfig] = field(default_factory=dict)
    room_subscriptions: dict[str, RoomConfig] = field(default_factory=dict)
    extensions: Extensions = Extensions()


# Parsing -------------------------------------------------------------------------


def _object(value: Any, name: str) -> JsonDict:
    if not isinstance(value, dict):
        raise _bad(f"{name} must be an object")
    return value


def _optional_bool(body: JsonDict, key: str, name: str) -> bool | None:
    value = body.get(key)
    if value is not None and not isinstance(value, bool):
        raise _bad(f"{name}.{key} must be a boolean")
    return value


def _int(value: Any, name: str, *, minimum: int = 0, maximum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _bad(f"{name} must be an integer")
    if value < minimum or (maximum is not None and value > maximum):
        raise _bad(f"{name} is out of range")
    return value


def _strings(value: Any, name: str, *, nullable: bool = False) -> tuple[Any, ...]:
    if not isinstance(value, list) or not all(
        isinstance(v, str) or (nullable and v is None) for v in value
    ):
        raise _bad(f"{name} must be a list of strings")
    return tuple(value)


def _room_config(body: Any, name: str) -> RoomConfig:
    body = _object(body, name)
    if "required_state" not in body:
        raise _bad(f"{name}.required_state is required")
    if "timeline_limit" not in body:
        raise _bad(f"{name}.timeline_limit is required")
    raw = body["required_state"]
    if not isinstance(raw, list) or len(raw) > MAX_REQUIRED_STATE:
        raise _bad(f"{name}.required_state must be a list of [type, state_key] pairs")
    pairs: set[tuple[str, str]] = set()
    for pair in raw:
        if (
            not isinstance(pair, list)
            or len(pair) != 2
            or not all(isinstance(p, str) for p in pair)
        ):
            raise _bad(f"{name}.required_state must be a list of [type, state_key] pairs")
        pairs.add((pair[0], pair[1]))
    limit = _int(body["timeline_limit"], f"{name}.timeline_limit", maximum=MAX_TIMELINE_LIMIT)
    return RoomConfig(tuple(sorted(pairs)), limit)


def _filters(body: Any, name: str) -> ListFilters:
    if body is None:
        return NO_LIST_FILTERS
    body = _object(body, name)

    def optional_list(key: str, *, nullable: bool = False) -> tuple[Any, ...] | None:
        value = body.get(key)
        return None if value is None else _strings(value, f"{name}.{key}", nullable=nullable)

    if body.get("room_name_like") is not None:
        # (Synapse answers 500 for it: a clear refusal instead.)
        raise MatrixError(400, Codes.INVALID_PARAM, f"{name}.room_name_like is not supported")
    return ListFilters(
        is_dm=_optional_bool(body, "is_dm", name),
        is_encrypted=_optional_bool(body, "is_encrypted", name),
        is_invite=_optional_bool(body, "is_invite", name),
        room_types=optional_list("room_types", nullable=True),
        not_room_types=optional_list("not_room_types", nullable=True),
        spaces=optional_list("spaces"),
        tags=optional_list("tags"),
        not_tags=optional_list("not_tags"),
    )


def _list_config(body: Any, name: str) -> ListConfig:
    room = _room_config(body, name)
    ranges: tuple[tuple[int, int], ...] | None = None
    raw = body.get("ranges")
    if raw is not None:
        if not isinstance(raw, list):
            raise _bad(f"{name}.ranges must be a list of [start, end] pairs")
        out = []
        for pair in raw:
            if not isinstance(pair, list) or len(pair) != 2:
                raise _bad(f"{name}.ranges must be a list of [start, end] pairs")
            start = _int(pair[0], f"{name}.ranges")
            end = _int(pair[1], f"{name}.ranges")
            if end < start:
                raise _bad(f"{name}.ranges: the end comes before the start")
            out.append((start, end))
        ranges = tuple(out)
    return ListConfig(room, ranges, _filters(body.get("filters"), f"{name}.filters"))


def _enabled(body: JsonDict, key: str) -> JsonDict | None:
    ext = body.get(key)
    if ext is None:
        return None
    ext = _object(ext, f"extensions.{key}")
    enabled = _optional_bool(ext, "enabled", f"extensions.{key}")
    return ext if enabled else None


def _scope(body: JsonDict, key: str) -> ExtensionScope | None:
    ext = _enabled(body, key)
    if ext is None:
        return None

    def names(field_name: str) -> tuple[str, ...] | None:
        value = ext.get(field_name)
        if value is None:
            return None
        items = _strings(value, f"extensions.{key}.{field_name}")
        return None if WILDCARD in items else items

    return ExtensionScope(lists=names("lists"), rooms=names("rooms"))


def _extensions(body: Any) -> Extensions:
    if body is None:
        return Extensions()
    body = _object(body, "extensions")
    to_device: ToDeviceConfig | None = None
    ext = _enabled(body, "to_device")
    if ext is not None:
        since = ext.get("since")
        if since is not None and (
            not isinstance(since, str) or not since.isdigit() or len(since) > 18
        ):
            raise _bad("extensions.to_device.since must be a to-device next_batch")
        limit = _int(
            ext.get("limit", 100),
            "extensions.to_device.limit",
            minimum=1,
            maximum=MAX_TO_DEVICE_LIMIT,
        )
        to_device = ToDeviceConfig(None if since is None else int(since), limit)
    return Extensions(
        to_device=to_device,
        e2ee=_enabled(body, "e2ee") is not None,
        account_data=_scope(body, "account_data"),
        receipts=_scope(body, "receipts"),
        typing=_scope(body, "typing"),
    )


def parse_request(
    body: Any, user_id: str, device_id: str, pos: Position | None, timeout_ms: int
) -> SlidingSyncRequest:
    """The request from its JSON body (already decoded as untrusted JSON)."""
    body = _object(body, "body")
    conn_id = body.get("conn_id") or ""
    if not isinstance(conn_id, str) or len(conn_id) > 255:
        raise _bad("conn_id must be a string")
    lists: dict[str, ListConfig] = {}
    raw_lists = body.get("lists")
    if raw_lists is not None:
        raw_lists = _object(raw_lists, "lists")
        if len(raw_lists) > MAX_LISTS:
            raise _bad(f"At most {MAX_LISTS} lists")
        for key, value in raw_lists.items():
            if len(key.encode()) > MAX_LIST_KEY_BYTES:
                raise _bad(f"List keys are at most {MAX_LIST_KEY_BYTES} bytes")
            lists[key] = _list_config(value, f"lists.{key}")
    subscriptions: dict[str, RoomConfig] = {}
    raw_subs = body.get("room_subscriptions")
    if raw_subs is not None:
        for room_id, value in _object(raw_subs, "room_subscriptions").items():
            if not is_valid_room_id(room_id):
                raise _bad(f"room_subscriptions: {room_id!r} is not a room id")
            subscriptions[room_id] = _room_config(value, f"room_subscriptions.{room_id}")
    return SlidingSyncRequest(
        user_id=user_id,
        device_id=device_id,
        conn_id=conn_id,
        pos=pos,
        timeout_ms=timeout_ms,
        lists=lists,
        room_subscriptions=subscriptions,
        extensions=_extensions(body.get("extensions")),
    )
