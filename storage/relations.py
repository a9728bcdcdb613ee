"""Event relationships and threads.

Invariants:
- ``index_relations_txn`` runs inside the transaction that persists an event
  (``EventsStore._persist_txn``): an event's ``event_relations`` row, and its thread's
  ``threads`` row, commit together with the event or not at all.
- A redaction that takes effect deletes the relation of the event it redacts in the
  same transaction (the relationship is broken), and recomputes the thread's latest
  event; an event that arrives already redacted is not indexed.
- Only well-formed relations are indexed: ``m.relates_to`` an object with string
  ``rel_type`` and ``event_id``; rich replies (``m.in_reply_to`` alone) are not
  relations here. Rejected events and outliers are never indexed.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from homeserver.events.event import Event
from storage.database import Database, Transaction

THREAD = "m.thread"
REPLACE = "m.replace"
ANNOTATION = "m.annotation"
REFERENCE = "m.reference"
MAIN_THREAD = "main"

# A (topological_ordering, stream_ordering) position in a room's history.
Position = tuple[int, int]


@dataclass(frozen=True, slots=True)
class Relation:
    """What an event's ``m.relates_to`` says, when it is a usable relation."""

    parent_id: str
    rel_type: str
    key: str | None


def relation_of(content: dict[str, Any]) -> Relation | None:
    relates = content.get("m.relates_to")
    if not isinstance(relates, dict):
        return None
    rel_type, parent = relates.get("rel_type"), relates.get("event_id")
    if not isinstance(rel_type, str) or not isinstance(parent, str):
        return None
    key = relates.get("key") if rel_type == ANNOTATION else None
    return Relation(parent, rel_type, key if isinstance(key, str) else None)


@dataclass(frozen=True, slots=True)
class EditCandidate:
    parent_id: str
    event_id: str
    sender: str
    type: str
    origin_server_ts: int


@dataclass(frozen=True, slots=True)
class AggregationRows:
    """Everything needed to bundle aggregations for a set of parent events."""

    edits: dict[str, list[EditCandidate]]  # parent -> candidates, most recent first
    thread_counts: dict[str, int]
    thread_latest: dict[str, str]  # root -> latest event id
    participated: set[str]  # roots the viewer sent an m.thread child to
    references: dict[str, list[str]]  # parent -> referencing event ids, oldest first


@dataclass(frozen=True, slots=True)
class RelationRow:
    event_id: str
    topological_ordering: int
    stream_ordering: int


@dataclass(frozen=True, slots=True)
class ThreadRow:
    thread_id: str
    latest_event_id: str
    topological_ordering: int
    stream_ordering: int


def _chunks(items: Sequence[str], size: int = 500) -> Iterable[Sequence[str]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _after(column_prefix: str = "") -> str:
    t, s = f"{column_prefix}topological_ordering", f"{column_prefix}stream_ordering"
    return f"({t} > ? OR ({t} = ? AND {s} > ?))"


def _before(column_prefix: str = "") -> str:
    t, s = f"{column_prefix}topological_ordering", f"{column_prefix}stream_ordering"
    return f"({t} < ? OR ({t} = ? AND {s} < ?))"


# Writing (inside the persist transaction) -----------------------------------------------


def index_relations_txn(
    txn: Transaction, ev: Event, *, redacted: bool, redaction_applied: bool
) -> None:
    """Record ``ev``'s relation, or break the one its redaction targets.

    ``redacted``: ``ev`` is stored already redacted (its redaction came first);
    ``redaction_applied``: ``ev`` is a redaction that took effect on its target."""
    if ev.outlier or ev.rejected_reason is not None:
        return
    redacts = ev.redacts
    if redacts is not None and redaction_applied:
        remove_relation_txn(txn, redacts, ev.room_id)
    relation = relation_of(ev.content)
    if relation is None or redacted:
        return  # a redacted event's relationship is broken
    txn.execute(
        "INSERT INTO event_relations (event_id, relates_to_id, rel_type, aggregation_key,"
        " sender, type, room_id, stream_ordering, topological_ordering, origin_server_ts)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            ev.event_id,
            relation.parent_id,
            relation.rel_type,
            relation.key,
            ev.sender,
            ev.type,
            ev.room_id,
            ev.stream_ordering,
            ev.depth,
            ev.origin_server_ts,
        ),
    )
    if relation.rel_type == THREAD:
        txn.execute(
            "INSERT INTO threads (room_id, thread_id, latest_event_id, topological_ordering,"
            " stream_ordering) VALUES (?, ?, ?, ?, ?)"
            " ON CONFLICT (room_id, thread_id) DO UPDATE SET"
            " latest_event_id = excluded.latest_event_id,"
            " topological_ordering = excluded.topological_ordering,"
            " stream_ordering = excluded.stream_ordering"
            " WHERE threads.topological_ordering < excluded.topological_ordering"
            " OR (threads.topological_ordering = excluded.topological_ordering"
            " AND threads.stream_ordering < excluded.stream_ordering)",
            (ev.room_id, relation.parent_id, ev.event_id, ev.depth, ev.stream_ordering),
        )


