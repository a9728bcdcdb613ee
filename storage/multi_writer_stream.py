"""Positions on a stream written by several processes (PostgreSQL only).

With one writer, ``IdGenerator`` hands out positions in process and publishes one only
once everything below it has committed. With several writers (event persistence sharded
by room over processes), positions come from one PostgreSQL sequence, so they are unique
and increasing across writers, but each writer commits its own in its own order, and no
process can see another's in-flight ids. So:

- each writer knows its own *persisted position*: every id it allocated at or below it
  has committed (or been abandoned);
- it tells the others (over the bus) whenever that position moves, and writes it to
  ``stream_positions`` so a process starting later finds it;
- readers may show only what is at or below the **minimum** over all writers, the one
  position below which no id can still commit.

An idle writer (nothing allocated and unfinished) would hold that minimum back for ever,
so its position follows the largest id it knows any writer has allocated: whatever it
allocates next comes from the sequence, above every id already handed out. Allocation is
counted from *before* the sequence is asked, so a writer waiting for ``nextval`` is not
idle (else it could advance past the id it is about to get).

After a crash, a writer restarts with nothing in flight: what it had allocated either
committed or never will, so it may start at the sequence's current value.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence

from storage.database import Database, Transaction

logger = logging.getLogger(__name__)

PositionListener = Callable[[str, str, int], None]
"""Called with (stream name, this writer's instance name, its new position)."""


class MultiWriterStream:
    def __init__(
        self,
        db: Database,
        *,
        stream_name: str,
        sequence_name: str,
        instance_name: str,
        writers: Sequence[str],
        positions: dict[str, int],
        sequence_value: int,
    ) -> None:
        if not writers:
            raise ValueError(f"stream {stream_name!r} has no writer")
        self._db = db
        self.stream_name = stream_name
        self._sequence = sequence_name
        self.instance_name = instance_name
        self._writers = tuple(writers)
        self._positions = {w: positions.get(w, 0) for w in self._writers}
        self._max_seen = max([sequence_value, *self._positions.values()])
        self._in_flight: set[int] = set()
        self._pending_allocations = 0
        self._listeners: list[PositionListener] = []
        if self.is_writer:
            # Nothing of ours is in flight at start-up: see the module docstring.
            self._positions[instance_name] = self._max_seen
        self._current = min(self._positions.values())

    @classmethod
    async def load(
        cls,
        db: Database,
        *,
        stream_name: str,
        instance_name: str,
        writers: Sequence[str],
        table: str,
        column: str,
    ) -> MultiWriterStream:
        """The stream's state from the database: its sequence, created (and moved past
        the table's largest position) if needed, and each writer's last known position."""
        if db.engine_name != "postgres":
            raise ValueError("several writers on one stream need PostgreSQL")
        sequence_name = f"{table}_{column}_seq"

        def _load(txn: Transaction) -> tuple[dict[str, int], int]:
            txn.execute(f"CREATE SEQUENCE IF NOT EXISTS {sequence_name}")
            row = txn.select_one(f"SELECT COALESCE(MAX({column}), 0) FROM {table}")
            table_max = int(row[0]) if row else 0
            row = txn.select_one(f"SELECT last_value, is_called FROM {sequence_name}")
            assert row is not None
            last_value = int(row[0]) if row[1] else int(row[0]) - 1
            if last_value < table_max:
                txn.execute("SELECT setval(?, ?)", (sequence_name, table_max))
                last_value = table_max
            if instance_name in writers:
                # Before this writer allocates anything: a process starting later
                # finds a row, and a writer without one has never allocated.
                _upsert_position(txn, stream_name, instance_name, last_value)
            rows = txn.select_all(
                "SELECT instance_name, stream_id FROM stream_positions WHERE stream_name = ?",
                (stream_name,),
            )
            return {str(name): int(pos) for name, pos in rows}, last_value

        positions, sequence_value = await db.run_interaction(f"load_stream_{stream_name}", _load)
        # A writer with no row has never started, so has nothing in flight.
        for writer in writers:
            positions.setdefault(writer, sequence_value)
        return cls(
            db,
            stream_name=stream_name,
            sequence_name=sequence_name,
            instance_name=instance_name,
            writers=writers,
            positions=positions,
            sequence_value=sequence_value,
        )

    @property
    def is_writer(self) -> bool:
        return self.instance_name in self._positions

    @property
    def writers(self) -> tuple[str, ...]:
        return self._writers

    @property
    def current_position(self) -> int:
        """What readers may show: every id at or below it has committed on every writer."""
        return self._current

    def position_of(self, instance_name: str) -> int:
        return self._positions[instance_name]

    def add_listener(self, listener: PositionListener) -> None:
        """Told whenever this writer's own position moves: publish it to the others."""
        self._listeners.append(listener)

    async def allocate(self, count: int = 1) -> list[int]:
        """``count`` fresh ids, in flight until ``finished`` is called with them."""
        if not self.is_writer:
            raise RuntimeError(f"{self.instance_name} is not a writer of {self.stream_name}")
        if count < 1:
            raise ValueError("count must be positive")
        self._pending_allocations += 1
        try:
            ids = await self._db.run_interaction(
                f"allocate_{self.stream_name}", self._nextvals, count
            )
            self._in_flight.update(ids)
            self._max_seen = max(self._max_seen, ids[-1])
        finally:
            self._pending_allocations -= 1
        self._recompute_own()
        return ids

    def _nextvals(self, txn: Transaction, count: int) -> list[int]:
        rows = txn.select_all(
            "SELECT nextval(?) FROM generate_series(1, ?)", (self._sequence, count)
        )
        return sorted(int(r[0]) for r in rows)

    def finished(self, ids: Iterable[int]) -> None:
        """Ids that committed or were abandoned (a failed transaction): no longer in flight."""
        self._in_flight.difference_update(ids)
        self._recompute_own()

    def on_remote_position(self, instance_name: str, position: int) -> None:
        """Another writer's position, from the bus (or a heartbeat)."""
        if instance_name == self.instance_name or instance_name not in self._positions:
            return
        if position <= self._positions[instance_name]:
            return  # late or repeated: positions only move forward
        self._positions[instance_name] = position
        self._max_seen = max(self._max_seen, position)
        if self.is_writer:
            self._recompute_own()  # an idle writer follows
        self._current = min(self._positions.values())

    def _recompute_own(self) -> None:
        if not self.is_writer:
            return
        own = self._positions[self.instance_name]
        if self._in_flight:
            candidate = min(self._in_flight) - 1
        elif self._pending_allocations:
            candidate = own  # an id is coming that may be below anything seen
        else:
            candidate = self._max_seen
        if candidate > own:
            self._positions[self.instance_name] = candidate
            self._current = min(self._positions.values())
            for listener in self._listeners:
                try:
                    listener(self.stream_name, self.instance_name, candidate)
                except Exception:
                    logger.exception("A stream position listener failed")

    async def persist_position(self) -> None:
        """Write this writer's position for processes that start later (heartbeat)."""
        if not self.is_writer:
            return
        position = self._positions[self.instance_name]

        await self._db.run_interaction(
            f"persist_position_{self.stream_name}",
            _upsert_position,
            self.stream_name,
            self.instance_name,
            position,
        )


def _upsert_position(txn: Transaction, stream_name: str, instance_name: str, position: int) -> None:
    txn.execute(
        "INSERT INTO stream_positions (stream_name, instance_name, stream_id)"
        " VALUES (?, ?, ?) ON CONFLICT (stream_name, instance_name)"
        " DO UPDATE SET stream_id = GREATEST(stream_positions.stream_id, EXCLUDED.stream_id)",
        (stream_name, instance_name, position),
    )
