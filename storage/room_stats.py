"""What the admin API says about rooms, read from current state (no stats tables).

Synapse keeps ``room_stats_state`` / ``room_stats_current`` up to date on every state
change; we compute the same figures when asked, from ``rooms``, ``current_state_events``
and the state events' JSON. Read-only: every row here is owned by ``EventsStore``.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from storage.database import Database, Transaction, like_escape

# The state events whose content the room figures come from (state key "").
_STATE_TYPES = (
    "m.room.name",
    "m.room.topic",
    "m.room.avatar",
    "m.room.canonical_alias",
    "m.room.create",
    "m.room.encryption",
    "m.room.join_rules",
    "m.room.guest_access",
    "m.room.history_visibility",
    "m.room.tombstone",
)


@dataclass(frozen=True, slots=True)
class RoomStats:
    room_id: str
    version: str
    creator: str | None
    public: bool
    state_events: int
    joined: tuple[str, ...]  # user ids whose current membership is "join"
    state: dict[str, dict[str, Any]]  # event type -> content, for ``_STATE_TYPES``

    def text(self, event_type: str, key: str) -> str | None:
        value = self.state.get(event_type, {}).get(key)
        return value if isinstance(value, str) else None


@dataclass(frozen=True, slots=True)
class ForwardExtremity:
    event_id: str
    state_group: int | None
    depth: int
    received_ts: int


class RoomStatsStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def get_room_stats(self, room_ids: Sequence[str] | None = None) -> list[RoomStats]:
        """The figures of the given rooms (those we know), or of every room we know."""

        def _txn(txn: Transaction) -> list[RoomStats]:
            where, args = "", list(room_ids or ())
            if room_ids is not None:
                if not room_ids:
                    return []
                where = f" WHERE room_id IN ({', '.join('?' for _ in room_ids)})"
            rooms = txn.select_all(
                "SELECT room_id, room_version, creator, is_public FROM rooms" + where, args
            )
            counts = dict(
                txn.select_all(
                    "SELECT room_id, COUNT(*) FROM current_state_events"
                    + where
                    + " GROUP BY room_id",
                    args,
                )
            )
            joined: dict[str, list[str]] = defaultdict(list)
            for room_id, user_id in txn.select_all(
                "SELECT room_id, state_key FROM current_state_events"
                " WHERE type = 'm.room.member' AND membership = 'join'"
                + where.replace(" WHERE ", " AND "),
                args,
            ):
                joined[room_id].append(user_id)
            marks = ", ".join("?" for _ in _STATE_TYPES)
            state: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
            for room_id, event_type, raw in txn.select_all(
                "SELECT c.room_id, c.type, e.json FROM current_state_events c"
                " JOIN events e ON e.event_id = c.event_id"
                f" WHERE c.state_key = '' AND c.type IN ({marks})"
                + where.replace(" WHERE room_id", " AND c.room_id"),
                [*_STATE_TYPES, *args],
            ):
                content = json.loads(raw).get("content")
                state[room_id][event_type] = content if isinstance(content, dict) else {}
            return [
                RoomStats(
                    room_id=str(r[0]),
                    version=str(r[1]),
                    creator=r[2],
                    public=bool(r[3]),
                    state_events=int(counts.get(r[0], 0)),
                    joined=tuple(sorted(joined.get(r[0], ()))),
                    state=state.get(r[0], {}),
                )
                for r in rooms
            ]

        return await self._db.run_interaction("get_room_stats", _txn)

    async def local_memberships_forgotten(self, room_id: str, server_name: str) -> bool:
        """Whether every local user with a membership in the room has forgotten it (as
        Synapse: true too when no local user has one)."""
        suffix = ":" + server_name

        def _txn(txn: Transaction) -> bool:
            rows = txn.select_all(
                "SELECT c.state_key, m.forgotten FROM current_state_events c"
                " JOIN room_memberships m ON m.event_id = c.event_id"
                " WHERE c.room_id = ? AND c.type = 'm.room.member'",
                (room_id,),
            )
            return not any(str(u).endswith(suffix) and not f for u, f in rows)

        return await self._db.run_interaction("room_forgotten", _txn)

    async def count_devices(self, user_ids: Sequence[str]) -> int:
        def _txn(txn: Transaction) -> int:
            total = 0
            for start in range(0, len(user_ids), 500):
                chunk = list(user_ids[start : start + 500])
                row = txn.select_one(
                    f"SELECT COUNT(*) FROM devices WHERE user_id IN"
                    f" ({', '.join('?' for _ in chunk)})",
                    chunk,
                )
                total += int(row[0]) if row else 0
            return total

        return await self._db.run_interaction("count_devices", _txn)

    async def get_forward_extremities(self, room_id: str) -> list[ForwardExtremity]:
        """The room's forward extremities; ``received_ts`` is the event's
        ``origin_server_ts`` (we keep no receipt time)."""

        def _txn(txn: Transaction) -> list[ForwardExtremity]:
            rows = txn.select_all(
                "SELECT f.event_id, g.state_group, e.topological_ordering, e.origin_server_ts"
                " FROM event_forward_extremities f"
                " JOIN events e ON e.event_id = f.event_id"
                " LEFT JOIN event_to_state_groups g ON g.event_id = f.event_id"
                " WHERE f.room_id = ? ORDER BY e.stream_ordering",
                (room_id,),
            )
            return [
                ForwardExtremity(
                    str(r[0]), int(r[1]) if r[1] is not None else None, int(r[2]), int(r[3])
                )
                for r in rows
            ]

        return await self._db.run_interaction("get_forward_extremities", _txn)

    async def rooms_shared_with(self, server_name: str) -> list[tuple[str, int]]:
        """Rooms with a member of ``server_name`` joined, by room id, each with the
        stream ordering of the room's newest event."""

        def _txn(txn: Transaction) -> list[tuple[str, int]]:
            room_ids = sorted(
                {
                    str(r[0])
                    for r in txn.select_all(
                        "SELECT DISTINCT room_id FROM current_state_events"
                        " WHERE type = 'm.room.member' AND membership = 'join'"
                        " AND state_key LIKE ? ESCAPE '\\'",
                        ("%:" + like_escape(server_name),),
                    )
                }
            )
            out = []
            for room_id in room_ids:
                row = txn.select_one(
                    "SELECT MAX(stream_ordering) FROM events WHERE room_id = ?", (room_id,)
                )
                out.append((room_id, int(row[0]) if row and row[0] is not None else 0))
            return out

        return await self._db.run_interaction("rooms_shared_with", _txn)
