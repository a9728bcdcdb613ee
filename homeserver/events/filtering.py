"""Client-server event filters (spec v1.19, "Filtering").

Pure code: validation of filter JSON, a parsed immutable representation, event
matching and the ``event_fields`` projection. Storage of filters and the
``filter`` query parameter handling live elsewhere.

Semantics (where the spec is silent we follow Synapse):

* Every list field that is *absent* does not restrict anything; an *empty*
  ``types`` / ``senders`` / ``rooms`` list matches nothing.
* ``not_*`` lists take precedence: an event matching both ``types`` and
  ``not_types`` (etc.) is excluded.
* ``types`` / ``not_types`` entries are globs in which ``*`` matches any
  sequence of characters (anywhere in the pattern, as the spec says; Synapse
  only honours a trailing ``*``). No other character is special. Senders and
  rooms compare by equality.
* ``contains_url``: ``true`` keeps only events whose ``content.url`` is a
  string, ``false`` drops those events, absent ignores ``url`` (Synapse's
  interpretation of "has a url key").
* ``related_by_senders`` / ``related_by_rel_types`` (room event filters) keep
  only events having at least one *child* relation that satisfies both lists
  at once (see :meth:`EventFilter.matches_relations`; the caller supplies the
  children since that needs storage).
* ``limit`` defaults to 10 everywhere (Synapse's default). ``lazy_load_members``
  and ``include_redundant_members`` are read from ``room.state`` and
  ``unread_thread_notifications`` from ``room.timeline``, as Synapse does.
* The room-level ``room.rooms`` / ``room.not_rooms`` are applied before the
  ``timeline`` / ``state`` / ``ephemeral`` / ``account_data`` filters.
* ``presence`` and ``account_data`` are plain ``EventFilter`` objects in the
  spec: room-only keys there are ignored (unknown keys are allowed everywhere
  for forward compatibility).
* ``event_fields``: an absent or empty list keeps whole events. Paths are
  dot-separated with ``\\.`` for a literal dot and ``\\\\`` for a literal
  backslash; any other ``\\x`` is a literal backslash followed by ``x``. As in
  Synapse, an intermediate object that exists is copied (possibly empty) even if
  the leaf is missing.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar

from homeserver.events.format import is_valid_room_id, is_valid_user_id
from homeserver.events.glob import compile_glob

__all__ = [
    "DEFAULT_LIMIT",
    "DEFAULT_FILTER_COLLECTION",
    "EventFilter",
    "FilterCollection",
    "FilterError",
    "apply_event_fields",
    "event_json",
    "matches_type_glob",
    "parse_event_field",
    "validate_event_filter",
    "validate_filter",
    "validate_room_event_filter",
]

DEFAULT_LIMIT: Final = 10
EVENT_FORMATS: Final = ("client", "federation")

_T = TypeVar("_T")


def event_json(event: object) -> Mapping[str, Any]:
    """The JSON of an event given either as a mapping or as an object with a
    ``pdu`` mapping (``homeserver.events.event.Event``)."""
    if isinstance(event, Mapping):
        return event
    pdu = getattr(event, "pdu", None)
    if isinstance(pdu, Mapping):
        return pdu
    raise TypeError(f"expected an event mapping or an object with .pdu, got {type(event)!r}")


class FilterError(Exception):
    """A filter definition does not have the shape the spec requires."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


# --- validation -------------------------------------------------------------------


