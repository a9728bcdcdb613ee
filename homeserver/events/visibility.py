"""Room history visibility (spec v1.19, "Room History Visibility"), as pure functions.

Inputs
------
``history_visibility`` is the ``m.room.history_visibility`` setting in the room
state *at the event*, i.e. before it (for non-state events before and after are
the same). ``None`` or a value the server does not understand means ``shared``.

``membership_at_event`` is the user's ``membership`` in that same state (``None``
if they had no membership event).

Client rules (:func:`is_event_visible`), in the spec's order
----------------------------------------------------------------
1. ``world_readable``: allow.
2. The user's membership was ``join``: allow.
3. ``shared`` and the user joined the room at any point after the event: allow.
   Whether they did cannot be read from the state at the event, so, like Synapse,
   it is the caller's call: ``is_peeking=True`` means the user has never been
   joined (e.g. peeking into a ``world_readable`` room, or a never-joined
   invitee); ``is_peeking=False`` (the default, which is what ``/sync`` uses)
   means they have. ``current_membership == "join"`` always counts as having
   joined. Callers must still cut off what a departed user sees at the point they
   left (the ``/messages`` and ``/sync`` bounds), as Synapse does.
4. ``invited`` and the user's membership was ``invite``: allow.
5. Otherwise deny. ``joined`` thus only shows events sent while joined; ``leave``,
   ``ban``, ``knock`` and no membership grant nothing by themselves.

Special events:

* ``m.room.history_visibility`` (state key ``""``): visible if the rules allow
  it under the visibility before *or* after it. "Before" is ``history_visibility``
  (and ``unsigned.prev_content`` when present), "after" is the event's content.
* The user's own ``m.room.member`` event: visible if the rules allow it with the
  membership before *or* after it. "Before" is ``membership_at_event`` (and
  ``unsigned.prev_content.membership`` when present), "after" is the event's
  content. So a user always sees their own join, and any change away from
  ``join``. In addition, like Synapse, a user always sees their own ``leave``
  that follows an ``invite`` (a rejected or withdrawn invite), so the room can
  disappear from their client even under ``joined``.
  The event's content always gives the "after" side, so for these two event kinds
  a caller using the state *after* the event still gets the right answer as long
  as ``unsigned.prev_content`` is present to give the "before" side.

Servers (:func:`server_may_see_event`), as Synapse (the spec does not say)
---------------------------------------------------------------------------
A remote server may see an event when the visibility is ``world_readable`` or
``shared`` (whatever its membership), or when one of its users was ``join`` at
the event, or ``invite`` with ``invited`` visibility. The same before/after
rule applies to ``m.room.history_visibility`` events and to membership events of
the server's own users. Events a server may not see are normally sent redacted
(:func:`filter_events_for_server` with ``redact``).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Any, Final, TypeVar

__all__ = [
    "HISTORY_VISIBILITY_VALUES",
    "effective_history_visibility",
    "filter_events_for_client",
    "filter_events_for_server",
    "is_event_visible",
    "mapping_view",
    "server_may_see_event",
    "server_of_user",
]

WORLD_READABLE: Final = "world_readable"
SHARED: Final = "shared"
INVITED: Final = "invited"
JOINED: Final = "joined"
HISTORY_VISIBILITY_VALUES: Final = (WORLD_READABLE, SHARED, INVITED, JOINED)

_T = TypeVar("_T")

EventView = Callable[[Any], tuple[str, Mapping[str, Any]]]


def effective_history_visibility(value: object) -> str:
    """The setting in force: unknown values and ``None`` mean ``shared``."""
    return value if isinstance(value, str) and value in HISTORY_VISIBILITY_VALUES else SHARED


def _content(event: Mapping[str, Any]) -> Mapping[str, Any]:
    content = event.get("content")
    return content if isinstance(content, Mapping) else {}


def _prev_content(event: Mapping[str, Any]) -> Mapping[str, Any] | None:
    unsigned = event.get("unsigned")
    if not isinstance(unsigned, Mapping):
        return None
    prev = unsigned.get("prev_content")
    return prev if isinstance(prev, Mapping) else None


def _membership_value(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _visibilities(event: Mapping[str, Any], history_visibility: str | None) -> set[str]:
    """The visibility settings to consider: before and, for a visibility change, after."""
    result = {effective_history_visibility(history_visibility)}
    if event.get("type") == "m.room.history_visibility" and event.get("state_key") == "":
        result.add(effective_history_visibility(_content(event).get("history_visibility")))
        prev = _prev_content(event)
        if prev is not None:
            result.add(effective_history_visibility(prev.get("history_visibility")))
    return result


def _is_member_event_for(event: Mapping[str, Any], user_ids: Callable[[str], bool]) -> bool:
    state_key = event.get("state_key")
    return (
        event.get("type") == "m.room.member" and isinstance(state_key, str) and user_ids(state_key)
    )


def _memberships_around(
    event: Mapping[str, Any], before: str | None
) -> tuple[set[str | None], set[str | None]]:
    """(memberships before, memberships after) for a membership event."""
    befores: set[str | None] = {before}
    prev = _prev_content(event)
    if prev is not None:
        befores.add(_membership_value(prev.get("membership")))
    after: set[str | None] = {_membership_value(_content(event).get("membership"))}
    return befores, after


def _allowed(visibility: str, membership: str | None, joined_later: bool) -> bool:
    if visibility == WORLD_READABLE:
        return True
    if membership == "join":
        return True
    if visibility == SHARED and joined_later:
        return True
    return visibility == INVITED and membership == "invite"


def is_event_visible(
    event: Mapping[str, Any],
    user_id: str,
    *,
    history_visibility: str | None,
    membership_at_event: str | None,
    current_membership: str | None = None,
    is_peeking: bool = False,
) -> bool:
    """Whether ``user_id`` may see ``event`` (see the module docstring for the rules)."""
    joined_later = current_membership == "join" or not is_peeking
    visibilities = _visibilities(event, history_visibility)

    memberships: set[str | None] = {membership_at_event}
    if _is_member_event_for(event, lambda state_key: state_key == user_id):
        befores, after = _memberships_around(event, membership_at_event)
        if "leave" in after and befores & {"join", "invite"}:
            return True
        memberships = befores | after

    return any(_allowed(v, m, joined_later) for v in visibilities for m in memberships)


def mapping_view(event: Any) -> tuple[str, Mapping[str, Any]]:
    """Default ``view``: the event is a JSON mapping with an ``event_id`` key."""
    if not isinstance(event, Mapping):
        raise TypeError(f"expected an event mapping, got {type(event).__name__}; pass view=")
    event_id = event.get("event_id")
    if not isinstance(event_id, str):
        raise ValueError("event has no event_id (a v3+ PDU?); pass view=")
    return event_id, event


def filter_events_for_client(
    events: Iterable[_T],
    user_id: str,
    state_at_event: Callable[[str], tuple[str | None, str | None]],
    *,
    current_membership: str | None = None,
    is_peeking: bool = False,
    always_include_ids: Collection[str] = (),
    view: EventView = mapping_view,
) -> list[_T]:
    """The events ``user_id`` may see, in order.

    ``state_at_event(event_id)`` returns ``(history_visibility, membership of
    user_id)`` at that event. Events in ``always_include_ids`` (e.g. the current
    state sent by ``/sync``) skip the check, as in Synapse. ``view(event)`` gives
    ``(event_id, event JSON)``; the default reads mappings with an ``event_id``
    key (for ``Event`` objects pass ``lambda e: (e.event_id, e.pdu)``).
    """
    out: list[_T] = []
    for event in events:
        event_id, event_json = view(event)
        if event_id in always_include_ids:
            out.append(event)
            continue
        visibility, membership = state_at_event(event_id)
        if is_event_visible(
            event_json,
            user_id,
            history_visibility=visibility,
            membership_at_event=membership,
            current_membership=current_membership,
            is_peeking=is_peeking,
        ):
            out.append(event)
    return out


def server_of_user(user_id: str) -> str:
    """The server name part of a user id."""
    return user_id.partition(":")[2]


def server_may_see_event(
    event: Mapping[str, Any],
    server_name: str,
    *,
    history_visibility: str | None,
    memberships: Mapping[str, str | None],
) -> bool:
    """Whether the remote ``server_name`` may see ``event`` unredacted.

    ``memberships`` maps user IDs to their membership at the event (the room's
    members; users of other servers are ignored, so the whole map may be passed).
    """
    visibilities = _visibilities(event, history_visibility)
    if visibilities & {WORLD_READABLE, SHARED}:
        return True

    def ours(user_id: str) -> bool:
        return server_of_user(user_id) == server_name

    seen: set[str | None] = {m for user, m in memberships.items() if ours(user)}
    if _is_member_event_for(event, ours):
        state_key: str = event["state_key"]
        befores, after = _memberships_around(event, memberships.get(state_key))
        seen |= befores | after

    return any(_allowed(v, m, joined_later=False) for v in visibilities for m in seen)


def filter_events_for_server(
    events: Iterable[_T],
    server_name: str,
    state_at_event: Callable[[str], tuple[str | None, Mapping[str, str | None]]],
    *,
    redact: Callable[[_T], _T] | None = None,
    view: EventView = mapping_view,
) -> list[_T]:
    """Events for ``server_name`` (``/backfill``, ``/get_missing_events`` ...).

    ``state_at_event(event_id)`` returns ``(history_visibility, memberships)`` at
    the event. Events the server may not see are replaced by ``redact(event)``
    (Synapse's behaviour, keeping the DAG walkable) or, without ``redact``, dropped.
    ``view`` is as for :func:`filter_events_for_client`.
    """
    out: list[_T] = []
    for event in events:
        event_id, event_json = view(event)
        visibility, memberships = state_at_event(event_id)
        if server_may_see_event(
            event_json, server_name, history_visibility=visibility, memberships=memberships
        ):
            out.append(event)
        elif redact is not None:
            out.append(redact(event))
    return out
