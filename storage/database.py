"""One database layer over SQLite and PostgreSQL.

Invariants:
- Every query runs inside ``Database.run_interaction`` on a thread of the database's own
  pool, never on the reactor thread. The function given is retried as a whole when the
  engine reports a transient failure (serialization failure, deadlock, database locked),
  so it must have no side effects outside the transaction; ``txn.call_after`` registers
  work to run on the reactor once the transaction has committed.
- SQL is written once with ``?`` placeholders; the engine converts them.
- SQLite uses a single connection (writers are serialised anyway); PostgreSQL uses
  ``cp_min``..``cp_max`` connections at REPEATABLE READ isolation.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol, TypeVar

from twisted.internet import defer, threads
from twisted.internet.interfaces import IReactorThreads
from twisted.python.threadpool import ThreadPool

from homeserver.metrics import (
    SCHEDULE_TIME,
    TRANSACTION_COUNT,
    TRANSACTION_TIME,
    record_db_usage,
)

logger = logging.getLogger(__name__)

R = TypeVar("R")

MAX_TRANSACTION_ATTEMPTS = 10


class Engine(Protocol):
    """What differs between database kinds."""

    name: str
    single_connection: bool

    def connect(self) -> Any: ...

    def convert_sql(self, sql: str) -> str: ...

    def is_transient_error(self, exc: BaseException) -> bool: ...

    def begin(self, conn: Any) -> None: ...


class SqliteEngine:
    name = "sqlite"
    single_connection = True

    def __init__(self, path: str) -> None:
        self.path = path

    def connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(
            "PRAGMA synchronous=NORMAL" if self.path != ":memory:" else "PRAGMA synchronous=OFF"
        )
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA busy_timeout=5000")
        return conn

    def convert_sql(self, sql: str) -> str:
        return sql

    def is_transient_error(self, exc: BaseException) -> bool:
        return isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc)

    def begin(self, conn: Any) -> None:
        # IMMEDIATE takes the write lock up front: no lock-upgrade deadlocks.
        conn.execute("BEGIN IMMEDIATE")


class PostgresEngine:
    name = "postgres"
    single_connection = False

    def __init__(self, connect_args: dict[str, Any]) -> None:
        self.connect_args = connect_args

    def connect(self) -> Any:
        import psycopg2
        import psycopg2.extensions

        conn = psycopg2.connect(**self.connect_args)
        conn.set_session(
            isolation_level=psycopg2.extensions.ISOLATION_LEVEL_REPEATABLE_READ, autocommit=False
        )
        return conn

    def convert_sql(self, sql: str) -> str:
        return sql.replace("?", "%s")

    def is_transient_error(self, exc: BaseException) -> bool:
        import psycopg2.errors

        return isinstance(
            exc, psycopg2.errors.SerializationFailure | psycopg2.errors.DeadlockDetected
        )

    def begin(self, conn: Any) -> None:
        pass  # psycopg2 opens a transaction implicitly


class Transaction:
    """A cursor plus the after-commit callbacks of one attempt."""

    def __init__(self, engine: Engine, conn: Any) -> None:
        self.engine = engine
        self.conn = conn
        self.cursor = conn.cursor()
        self.after_callbacks: list[tuple[Callable[..., None], tuple[Any, ...]]] = []

    @property
    def database_engine(self) -> str:
        return self.engine.name

    def execute(self, sql: str, args: Sequence[Any] = ()) -> None:
        self.cursor.execute(self.engine.convert_sql(sql), tuple(args))

    def execute_many(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        rows = [tuple(r) for r in rows]
        if rows:
            self.cursor.executemany(self.engine.convert_sql(sql), rows)

    def fetchone(self) -> tuple[Any, ...] | None:
        row = self.cursor.fetchone()
        return tuple(row) if row is not None else None

    def fetchall(self) -> list[tuple[Any, ...]]:
        return [tuple(r) for r in self.cursor.fetchall()]

    def select_one(self, sql: str, args: Sequence[Any] = ()) -> tuple[Any, ...] | None:
        self.execute(sql, args)
        return self.fetchone()

    def select_all(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        self.execute(sql, args)
        return self.fetchall()

    @property
    def rowcount(self) -> int:
        return int(self.cursor.rowcount)

    def call_after(self, callback: Callable[..., None], *args: Any) -> None:
        """Run ``callback(*args)`` on the reactor once this transaction has committed."""
        self.after_callbacks.append((callback, args))


class Database:
    def __init__(
        self,
        engine: Engine,
        reactor: IReactorThreads,
        *,
        cp_min: int = 1,
        cp_max: int = 5,
    ) -> None:
        self.engine = engine
        self._reactor = reactor
        if engine.single_connection:
            cp_min = cp_max = 1
        self._pool = ThreadPool(minthreads=cp_min, maxthreads=cp_max, name=f"db-{engine.name}")
        # SQLite in WAL mode lets a reader run beside the one writer: lookups on the
        # request path (run_read) do not queue behind large commits. PostgreSQL's pool
        # already runs them side by side.
        self._reader: ThreadPool | None = None
        if engine.single_connection and getattr(engine, "path", ":memory:") != ":memory:":
            self._reader = ThreadPool(minthreads=1, maxthreads=1, name=f"db-{engine.name}-read")
        self._local = threading.local()
        self._connections: list[Any] = []
        self._lock = threading.Lock()
        self._started = False

    @property
    def engine_name(self) -> str:
        return self.engine.name

    def start(self) -> None:
        if not self._started:
            self._pool.start()
            if self._reader is not None:
                self._reader.start()
            self._started = True

    def close(self) -> None:
        """Stop the pool (waiting for running transactions) and close connections."""
        if self._started:
            self._pool.stop()
            if self._reader is not None:
                self._reader.stop()
            self._started = False
        with self._lock:
            for conn in self._connections:
                try:
                    conn.close()
                except Exception:  # already broken: nothing to do
                    pass
            self._connections.clear()

    def _get_connection(self) -> Any:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self.engine.connect()
            self._local.conn = conn
            with self._lock:
                self._connections.append(conn)
        return conn

    def _drop_connection(self) -> None:
        conn = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None:
            with self._lock:
                if conn in self._connections:
                    self._connections.remove(conn)
            try:
                conn.close()
            except Exception:
                pass

    def _read_in_thread(
        self, queued_at: float, desc: str, func: Callable[..., R], *args: Any
    ) -> tuple[R, list[Any], float, float]:
        return self._timed_in_thread(queued_at, desc, func, *args, read_only=True)

    def _timed_in_thread(
        self,
        queued_at: float,
        desc: str,
        func: Callable[..., R],
        *args: Any,
        read_only: bool = False,
    ) -> tuple[R, list[Any], float, float]:
        """``_run_in_thread``, counted in Synapse's transaction metrics (by ``desc``)
        and its wait for a connection in ``synapse_storage_schedule_time``; returns
        its wait and its duration too, for the request it ran for."""
        start = time.perf_counter()
        sched = start - queued_at
        SCHEDULE_TIME.observe(sched)
        try:
            result, after = self._run_in_thread(desc, func, *args, read_only=read_only)
        finally:
            duration = time.perf_counter() - start
            TRANSACTION_COUNT.labels(desc).inc()
            TRANSACTION_TIME.labels(desc).inc(duration)
        return result, after, sched, duration

    def _run_in_thread(
        self, desc: str, func: Callable[..., R], *args: Any, read_only: bool = False
    ) -> tuple[R, list[Any]]:
        for attempt in range(1, MAX_TRANSACTION_ATTEMPTS + 1):
            conn = self._get_connection()
            txn = Transaction(self.engine, conn)
            try:
                if read_only:
                    conn.execute("BEGIN")  # SQLite reader: a snapshot, no write lock
                else:
                    self.engine.begin(conn)
                result = func(txn, *args)
                conn.commit()
                return result, txn.after_callbacks
            except BaseException as exc:
                try:
                    conn.rollback()
                except Exception:
                    self._drop_connection()
                if _is_connection_error(exc):
                    self._drop_connection()
                    if attempt < MAX_TRANSACTION_ATTEMPTS:
                        continue
                if self.engine.is_transient_error(exc) and attempt < MAX_TRANSACTION_ATTEMPTS:
                    logger.debug("[TXN %s] transient failure, retrying: %s", desc, exc)
                    time.sleep(0.005 * attempt)
                    continue
                raise
        raise AssertionError("unreachable")

    async def run_read(self, desc: str, func: Callable[..., R], *args: Any) -> R:
        """``run_interaction`` for a transaction that only reads and needs no more than
        what was committed when it starts; on SQLite it runs beside the writer."""
        if self._reader is None:
            return await self.run_interaction(desc, func, *args)
        if not self._started:
            self.start()
        result, _, sched, duration = await threads.deferToThreadPool(
            self._reactor,  # type: ignore[arg-type]
            self._reader,
            self._read_in_thread,
            time.perf_counter(),
            desc,
            func,
            *args,
        )
        record_db_usage(sched, duration)
        return result

    async def run_interaction(self, desc: str, func: Callable[..., R], *args: Any) -> R:
        """Run ``func(txn, *args)`` in one transaction on the database's thread pool."""
        if not self._started:
            self.start()
        result, after, sched, duration = await threads.deferToThreadPool(
            self._reactor,  # type: ignore[arg-type]
            self._pool,
            self._timed_in_thread,
            time.perf_counter(),
            desc,
            func,
            *args,
        )
        record_db_usage(sched, duration)
        for callback, cb_args in after:
            try:
                callback(*cb_args)
            except Exception:
                logger.exception("after-commit callback of %s failed", desc)
        return result

    def run_interaction_d(self, desc: str, func: Callable[..., R], *args: Any) -> defer.Deferred[R]:
        return defer.ensureDeferred(self.run_interaction(desc, func, *args))


def _is_connection_error(exc: BaseException) -> bool:
    try:
        import psycopg2
    except ImportError:  # pragma: no cover
        return False
    return isinstance(exc, psycopg2.InterfaceError | psycopg2.OperationalError) and not isinstance(
        exc, psycopg2.errors.SerializationFailure | psycopg2.errors.DeadlockDetected
    )


def make_engine(database_config: dict[str, Any]) -> Engine:
    """Build the engine from a Synapse-style ``database`` config section (already validated)."""
    name = database_config["name"]
    args = dict(database_config.get("args") or {})
    if name == "sqlite3":
        return SqliteEngine(args["database"])
    connect_args = {k: v for k, v in args.items() if k not in ("cp_min", "cp_max", "cp_reconnect")}
    if "database" in connect_args and "dbname" not in connect_args:
        connect_args["dbname"] = connect_args.pop("database")
    return PostgresEngine(connect_args)


def like_escape(value: str) -> str:
    """``value`` as literal text inside a ``LIKE ? ESCAPE '\\'`` pattern."""
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