def _path(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def _check_object(value: object, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise FilterError(f"{where or 'filter'} must be an object")
    return value


def _check_bool(obj: Mapping[str, Any], key: str, prefix: str) -> None:
    if key in obj and not isinstance(obj[key], bool):
        raise FilterError(f"{_path(prefix, key)} must be a boolean")


def _check_str_list(
    obj: Mapping[str, Any],
    key: str,
    prefix: str,
    item_check: Callable[[str], bool] | None = None,
    item_desc: str = "",
) -> None:
    if key not in obj:
        return
    value = obj[key]
    where = _path(prefix, key)
    if not isinstance(value, list):
        raise FilterError(f"{where} must be a list of strings")
    for index, item in enumerate(value):
        if not isinstance(item, str):
            raise FilterError(f"{where}[{index}] must be a string")
        if item_check is not None and not item_check(item):
            raise FilterError(f"{where}[{index}] must be {item_desc}, got {item!r}")


def _check_user_list(obj: Mapping[str, Any], key: str, prefix: str) -> None:
    _check_str_list(obj, key, prefix, is_valid_user_id, "a user ID")


def _check_room_list(obj: Mapping[str, Any], key: str, prefix: str) -> None:
    _check_str_list(obj, key, prefix, is_valid_room_id, "a room ID")


def _check_event_filter_fields(obj: Mapping[str, Any], prefix: str) -> None:
    if "limit" in obj:
        limit = obj["limit"]
        # 0 is taken (as Synapse): a /sync timeline of no events, state only.
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
            raise FilterError(
                f"{_path(prefix, 'limit')} must be a non-negative integer, got {limit!r}"
            )
    _check_str_list(obj, "types", prefix)
    _check_str_list(obj, "not_types", prefix)
    _check_user_list(obj, "senders", prefix)
    _check_user_list(obj, "not_senders", prefix)


def validate_event_filter(filter_json: object, prefix: str = "") -> None:
    """Validate an ``EventFilter`` (``presence`` / ``account_data``)."""
    obj = _check_object(filter_json, prefix)
    _check_event_filter_fields(obj, prefix)


def validate_room_event_filter(filter_json: object, prefix: str = "") -> None:
    """Validate a ``RoomEventFilter`` (``timeline``, ``state``, ``/messages`` ...)."""
    obj = _check_object(filter_json, prefix)
    _check_event_filter_fields(obj, prefix)
    _check_room_list(obj, "rooms", prefix)
    _check_room_list(obj, "not_rooms", prefix)
    for key in (
        "contains_url",
        "lazy_load_members",
        "include_redundant_members",
        "unread_thread_notifications",
    ):
        _check_bool(obj, key, prefix)
    _check_user_list(obj, "related_by_senders", prefix)
    _check_str_list(obj, "related_by_rel_types", prefix)


def _validate_room_filter(room: object, prefix: str) -> None:
    obj = _check_object(room, prefix)
    _check_room_list(obj, "rooms", prefix)
    _check_room_list(obj, "not_rooms", prefix)
    _check_bool(obj, "include_leave", prefix)
    for key in ("timeline", "state", "ephemeral", "account_data"):
        if key in obj:
            validate_room_event_filter(obj[key], _path(prefix, key))


def validate_filter(filter_json: object) -> None:
    """Validate a whole filter (the ``POST /user/{userId}/filter`` body / sync filter).

    Raises :class:`FilterError` naming the offending field. Unknown keys are
    allowed for forward compatibility.
    """
    obj = _check_object(filter_json, "")
    _check_str_list(obj, "event_fields", "")
    if "event_format" in obj and obj["event_format"] not in EVENT_FORMATS:
        raise FilterError(
            f"event_format must be one of 'client' or 'federation', got {obj['event_format']!r}"
        )
    for key in ("presence", "account_data"):
        if key in obj:
            validate_event_filter(obj[key], key)
    if "room" in obj:
        _validate_room_filter(obj["room"], "room")


# --- matching ---------------------------------------------------------------------


def matches_type_glob(event_type: object, pattern: str) -> bool:
    """Whether ``event_type`` matches a ``types`` entry (``*`` = any sequence), in
    linear time whatever the pattern (``homeserver.events.glob``)."""
    if not isinstance(event_type, str):
        return False
    if "*" not in pattern:
        return event_type == pattern
    return compile_glob(pattern, question_mark=False).fullmatch(event_type)


def _str_tuple(value: object) -> tuple[str, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list | tuple):
        raise FilterError(f"expected a list of strings, got {value!r}")
    return tuple(value)


def _opt_bool(value: object) -> bool | None:
    return value if isinstance(value, bool) else None


@dataclass(frozen=True)
class EventFilter:
    """A parsed ``EventFilter`` / ``RoomEventFilter``. ``None`` lists mean "absent"."""

    limit: int = DEFAULT_LIMIT
    types: tuple[str, ...] | None = None
    not_types: tuple[str, ...] = ()
    senders: tuple[str, ...] | None = None
    not_senders: tuple[str, ...] = ()
    rooms: tuple[str, ...] | None = None
    not_rooms: tuple[str, ...] = ()
    contains_url: bool | None = None
    lazy_load_members: bool = False
    include_redundant_members: bool = False
    unread_thread_notifications: bool = False
    related_by_senders: tuple[str, ...] | None = None
    related_by_rel_types: tuple[str, ...] | None = None

    @classmethod
    def from_json(cls, filter_json: Mapping[str, Any], *, room_filter: bool = True) -> EventFilter:
        """Validate and parse. ``room_filter=False`` parses a plain ``EventFilter``
        (room-only keys are ignored)."""
        if room_filter:
            validate_room_event_filter(filter_json)
        else:
            validate_event_filter(filter_json)
        common: dict[str, Any] = {
            "limit": filter_json.get("limit", DEFAULT_LIMIT),
            "types": _str_tuple(filter_json.get("types")),
            "not_types": _str_tuple(filter_json.get("not_types")) or (),
            "senders": _str_tuple(filter_json.get("senders")),
            "not_senders": _str_tuple(filter_json.get("not_senders")) or (),
        }
        if not room_filter:
            return cls(**common)
        return cls(
            **common,
            rooms=_str_tuple(filter_json.get("rooms")),
            not_rooms=_str_tuple(filter_json.get("not_rooms")) or (),
            contains_url=_opt_bool(filter_json.get("contains_url")),
            lazy_load_members=filter_json.get("lazy_load_members", False),
            include_redundant_members=filter_json.get("include_redundant_members", False),
            unread_thread_notifications=filter_json.get("unread_thread_notifications", False),
            related_by_senders=_str_tuple(filter_json.get("related_by_senders")),
            related_by_rel_types=_str_tuple(filter_json.get("related_by_rel_types")),
        )

    # -- individual checks --

    @property
    def matches_everything(self) -> bool:
        """Whether :meth:`matches` is true for every event (no restriction is set)."""
        return (
            self.types is None
            and not self.not_types
            and self.senders is None
            and not self.not_senders
            and self.rooms is None
            and not self.not_rooms
            and self.contains_url is None
        )

    def type_allowed(self, event_type: object) -> bool:
        if any(matches_type_glob(event_type, p) for p in self.not_types):
            return False
        if self.types is None:
            return True
        return any(matches_type_glob(event_type, p) for p in self.types)

    def sender_allowed(self, sender: object) -> bool:
        if sender in self.not_senders:
            return False
        return self.senders is None or sender in self.senders

    def room_allowed(self, room_id: object) -> bool:
        if room_id in self.not_rooms:
            return False
        return self.rooms is None or room_id in self.rooms

    def matches(self, event: Mapping[str, Any], room_id: str | None = None) -> bool:
        """Whether ``event`` passes the type/sender/room/``contains_url`` checks.

        ``room_id`` is used when the event has no ``room_id`` of its own (e.g. a
        client-format event, or ephemeral/account data already keyed by room).
        Relation filters are not checked here: see :meth:`matches_relations`.
        """
        if not self.type_allowed(event.get("type")):
            return False
        if not self.sender_allowed(event.get("sender")):
            return False
        event_room = event.get("room_id", room_id)
        if not self.room_allowed(event_room):
            return False
        if self.contains_url is not None:
            content = event.get("content")
            has_url = isinstance(content, Mapping) and isinstance(content.get("url"), str)
            if has_url != self.contains_url:
                return False
        return True

    @property
    def has_relation_filter(self) -> bool:
        return bool(self.related_by_senders) or bool(self.related_by_rel_types)

    def matches_relations(self, children: Iterable[tuple[str, str]]) -> bool:
        """Relation filter check, given ``(rel_type, sender)`` of every event that
        relates to the candidate. Without relation filters, always true."""
        if not self.has_relation_filter:
            return True
        for rel_type, sender in children:
            if self.related_by_rel_types and rel_type not in self.related_by_rel_types:
                continue
            if self.related_by_senders and sender not in self.related_by_senders:
                continue
            return True
        return False

    def filter(self, events: Iterable[_T], room_id: str | None = None) -> list[_T]:
        """The events that :meth:`matches` (order kept; ``limit`` is not applied).

        Events may be mappings or objects with a ``pdu`` mapping (see :func:`event_json`).
        """
        return [e for e in events if self.matches(event_json(e), room_id)]

    # -- "blocks everything" shortcuts --

    def filters_all_types(self) -> bool:
        return self.types == () or "*" in self.not_types

    def filters_all_senders(self) -> bool:
        return self.senders == ()

    def filters_all_rooms(self) -> bool:
        return self.rooms == ()

    def blocks_all(self) -> bool:
        return self.filters_all_types() or self.filters_all_senders() or self.filters_all_rooms()


_DEFAULT_EVENT_FILTER = EventFilter()


@dataclass(frozen=True)
class FilterCollection:
    """A parsed whole (sync) filter."""

    event_fields: tuple[str, ...] | None = None
    event_format: str = "client"
    presence: EventFilter = _DEFAULT_EVENT_FILTER
    account_data: EventFilter = _DEFAULT_EVENT_FILTER
    rooms: tuple[str, ...] | None = None
    not_rooms: tuple[str, ...] = ()
    include_leave_rooms: bool = False
    timeline: EventFilter = _DEFAULT_EVENT_FILTER
    state: EventFilter = _DEFAULT_EVENT_FILTER
    ephemeral: EventFilter = _DEFAULT_EVENT_FILTER
    room_account_data: EventFilter = field(default=_DEFAULT_EVENT_FILTER)

    @classmethod
    def from_json(cls, filter_json: Mapping[str, Any]) -> FilterCollection:
        """Validate (raising :class:`FilterError`) and parse a whole filter."""
        validate_filter(filter_json)
        room: Mapping[str, Any] = filter_json.get("room", {})

        def room_sub(key: str) -> EventFilter:
            sub = room.get(key)
            return _DEFAULT_EVENT_FILTER if sub is None else EventFilter.from_json(sub)

        def plain(key: str) -> EventFilter:
            sub = filter_json.get(key)
            if sub is None:
                return _DEFAULT_EVENT_FILTER
            return EventFilter.from_json(sub, room_filter=False)

        return cls(
            event_fields=_str_tuple(filter_json.get("event_fields")),
            event_format=filter_json.get("event_format", "client"),
            presence=plain("presence"),
            account_data=plain("account_data"),
            rooms=_str_tuple(room.get("rooms")),
            not_rooms=_str_tuple(room.get("not_rooms")) or (),
            include_leave_rooms=room.get("include_leave", False),
            timeline=room_sub("timeline"),
            state=room_sub("state"),
            ephemeral=room_sub("ephemeral"),
            room_account_data=room_sub("account_data"),
        )

    # -- scalar settings --

    def timeline_limit(self) -> int:
        return self.timeline.limit

    def presence_limit(self) -> int:
        return self.presence.limit

    def ephemeral_limit(self) -> int:
        return self.ephemeral.limit

    def lazy_load_members(self) -> bool:
        return self.state.lazy_load_members

    def include_redundant_members(self) -> bool:
        return self.state.include_redundant_members

    def unread_thread_notifications(self) -> bool:
        return self.timeline.unread_thread_notifications

    def include_leave(self) -> bool:
        return self.include_leave_rooms

    # -- rooms --

    def room_allowed(self, room_id: str) -> bool:
        """The room-level ``room.rooms`` / ``room.not_rooms`` check."""
        if room_id in self.not_rooms:
            return False
        return self.rooms is None or room_id in self.rooms

    def _room_level(self, sub: EventFilter, events: Iterable[_T], room_id: str | None) -> list[_T]:
        if self.rooms is None and not self.not_rooms and sub.matches_everything:
            return list(events)  # the usual case (a whole initial sync's worth of events)
        out: list[_T] = []
        for event in events:
            data = event_json(event)
            event_room = data.get("room_id", room_id)
            # An event without a room id can only be excluded by an explicit
            # ``rooms`` list (the same rule as :meth:`EventFilter.room_allowed`).
            if event_room in self.not_rooms:
                continue
            if self.rooms is not None and event_room not in self.rooms:
                continue
            if sub.matches(data, room_id):
                out.append(event)
        return out

    # Events may be mappings or objects with a ``pdu`` mapping (:func:`event_json`);
    # ``room_id`` stands in for events that carry none (client format, ephemeral).

    def filter_room_timeline(self, events: Iterable[_T], room_id: str | None = None) -> list[_T]:
        return self._room_level(self.timeline, events, room_id)

    def filter_room_state(self, events: Iterable[_T], room_id: str | None = None) -> list[_T]:
        return self._room_level(self.state, events, room_id)

    def filter_ephemeral(self, events: Iterable[_T], room_id: str | None = None) -> list[_T]:
        return self._room_level(self.ephemeral, events, room_id)

    def filter_room_account_data(
        self, events: Iterable[_T], room_id: str | None = None
    ) -> list[_T]:
        return self._room_level(self.room_account_data, events, room_id)

    # -- non-room data --

    def filter_presence(self, events: Iterable[_T]) -> list[_T]:
        return self.presence.filter(events)

    def filter_account_data(self, events: Iterable[_T]) -> list[_T]:
        return self.account_data.filter(events)

    # -- shortcuts for the sync handler --

    def blocks_all_rooms(self) -> bool:
        return self.rooms == ()

    def blocks_all_presence(self) -> bool:
        return self.presence.filters_all_types() or self.presence.filters_all_senders()

    def blocks_all_account_data(self) -> bool:
        return self.account_data.filters_all_types() or self.account_data.filters_all_senders()

    def blocks_all_room_timeline(self) -> bool:
        return self.blocks_all_rooms() or self.timeline.blocks_all()

    def blocks_all_room_ephemeral(self) -> bool:
        return self.blocks_all_rooms() or self.ephemeral.blocks_all()

    def blocks_all_room_account_data(self) -> bool:
        return self.blocks_all_rooms() or self.room_account_data.blocks_all()

    # -- serialisation --

    def project_event(self, event: dict[str, Any]) -> dict[str, Any]:
        """Apply ``event_fields`` (no-op when absent or empty)."""
        if not self.event_fields:
            return event
        return apply_event_fields(event, self.event_fields)


DEFAULT_FILTER_COLLECTION: Final = FilterCollection()


# --- event_fields -----------------------------------------------------------------


def parse_event_field(path: str) -> list[str]:
    """Split a dot-separated property path, honouring ``\\.`` and ``\\\\`` escapes."""
    parts: list[str] = []
    current: list[str] = []
    i = 0
    while i < len(path):
        char = path[i]
        if char == "\\" and i + 1 < len(path) and path[i + 1] in ".\\":
            current.append(path[i + 1])
            i += 2
            continue
        if char == ".":
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
        i += 1
    parts.append("".join(current))
    return parts


def _copy_path(src: Mapping[str, Any], dst: dict[str, Any], keys: Sequence[str]) -> None:
    key = keys[0]
    if key not in src:
        return
    if len(keys) == 1:
        dst[key] = copy.deepcopy(src[key])
        return
    child = src[key]
    if not isinstance(child, Mapping):
        return
    existing = dst.get(key)
    if not isinstance(existing, dict):
        existing = {}
        dst[key] = existing
    _copy_path(child, existing, keys[1:])


def apply_event_fields(event: Mapping[str, Any], fields: Sequence[str]) -> dict[str, Any]:
    """Project ``event`` onto the dotted ``fields`` (``event_fields``).

    An empty ``fields`` returns a (deep) copy of the whole event. The input is
    never modified.
    """
    if not fields:
        return copy.deepcopy(dict(event))
    out: dict[str, Any] = {}
    for path in fields:
        _copy_path(event, out, parse_event_field(path))
    return out
