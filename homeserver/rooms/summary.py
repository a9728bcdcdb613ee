"""Room summaries and space hierarchies: ``/hierarchy``, ``/room_summary`` and the
federation ``/hierarchy``.

A room is summarised from our own state when one of our users is joined to it (we hold
its current state); otherwise another server is asked (``RemoteHierarchy``, through the
child event's ``via``), and what it answers is shown only if the requesting user may
see it (the rules are in ``spaces.py``).

Pagination (as Synapse): the walk is depth first over a stack of rooms still to visit;
a page stops at ``limit`` rooms and the stack is kept under a random token for five
minutes (a token can be used again: a retried page is answered the same). A token is bound to its user, root room, ``suggested_only`` and ``max_depth``;
anything else is ``M_INVALID_PARAM``.
"""

from __future__ import annotations

import logging
import secrets
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from federation.acl import server_allowed_by_acl
from homeserver.clock import Clock, now_ms
from homeserver.errors import Codes, MatrixError
from homeserver.events.format import is_valid_server_name
from homeserver.rooms.directory import room_summary_entry
from homeserver.rooms.memberships import MembershipCache
from homeserver.rooms.room_cache import LiveRoom, RoomCache
from homeserver.rooms.spaces import (
    SPACE_ROOM_TYPE,
    ChildEvent,
    allowed_room_ids,
    is_openly_visible,
    space_children,
)

logger = logging.getLogger(__name__)

JsonDict = dict[str, Any]

MAX_ROOMS_PER_PAGE = 50  # also the default page size
MAX_CHILDREN_PER_SPACE = 50  # children answered over federation
MAX_SERVERS_PER_CHILD = 3  # `via` servers asked for one remote room
SESSION_LIFETIME_MS = 5 * 60 * 1000
MAX_SESSIONS = 10_000


@dataclass(frozen=True)
class RemoteSpace:
    """Another server's answer to ``GET /_matrix/federation/v1/hierarchy/{roomId}``."""

    room: JsonDict  # the room's summary, without children_state
    children_state: list[JsonDict]
    children: dict[str, JsonDict]  # summaries of its children, by room id
    inaccessible_children: frozenset[str]


class RemoteHierarchy(Protocol):
    """Asks other servers about rooms we are not in."""

    async def get_hierarchy(
        self, servers: Sequence[str], room_id: str, suggested_only: bool
    ) -> RemoteSpace | None:
        """The first valid answer of ``servers`` (None if none answered)."""
        ...


@dataclass(frozen=True)
class _QueueEntry:
    room_id: str
    via: tuple[str, ...]
    depth: int = 0
    # What the parent's server said about this room (used when it is not a space).
    remote_room: JsonDict | None = None


@dataclass
class _Session:
    user_id: str
    room_id: str
    suggested_only: bool
    max_depth: int | None
    queue: list[_QueueEntry]
    processed: set[str] = field(default_factory=set)
    created_ms: int = 0
    # A server admin's walk (Synapse's admin API): every room we hold, no visibility
    # check, no remote room.
    admin: bool = False


@dataclass(frozen=True)
class _Entry:
    room: JsonDict
    children_state: list[JsonDict]


def _forbidden(user_id: str, room_id: str) -> MatrixError:
    return MatrixError(
        403,
        Codes.FORBIDDEN,
        f"User {user_id} not in room {room_id}, and room previews are disabled",
    )


