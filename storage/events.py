"""Events, their graph edges, and their persistence.

State groups and current state live in ``storage/state_groups.py`` and memberships in
``storage/memberships.py``; the persist transaction here writes their rows through
those modules' ``*_txn`` functions, so an event and everything it changes commit
together.

Invariants:
- ``persist_batch`` writes each event together with its edges, state group, current
  state change, membership row, transaction id and redaction in one transaction; an
  event is either wholly there or not at all.
- A local event's federation send (``PersistItem.outbound``) is queued in that same
  transaction: a committed event is always either sent or still in the outbox.
- ``stream_ordering`` values are handed out by the persister's ``IdGenerator`` and
  only become visible to readers (``events_stream.current_position``) once committed.
- The stored PDU JSON is never rewritten; redaction is applied when serving.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from homeserver.events.event import Event
from homeserver.events.format import event_reference_ids
from homeserver.events.redaction import redaction_applies
from homeserver.events.room_versions import RoomVersion, get_room_version
from storage.database import Database, Transaction
from storage.federation import FederationStore, OutboundPdu
from storage.id_generator import IdGenerator
from storage.memberships import insert_membership_txn, set_out_of_band_membership_txn
from storage.relations import index_relations_txn
from storage.search import index_event_txn
from storage.state_groups import (
    NewStateGroup,
    StateKey,
    StateMap,
    apply_current_state_delta_txn,
    set_current_state_txn,
    write_state_groups_txn,
)


@dataclass(slots=True)
class PersistItem:
    event: Event
    state_group_before: int
    state_group_after: int
    new_state_group: NewStateGroup | None
    update_current_state: bool
    room_is_new: bool = False
    room_creator: str | None = None
    # State groups to write before this event's own (e.g. a resolved state before it).
    extra_state_groups: tuple[NewStateGroup, ...] = ()
    # A wholesale change of current state (after state resolution); None: only this
    # event's own key changes (when update_current_state).
    current_state_delta: dict[StateKey, str | None] | None = None
    # For an outlier membership of a local user in a room we do not hold (a remote
    # invite): the stripped state to show with it.
    out_of_band_stripped_state: list[dict[str, Any]] | None = None
    # History fetched with /backfill: a negative stream ordering (never in a /sync
    # window), no forward extremity or membership row; an outlier copy is replaced.
    backfilled: bool = False
    # A live event we already hold as an outlier (from an auth chain or a remote
    # state): the outlier copy is replaced by this one.
    replaces_outlier: bool = False
    # A local event's federation send, queued in the same transaction as the event.
    outbound: OutboundPdu | None = None


@dataclass(frozen=True, slots=True)
class RoomSnapshot:
    """What the in-memory room cache is rebuilt from."""

    room_id: str
    room_version: RoomVersion
    current_state: StateMap
    forward_extremities: list[str]
    max_depth: int
    state_group: int | None


_EVENT_COLUMNS = (
    "e.event_id, e.json, r.room_version, e.stream_ordering, e.txn_device_id, e.txn_id,"
    " e.redacted_by, e.rejected_reason, e.outlier"
)


def _row_to_event(row: Sequence[Any]) -> Event:
    version = get_room_version(row[2])
    if version is None:  # pragma: no cover - we only store known versions
        raise ValueError(f"unknown room version {row[2]}")
    return Event(
        event_id=row[0],
        pdu=json.loads(row[1]),
        room_version=version,
        stream_ordering=int(row[3]),
        txn_device_id=row[4],
        txn_id=row[5],
        redacted_by=row[6],
        rejected_reason=row[7],
        outlier=bool(row[8]),
    )


def _mark_redacted(event: Event, redaction: Event) -> None:
    """After commit: the in-memory copy of ``event`` shows the redaction it received."""
    if event.redacted_by is None:
        event.redacted_by = redaction.event_id
        event.redaction = redaction
        event.invalidate_client_cache()


def _set_withheld(redaction: Event, withheld: bool) -> None:
    redaction.withheld = withheld


def _target_fields(row: Sequence[Any]) -> dict[str, Any]:
    """What ``redaction_applies`` reads of a target: (event_id, room_id, sender, type)."""
    return {"event_id": row[0], "room_id": row[1], "sender": row[2], "type": row[3]}


def _chunks(items: Sequence[Any], size: int = 500) -> Iterable[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


class EventsStore:
    def __init__(
        self,
        db: Database,
        stream: IdGenerator,
        backfill_floor: int = 0,
        outbox: FederationStore | None = None,
    ) -> None:
        self._db = db
        self._outbox = outbox
        self.stream = stream
        # Backfilled events count down from 0 (as in Synapse), so they sort before every
        # live event of the same depth and no /sync window (from >= 0) ever includes them.
        self._backfill_next = min(backfill_floor, 0) - 1

    def allocate_backfill_ordering(self) -> int:
        """A (negative) stream ordering for a backfilled event; reactor thread only."""
        value = self._backfill_next
        self._backfill_next -= 1
        return value

    # Writing -----------------------------------------------------------------

    async def persist_batch(self, items: list[PersistItem]) -> None:
        await self._db.run_interaction("persist_events", self._persist_txn, items)

    def _persist_txn(self, txn: Transaction, items: list[PersistItem]) -> None:
        for item in items:
            ev = item.event
            redacted_by = None
            if item.backfilled or item.replaces_outlier:
                redacted_by = self._drop_outlier_copy_txn(txn, ev.event_id)
            if item.room_is_new:
                txn.execute(
                    "INSERT INTO rooms (room_id, room_version, creator, is_public, created_ts)"
                    " VALUES (?, ?, ?, 0, ?)",
                    (
                        ev.room_id,
                        ev.room_version.identifier,
                        item.room_creator,
                        ev.origin_server_ts,
                    ),
                )
            txn.execute(
                "INSERT INTO events (stream_ordering, event_id, room_id, type, state_key, sender,"
                " topological_ordering, origin_server_ts, json, txn_device_id, txn_id, outlier,"
                " rejected_reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    ev.stream_ordering,
                    ev.event_id,
                    ev.room_id,
                    ev.type,
                    ev.state_key,
                    ev.sender,
                    ev.depth,
                    ev.origin_server_ts,
                    json.dumps(ev.pdu, ensure_ascii=False, separators=(",", ":")),
                    ev.txn_device_id,
                    ev.txn_id,
                    int(ev.outlier),
                    ev.rejected_reason,
                ),
            )
            txn.execute_many(
                "INSERT INTO event_edges (event_id, prev_event_id) VALUES (?, ?)",
                # A prev event listed twice (nothing forbids it) is one edge.
                [(ev.event_id, p) for p in dict.fromkeys(ev.prev_event_ids)],
            )
            if redacted_by is None:
                # A redaction that arrived before this event takes effect now, if allowed.
                early = self._applicable_redaction_txn(txn, ev)
                if early is not None:
                    redacted_by = early.event_id
                    txn.call_after(_mark_redacted, ev, early)
            if redacted_by is not None:
                txn.execute(
                    "UPDATE events SET redacted_by = ? WHERE event_id = ?",
                    (redacted_by, ev.event_id),
                )
            if not ev.outlier:
                self._update_backward_extremities_txn(txn, ev)
            # Forward extremities: the new event replaces those it points at, unless
            # something already points at it (it arrived late, e.g. by backfill).
            # Backfilled history never moves them.
            if not item.backfilled:
                txn.execute_many(
                    "DELETE FROM event_forward_extremities WHERE room_id = ? AND event_id = ?",
                    [(ev.room_id, p) for p in ev.prev_event_ids],
                )
            if (
                not ev.outlier
                and not item.backfilled
                and not txn.select_one(
                    "SELECT 1 FROM event_edges WHERE prev_event_id = ? LIMIT 1", (ev.event_id,)
                )
            ):
                txn.execute(
                    "INSERT INTO event_forward_extremities (room_id, event_id) VALUES (?, ?)",
                    (ev.room_id, ev.event_id),
                )
            write_state_groups_txn(
                txn, ev.room_id, (*item.extra_state_groups, item.new_state_group)
            )
            if not ev.outlier:
                txn.execute(
                    "INSERT INTO event_to_state_groups (event_id, state_group, state_group_before)"
                    " VALUES (?, ?, ?)",
                    (ev.event_id, item.state_group_after, item.state_group_before),
                )
            if item.current_state_delta is not None:
                apply_current_state_delta_txn(txn, ev.room_id, item.current_state_delta)
            elif item.update_current_state and ev.is_state() and ev.rejected_reason is None:
                set_current_state_txn(txn, ev)
            if (
                ev.membership is not None
                and ev.rejected_reason is None
                and not ev.outlier
                and not item.backfilled
            ):
                insert_membership_txn(txn, ev)
            if item.out_of_band_stripped_state is not None and ev.membership is not None:
                set_out_of_band_membership_txn(txn, ev, item.out_of_band_stripped_state)
            if ev.txn_id is not None and ev.txn_device_id is not None:
                txn.execute(
                    "INSERT INTO event_txn_ids (room_id, user_id, device_id, txn_id, event_id,"
                    " inserted_ts) VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        ev.room_id,
                        ev.sender,
                        ev.txn_device_id,
                        ev.txn_id,
                        ev.event_id,
                        ev.origin_server_ts,
                    ),
                )
            applied = self._record_redaction_txn(txn, ev)
            redacted = redacted_by is not None
            # Full-text search index (storage/search.py), relations and threads
            # (storage/relations.py).
            index_event_txn(txn, ev, redacted=redacted, redaction_applied=applied)
            index_relations_txn(txn, ev, redacted=redacted, redaction_applied=applied)
            if item.outbound is not None and self._outbox is not None:
                self._outbox.enqueue_txn(
                    txn,
                    [(d, "pdu", ev.pdu) for d in item.outbound.destinations],
                    item.outbound.queued_ts,
                )

    def _record_redaction_txn(self, txn: Transaction, ev: Event) -> bool:
        """Store ``ev`` if it is an accepted redaction, and redact its target when the
        target is here and the redaction applies to it (events/redaction.py); a target
        arriving later is checked then (``_applicable_redaction_txn``). True if it
        applies; otherwise it is withheld from clients (``Event.withheld``)."""
        redacts = ev.redacts
        if ev.type == "m.room.redaction" and redacts is None:
            txn.call_after(_set_withheld, ev, True)  # names no target: withheld, as Synapse
        if redacts is None or ev.rejected_reason is not None:
            return False
        txn.execute(
            "INSERT INTO redactions (event_id, redacts, sender_had_power) VALUES (?, ?, ?)",
            (ev.event_id, redacts, int(ev.sender_had_redact_power)),
        )
        row = txn.select_one(
            "SELECT event_id, room_id, sender, type, redacted_by FROM events WHERE event_id = ?",
            (redacts,),
        )
        applies = row is not None and redaction_applies(
            ev, _target_fields(row), ev.room_version, sender_had_power=ev.sender_had_redact_power
        )
        txn.call_after(_set_withheld, ev, not applies)
        if applies and row is not None and row[4] is None:
            txn.execute(
                "UPDATE events SET redacted_by = ? WHERE event_id = ?", (ev.event_id, redacts)
            )
        return applies

    def _applicable_redaction_txn(self, txn: Transaction, ev: Event) -> Event | None:
        """The first stored redaction of ``ev`` that applies to it, if any."""
        rows = txn.select_all(
            f"SELECT {_EVENT_COLUMNS}, rd.sender_had_power FROM events e"
            " JOIN rooms r USING (room_id) JOIN redactions rd ON rd.event_id = e.event_id"
            " WHERE rd.redacts = ? ORDER BY e.stream_ordering",
            (ev.event_id,),
        )
        for row in rows:
            redaction = _row_to_event(row)
            redaction.sender_had_redact_power = bool(row[9])
            redaction.withheld = False
            if redaction_applies(
                redaction,
                ev,
                redaction.room_version,
                sender_had_power=redaction.sender_had_redact_power,
            ):
                return redaction
        return None

    def _drop_outlier_copy_txn(self, txn: Transaction, event_id: str) -> str | None:
        """Remove an outlier copy of an event about to be stored in the timeline.

        Returns the copy's ``redacted_by``, to be kept. Outliers have no search,
        relation or membership rows, so only these tables hold them; one that a purge
        took out of the timeline keeps its state group, replaced here as well.
        """
        row = txn.select_one(
            "SELECT redacted_by FROM events WHERE event_id = ? AND outlier = 1", (event_id,)
        )
        if row is None:
            return None
        txn.execute("DELETE FROM events WHERE event_id = ?", (event_id,))
        txn.execute("DELETE FROM event_edges WHERE event_id = ?", (event_id,))
        txn.execute("DELETE FROM redactions WHERE event_id = ?", (event_id,))
        txn.execute("DELETE FROM event_to_state_groups WHERE event_id = ?", (event_id,))
        return str(row[0]) if row[0] is not None else None

    def _update_backward_extremities_txn(self, txn: Transaction, ev: Event) -> None:
        """``ev`` fills its own gap; its prev events we lack in the timeline are gaps."""
        txn.execute(
            "DELETE FROM event_backward_extremities WHERE room_id = ? AND event_id = ?",
            (ev.room_id, ev.event_id),
        )
        for prev in ev.prev_event_ids:
            if txn.select_one(
                "SELECT 1 FROM events WHERE event_id = ? AND outlier = 0", (prev,)
            ) or txn.select_one(
                "SELECT 1 FROM event_backward_extremities WHERE room_id = ? AND event_id = ?",
                (ev.room_id, prev),
            ):
                continue
            txn.execute(
                "INSERT INTO event_backward_extremities (room_id, event_id, depth)"
                " VALUES (?, ?, ?)",
                (ev.room_id, prev, ev.depth),
            )

    async def get_backward_extremities(
        self, room_id: str, max_depth: int, limit: int, min_depth: int | None = None
    ) -> list[str]:
        """Gaps in [min_depth, max_depth] (by the depth of what points at them), nearest
        first."""

        def _txn(txn: Transaction) -> list[str]:
            return [
                str(r[0])
                for r in txn.select_all(
                    "SELECT event_id FROM event_backward_extremities WHERE room_id = ?"
                    " AND depth <= ? AND depth >= ? ORDER BY depth DESC, event_id LIMIT ?",
                    (room_id, max_depth, min_depth if min_depth is not None else -1, limit),
                )
            ]

        return await self._db.run_interaction("backward_extremities", _txn)

    async def have_state_after(self, event_ids: Iterable[str]) -> set[str]:
        """Those of ``event_ids`` whose state we know: timeline events, and events a
        purge took out of the timeline (storage/purge.py keeps their state)."""
        ids = list(dict.fromkeys(event_ids))

        def _txn(txn: Transaction) -> set[str]:
            found: set[str] = set()
            for chunk in _chunks(ids):
                marks = ",".join("?" * len(chunk))
                found.update(
                    str(r[0])
                    for r in txn.select_all(
                        f"SELECT event_id FROM event_to_state_groups WHERE event_id IN ({marks})",
                        list(chunk),
                    )
                )
            return found

        return await self._db.run_interaction("have_state_after", _txn) if ids else set()

    async def have_timeline_events(self, event_ids: Iterable[str]) -> set[str]:
        """Those of ``event_ids`` held in a room's timeline (not as outliers)."""
        return await self.have_events(event_ids, timeline_only=True)

    async def have_events(
        self, event_ids: Iterable[str], *, timeline_only: bool = False
    ) -> set[str]:
        """Those of ``event_ids`` we hold (``timeline_only``: not as outliers)."""
        ids = list(dict.fromkeys(event_ids))
        only_timeline = " AND outlier = 0" if timeline_only else ""

        def _txn(txn: Transaction) -> set[str]:
            found: set[str] = set()
            for chunk in _chunks(ids):
                marks = ",".join("?" * len(chunk))
                found.update(
                    str(r[0])
                    for r in txn.select_all(
                        f"SELECT event_id FROM events WHERE event_id IN ({marks}){only_timeline}",
                        list(chunk),
                    )
                )
            return found

        return await self._db.run_interaction("have_events", _txn) if ids else set()

    async def get_auth_chain_ids(
        self, event_ids: Iterable[str], include_given: bool = False
    ) -> set[str]:
        """Every event reachable through auth_events from ``event_ids`` (breadth first)."""

        def _txn(txn: Transaction) -> set[str]:
            seen: set[str] = set()
            frontier = list(dict.fromkeys(event_ids))
            given = set(frontier)
            while frontier:
                next_frontier: list[str] = []
                for chunk in _chunks(frontier):
                    marks = ",".join("?" * len(chunk))
                    for (raw,) in txn.select_all(
                        f"SELECT json FROM events WHERE event_id IN ({marks})", list(chunk)
                    ):
                        for auth_id in event_reference_ids(json.loads(raw).get("auth_events")):
                            if auth_id not in seen:
                                seen.add(auth_id)
                                next_frontier.append(auth_id)
                frontier = next_frontier
            return seen | given if include_given else seen - (given - seen)

        return await self._db.run_interaction("auth_chain", _txn)

    # Reading events ------------------------------------------------------------

    async def get_events(self, event_ids: Iterable[str]) -> dict[str, Event]:
        ids = list(dict.fromkeys(event_ids))
        if not ids:
            return {}
        return await self._db.run_interaction("get_events", self._get_events_txn, ids)

    def _get_events_txn(self, txn: Transaction, ids: Sequence[str]) -> dict[str, Event]:
        out: dict[str, Event] = {}
        for chunk in _chunks(ids):
            marks = ",".join("?" * len(chunk))
            rows = txn.select_all(
                f"SELECT {_EVENT_COLUMNS} FROM events e JOIN rooms r USING (room_id)"
                f" WHERE e.event_id IN ({marks})",
                list(chunk),
            )
            for row in rows:
                ev = _row_to_event(row)
                out[ev.event_id] = ev
        self._attach_redactions(txn, out.values())
        return out

    def _attach_redactions(self, txn: Transaction, events: Iterable[Event]) -> None:
        events = list(events)
        self._mark_withheld_txn(txn, [ev for ev in events if ev.type == "m.room.redaction"])
        wanted = {ev.redacted_by: ev for ev in events if ev.redacted_by}
        if not wanted:
            return
        ids = list(wanted)
        for chunk in _chunks(ids):
            marks = ",".join("?" * len(chunk))
            for row in txn.select_all(
                f"SELECT {_EVENT_COLUMNS} FROM events e JOIN rooms r USING (room_id)"
                f" WHERE e.event_id IN ({marks})",
                list(chunk),
            ):
                redaction = _row_to_event(row)
                wanted[redaction.event_id].redaction = redaction

    def _mark_withheld_txn(self, txn: Transaction, redactions: Sequence[Event]) -> None:
        """Set ``withheld`` on redactions read from the database: those that do not
        take effect on a known target, or name none (the same rule as when stored)."""
        by_id = {ev.event_id: ev for ev in redactions}
        for ev in redactions:
            ev.withheld = True
        for chunk in _chunks(list(by_id)):
            marks = ",".join("?" * len(chunk))
            for row in txn.select_all(
                "SELECT rd.event_id, rd.sender_had_power, t.event_id, t.room_id, t.sender,"
                " t.type FROM redactions rd JOIN events t ON t.event_id = rd.redacts"
                f" WHERE rd.event_id IN ({marks})",
                list(chunk),
            ):
                ev = by_id[row[0]]
                ev.sender_had_redact_power = bool(row[1])
                ev.withheld = not redaction_applies(
                    ev, _target_fields(row[2:]), ev.room_version, sender_had_power=bool(row[1])
                )

    async def get_event(self, event_id: str) -> Event | None:
        return (await self.get_events([event_id])).get(event_id)

    async def get_room_events_between(
        self, room_id: str, from_stream: int, to_stream: int, limit: int
    ) -> tuple[list[Event], bool]:
        """Newest ``limit`` events in (from, to], oldest first; and whether more were cut."""

        def _txn(txn: Transaction) -> tuple[list[Event], bool]:
            rows = txn.select_all(
                f"SELECT {_EVENT_COLUMNS} FROM events e JOIN rooms r USING (room_id)"
                " WHERE e.room_id = ? AND e.stream_ordering > ? AND e.stream_ordering <= ?"
                " AND e.outlier = 0 AND e.rejected_reason IS NULL"
                " ORDER BY e.stream_ordering DESC LIMIT ?",
                (room_id, from_stream, to_stream, limit + 1),
            )
            limited = len(rows) > limit
            events = [_row_to_event(r) for r in rows[:limit]]
            events.reverse()
            self._attach_redactions(txn, events)
            return events, limited

        return await self._db.run_interaction("get_room_events_between", _txn)

    async def get_latest_stream_of_types(
        self, room_ids: Sequence[str], types: Sequence[str], to_stream: int
    ) -> dict[str, int]:
        """For each room: the stream position of its newest timeline event of one of
        ``types`` at or below ``to_stream`` (rooms without one are left out)."""

        def _txn(txn: Transaction) -> dict[str, int]:
            out: dict[str, int] = {}
            marks = ", ".join("?" for _ in types)
            for room_id in room_ids:
                row = txn.select_one(
                    "SELECT MAX(stream_ordering) FROM events WHERE room_id = ?"
                    f" AND type IN ({marks}) AND stream_ordering > 0 AND stream_ordering <= ?"
                    " AND outlier = 0 AND rejected_reason IS NULL",
                    (room_id, *types, to_stream),
                )
                if row is not None and row[0] is not None:
                    out[room_id] = int(row[0])
            return out

        return await self._db.run_interaction("get_latest_stream_of_types", _txn)

    async def get_room_events_from(
        self, room_id: str, from_stream: int, to_stream: int, limit: int
    ) -> tuple[list[Event], bool]:
        """Oldest ``limit`` events in (from, to], oldest first; and whether newer ones
        in the range were left out (a stream read page by page, as /events)."""

        def _txn(txn: Transaction) -> tuple[list[Event], bool]:
            rows = txn.select_all(
                f"SELECT {_EVENT_COLUMNS} FROM events e JOIN rooms r USING (room_id)"
                " WHERE e.room_id = ? AND e.stream_ordering > ? AND e.stream_ordering <= ?"
                " AND e.outlier = 0 AND e.rejected_reason IS NULL"
                " ORDER BY e.stream_ordering ASC LIMIT ?",
                (room_id, from_stream, to_stream, limit + 1),
            )
            events = [_row_to_event(r) for r in rows[:limit]]
            self._attach_redactions(txn, events)
            return events, len(rows) > limit

        return await self._db.run_interaction("get_room_events_from", _txn)

    async def get_rooms_latest_events(
        self, room_ids: Sequence[str], to_stream: int, limit: int
    ) -> dict[str, tuple[list[Event], bool]]:
        """For each room: its newest ``limit`` events in (0, ``to_stream``], oldest first,
        and whether older ones were cut; ``get_room_events_between`` from 0 for many
        rooms at once (an initial /sync). Backfilled events (below 0) are not included."""

        def _txn(txn: Transaction) -> dict[str, tuple[list[Event], bool]]:
            rows: list[Any] = []
            # Each room's newest events by its own walk down events_room_stream; a
            # window function over the rooms would read their whole history instead.
            if txn.database_engine == "postgres":
                rows = txn.select_all(
                    f"SELECT {_EVENT_COLUMNS} FROM unnest(?::text[]) AS wanted (room_id)"
                    " CROSS JOIN LATERAL (SELECT * FROM events e"
                    " WHERE e.room_id = wanted.room_id"
                    " AND e.stream_ordering > 0 AND e.stream_ordering <= ?"
                    " AND e.outlier = 0 AND e.rejected_reason IS NULL"
                    " ORDER BY e.stream_ordering DESC LIMIT ?) AS e"
                    " JOIN rooms r ON r.room_id = e.room_id",
                    (list(room_ids), to_stream, limit + 1),
                )
            else:  # no LATERAL: a compound SELECT, a part per room
                part = (
                    f"SELECT * FROM (SELECT {_EVENT_COLUMNS} FROM events e JOIN rooms r"
                    " USING (room_id) WHERE e.room_id = ? AND e.stream_ordering > 0"
                    " AND e.stream_ordering <= ?"
                    " AND e.outlier = 0 AND e.rejected_reason IS NULL"
                    " ORDER BY e.stream_ordering DESC LIMIT ?) AS latest"
                )
                for chunk in _chunks(room_ids, 100):  # SQLite allows 500 parts at most
                    args: list[Any] = []
                    for room_id in chunk:
                        args += [room_id, to_stream, limit + 1]
                    rows += txn.select_all(" UNION ALL ".join([part] * len(chunk)), args)
            by_room: dict[str, list[Event]] = {room_id: [] for room_id in room_ids}
            for row in rows:
                ev = _row_to_event(row)
                by_room[ev.room_id].append(ev)
            out: dict[str, tuple[list[Event], bool]] = {}
            for room_id, events in by_room.items():
                events.sort(key=lambda ev: ev.stream_ordering)
                limited = len(events) > limit
                out[room_id] = (events[len(events) - limit :] if limited else events), limited
            self._attach_redactions(txn, [ev for evs, _ in out.values() for ev in evs])
            return out

        if not room_ids:
            return {}
        return await self._db.run_interaction("get_rooms_latest_events", _txn)

    async def paginate_room(
        self,
        room_id: str,
        from_pos: tuple[int, int],
        to_pos: tuple[int, int] | None,
        backwards: bool,
        limit: int,
    ) -> list[Event]:
        """Events in history order from a (topological, stream) position, exclusive."""

        def _txn(txn: Transaction) -> list[Event]:
            topo, stream = from_pos
            if backwards:
                cond = "(e.topological_ordering < ? OR (e.topological_ordering = ? AND e.stream_ordering < ?))"
                order = "DESC"
            else:
                cond = "(e.topological_ordering > ? OR (e.topological_ordering = ? AND e.stream_ordering > ?))"
                order = "ASC"
            args: list[Any] = [room_id, topo, topo, stream]
            extra = ""
            if to_pos is not None:
                t_topo, t_stream = to_pos
                if backwards:
                    extra = " AND (e.topological_ordering > ? OR (e.topological_ordering = ? AND e.stream_ordering >= ?))"
                else:
                    extra = " AND (e.topological_ordering < ? OR (e.topological_ordering = ? AND e.stream_ordering <= ?))"
                args += [t_topo, t_topo, t_stream]
            rows = txn.select_all(
                f"SELECT {_EVENT_COLUMNS} FROM events e JOIN rooms r USING (room_id)"
                f" WHERE e.room_id = ? AND {cond}{extra}"
                " AND e.outlier = 0 AND e.rejected_reason IS NULL"
                f" ORDER BY e.topological_ordering {order}, e.stream_ordering {order} LIMIT ?",
                [*args, limit],
            )
            events = [_row_to_event(r) for r in rows]
            self._attach_redactions(txn, events)
            return events

        return await self._db.run_interaction("paginate_room", _txn)

    async def get_topological_position(self, event_id: str) -> tuple[int, int] | None:
        def _txn(txn: Transaction) -> tuple[int, int] | None:
            row = txn.select_one(
                "SELECT topological_ordering, stream_ordering FROM events WHERE event_id = ?",
                (event_id,),
            )
            return (int(row[0]), int(row[1])) if row else None

        return await self._db.run_interaction("get_topological_position", _txn)

    async def get_max_topological_before_stream(self, room_id: str, stream: int) -> int:
        """The highest depth among the room's events at or before ``stream``."""

        def _txn(txn: Transaction) -> int:
            row = txn.select_one(
                "SELECT MAX(topological_ordering) FROM events WHERE room_id = ?"
                " AND stream_ordering <= ?",
                (room_id, stream),
            )
            return int(row[0]) if row and row[0] is not None else 0

        return await self._db.run_interaction("max_topo_before", _txn)

    async def get_event_closest_to_ts(
        self, room_id: str, ts: int, forwards: bool
    ) -> tuple[str, int] | None:
        def _txn(txn: Transaction) -> tuple[str, int] | None:
            if forwards:
                sql = (
                    "SELECT event_id, origin_server_ts FROM events WHERE room_id = ?"
                    " AND origin_server_ts >= ? AND outlier = 0 AND rejected_reason IS NULL"
                    " ORDER BY origin_server_ts ASC, stream_ordering ASC LIMIT 1"
                )
            else:
                sql = (
                    "SELECT event_id, origin_server_ts FROM events WHERE room_id = ?"
                    " AND origin_server_ts <= ? AND outlier = 0 AND rejected_reason IS NULL"
                    " ORDER BY origin_server_ts DESC, stream_ordering DESC LIMIT 1"
                )
            row = txn.select_one(sql, (room_id, ts))
            return (str(row[0]), int(row[1])) if row else None

        return await self._db.run_interaction("closest_to_ts", _txn)

    async def get_event_id_for_txn(
        self, room_id: str, user_id: str, device_id: str, txn_id: str
    ) -> str | None:
        def _txn(txn: Transaction) -> str | None:
            row = txn.select_one(
                "SELECT event_id FROM event_txn_ids WHERE room_id = ? AND user_id = ?"
                " AND device_id = ? AND txn_id = ?",
                (room_id, user_id, device_id, txn_id),
            )
            return str(row[0]) if row else None

        # Beside the writer: every send with a transaction id asks, before it is built.
        return await self._db.run_read("get_event_id_for_txn", _txn)

    # Rooms and state --------------------------------------------------------------

    async def load_room(self, room_id: str) -> RoomSnapshot | None:
        def _txn(txn: Transaction) -> RoomSnapshot | None:
            row = txn.select_one("SELECT room_version FROM rooms WHERE room_id = ?", (room_id,))
            if row is None:
                return None
            version = get_room_version(row[0])
            assert version is not None
            state = {
                (r[0], r[1]): r[2]
                for r in txn.select_all(
                    "SELECT type, state_key, event_id FROM current_state_events WHERE room_id = ?",
                    (room_id,),
                )
            }
            extremities = [
                r[0]
                for r in txn.select_all(
                    "SELECT event_id FROM event_forward_extremities WHERE room_id = ?", (room_id,)
                )
            ]
            depth_row = txn.select_one(
                "SELECT MAX(topological_ordering) FROM events WHERE room_id = ?", (room_id,)
            )
            group = None
            if extremities:
                g = txn.select_one(
                    "SELECT s.state_group FROM event_to_state_groups s JOIN events e"
                    " USING (event_id) WHERE e.room_id = ? ORDER BY e.stream_ordering DESC LIMIT 1",
                    (room_id,),
                )
                group = int(g[0]) if g else None
            return RoomSnapshot(
                room_id,
                version,
                state,
                extremities,
                int(depth_row[0]) if depth_row and depth_row[0] is not None else 0,
                group,
            )

        return await self._db.run_interaction("load_room", _txn)

    async def load_rooms(self, room_ids: Sequence[str]) -> dict[str, tuple[RoomSnapshot, int]]:
        """``load_room`` and the state group's delta depth for many rooms at once; rooms
        that are not known are left out."""

        def _txn(txn: Transaction) -> dict[str, tuple[RoomSnapshot, int]]:
            versions: dict[str, RoomVersion] = {}
            state: dict[str, StateMap] = {}
            extremities: dict[str, list[str]] = {}
            depths: dict[str, int] = {}
            groups: dict[str, int] = {}
            for chunk in _chunks(room_ids, 100):
                marks = ",".join("?" * len(chunk))
                for room_id, ident in txn.select_all(
                    f"SELECT room_id, room_version FROM rooms WHERE room_id IN ({marks})", chunk
                ):
                    version = get_room_version(ident)
                    assert version is not None
                    versions[room_id] = version
                for room_id, etype, key, event_id in txn.select_all(
                    "SELECT room_id, type, state_key, event_id FROM current_state_events"
                    f" WHERE room_id IN ({marks})",
                    chunk,
                ):
                    state.setdefault(room_id, {})[(etype, key)] = event_id
                for room_id, event_id in txn.select_all(
                    "SELECT room_id, event_id FROM event_forward_extremities"
                    f" WHERE room_id IN ({marks})",
                    chunk,
                ):
                    extremities.setdefault(room_id, []).append(event_id)
                # Per room (correlated, so each is an indexed lookup; a GROUP BY would
                # read every event of the rooms): the depth, and the state group of the
                # newest event.
                for room_id, depth, group in txn.select_all(
                    "SELECT r.room_id,"
                    " (SELECT MAX(e.topological_ordering) FROM events e"
                    "  WHERE e.room_id = r.room_id),"
                    " (SELECT s.state_group FROM event_to_state_groups s JOIN events e"
                    "  USING (event_id) WHERE e.room_id = r.room_id"
                    "  ORDER BY e.stream_ordering DESC LIMIT 1)"
                    f" FROM rooms r WHERE r.room_id IN ({marks})",
                    chunk,
                ):
                    depths[room_id] = int(depth) if depth is not None else 0
                    if group is not None and room_id in extremities:
                        groups[room_id] = int(group)
            delta_depths: dict[int, int] = {}
            group_ids = sorted(set(groups.values()))
            for chunk in _chunks(group_ids):
                marks = ",".join("?" * len(chunk))
                for group, delta in txn.select_all(
                    f"SELECT id, delta_depth FROM state_groups WHERE id IN ({marks})", chunk
                ):
                    delta_depths[int(group)] = int(delta)
            out: dict[str, tuple[RoomSnapshot, int]] = {}
            for room_id, version in versions.items():
                group = groups.get(room_id)
                snapshot = RoomSnapshot(
                    room_id,
                    version,
                    state.get(room_id, {}),
                    extremities.get(room_id, []),
                    depths.get(room_id, 0),
                    group,
                )
                out[room_id] = snapshot, delta_depths.get(group, 0) if group is not None else 0
            return out

        if not room_ids:
            return {}
        return await self._db.run_interaction("load_rooms", _txn)

    async def delete_extra_forward_extremities(self, room_id: str) -> list[str]:
        """Keep only the room's newest forward extremity (by stream ordering); the ids
        of those deleted. The caller holds the room's lock and updates its memory."""

        def _txn(txn: Transaction) -> list[str]:
            rows = txn.select_all(
                "SELECT f.event_id FROM event_forward_extremities f"
                " JOIN events e ON e.event_id = f.event_id"
                " WHERE f.room_id = ? ORDER BY e.stream_ordering DESC",
                (room_id,),
            )
            extra = [str(r[0]) for r in rows[1:]]
            txn.execute_many(
                "DELETE FROM event_forward_extremities WHERE room_id = ? AND event_id = ?",
                [(room_id, event_id) for event_id in extra],
            )
            return extra

        return await self._db.run_interaction("delete_extra_forward_extremities", _txn)
