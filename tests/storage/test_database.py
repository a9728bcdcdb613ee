"""The database layer: transactions, rollback, retries, after-commit callbacks."""

from __future__ import annotations

import sqlite3
import threading
from typing import Any

import pytest
import pytest_twisted

from storage.database import Database, PostgresEngine, SqliteEngine, Transaction, make_engine


async def _make_table(db: Database) -> None:
    await db.run_interaction(
        "create",
        lambda txn: txn.execute("CREATE TABLE t (k TEXT PRIMARY KEY, v INTEGER NOT NULL)"),
    )


async def _rows(db: Database) -> list[tuple[Any, ...]]:
    return await db.run_interaction(
        "rows", lambda txn: txn.select_all("SELECT k, v FROM t ORDER BY k")
    )


def _transient_error(db: Database) -> BaseException:
    if db.engine_name == "sqlite":
        return sqlite3.OperationalError("database is locked")
    import psycopg2.errors

    return psycopg2.errors.SerializationFailure("could not serialize access")


class Boom(Exception):
    pass


@pytest_twisted.ensureDeferred
async def test_transaction_that_raises_rolls_back(db: Database) -> None:
    await _make_table(db)
    await db.run_interaction(
        "seed", lambda txn: txn.execute("INSERT INTO t VALUES (?, ?)", ("a", 1))
    )

    def _txn(txn: Transaction) -> None:
        txn.execute("INSERT INTO t VALUES (?, ?)", ("b", 2))
        txn.execute("UPDATE t SET v = 100 WHERE k = ?", ("a",))
        raise Boom()

    with pytest.raises(Boom):
        await db.run_interaction("fails", _txn)
    assert await _rows(db) == [("a", 1)]
    # The connection is usable afterwards.
    await db.run_interaction("ok", lambda txn: txn.execute("INSERT INTO t VALUES (?, ?)", ("c", 3)))
    assert await _rows(db) == [("a", 1), ("c", 3)]


@pytest_twisted.ensureDeferred
async def test_sql_error_rolls_back_the_whole_transaction(db: Database) -> None:
    await _make_table(db)

    def _txn(txn: Transaction) -> None:
        txn.execute("INSERT INTO t VALUES (?, ?)", ("a", 1))
        txn.execute("INSERT INTO t VALUES (?, ?)", ("a", 2))  # primary key violation

    with pytest.raises(Exception) as excinfo:  # noqa: B017 - each engine has its own type
        await db.run_interaction("dup", _txn)
    assert "unique" in str(excinfo.value).lower()
    assert await _rows(db) == []


@pytest_twisted.ensureDeferred
async def test_result_is_returned_and_work_is_committed(db: Database) -> None:
    await _make_table(db)

    def _txn(txn: Transaction, k: str, v: int) -> int:
        txn.execute_many("INSERT INTO t VALUES (?, ?)", [(k, v), (k + "2", v + 1)])
        txn.execute("UPDATE t SET v = v + 10 WHERE k = ?", (k,))
        return txn.rowcount

    assert await db.run_interaction("insert", _txn, "x", 1) == 1
    assert await _rows(db) == [("x", 11), ("x2", 2)]
    # execute_many with no rows is a no-op rather than an error.
    await db.run_interaction(
        "none", lambda txn: txn.execute_many("INSERT INTO t VALUES (?, ?)", [])
    )


@pytest_twisted.ensureDeferred
async def test_interactions_run_off_the_reactor_thread(db: Database) -> None:
    main = threading.get_ident()
    thread = await db.run_interaction("where", lambda txn: threading.get_ident())
    assert thread != main


