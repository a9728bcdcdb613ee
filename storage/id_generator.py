"""In-process allocation of increasing ids (token ids, stream positions).

Invariant: ``current_position`` only advances past an id once every smaller id handed
out by this generator has finished (persisted or abandoned), so a reader that sees
position N has seen everything at or below N. One writer process per generator.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from storage.database import Database, Transaction


class IdGenerator:
    def __init__(self, start: int) -> None:
        self._next = start + 1
        self._current = start
        self._in_flight: set[int] = set()
        self._lock = threading.Lock()

    @classmethod
    async def load(cls, db: Database, table: str, column: str) -> IdGenerator:
        def _max(txn: Transaction) -> int:
            row = txn.select_one(f"SELECT MAX({column}) FROM {table}")
            return int(row[0]) if row and row[0] is not None else 0

        return cls(await db.run_interaction(f"max_{table}_{column}", _max))

    def next_id(self) -> int:
        """A fresh id for a row whose visibility is not ordered (token ids...)."""
        with self._lock:
            value = self._next
            self._next += 1
            self._current = max(self._current, value)
            return value

    @contextmanager
    def reserve(self) -> Iterator[int]:
        """A stream position, counted as in flight until the block exits."""
        with self._lock:
            value = self._next
            self._next += 1
            self._in_flight.add(value)
        try:
            yield value
        finally:
            with self._lock:
                self._in_flight.discard(value)
                lowest = min(self._in_flight) if self._in_flight else self._next
                self._current = lowest - 1

    def allocate(self) -> int:
        """A position whose completion the caller reports with ``advance_to``.

        For a single writer that commits positions in the order it allocated them.
        """
        with self._lock:
            value = self._next
            self._next += 1
            return value

    def advance_to(self, position: int) -> None:
        with self._lock:
            if not self._in_flight:
                self._current = max(self._current, position)
            else:
                self._current = max(self._current, min(position, min(self._in_flight) - 1))

    @property
    def current_position(self) -> int:
        # No lock: reading one attribute is atomic, and /sync reads this thousands of
        # times a second; taking the lock there queued the reactor behind database
        # threads holding it across a GIL switch (about 20 µs a read under load).
        return self._current