def remove_relation_txn(txn: Transaction, event_id: str, room_id: str) -> None:
    row = txn.select_one(
        "SELECT relates_to_id, rel_type FROM event_relations WHERE event_id = ? AND room_id = ?",
        (event_id, room_id),
    )
    if row is None:
        return
    txn.execute("DELETE FROM event_relations WHERE event_id = ?", (event_id,))
    if row[1] != THREAD:
        return
    root = str(row[0])
    latest = txn.select_one(
        "SELECT event_id, topological_ordering, stream_ordering FROM event_relations"
        " WHERE relates_to_id = ? AND rel_type = ? AND room_id = ?"
        " ORDER BY topological_ordering DESC, stream_ordering DESC LIMIT 1",
        (root, THREAD, room_id),
    )
    if latest is None:
        txn.execute("DELETE FROM threads WHERE room_id = ? AND thread_id = ?", (room_id, root))
    else:
        txn.execute(
            "UPDATE threads SET latest_event_id = ?, topological_ordering = ?,"
            " stream_ordering = ? WHERE room_id = ? AND thread_id = ?",
            (latest[0], int(latest[1]), int(latest[2]), room_id, root),
        )


# Reading ----------------------------------------------------------------------------------


class RelationsStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def find_annotation(
        self, parent_id: str, event_type: str, key: str, sender: str
    ) -> str | None:
        """The id of ``sender``'s unredacted annotation of ``parent_id`` with this key."""

        def _txn(txn: Transaction) -> str | None:
            row = txn.select_one(
                "SELECT event_id FROM event_relations WHERE relates_to_id = ? AND rel_type = ?"
                " AND type = ? AND aggregation_key = ? AND sender = ? LIMIT 1",
                (parent_id, ANNOTATION, event_type, key, sender),
            )
            return str(row[0]) if row else None

        return await self._db.run_interaction("find_annotation", _txn)

    async def is_relation_target(self, event_id: str) -> bool:
        def _txn(txn: Transaction) -> bool:
            return (
                txn.select_one(
                    "SELECT 1 FROM event_relations WHERE relates_to_id = ? LIMIT 1", (event_id,)
                )
                is not None
            )

        return await self._db.run_interaction("is_relation_target", _txn)

    async def get_thread_id(self, event_id: str, max_hops: int = 3) -> str:
        """The thread ``event_id`` is in (a root id), following at most ``max_hops``
        relations upwards; ``main`` when none is a thread relation."""

        def _txn(txn: Transaction) -> str:
            current = event_id
            for _ in range(max_hops):
                row = txn.select_one(
                    "SELECT relates_to_id, rel_type FROM event_relations WHERE event_id = ?",
                    (current,),
                )
                if row is None:
                    return MAIN_THREAD
                if row[1] == THREAD:
                    return str(row[0])
                current = str(row[0])
            return MAIN_THREAD

        return await self._db.run_interaction("get_thread_id", _txn)

    async def paginate_relations(
        self,
        room_id: str,
        parent_id: str,
        *,
        rel_type: str | None,
        event_type: str | None,
        start: Position | None,
        end: Position | None,
        backwards: bool,
        limit: int,
        recurse_depth: int = 1,
    ) -> list[RelationRow]:
        """Children of ``parent_id`` strictly beyond ``start`` and up to ``end`` (both
        exclusive bounds in the direction of travel: ``start`` is where a page begins,
        ``end`` where pagination stops), in history order for the direction.

        With ``recurse_depth`` > 1 events relating to children are included too, down
        to that many levels; ``rel_type``/``event_type`` filter the returned events.
        """

        def _txn(txn: Transaction) -> list[RelationRow]:
            conditions = ["r.room_id = ?"]
            args: list[Any] = [room_id]
            if rel_type is not None:
                conditions.append("r.rel_type = ?")
                args.append(rel_type)
            if event_type is not None:
                conditions.append("r.type = ?")
                args.append(event_type)
            if start is not None:
                conditions.append(_before("r.") if backwards else _after("r."))
                args += [start[0], start[0], start[1]]
            if end is not None:
                conditions.append(_after("r.") if backwards else _before("r."))
                args += [end[0], end[0], end[1]]
            order = "DESC" if backwards else "ASC"
            where = " AND ".join(conditions)
            if recurse_depth > 1:
                sql = (
                    "WITH RECURSIVE related (event_id, depth) AS ("
                    " SELECT event_id, 1 FROM event_relations WHERE relates_to_id = ?"
                    " UNION ALL SELECT c.event_id, related.depth + 1 FROM event_relations c"
                    " JOIN related ON c.relates_to_id = related.event_id"
                    " WHERE related.depth < ?)"
                    " SELECT r.event_id, r.topological_ordering, r.stream_ordering"
                    " FROM event_relations r JOIN related ON r.event_id = related.event_id"
                    f" WHERE {where}"
                )
                args = [parent_id, recurse_depth, *args]
            else:
                sql = (
                    "SELECT r.event_id, r.topological_ordering, r.stream_ordering"
                    f" FROM event_relations r WHERE r.relates_to_id = ? AND {where}"
                )
                args = [parent_id, *args]
            sql += f" ORDER BY r.topological_ordering {order}, r.stream_ordering {order} LIMIT ?"
            rows = txn.select_all(sql, [*args, limit])
            return [RelationRow(str(r[0]), int(r[1]), int(r[2])) for r in rows]

        return await self._db.run_interaction("paginate_relations", _txn)

    async def get_threads(
        self,
        room_id: str,
        *,
        participant: str | None,
        before: Position | None,
        limit: int,
    ) -> list[ThreadRow]:
        """Thread roots of a room, most recently active first (by their latest event),
        strictly before ``before``; with ``participant``, only threads that user
        started or replied in."""

        def _txn(txn: Transaction) -> list[ThreadRow]:
            sql = (
                "SELECT t.thread_id, t.latest_event_id, t.topological_ordering,"
                " t.stream_ordering FROM threads t WHERE t.room_id = ?"
            )
            args: list[Any] = [room_id]
            if before is not None:
                sql += " AND " + _before("t.")
                args += [before[0], before[0], before[1]]
            if participant is not None:
                sql += (
                    " AND (EXISTS (SELECT 1 FROM event_relations r WHERE"
                    " r.relates_to_id = t.thread_id AND r.rel_type = ? AND r.sender = ?)"
                    " OR EXISTS (SELECT 1 FROM events e WHERE e.event_id = t.thread_id"
                    " AND e.sender = ?))"
                )
                args += [THREAD, participant, participant]
            sql += " ORDER BY t.topological_ordering DESC, t.stream_ordering DESC LIMIT ?"
            rows = txn.select_all(sql, [*args, limit])
            return [ThreadRow(str(r[0]), str(r[1]), int(r[2]), int(r[3])) for r in rows]

        return await self._db.run_interaction("get_threads", _txn)

    async def get_aggregation_rows(self, parent_ids: Sequence[str], viewer: str) -> AggregationRows:
        """Edits, thread summaries and references of these parents, in one transaction."""
        ids = list(dict.fromkeys(parent_ids))

        def _txn(txn: Transaction) -> AggregationRows:
            rows = AggregationRows({}, {}, {}, set(), {})
            for all_ids in _chunks(ids):
                # Most events have no relation at all (an initial sync asks about
                # thousands): one probe each finds those that have, the rest skip the
                # queries below.
                marks = ",".join("?" * len(all_ids))
                chunk = [
                    str(r[0])
                    for r in txn.select_all(
                        "SELECT DISTINCT relates_to_id FROM event_relations"
                        f" WHERE relates_to_id IN ({marks}) AND rel_type IN (?, ?, ?)",
                        [*all_ids, REPLACE, THREAD, REFERENCE],
                    )
                ]
                if not chunk:
                    continue
                marks = ",".join("?" * len(chunk))
                for parent, event_id, sender, etype, ts in txn.select_all(
                    "SELECT relates_to_id, event_id, sender, type, origin_server_ts"
                    f" FROM event_relations WHERE relates_to_id IN ({marks}) AND rel_type = ?",
                    [*chunk, REPLACE],
                ):
                    rows.edits.setdefault(parent, []).append(
                        EditCandidate(parent, event_id, sender, etype, int(ts))
                    )
                for parent, count in txn.select_all(
                    "SELECT relates_to_id, COUNT(*) FROM event_relations"
                    f" WHERE relates_to_id IN ({marks}) AND rel_type = ? GROUP BY relates_to_id",
                    [*chunk, THREAD],
                ):
                    rows.thread_counts[parent] = int(count)
                if any(parent in rows.thread_counts for parent in chunk):
                    for root, latest in txn.select_all(
                        "SELECT thread_id, latest_event_id FROM threads"
                        f" WHERE thread_id IN ({marks})",
                        list(chunk),
                    ):
                        rows.thread_latest[root] = latest
                    rows.participated.update(
                        str(r[0])
                        for r in txn.select_all(
                            "SELECT DISTINCT relates_to_id FROM event_relations"
                            f" WHERE relates_to_id IN ({marks}) AND rel_type = ? AND sender = ?",
                            [*chunk, THREAD, viewer],
                        )
                    )
                for parent, event_id in txn.select_all(
                    "SELECT relates_to_id, event_id FROM event_relations"
                    f" WHERE relates_to_id IN ({marks}) AND rel_type = ?"
                    " ORDER BY topological_ordering, stream_ordering",
                    [*chunk, REFERENCE],
                ):
                    rows.references.setdefault(parent, []).append(event_id)
            for candidates in rows.edits.values():
                # Most recent first: by origin_server_ts, then the larger event id (spec).
                candidates.sort(key=lambda c: (c.origin_server_ts, c.event_id), reverse=True)
            return rows

        if not ids:
            return AggregationRows({}, {}, {}, set(), {})
        return await self._db.run_interaction("get_aggregation_rows", _txn)
