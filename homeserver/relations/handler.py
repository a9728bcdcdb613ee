"""Relations: checks on locally sent relations, ``/relations`` and ``/threads``.

Invariants:
- A local event with a relation is refused (400) before it is built when the parent is
  in another room, or the relation breaks its type's rules: an ``m.annotation`` needs a string ``key`` of at most 500
  characters and may not repeat the sender's own unredacted annotation of the same
  type and key (``M_DUPLICATE_ANNOTATION``); an ``m.replace`` must target a non-state
  event we hold, of the same sender and type, that is not itself a replacement, and
  carry an ``m.new_content`` object (``M_BAD_JSON`` otherwise) unless encrypted; an
  ``m.thread`` may not start from an event that has a relation itself. Other errors
  are ``M_UNKNOWN``, as Synapse answers relation errors and as the spec advises for
  threads. A retry of the same transaction id passes (the creator returns the first
  event). Other relations to an event this server does not hold are accepted (Synapse
  refuses them unless something already relates to that event): the parent may be
  unknown here only, and nothing but an edit needs the parent to be checked.
- Everything served passes history visibility for the requesting user, and the
  parent event of ``/relations`` must be visible (404 otherwise).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from homeserver.errors import Codes, MatrixError
from homeserver.events.event import Event
from homeserver.relations.bundles import Aggregator
from homeserver.requester import Requester
from homeserver.rooms.history import RoomHistory
from homeserver.rooms.room_cache import RoomCache
from homeserver.rooms.visibility import VisibilityFilter
from homeserver.untrusted import parse_int64
from storage.relations import ANNOTATION, REPLACE, THREAD, relation_of
from storage.storage import Storage

JsonDict = dict[str, Any]

DUPLICATE_ANNOTATION = "M_DUPLICATE_ANNOTATION"
MAX_KEY_LENGTH = 500
RECURSION_DEPTH = 3
MAX_LIMIT = 1000
_THREADS_TOKEN_RE = re.compile(r"^(-?\d+)_(\d+)$")


@dataclass(frozen=True, slots=True)
class RelationsPage:
    events: list[Event]
    next_batch: str | None
    prev_batch: str | None
    recursion_depth: int | None


@dataclass(frozen=True, slots=True)
class ThreadsPage:
    roots: list[Event]
    next_batch: str | None


def _unknown(message: str) -> MatrixError:
    return MatrixError(400, Codes.UNKNOWN, message)


class RelationsHandler:
    def __init__(
        self,
        storage: Storage,
        rooms: RoomCache,
        history: RoomHistory,
        visibility: VisibilityFilter,
    ) -> None:
        self._storage = storage
        self._rooms = rooms
        self._history = history
        self._visibility = visibility
        self.aggregator = Aggregator(storage)

    async def bundles_for_user(self, events: Sequence[Event], user_id: str) -> dict[str, JsonDict]:
        return await self.aggregator.bundles(events, user_id)

    # Checks on send ----------------------------------------------------------------------

    async def check_new_event(
        self,
        requester: Requester,
        room_id: str,
        event_type: str,
        content: JsonDict,
        txn_id: str | None,
    ) -> None:
        relation = relation_of(content)
        if relation is None:
            return
        parent = await self._storage.events.get_event(relation.parent_id)
        if parent is not None and parent.room_id != room_id:
            raise _unknown("Relations must be in the same room")
        if parent is None and relation.rel_type == REPLACE:
            raise _unknown("Can't edit an unknown event")
        if relation.rel_type == ANNOTATION:
            await self._check_annotation(requester, event_type, relation.parent_id, content, txn_id)
        elif relation.rel_type == REPLACE:
            assert parent is not None
            self._check_replacement(requester, event_type, parent, content)
        elif (
            relation.rel_type == THREAD
            and parent is not None
            and relation_of(parent.content) is not None
        ):
            raise _unknown("Cannot start threads from an event with a relation")

    async def _check_annotation(
        self,
        requester: Requester,
        event_type: str,
        parent_id: str,
        content: JsonDict,
        txn_id: str | None,
    ) -> None:
        key = content["m.relates_to"].get("key")
        if not isinstance(key, str):
            raise _unknown("Missing aggregation key")
        if len(key) > MAX_KEY_LENGTH:
            raise _unknown("Aggregation key is too long")
        existing_id = await self._storage.relations.find_annotation(
            parent_id, event_type, key, requester.user_id
        )
        if existing_id is None:
            return
        existing = await self._storage.events.get_event(existing_id)
        if (
            existing is not None
            and txn_id is not None
            and existing.txn_id == txn_id
            and existing.txn_device_id == (requester.device_id or "")
        ):
            return  # a retry of the request that sent it
        raise MatrixError(400, DUPLICATE_ANNOTATION, "Can't send same reaction twice")

    @staticmethod
    def _check_replacement(
        requester: Requester, event_type: str, original: Event, content: JsonDict
    ) -> None:
        if original.is_state():
            raise _unknown("State events cannot be edited")
        if original.sender != requester.user_id:
            raise _unknown("Only the sender of an event can edit it")
        if original.type != event_type:
            raise _unknown("An edit must have the type of the event it replaces")
        original_relation = relation_of(original.content)
        if original_relation is not None and original_relation.rel_type == REPLACE:
            raise _unknown("An edit cannot be edited: edit the original event")
        if event_type != "m.room.encrypted" and not isinstance(content.get("m.new_content"), dict):
            raise MatrixError(400, Codes.BAD_JSON, "An edit needs an 'm.new_content' object")

    # /relations ---------------------------------------------------------------------------

    async def relations(
        self,
        user_id: str,
        room_id: str,
        parent_id: str,
        *,
        rel_type: str | None,
        event_type: str | None,
        from_token: str | None,
        to_token: str | None,
        direction: str,
        limit: int,
        recurse: bool | None,
    ) -> RelationsPage:
        await self._history.get_event(user_id, room_id, parent_id)  # 403 / 404 as /event
        backwards = direction == "b"
        limit = max(0, min(limit, MAX_LIMIT))
        start = end = None
        if from_token is not None:
            depth, stream = await self._history.parse_token(room_id, from_token)
            start = (depth, stream + 1) if backwards else (depth, stream)
        if to_token is not None:
            depth, stream = await self._history.parse_token(room_id, to_token)
            end = (depth, stream) if backwards else (depth, stream + 1)
        rows = await self._storage.relations.paginate_relations(
            room_id,
            parent_id,
            rel_type=rel_type,
            event_type=event_type,
            start=start,
            end=end,
            backwards=backwards,
            limit=limit + 1,
            recurse_depth=RECURSION_DEPTH if recurse else 1,
        )
        more = len(rows) > limit
        rows = rows[:limit]
        next_batch = None
        if more and rows:
            last = rows[-1]
            stream = last.stream_ordering - 1 if backwards else last.stream_ordering
            next_batch = f"t{last.topological_ordering}-{stream}"
        events = await self._load_visible(user_id, room_id, [r.event_id for r in rows])
        return RelationsPage(
            events=events,
            next_batch=next_batch,
            prev_batch=from_token,
            recursion_depth=None if recurse is None else (RECURSION_DEPTH if recurse else 1),
        )

    async def _membership(self, user_id: str, room_id: str) -> str | None:
        """The user's membership for reading history (None: peeking a world-readable
        room); 403 when they may not read the room at all."""
        room = await self._rooms.get(room_id) if room_id.startswith("!") else None
        if room is None:
            raise MatrixError(403, Codes.FORBIDDEN, f"User {user_id} not in room {room_id}")
        membership = room.membership_of(user_id)
        if membership in ("join", "leave", "ban"):
            return membership
        hv = room.state_content("m.room.history_visibility").get("history_visibility")
        if hv != "world_readable":
            raise MatrixError(403, Codes.FORBIDDEN, f"User {user_id} not in room {room_id}")
        return None

    async def _load_visible(self, user_id: str, room_id: str, ids: list[str]) -> list[Event]:
        loaded = await self._storage.events.get_events(ids)
        events = [
            loaded[i]
            for i in ids
            if i in loaded and loaded[i].room_id == room_id and loaded[i].rejected_reason is None
        ]
        membership = await self._membership(user_id, room_id)
        return await self._visibility.filter_for_user(
            user_id, events, current_membership=membership
        )

    # /threads -----------------------------------------------------------------------------

    async def threads(
        self,
        user_id: str,
        room_id: str,
        *,
        include: str,
        from_token: str | None,
        limit: int,
    ) -> ThreadsPage:
        await self._membership(user_id, room_id)
        before = None
        if from_token is not None:
            m = _THREADS_TOKEN_RE.match(from_token)
            if m is None:
                raise MatrixError(400, Codes.INVALID_PARAM, "Unknown pagination token")
            before = (parse_int64(m.group(1), "from"), parse_int64(m.group(2), "from"))
        limit = max(1, min(limit, MAX_LIMIT))
        rows = await self._storage.relations.get_threads(
            room_id,
            participant=user_id if include == "participated" else None,
            before=before,
            limit=limit + 1,
        )
        more = len(rows) > limit
        rows = rows[:limit]
        next_batch = None
        if more and rows:
            next_batch = f"{rows[-1].topological_ordering}_{rows[-1].stream_ordering}"
        roots = await self._load_visible(user_id, room_id, [r.thread_id for r in rows])
        return ThreadsPage(roots=roots, next_batch=next_batch)