class RoomSummaryHandler:
    def __init__(
        self, server_name: str, clock: Clock, rooms: RoomCache, memberships: MembershipCache
    ) -> None:
        self._server_name = server_name
        self._clock = clock
        self._rooms = rooms
        self._memberships = memberships
        self._sessions: OrderedDict[str, _Session] = OrderedDict()
        # Set by the composition root when federation is enabled.
        self.remote: RemoteHierarchy | None = None

    def _is_mine(self, user_id: str) -> bool:
        return user_id.split(":", 1)[-1] == self._server_name

    async def _held_room(self, room_id: str) -> LiveRoom | None:
        """The room if we hold its current state: one of our users is joined."""
        room = await self._rooms.get(room_id)
        if room is None or not any(self._is_mine(u) for u in room.joined_members()):
            return None
        return room

    # Visibility ------------------------------------------------------------------

    async def _user_in_any(self, user_id: str, room_ids: Sequence[str]) -> bool:
        rooms = await self._memberships.rooms_for_user(user_id)
        return any(r in rooms and rooms[r].membership == "join" for r in room_ids)

    async def _user_may_see_held(self, room: LiveRoom, user_id: str | None) -> bool:
        if self._openly_visible(room):
            return True
        if user_id is None:
            return False
        if room.membership_of(user_id) in ("join", "invite"):
            return True
        allowed = allowed_room_ids(room.state_content("m.room.join_rules"), room.room_version)
        return await self._user_in_any(user_id, allowed)

    @staticmethod
    def _openly_visible(room: LiveRoom) -> bool:
        return is_openly_visible(
            room.state_content("m.room.join_rules").get("join_rule"),
            room.state_content("m.room.history_visibility").get("history_visibility"),
            room.room_version,
        )

    async def _server_may_see_held(self, room: LiveRoom, origin: str) -> bool:
        """Whether ``origin`` may see a room we hold: it is open, or one of the origin's
        users is joined or invited, or joined to a room the join rules allow."""
        if not server_allowed_by_acl(origin, room.state_content("m.room.server_acl")):
            return False
        if self._openly_visible(room):
            return True
        suffix = f":{origin}"
        if any(u.endswith(suffix) for u in room.members_with("join") + room.members_with("invite")):
            return True
        for other_id in allowed_room_ids(
            room.state_content("m.room.join_rules"), room.room_version
        ):
            other = await self._rooms.get(other_id)
            if other is not None and any(u.endswith(suffix) for u in other.joined_members()):
                return True
        return False

    async def _user_may_see_remote(
        self, user_id: str | None, room_id: str, summary: JsonDict
    ) -> bool:
        """Whether a summary another server gave is for the user's eyes too."""
        if (
            is_openly_visible(summary.get("join_rule", "public"), None, None)
            or summary.get("world_readable") is True
        ):
            return True
        if user_id is None:
            return False
        allowed = summary.get("allowed_room_ids")
        if isinstance(allowed, list) and await self._user_in_any(
            user_id, [r for r in allowed if isinstance(r, str)]
        ):
            return True
        # Invited (the invite came over federation), or joined to a room we still know.
        row = (await self._memberships.rooms_for_user(user_id)).get(room_id)
        return row is not None and row.membership in ("join", "invite")

    # Building entries -------------------------------------------------------------

    @staticmethod
    def summary_of(room: LiveRoom) -> JsonDict:
        """The room summary (``RoomSummary`` of the spec) from our state."""
        entry = room_summary_entry(room)
        entry["room_version"] = room.room_version.identifier
        join_rules = room.state_content("m.room.join_rules")
        if isinstance(join_rules.get("join_rule"), str):
            entry["join_rule"] = join_rules["join_rule"]
        allowed = allowed_room_ids(join_rules, room.room_version)
        if allowed:
            entry["allowed_room_ids"] = allowed
        algorithm = room.state_content("m.room.encryption").get("algorithm")
        if isinstance(algorithm, str):
            entry["encryption"] = algorithm
        return entry

    @staticmethod
    def _children_of(room: LiveRoom, suggested_only: bool) -> list[JsonDict]:
        if room.state_content("m.room.create").get("type") != SPACE_ROOM_TYPE:
            return []
        children = [
            ChildEvent(key[1], ev.content, ev.sender, ev.origin_server_ts)
            for key, ev in room.state.items()
            if key[0] == "m.space.child"
        ]
        return [c.stripped() for c in space_children(children, suggested_only)]

    def _entry(self, room: LiveRoom, suggested_only: bool) -> _Entry:
        return _Entry(self.summary_of(room), self._children_of(room, suggested_only))

    async def _remote(
        self, room_id: str, via: Sequence[str], suggested_only: bool
    ) -> RemoteSpace | None:
        servers = [s for s in via if s != self._server_name and is_valid_server_name(s)]
        servers = servers[:MAX_SERVERS_PER_CHILD]
        if self.remote is None or not servers:
            return None
        return await self.remote.get_hierarchy(servers, room_id, suggested_only)

    # /hierarchy --------------------------------------------------------------------

    async def hierarchy(
        self,
        user_id: str,
        room_id: str,
        *,
        suggested_only: bool = False,
        max_depth: int | None = None,
        limit: int | None = None,
        from_token: str | None = None,
        admin: bool = False,
    ) -> JsonDict:
        if admin:
            if await self._rooms.get(room_id) is None:
                raise MatrixError(404, Codes.NOT_FOUND, "Room not found")
        else:
            root = await self._held_room(room_id)
            # As Synapse: a root we do not hold is asked of nobody (no via to ask).
            if root is None or not await self._user_may_see_held(root, user_id):
                raise _forbidden(user_id, room_id)

        if from_token is not None:
            stored = self._get_session(from_token)
            if (
                stored is None
                or stored.user_id != user_id
                or stored.room_id != room_id
                or stored.suggested_only != suggested_only
                or stored.max_depth != max_depth
                or stored.admin != admin
            ):
                raise MatrixError(400, Codes.INVALID_PARAM, "Unknown pagination token")
            # A copy: the stored page stays as it was, so a retried request gets it again.
            session = _Session(
                user_id,
                room_id,
                suggested_only,
                max_depth,
                list(stored.queue),
                set(stored.processed),
                admin=admin,
            )
        else:
            session = _Session(
                user_id, room_id, suggested_only, max_depth, [_QueueEntry(room_id, ())], admin=admin
            )
        page_size = min(limit or MAX_ROOMS_PER_PAGE, MAX_ROOMS_PER_PAGE)
        rooms: list[JsonDict] = []
        queue = session.queue
        while queue and len(rooms) < page_size:
            item = queue.pop()
            if item.room_id in session.processed:
                continue
            entry, known_children, inaccessible = await self._visit(
                user_id, item, suggested_only, max_depth, admin
            )
            session.processed.add(item.room_id)
            if entry is None:
                continue
            rooms.append({**entry.room, "children_state": entry.children_state})
            if max_depth is not None and item.depth >= max_depth:
                continue
            # Reversed, so the first child is the next popped.
            queue.extend(
                _QueueEntry(
                    ev["state_key"],
                    tuple(ev["content"]["via"]),
                    item.depth + 1,
                    known_children.get(ev["state_key"]),
                )
                for ev in reversed(entry.children_state)
                if ev["type"] == "m.space.child" and ev["state_key"] not in inaccessible
            )
        result: JsonDict = {"rooms": rooms}
        if queue:
            result["next_batch"] = self._store_session(session)
        return result

    async def _visit(
        self,
        user_id: str,
        item: _QueueEntry,
        suggested_only: bool,
        max_depth: int | None,
        admin: bool,
    ) -> tuple[_Entry | None, dict[str, JsonDict], frozenset[str]]:
        """One room of the walk: its entry if the user may see it, what its server said
        about its children, and which children that server said we may not see."""
        if admin:
            room = await self._rooms.get(item.room_id)
            if room is None:
                return None, {}, frozenset()
            return self._entry(room, suggested_only), {}, frozenset()
        held = await self._held_room(item.room_id)
        if held is not None:
            if not await self._user_may_see_held(held, user_id):
                return None, {}, frozenset()
            return self._entry(held, suggested_only), {}, frozenset()
        at_bottom = max_depth is not None and item.depth >= max_depth
        known = item.remote_room
        if known is not None and (known.get("room_type") != SPACE_ROOM_TYPE or at_bottom):
            entry = _Entry(known, [])
            children: dict[str, JsonDict] = {}
            inaccessible: frozenset[str] = frozenset()
        else:
            remote = await self._remote(item.room_id, item.via, suggested_only)
            if remote is None:
                return None, {}, frozenset()
            entry = _Entry(remote.room, remote.children_state)
            children, inaccessible = remote.children, remote.inaccessible_children
        if not await self._user_may_see_remote(user_id, item.room_id, entry.room):
            return None, {}, frozenset()
        return entry, children, inaccessible

    def _store_session(self, session: _Session) -> str:
        token = secrets.token_urlsafe(16)
        session.created_ms = now_ms(self._clock)
        self._sessions[token] = session
        while len(self._sessions) > MAX_SESSIONS:
            self._sessions.popitem(last=False)
        return token

    def _get_session(self, token: str) -> _Session | None:
        """The session of a token (expired ones go first). Sessions are never changed
        once stored: each page stores a new one."""
        now = now_ms(self._clock)
        while self._sessions:
            oldest = next(iter(self._sessions.values()))
            if now - oldest.created_ms <= SESSION_LIFETIME_MS:
                break
            self._sessions.popitem(last=False)
        return self._sessions.get(token)

    # Federation /hierarchy -----------------------------------------------------------

    async def federation_hierarchy(
        self, origin: str, room_id: str, suggested_only: bool
    ) -> JsonDict:
        """A room and its direct children (not theirs), as ``origin`` may see them."""
        room = await self._held_room(room_id)
        if room is not None and not server_allowed_by_acl(
            origin, room.state_content("m.room.server_acl")
        ):
            raise MatrixError(403, Codes.FORBIDDEN, "Server is banned from this room")
        if room is None or not await self._server_may_see_held(room, origin):
            raise MatrixError(404, Codes.NOT_FOUND, f"Unknown room: {room_id}")
        entry = self._entry(room, suggested_only)
        children: list[JsonDict] = []
        inaccessible: list[str] = []
        for ev in entry.children_state[:MAX_CHILDREN_PER_SPACE]:
            child = await self._held_room(ev["state_key"])
            if child is None:
                continue
            if await self._server_may_see_held(child, origin):
                children.append(self.summary_of(child))
            else:
                inaccessible.append(child.room_id)
        return {
            "room": {**entry.room, "children_state": entry.children_state},
            "children": children,
            "inaccessible_children": inaccessible,
        }

    # /room_summary --------------------------------------------------------------------

    async def room_summary(self, user_id: str | None, room_id: str, via: Sequence[str]) -> JsonDict:
        held = await self._held_room(room_id)
        if held is not None:
            if not await self._user_may_see_held(held, user_id):
                raise MatrixError(404, Codes.NOT_FOUND, "Room not found or is not accessible")
            summary = self.summary_of(held)
        else:
            if not via:
                raise MatrixError(400, Codes.MISSING_PARAM, "Missing via to query remote room")
            remote = await self._remote(room_id, via, True)
            if remote is None or not await self._user_may_see_remote(user_id, room_id, remote.room):
                raise MatrixError(404, Codes.NOT_FOUND, "Room not found or is not accessible")
            summary = dict(remote.room)
        if user_id is not None:
            row = (await self._memberships.rooms_for_user(user_id)).get(room_id)
            summary["membership"] = row.membership if row is not None else "leave"
        return summary
