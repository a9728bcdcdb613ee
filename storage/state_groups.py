"""State groups (the state before and after each timeline event) and current state.

Invariants:
- A state group is written once, in the persist transaction of the event that first
  needs it (``write_state_groups_txn``), and never changed; its id comes from ``ids``
  (handed out on the reactor thread by the room's writer).
- A group is stored as a delta on ``prev_group``; after ``MAX_STATE_DELTA_DEPTH`` deltas
  on a chain the group is stored whole, so reading one walks a bounded chain.
- ``current_state_events`` holds the room's current state; it changes only in the
  persist transaction (``set_current_state_txn``, ``apply_current_state_delta_txn``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from homeserver.events.event import Event
from storage.database import Database, Transaction
from storage.id_generator import IdGenerator

StateKey = tuple[str, str]
StateMap = dict[StateKey, str]

# After this many deltas on a chain, a state group is stored whole.
MAX_STATE_DELTA_DEPTH = 50


@dataclass(frozen=True, slots=True)
class NewStateGroup:
    group_id: int
    prev_group: int | None
    delta: StateMap
    delta_depth: int


def _chunks(items: Sequence[Any], size: int = 500) -> Iterable[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def write_state_groups_txn(
    txn: Transaction, room_id: str, groups: Iterable[NewStateGroup | None]
) -> None:
    for sg in groups:
        if sg is None:
            continue
        txn.execute(
            "INSERT INTO state_groups (id, room_id, prev_group, delta_depth) VALUES (?, ?, ?, ?)",
            (sg.group_id, room_id, sg.prev_group, sg.delta_depth),
        )
        txn.execute_many(
            "INSERT INTO state_group_entries (state_group, type, state_key, event_id)"
            " VALUES (?, ?, ?, ?)",
            [(sg.group_id, t, sk, eid) for (t, sk), eid in sg.delta.items()],
        )


def set_current_state_txn(txn: Transaction, ev: Event) -> None:
    """The state event ``ev`` becomes current for its key."""
    txn.execute(
        "DELETE FROM current_state_events WHERE room_id = ? AND type = ? AND state_key = ?",
        (ev.room_id, ev.type, ev.state_key),
    )
    txn.execute(
        "INSERT INTO current_state_events (room_id, type, state_key, event_id,"
        " membership) VALUES (?, ?, ?, ?, ?)",
        (ev.room_id, ev.type, ev.state_key, ev.event_id, ev.membership),
    )


def apply_current_state_delta_txn(
    txn: Transaction, room_id: str, delta: dict[StateKey, str | None]
) -> None:
    """A wholesale change of the room's current state (after state resolution); None
    removes a key."""
    for (etype, state_key), event_id in delta.items():
        txn.execute(
            "DELETE FROM current_state_events WHERE room_id = ? AND type = ? AND state_key = ?",
            (room_id, etype, state_key),
        )
        if event_id is None:
            continue
        membership = None
        if etype == "m.room.member":
            row = txn.select_one("SELECT json FROM events WHERE event_id = ?", (event_id,))
            if row is not None:
                membership = json.loads(row[0]).get("content", {}).get("membership")
        txn.execute(
            "INSERT INTO current_state_events (room_id, type, state_key, event_id, membership)"
            " VALUES (?, ?, ?, ?, ?)",
            (room_id, etype, state_key, event_id, membership),
        )


class StateGroupStore:
    def __init__(self, db: Database, ids: IdGenerator) -> None:
        self._db = db
        self.ids = ids

    async def get_state_group_delta_depth(self, group: int) -> int:
        def _txn(txn: Transaction) -> int:
            row = txn.select_one("SELECT delta_depth FROM state_groups WHERE id = ?", (group,))
            return int(row[0]) if row else 0

        return await self._db.run_interaction("state_group_depth", _txn)

    def _state_group_txn(self, txn: Transaction, group: int) -> StateMap:
        chain: list[int] = []
        current: int | None = group
        while current is not None:
            chain.append(current)
            row = txn.select_one("SELECT prev_group FROM state_groups WHERE id = ?", (current,))
            current = int(row[0]) if row and row[0] is not None else None
        state: StateMap = {}
        for g in reversed(chain):
            for t, sk, eid in txn.select_all(
                "SELECT type, state_key, event_id FROM state_group_entries WHERE state_group = ?",
                (g,),
            ):
                state[(t, sk)] = eid
        return state

    def _state_group_keys_txn(
        self, txn: Transaction, group: int, keys: Sequence[StateKey]
    ) -> StateMap:
        """Only ``keys`` of a state group: walks the delta chain until all are found."""
        found: StateMap = {}
        missing = set(keys)
        current: int | None = group
        while current is not None and missing:
            # One query per event type and group (not per key): a server's members
            # are many keys of one type.
            by_type: dict[str, list[str]] = {}
            for t, sk in missing:
                by_type.setdefault(t, []).append(sk)
            for t, state_keys in by_type.items():
                for chunk in _chunks(sorted(state_keys)):
                    marks = ",".join("?" * len(chunk))
                    for sk, eid in txn.select_all(
                        "SELECT state_key, event_id FROM state_group_entries"
                        f" WHERE state_group = ? AND type = ? AND state_key IN ({marks})",
                        [current, t, *chunk],
                    ):
                        found[(t, str(sk))] = str(eid)
                        missing.discard((t, str(sk)))
            prev = txn.select_one("SELECT prev_group FROM state_groups WHERE id = ?", (current,))
            current = int(prev[0]) if prev and prev[0] is not None else None
        return found

    async def get_state_keys_at_events(
        self, event_ids: Sequence[str], keys: Sequence[StateKey], *, before: bool
    ) -> dict[str, StateMap]:
        """For each event, the given state keys in the state before (or after) it."""

        def _txn(txn: Transaction) -> dict[str, StateMap]:
            groups: dict[str, int] = {}
            for chunk in _chunks(list(event_ids)):
                marks = ",".join("?" * len(chunk))
                for eid, after, bef in txn.select_all(
                    "SELECT event_id, state_group, state_group_before FROM event_to_state_groups"
                    f" WHERE event_id IN ({marks})",
                    list(chunk),
                ):
                    groups[eid] = int(bef if before else after)
            by_group: dict[int, StateMap] = {}
            for group in set(groups.values()):
                by_group[group] = self._state_group_keys_txn(txn, group, keys)
            return {eid: by_group[g] for eid, g in groups.items()}

        return await self._db.run_interaction("state_keys_at_events", _txn)

    async def get_state_group(self, group: int) -> StateMap:
        return await self._db.run_interaction("get_state_group", self._state_group_txn, group)

    async def get_state_ids_at_event(
        self, event_id: str, *, before: bool = False
    ) -> StateMap | None:
        """State after (or before) an event, as (type, state_key) -> event id."""

        def _txn(txn: Transaction) -> StateMap | None:
            row = txn.select_one(
                "SELECT state_group, state_group_before FROM event_to_state_groups"
                " WHERE event_id = ?",
                (event_id,),
            )
            if row is None:
                return None
            return self._state_group_txn(txn, int(row[1] if before else row[0]))

        return await self._db.run_interaction("state_at_event", _txn)

    async def get_state_ids_at_stream(self, room_id: str, stream: int) -> StateMap:
        """State of the room after the last event at or before ``stream``."""

        def _txn(txn: Transaction) -> StateMap:
            row = txn.select_one(
                "SELECT s.state_group FROM events e JOIN event_to_state_groups s USING (event_id)"
                " WHERE e.room_id = ? AND e.stream_ordering <= ? AND e.outlier = 0"
                " ORDER BY e.stream_ordering DESC LIMIT 1",
                (room_id, stream),
            )
            return self._state_group_txn(txn, int(row[0])) if row else {}

        return await self._db.run_interaction("state_at_stream", _txn)

    async def get_current_state_ids(self, room_id: str) -> StateMap:
        def _txn(txn: Transaction) -> StateMap:
            return {
                (r[0], r[1]): r[2]
                for r in txn.select_all(
                    "SELECT type, state_key, event_id FROM current_state_events WHERE room_id = ?",
                    (room_id,),
                )
            }

        return await self._db.run_interaction("current_state_ids", _txn)