@pytest_twisted.ensureDeferred
async def test_after_commit_callbacks_run_only_after_commit(db: Database) -> None:
    await _make_table(db)
    calls: list[Any] = []

    def _ok(txn: Transaction) -> None:
        txn.execute("INSERT INTO t VALUES (?, ?)", ("a", 1))
        txn.call_after(lambda *a: calls.append((a, threading.get_ident())), "done", 1)

    main = threading.get_ident()
    await db.run_interaction("ok", _ok)
    assert calls == [(("done", 1), main)]

    def _fails(txn: Transaction) -> None:
        txn.call_after(calls.append, "never")
        raise Boom()

    with pytest.raises(Boom):
        await db.run_interaction("fails", _fails)
    assert calls == [(("done", 1), main)]


@pytest_twisted.ensureDeferred
async def test_failing_after_commit_callback_does_not_undo_the_transaction(
    db: Database,
) -> None:
    await _make_table(db)

    def _txn(txn: Transaction) -> str:
        txn.execute("INSERT INTO t VALUES (?, ?)", ("a", 1))
        txn.call_after(lambda: 1 / 0)
        return "result"

    assert await db.run_interaction("cb", _txn) == "result"
    assert await _rows(db) == [("a", 1)]


@pytest_twisted.ensureDeferred
async def test_transient_failure_is_retried_from_the_start(db: Database) -> None:
    await _make_table(db)
    attempts: list[int] = []

    def _txn(txn: Transaction) -> int:
        attempts.append(1)
        txn.execute("INSERT INTO t VALUES (?, ?)", (f"k{len(attempts)}", len(attempts)))
        if len(attempts) < 3:
            raise _transient_error(db)
        return len(attempts)

    assert await db.run_interaction("retry", _txn) == 3
    # Only the successful attempt's work is kept.
    assert await _rows(db) == [("k3", 3)]


@pytest_twisted.ensureDeferred
async def test_other_failures_are_not_retried(db: Database) -> None:
    attempts: list[int] = []

    def _txn(txn: Transaction) -> None:
        attempts.append(1)
        raise Boom()

    with pytest.raises(Boom):
        await db.run_interaction("no_retry", _txn)
    assert attempts == [1]


@pytest_twisted.ensureDeferred
async def test_persistent_transient_failure_eventually_gives_up(db: Database) -> None:
    from storage.database import MAX_TRANSACTION_ATTEMPTS

    attempts: list[int] = []

    def _txn(txn: Transaction) -> None:
        attempts.append(1)
        raise _transient_error(db)

    with pytest.raises(type(_transient_error(db))):
        await db.run_interaction("gives_up", _txn)
    assert len(attempts) == MAX_TRANSACTION_ATTEMPTS


@pytest_twisted.ensureDeferred
async def test_run_interaction_d_returns_a_deferred(db: Database) -> None:
    assert await db.run_interaction_d("d", lambda txn: txn.select_one("SELECT 1")) == (1,)


def test_make_engine_sqlite_and_postgres_args() -> None:
    sqlite = make_engine({"name": "sqlite3", "args": {"database": "/tmp/x.db", "cp_min": 1}})
    assert isinstance(sqlite, SqliteEngine) and sqlite.path == "/tmp/x.db"
    pg = make_engine(
        {
            "name": "psycopg2",
            "args": {"database": "db", "user": "u", "host": "h", "cp_min": 1, "cp_max": 2},
        }
    )
    assert isinstance(pg, PostgresEngine)
    assert pg.connect_args == {"dbname": "db", "user": "u", "host": "h"}
    assert pg.convert_sql("SELECT ? , ?") == "SELECT %s , %s"


def test_engines_classify_transient_errors() -> None:
    import psycopg2.errors

    assert SqliteEngine(":memory:").is_transient_error(
        sqlite3.OperationalError("database is locked")
    )
    assert not SqliteEngine(":memory:").is_transient_error(
        sqlite3.OperationalError("no such table")
    )
    pg = PostgresEngine({})
    assert pg.is_transient_error(psycopg2.errors.SerializationFailure())
    assert pg.is_transient_error(psycopg2.errors.DeadlockDetected())
    assert not pg.is_transient_error(psycopg2.errors.UniqueViolation())
