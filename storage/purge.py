"""Purging a room's history, or the whole room, from the database.

Invariants kept by ``purge_history`` (Synapse's purge semantics, on our tables):
- Only events before the purge point (depth below it) are touched, and never an event
  the room's DAG still needs: state events stay (current state, the state at the
  remaining events and every auth chain are made of them), and so do local events
  unless ``delete_local_events``. Those kept leave the timeline: they become outliers,
  as the events of an auth chain are, so no timeline read (/messages, /context, /sync,
  search, relations, push counts) returns them. They keep their state group, so the
  state after them is still known: backfill brings them back into the timeline
  (federation/backfill.py) without asking another server for it.
- The rest (remote non-state events, and local ones when asked) are deleted with every
  row that names them.
- The backward extremities afterwards are exactly the events that remaining timeline
  events point at and that are no longer in the timeline, each at the highest depth of
  what points at it: /messages stops there and backfill may fetch history again.
- All of it is one transaction.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from storage.database import Database, Transaction
from storage.relations import remove_relation_txn
from storage.search import unindex_event_txn

logger = logging.getLogger(__name__)


class PurgeRefused(Exception):
    """The purge would leave the room without events to build on."""


@dataclass(frozen=True, slots=True)
class PurgeResult:
    deleted: frozenset[str]
    # Events kept (state, and local ones) and taken out of the timeline.
    hidden: frozenset[str]


def _chunks(items: Sequence[Any], size: int = 400) -> Iterable[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _marks(n: int) -> str:
    return ",".join("?" * n)


class PurgeStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def find_purge_point_for_ts(self, room_id: str, ts: int) -> tuple[int, str] | None:
        """(depth, event id) of the purge point for ``purge_up_to_ts``, as Synapse finds
        it: the room's first timeline event after ``ts`` (or its latest one when none is
        later), so that everything before ``ts`` goes. None if the room has no events."""

        def _txn(txn: Transaction) -> tuple[int, str] | None:
            after = txn.select_one(
                "SELECT MIN(stream_ordering) FROM events WHERE room_id = ?"
                " AND origin_server_ts > ? AND outlier = 0 AND stream_ordering > 0",
                (room_id, ts),
            )
            bound = int(after[0]) if after and after[0] is not None else None
            sql = (
                "SELECT topological_ordering, event_id FROM events WHERE room_id = ?"
                " AND outlier = 0 AND rejected_reason IS NULL"
            )
            args: list[Any] = [room_id]
            if bound is not None:
                sql += " AND stream_ordering <= ?"
                args.append(bound)
            row = txn.select_one(sql + " ORDER BY stream_ordering DESC LIMIT 1", args)
            return (int(row[0]), str(row[1])) if row else None

        return await self._db.run_interaction("purge_point_for_ts", _txn)

    async def purge_history(
        self, room_id: str, depth: int, delete_local_events: bool, server_name: str
    ) -> PurgeResult:
        return await self._db.run_interaction(
            "purge_history",
            self._purge_history_txn,
            room_id,
            depth,
            delete_local_events,
            server_name,
        )

    def _purge_history_txn(
        self,
        txn: Transaction,
        room_id: str,
        depth: int,
        delete_local_events: bool,
        server_name: str,
    ) -> PurgeResult:
        row = txn.select_one(
            "SELECT MAX(e.topological_ordering) FROM event_forward_extremities f"
            " JOIN events e ON e.event_id = f.event_id WHERE f.room_id = ?",
            (room_id,),
        )
        if row is not None and row[0] is not None and int(row[0]) < depth:
            raise PurgeRefused("topological_ordering is greater than forward extremities")

        local_suffix = f":{server_name}"
        deleted: list[str] = []
        hidden: list[str] = []
        for event_id, state_key, sender, outlier in txn.select_all(
            "SELECT event_id, state_key, sender, outlier FROM events"
            " WHERE room_id = ? AND topological_ordering < ?",
            (room_id, depth),
        ):
            deletable = state_key is None and (
                delete_local_events or not str(sender).endswith(local_suffix)
            )
            if deletable:
                deleted.append(str(event_id))
            elif not outlier:
                hidden.append(str(event_id))
        logger.info(
            "[purge] %s before depth %d: deleting %d events, hiding %d",
            room_id,
            depth,
            len(deleted),
            len(hidden),
        )
        touched = deleted + hidden
        # Out of every timeline index first (search finds rows through `events`).
        for event_id in touched:
            unindex_event_txn(txn, event_id, room_id)
            remove_relation_txn(txn, event_id, room_id)
        for chunk in _chunks(touched):
            marks = _marks(len(chunk))
            txn.execute(f"DELETE FROM event_push_actions WHERE event_id IN ({marks})", list(chunk))
            txn.execute(
                f"DELETE FROM threads WHERE room_id = ? AND thread_id IN ({marks})",
                [room_id, *chunk],
            )
        for chunk in _chunks(deleted):
            marks = _marks(len(chunk))
            for table in (
                "event_edges",
                "event_to_state_groups",
                "redactions",
                "event_txn_ids",
                "events",
            ):
                txn.execute(f"DELETE FROM {table} WHERE event_id IN ({marks})", list(chunk))
            txn.execute(
                f"DELETE FROM event_forward_extremities WHERE room_id = ? AND event_id IN ({marks})",
                [room_id, *chunk],
            )
        for chunk in _chunks(hidden):
            txn.execute(
                f"UPDATE events SET outlier = 1 WHERE event_id IN ({_marks(len(chunk))})",
                list(chunk),
            )
        self._rebuild_backward_extremities_txn(txn, room_id, touched)
        return PurgeResult(frozenset(deleted), frozenset(hidden))

    def _rebuild_backward_extremities_txn(
        self, txn: Transaction, room_id: str, touched: Sequence[str]
    ) -> None:
        # Gaps that only purged events pointed at are beyond the new edge of history.
        txn.execute(
            "DELETE FROM event_backward_extremities WHERE room_id = ? AND NOT EXISTS ("
            " SELECT 1 FROM event_edges ed JOIN events e ON e.event_id = ed.event_id"
            " WHERE ed.prev_event_id = event_backward_extremities.event_id"
            " AND e.outlier = 0 AND e.room_id = ?)",
            (room_id, room_id),
        )
        for chunk in _chunks(touched):
            rows = txn.select_all(
                "SELECT ed.prev_event_id, MAX(e.topological_ordering) FROM event_edges ed"
                " JOIN events e ON e.event_id = ed.event_id"
                f" WHERE ed.prev_event_id IN ({_marks(len(chunk))}) AND e.outlier = 0"
                " AND e.room_id = ? GROUP BY ed.prev_event_id",
                [*chunk, room_id],
            )
            for prev_id, pointer_depth in rows:
                txn.execute(
                    "DELETE FROM event_backward_extremities WHERE room_id = ? AND event_id = ?",
                    (room_id, prev_id),
                )
                txn.execute(
                    "INSERT INTO event_backward_extremities (room_id, event_id, depth)"
                    " VALUES (?, ?, ?)",
                    (room_id, prev_id, int(pointer_depth)),
                )

    async def purge_room(self, room_id: str) -> None:
        """Delete every trace of the room's events and state (Synapse's purge_room).
        Kept: whether it is blocked, reports, and users' own data (account data, key
        backups)."""
        await self._db.run_interaction("purge_room", self._purge_room_txn, room_id)

    def _purge_room_txn(self, txn: Transaction, room_id: str) -> None:
        of_room_events = "SELECT event_id FROM events WHERE room_id = ?"
        for table in ("event_edges", "event_to_state_groups", "redactions"):
            txn.execute(f"DELETE FROM {table} WHERE event_id IN ({of_room_events})", (room_id,))
        txn.execute(
            "DELETE FROM state_group_entries WHERE state_group IN"
            " (SELECT id FROM state_groups WHERE room_id = ?)",
            (room_id,),
        )
        for table in (
            "state_groups",
            "current_state_events",
            "event_forward_extremities",
            "event_backward_extremities",
            "room_memberships",
            "out_of_band_memberships",
            "event_txn_ids",
            "event_relations",
            "threads",
            "event_search",
            "event_push_actions",
            "receipts",
            "room_aliases",
            "appservice_room_list",
            "events",
            "rooms",
        ):
            txn.execute(f"DELETE FROM {table} WHERE room_id = ?", (room_id,))
