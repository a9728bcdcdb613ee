"""The rooms half of ``import-synapse``: rooms, every event with its graph edges and
state, current state, forward extremities, memberships, aliases, the public room list,
read receipts and waiting to-device messages.

Each step reads Synapse's rows in batches ordered by a key and writes a batch together
with its checkpoint (``synapse_import_progress``) in one transaction, so an interrupted
import resumes after the last written batch.

Events keep Synapse's stream orderings (positive for live events, negative for
backfilled history, as ours) and depths, so relative order is unchanged. State groups
keep Synapse's ids and delta chains; the state before a state event (which Synapse does
not record) is its group's predecessor when that is a one-entry delta, else a new group
of ours. Events are written through ``EventsStore._persist_txn`` (the live persist path:
edges, redactions, memberships, backward extremities, search and relations indexes);
current state and forward extremities are then copied from Synapse.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from crypto.errors import SignatureError
from crypto.event_hashing import check_content_hash, compute_event_id, verify_event_signature
from homeserver.events.event import Event
from homeserver.events.room_versions import RoomVersion, get_room_version
from storage.database import Transaction
from storage.events import PersistItem
from storage.state_groups import NewStateGroup
from storage.storage import Storage
from synapse_compat.import_synapse.source import SynapseDatabase

StateKey = tuple[str, str]
# Before every stream ordering Synapse hands out (backfilled ones are negative).
_START = -(2**62)
SOFT_FAILED = "soft_failed"  # as federation/room_events.py stores a soft-failed event


class ImportInterrupted(Exception):
    """The import was told to stop early (``--stop-after-batches``, for tests)."""


class Progress:
    """A progress bar per step (rich), or plain lines when not on a terminal."""

    def __init__(self, out: Callable[[str], None], bars: bool) -> None:
        self._out = out
        self._bars = bars
        self._progress: Any = None
        self._task: Any = None

    def start(self, name: str, total: int) -> None:
        if self._bars:
            from rich.progress import Progress as RichProgress

            self._progress = RichProgress()
            self._progress.start()
            self._task = self._progress.add_task(name, total=total)
        else:
            self._out(f"Importing {name} ({total} rows)...")

    def advance(self, n: int) -> None:
        if self._progress is not None:
            self._progress.advance(self._task, n)

    def stop(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


@dataclass
class EventCheck:
    checked: int = 0
    ids_ok: int = 0
    hashes_ok: int = 0
    hashes_skipped: int = 0  # redacted: the stored content was pruned
    signatures_ok: int = 0
    signatures_skipped: int = 0  # remote senders: their keys are not at hand
    failures: list[str] | None = None


def _json(value: Any) -> Any:
    if isinstance(value, (bytes, memoryview)):
        value = bytes(value).decode("utf-8")
    if isinstance(value, str):
        return json.loads(value)
    return value


def _marks(n: int) -> str:
    return ",".join("?" * n)


def _chunks(items: Sequence[Any], size: int = 500) -> list[Sequence[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def get_checkpoints(txn: Transaction) -> dict[str, tuple[int, bool]]:
    return {
        str(step): (int(pos), bool(done))
        for step, pos, done in txn.select_all(
            "SELECT step, position, done FROM synapse_import_progress"
        )
    }


def set_checkpoint_txn(txn: Transaction, step: str, position: int, done: bool = False) -> None:
    txn.execute(
        "INSERT INTO synapse_import_progress (step, position, done) VALUES (?, ?, ?)"
        " ON CONFLICT (step) DO UPDATE SET position = excluded.position, done = excluded.done",
        (step, position, int(done)),
    )


def _full_state_txn(txn: Transaction, group: int) -> dict[StateKey, str]:
    chain: list[int] = []
    current: int | None = group
    while current is not None:
        chain.append(current)
        row = txn.select_one("SELECT prev_group FROM state_groups WHERE id = ?", (current,))
        current = int(row[0]) if row and row[0] is not None else None
    state: dict[StateKey, str] = {}
    for g in reversed(chain):
        for t, sk, eid in txn.select_all(
            "SELECT type, state_key, event_id FROM state_group_entries WHERE state_group = ?",
            (g,),
        ):
            state[(str(t), str(sk))] = str(eid)
    return state


class RoomImporter:
    def __init__(
        self,
        source: SynapseDatabase,
        storage: Storage,
        server_name: str,
        progress: Progress,
        report: Callable[[str], None] = print,
        batch_size: int = 1000,
        # For tests of resuming: stop (raise) after this many event batches.
        stop_after_batches: int | None = None,
    ) -> None:
        self._src = source
        self._storage = storage
        self._server_name = server_name
        self._progress = progress
        self._report = report
        self._batch = batch_size
        self._stop_after = stop_after_batches
        self._batches_done = 0
        self._versions: dict[str, RoomVersion] = {}
        self.skipped: list[str] = []

    def _skip(self, message: str) -> None:
        self.skipped.append(message)
        self._report(f"  skipped: {message}")

    async def _run(self, name: str, fn: Callable[[Transaction], Any]) -> Any:
        return await self._storage.db.run_interaction(name, fn)

    def _count_batch(self) -> None:
        self._batches_done += 1
        if self._stop_after is not None and self._batches_done >= self._stop_after:
            raise ImportInterrupted(f"stopped after {self._batches_done} event batches")

    async def run(self) -> None:
        checkpoints = await self._run("import_checkpoints", get_checkpoints)
        await self._load_versions()
        steps: list[tuple[str, Callable[[int], Any]]] = [
            ("rooms", self.import_rooms),
            ("state_groups", self.import_state_groups),
            ("events", self.import_events),
            ("room_state", self.import_room_state),
            ("aliases", self.import_aliases),
            ("receipts", self.import_receipts),
            ("to_device", self.import_to_device),
            ("appservice", self.import_appservice_state),
            ("positions", self.set_positions),
        ]
        for step, fn in steps:
            position, done = checkpoints.get(step, (_START, False))
            if done:
                self._report(f"  {step}: done in an earlier run")
                continue
            await fn(position)

    async def _load_versions(self) -> None:
        for room_id, version in self._src.select("SELECT room_id, room_version FROM rooms"):
            rv = get_room_version(str(version or "1"))
            if rv is not None:
                self._versions[str(room_id)] = rv

    # Rooms ----------------------------------------------------------------------

    async def import_rooms(self, position: int) -> None:
        rows = self._src.select(
            "SELECT r.room_id, r.room_version, r.creator, r.is_public,"
            " (SELECT MIN(e.origin_server_ts) FROM events e WHERE e.room_id = r.room_id"
            "  AND e.type = 'm.room.create')"
            " FROM rooms r ORDER BY r.room_id"
        )
        out = []
        for room_id, version, creator, is_public, created in rows:
            if str(room_id) not in self._versions:
                self._skip(f"room {room_id}: room version {version!r} is not one we know")
                continue
            out.append(
                (
                    room_id,
                    self._versions[room_id].identifier,
                    creator,
                    int(bool(is_public)),
                    int(created or 0),
                )
            )
        self._progress.start("rooms", len(out))

        def _txn(txn: Transaction) -> None:
            txn.execute_many(
                "INSERT INTO rooms (room_id, room_version, creator, is_public, created_ts)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT (room_id) DO NOTHING",
                out,
            )
            set_checkpoint_txn(txn, "rooms", 0, True)

        await self._run("import_rooms", _txn)
        self._progress.advance(len(out))
        self._progress.stop()

    # State groups -----------------------------------------------------------------

    async def import_state_groups(self, position: int) -> None:
        """Synapse's state groups under the same ids: a group with an edge is a delta on
        its predecessor, one without is stored whole, as ours."""
        total = self._src.count("state_groups", f"WHERE id > {int(position)}")
        self._progress.start("state groups", total)
        depths: dict[int, int] = {}
        last = position
        while True:
            groups = self._src.select(
                "SELECT id, room_id FROM state_groups WHERE id > ? ORDER BY id LIMIT ?",
                (last, self._batch),
            )
            if not groups:
                break
            ids = [int(g[0]) for g in groups]
            last = ids[-1]
            edges: dict[int, int] = {}
            entries: list[tuple[int, str, str, str]] = []
            for chunk in _chunks(ids):
                for g, p in self._src.select(
                    "SELECT state_group, prev_state_group FROM state_group_edges"
                    f" WHERE state_group IN ({_marks(len(chunk))})",
                    chunk,
                ):
                    edges[int(g)] = int(p)
                for g, t, sk, eid in self._src.select(
                    "SELECT state_group, type, state_key, event_id FROM state_groups_state"
                    f" WHERE state_group IN ({_marks(len(chunk))})",
                    chunk,
                ):
                    entries.append((int(g), str(t), str(sk), str(eid)))
            rooms = {int(g): str(r) for g, r in groups if str(r) in self._versions}
            missing = [p for p in edges.values() if p not in depths]
            if missing:

                def _depths(txn: Transaction, missing: list[int] = missing) -> dict[int, int]:
                    out: dict[int, int] = {}
                    for chunk in _chunks(missing):
                        for g, d in txn.select_all(
                            "SELECT id, delta_depth FROM state_groups"
                            f" WHERE id IN ({_marks(len(chunk))})",
                            chunk,
                        ):
                            out[int(g)] = int(d)
                    return out

                depths.update(await self._run("import_group_depths", _depths))
            group_rows = []
            for g in ids:
                if g not in rooms:
                    continue
                prev = edges.get(g)
                if prev is not None and prev not in depths:
                    prev = None  # its predecessor is not imported: cannot happen in Synapse
                depth = depths[prev] + 1 if prev is not None else 0
                depths[g] = depth
                group_rows.append((g, rooms[g], prev, depth))
            entry_rows = [e for e in entries if e[0] in rooms]
            batch_last = last

            def _txn(
                txn: Transaction,
                group_rows: list[tuple[Any, ...]],
                entry_rows: list[tuple[Any, ...]],
                batch_last: int,
            ) -> None:
                txn.execute_many(
                    "INSERT INTO state_groups (id, room_id, prev_group, delta_depth)"
                    " VALUES (?, ?, ?, ?)",
                    group_rows,
                )
                txn.execute_many(
                    "INSERT INTO state_group_entries (state_group, type, state_key, event_id)"
                    " VALUES (?, ?, ?, ?)",
                    entry_rows,
                )
                set_checkpoint_txn(txn, "state_groups", batch_last)

            await self._storage.db.run_interaction(
                "import_state_groups", _txn, group_rows, entry_rows, batch_last
            )
            self._progress.advance(len(groups))
        await self._run(
            "import_state_groups_done",
            lambda txn: set_checkpoint_txn(txn, "state_groups", last, True),
        )
        self._progress.stop()

    # Events -------------------------------------------------------------------------

    async def import_events(self, position: int) -> None:
        cols = self._src.columns("events")
        rejection = (
            "COALESCE(rj.reason, e.rejection_reason)" if "rejection_reason" in cols else "rj.reason"
        )
        total = self._src.count("events", f"WHERE stream_ordering > {int(position)}")
        self._progress.start("events", total)
        local_users = {str(r[0]) for r in self._src.select("SELECT name FROM users")}
        joined_rooms = {
            str(r[0]) for r in self._src.select("SELECT DISTINCT room_id FROM current_state_events")
        }
        last = position
        while True:
            rows = self._src.select(
                "SELECT e.stream_ordering, e.event_id, e.room_id, e.outlier, j.json,"
                f" j.internal_metadata, {rejection}, sg.state_group"
                " FROM events e JOIN event_json j ON j.event_id = e.event_id"
                " LEFT JOIN rejections rj ON rj.event_id = e.event_id"
                " LEFT JOIN event_to_state_groups sg ON sg.event_id = e.event_id"
                " WHERE e.stream_ordering > ? ORDER BY e.stream_ordering LIMIT ?",
                (last, self._batch),
            )
            if not rows:
                break
            last = int(rows[-1][0])
            events: list[tuple[Event, int | None]] = []
            for stream, event_id, room_id, outlier, pdu_json, meta, rejected, group in rows:
                version = self._versions.get(str(room_id))
                if version is None:
                    continue  # its room was skipped
                meta_dict = _json(meta) if meta else {}
                if not isinstance(meta_dict, dict):
                    meta_dict = {}
                reason = rejected
                if reason is None and meta_dict.get("soft_failed"):
                    reason = SOFT_FAILED
                ev = Event(
                    event_id=str(event_id),
                    pdu=_json(pdu_json),
                    room_version=version,
                    stream_ordering=int(stream),
                    rejected_reason=str(reason) if reason is not None else None,
                    outlier=bool(outlier),
                    # Synapse marks a redaction whose sender lacked the power to redact
                    # (it then applies only to same-server events).
                    sender_had_redact_power=not meta_dict.get("recheck_redaction", False),
                )
                if not ev.outlier and group is None:
                    self._skip(f"event {event_id}: Synapse has no state for it (kept as outlier)")
                    ev.outlier = True
                events.append((ev, int(group) if group is not None else None))
            befores = self._before_groups([(ev, g) for ev, g in events if g is not None])
            batch_last = last

            def _txn(
                txn: Transaction,
                events: list[tuple[Event, int | None]] = events,
                befores: dict[str, tuple[int | None, StateKey | None, str | None]] = befores,
                batch_last: int = batch_last,
            ) -> None:
                next_row = txn.select_one("SELECT MAX(id) FROM state_groups")
                next_group = int(next_row[0]) + 1 if next_row and next_row[0] is not None else 1
                items = []
                for ev, group in events:
                    before = group or 0
                    extra: tuple[NewStateGroup, ...] = ()
                    if group is not None and ev.event_id in befores:
                        known, key, replaced = befores[ev.event_id]
                        if known is not None:
                            before = known
                        elif key is not None:
                            before = next_group
                            next_group += 1
                            if replaced is not None:
                                drow = txn.select_one(
                                    "SELECT delta_depth FROM state_groups WHERE id = ?", (group,)
                                )
                                depth = int(drow[0]) + 1 if drow else 1
                                extra = (NewStateGroup(before, group, {key: replaced}, depth),)
                            else:
                                state = _full_state_txn(txn, group)
                                state.pop(key, None)
                                extra = (NewStateGroup(before, None, state, 0),)
                    stripped = None
                    if (
                        ev.outlier
                        and ev.membership is not None
                        and ev.state_key in local_users
                        and ev.room_id not in joined_rooms
                    ):
                        unsigned = ev.pdu.get("unsigned") or {}
                        stripped = unsigned.get("invite_room_state") or unsigned.get(
                            "knock_room_state"
                        )
                        if not isinstance(stripped, list):
                            stripped = []
                    items.append(
                        PersistItem(
                            event=ev,
                            state_group_before=before,
                            state_group_after=group or 0,
                            new_state_group=None,
                            update_current_state=False,
                            extra_state_groups=extra,
                            out_of_band_stripped_state=stripped,
                            backfilled=ev.stream_ordering < 0,
                        )
                    )
                # The live persist path (see module docstring).
                self._storage.events._persist_txn(txn, items)
                set_checkpoint_txn(txn, "events", batch_last)

            await self._run("import_events", _txn)
            self._progress.advance(len(rows))
            self._count_batch()
        await self._run(
            "import_events_done", lambda txn: set_checkpoint_txn(txn, "events", last, True)
        )
        self._progress.stop()

    def _before_groups(
        self, events: list[tuple[Event, int]]
    ) -> dict[str, tuple[int | None, StateKey | None, str | None]]:
        """For each accepted or soft-failed state event: (the Synapse group of the state before it if
        it is one, else None; its state key; the event it replaced, if any)."""
        # A soft-failed event is in the state after it (as ours store it), not in the
        # room's current state.
        state_events = [
            (ev, g)
            for ev, g in events
            if ev.is_state() and ev.rejected_reason in (None, SOFT_FAILED)
        ]
        groups = sorted({g for _, g in state_events})
        edges: dict[int, int] = {}
        deltas: dict[int, list[tuple[str, str, str]]] = {}
        for chunk in _chunks(groups):
            for g, p in self._src.select(
                "SELECT state_group, prev_state_group FROM state_group_edges"
                f" WHERE state_group IN ({_marks(len(chunk))})",
                chunk,
            ):
                edges[int(g)] = int(p)
        with_edges = sorted(edges)
        for chunk in _chunks(with_edges):
            for g, t, sk, eid in self._src.select(
                "SELECT state_group, type, state_key, event_id FROM state_groups_state"
                f" WHERE state_group IN ({_marks(len(chunk))})",
                chunk,
            ):
                deltas.setdefault(int(g), []).append((str(t), str(sk), str(eid)))
        out: dict[str, tuple[int | None, StateKey | None, str | None]] = {}
        for ev, g in state_events:
            key = (ev.type, ev.state_key or "")
            if g in edges and deltas.get(g) == [(key[0], key[1], ev.event_id)]:
                out[ev.event_id] = (edges[g], key, None)
                continue
            unsigned = ev.pdu.get("unsigned") or {}
            replaced = unsigned.get("replaces_state")
            out[ev.event_id] = (None, key, replaced if isinstance(replaced, str) else None)
        return out

    # Current state, extremities, memberships -----------------------------------------

    async def import_room_state(self, position: int) -> None:
        rooms = sorted(self._versions)
        self._progress.start("current state", len(rooms))
        forgotten = {
            str(r[0])
            for r in self._src.select("SELECT event_id FROM room_memberships WHERE forgotten = 1")
        }
        for chunk in _chunks(rooms, 200):
            state = self._src.select(
                "SELECT room_id, type, state_key, event_id, membership FROM current_state_events"
                f" WHERE room_id IN ({_marks(len(chunk))})",
                chunk,
            )
            extremities = self._src.select(
                "SELECT room_id, event_id FROM event_forward_extremities"
                f" WHERE room_id IN ({_marks(len(chunk))})",
                chunk,
            )

            def _txn(
                txn: Transaction,
                chunk: Sequence[str] = chunk,
                state: list[tuple[Any, ...]] = state,
                extremities: list[tuple[Any, ...]] = extremities,
            ) -> None:
                marks = _marks(len(chunk))
                txn.execute(f"DELETE FROM current_state_events WHERE room_id IN ({marks})", chunk)
                txn.execute(
                    f"DELETE FROM event_forward_extremities WHERE room_id IN ({marks})", chunk
                )
                txn.execute_many(
                    "INSERT INTO current_state_events (room_id, type, state_key, event_id,"
                    " membership) SELECT ?, ?, ?, ?, ? WHERE EXISTS"
                    " (SELECT 1 FROM events WHERE event_id = ?)",
                    [(*r, r[3]) for r in state],
                )
                txn.execute_many(
                    "INSERT INTO event_forward_extremities (room_id, event_id)"
                    " SELECT ?, ? WHERE EXISTS (SELECT 1 FROM events WHERE event_id = ?)",
                    [(*r, r[1]) for r in extremities],
                )

            await self._run("import_room_state", _txn)
            self._progress.advance(len(chunk))

        def _done(txn: Transaction) -> None:
            for chunk in _chunks(sorted(forgotten)):
                txn.execute(
                    "UPDATE room_memberships SET forgotten = 1"
                    f" WHERE event_id IN ({_marks(len(chunk))})",
                    chunk,
                )
            set_checkpoint_txn(txn, "room_state", 0, True)

        await self._run("import_room_state_done", _done)
        self._progress.stop()

    async def import_aliases(self, position: int) -> None:
        aliases = self._src.select("SELECT room_alias, room_id, creator FROM room_aliases")
        servers: dict[str, list[str]] = {}
        for alias, server in self._src.select("SELECT room_alias, server FROM room_alias_servers"):
            servers.setdefault(str(alias), []).append(str(server))
        rows = [
            (a, r, c, json.dumps(servers.get(str(a)) or [self._server_name]))
            for a, r, c in aliases
            if str(r) in self._versions
        ]
        self._progress.start("room aliases", len(rows))

        def _txn(txn: Transaction) -> None:
            txn.execute_many(
                "INSERT INTO room_aliases (room_alias, room_id, creator, servers)"
                " VALUES (?, ?, ?, ?) ON CONFLICT (room_alias) DO NOTHING",
                rows,
            )
            set_checkpoint_txn(txn, "aliases", 0, True)

        await self._run("import_aliases", _txn)
        self._progress.advance(len(rows))
        self._progress.stop()

    async def import_receipts(self, position: int) -> None:
        """The latest receipt per (room, type, user, thread), keeping Synapse's stream ids."""
        cols = self._src.columns("receipts_linearized")
        thread = "thread_id" if "thread_id" in cols else "NULL"
        rows = self._src.select(
            f"SELECT stream_id, room_id, receipt_type, user_id, event_id, data, {thread}"
            " FROM receipts_linearized ORDER BY stream_id"
        )
        self._progress.start("receipts", len(rows))
        out = [
            (r[1], r[2], r[3], r[6] or "", r[4], json.dumps(_json(r[5]) or {}), int(r[0]), r[4])
            for r in rows
            if str(r[1]) in self._versions
        ]

        def _txn(txn: Transaction) -> None:
            txn.execute_many(
                "INSERT INTO receipts (room_id, receipt_type, user_id, thread_id, event_id,"
                " data, stream_id, event_stream_ordering)"
                " SELECT ?, ?, ?, ?, ?, ?, ?, stream_ordering FROM events WHERE event_id = ?"
                " ON CONFLICT (room_id, receipt_type, user_id, thread_id) DO UPDATE SET"
                " event_id = excluded.event_id, data = excluded.data,"
                " stream_id = excluded.stream_id,"
                " event_stream_ordering = excluded.event_stream_ordering",
                out,
            )
            set_checkpoint_txn(txn, "receipts", 0, True)

        await self._run("import_receipts", _txn)
        self._progress.advance(len(rows))
        self._progress.stop()

    async def import_to_device(self, position: int) -> None:
        """To-device messages not yet delivered to imported devices, in Synapse's order,
        under new stream ids of ours."""
        rows = self._src.select(
            "SELECT stream_id, user_id, device_id, message_json FROM device_inbox"
            " ORDER BY stream_id"
        )
        self._progress.start("to-device messages", len(rows))

        def _txn(txn: Transaction) -> int:
            devices = {
                (str(u), str(d))
                for u, d in txn.select_all("SELECT user_id, device_id FROM devices")
            }
            start_row = txn.select_one(
                "SELECT MAX(m) FROM (SELECT MAX(stream_id) AS m FROM device_inbox"
                " UNION ALL SELECT MAX(stream_id) FROM device_inbox_txns"
                " UNION ALL SELECT MAX(stream_id) FROM device_federation_inbox) x"
            )
            next_id = int(start_row[0]) + 1 if start_row and start_row[0] is not None else 1
            out = []
            for _, user_id, device_id, message in rows:
                if (str(user_id), str(device_id)) not in devices:
                    continue
                out.append((next_id, user_id, device_id, json.dumps(_json(message))))
                next_id += 1
            txn.execute_many(
                "INSERT INTO device_inbox (stream_id, user_id, device_id, message_json)"
                " VALUES (?, ?, ?, ?)",
                out,
            )
            set_checkpoint_txn(txn, "to_device", 0, True)
            return len(out)

        written = await self._run("import_to_device", _txn)
        self._progress.advance(len(rows))
        self._progress.stop()
        if written != len(rows):
            self._report(
                f"  to-device: {written} of {len(rows)} (others are for devices not imported)"
            )

    async def import_appservice_state(self, position: int) -> None:
        """Per application service: the last transaction id handed out (a service
        ignores a transaction id it has seen, so ours continue after Synapse's) and the
        events position it had been sent up to."""
        last_txn: dict[str, int] = {}
        if self._src.has_table("application_services_state"):
            cols = self._src.columns("application_services_state")
            if "last_txn" in cols:
                for as_id, txn_id in self._src.select(
                    "SELECT as_id, last_txn FROM application_services_state"
                ):
                    last_txn[str(as_id)] = int(txn_id or 0)
        if self._src.has_table("application_services_txns"):
            for as_id, txn_id in self._src.select(
                "SELECT as_id, MAX(txn_id) FROM application_services_txns GROUP BY as_id"
            ):
                last_txn[str(as_id)] = max(last_txn.get(str(as_id), 0), int(txn_id or 0))
        stream = 0
        if self._src.has_table("appservice_stream_position"):
            row = self._src.select("SELECT stream_ordering FROM appservice_stream_position")
            stream = int(row[0][0] or 0) if row else 0
        rows = [(as_id, txn_id, stream) for as_id, txn_id in sorted(last_txn.items())]
        self._progress.start("application service state", len(rows))

        def _txn(txn: Transaction) -> None:
            txn.execute_many(
                "INSERT INTO appservice_state (as_id, last_txn_id, stream_position)"
                " VALUES (?, ?, ?) ON CONFLICT (as_id) DO UPDATE SET"
                " last_txn_id = excluded.last_txn_id, stream_position = excluded.stream_position",
                rows,
            )
            set_checkpoint_txn(txn, "appservice", 0, True)

        await self._run("import_appservice_state", _txn)
        self._progress.advance(len(rows))
        self._progress.stop()

    async def set_positions(self, position: int) -> None:
        """Push actions and pushers start after the imported events: history is not
        counted again as unread nor pushed to phones."""

        def _txn(txn: Transaction) -> None:
            row = txn.select_one("SELECT COALESCE(MAX(stream_ordering), 0) FROM events")
            top = int(row[0]) if row else 0
            txn.execute(
                "INSERT INTO push_actions_position (id, stream_ordering) VALUES (1, ?)"
                " ON CONFLICT (id) DO UPDATE SET stream_ordering = excluded.stream_ordering",
                (top,),
            )
            txn.execute(
                "UPDATE pushers SET last_stream_ordering = ? WHERE last_stream_ordering < ?",
                (top, top),
            )
            set_checkpoint_txn(txn, "positions", top, True)

        await self._run("import_positions", _txn)

    # Verification ----------------------------------------------------------------------

    async def check_events(self, local_keys: list[Any], sample: int = 200) -> EventCheck:
        """A random sample of our events: the id is the event's reference hash (v3+),
        the content hash matches (unless redacted), and local events carry a valid
        signature of this server's key."""

        def _txn(txn: Transaction) -> list[tuple[Any, ...]]:
            # Random points of the stream ordering (an index lookup each, where
            # ORDER BY RANDOM() would read every event).
            bounds = txn.select_one("SELECT MIN(stream_ordering), MAX(stream_ordering) FROM events")
            if not bounds or bounds[0] is None:
                return []
            rng = random.Random()
            picked: dict[str, tuple[Any, ...]] = {}
            for _ in range(sample * 2):
                if len(picked) >= sample:
                    break
                row = txn.select_one(
                    "SELECT e.event_id, e.json, r.room_version, e.redacted_by FROM events e"
                    " JOIN rooms r ON r.room_id = e.room_id WHERE e.stream_ordering >= ?"
                    " ORDER BY e.stream_ordering LIMIT 1",
                    (rng.randint(int(bounds[0]), int(bounds[1])),),
                )
                if row is not None:
                    picked[str(row[0])] = row
            return list(picked.values())

        picked = await self._run("import_sample_events", _txn)
        result = EventCheck(failures=[])
        assert result.failures is not None
        for event_id, pdu_json, version_id, redacted_by in picked:
            version = get_room_version(str(version_id))
            assert version is not None
            pdu = json.loads(pdu_json)
            result.checked += 1
            try:
                ok = compute_event_id(pdu, version) == event_id
            except ValueError:
                ok = False
            if ok:
                result.ids_ok += 1
            else:
                result.failures.append(f"{event_id}: id is not its reference hash")
            if redacted_by is not None and not check_content_hash(pdu):
                result.hashes_skipped += 1  # Synapse pruned the redacted content
            elif check_content_hash(pdu):
                result.hashes_ok += 1
            else:
                result.failures.append(f"{event_id}: content hash mismatch")
            if str(pdu.get("sender", "")).partition(":")[2] != self._server_name:
                result.signatures_skipped += 1
                continue
            verified = False
            for key in local_keys:
                try:
                    verify_event_signature(pdu, self._server_name, key, version)
                    verified = True
                    break
                except SignatureError:
                    continue
            if verified:
                result.signatures_ok += 1
            else:
                result.failures.append(f"{event_id}: no valid signature of {self._server_name}")
        return result
