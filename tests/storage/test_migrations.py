"""Schema migrations: applied once, in order; a newer database is refused."""

from __future__ import annotations

from typing import Any

import pytest
import pytest_twisted

from storage.database import Database, Transaction
from storage.migrations import (
    SchemaError,
    _apply,
    available_migrations,
    prepare_database,
    split_statements,
)
from storage.storage import Storage
from tests.storage.conftest import open_database


def _newest(engine_name: str) -> int:
    return available_migrations(engine_name)[-1].version


async def _schema_rows(db: Database) -> list[tuple[Any, ...]]:
    return await db.run_interaction(
        "rows",
        lambda txn: txn.select_all(
            "SELECT version, name, applied_ts FROM schema_version ORDER BY version"
        ),
    )


@pytest.mark.parametrize("engine", ["sqlite", "postgres"])
def test_available_migrations_have_one_file_per_version_in_order(engine: str) -> None:
    migrations = available_migrations(engine)
    assert migrations, "no migrations found"
    versions = [m.version for m in migrations]
    assert versions[0] == 1
    assert versions == sorted(set(versions))
    assert all(m.sql.strip() and m.name for m in migrations)


def test_engine_specific_migration_wins_over_portable_one(tmp_path: Any, monkeypatch: Any) -> None:
    from storage import migrations as module

    schema = tmp_path / "schema"
    schema.mkdir()
    (schema / "0001_a.sql").write_text("portable")
    (schema / "0001_a.sqlite.sql").write_text("sqlite only")
    (schema / "0002_b.postgres.sql").write_text("postgres only")
    (schema / "notes.txt").write_text("ignored")

    class _Files:
        def joinpath(self, name: str) -> Any:
            assert name == "schema"
            return schema

    monkeypatch.setattr(module.resources, "files", lambda package: _Files())
    assert [(m.version, m.sql) for m in available_migrations("sqlite")] == [(1, "sqlite only")]
    assert [(m.version, m.sql) for m in available_migrations("postgres")] == [
        (1, "portable"),
        (2, "postgres only"),
    ]


def test_split_statements_drops_comments_and_blanks() -> None:
    sql = "-- a comment; with a semicolon\nCREATE TABLE a (x INT);\n\n  -- another\nCREATE INDEX i ON a (x);\n;"
    assert split_statements(sql) == ["CREATE TABLE a (x INT)", "CREATE INDEX i ON a (x)"]


@pytest_twisted.ensureDeferred
async def test_fresh_database_is_migrated_to_newest_version(db: Database) -> None:
    version = await prepare_database(db)
    newest = _newest(db.engine_name)
    assert version == newest
    rows = await _schema_rows(db)
    assert [r[0] for r in rows] == [m.version for m in available_migrations(db.engine_name)]
    # The tables of the first migration exist.
    count = await db.run_interaction(
        "count", lambda txn: txn.select_one("SELECT COUNT(*) FROM users")
    )
    assert count == (0,)


@pytest_twisted.ensureDeferred
async def test_migrating_twice_is_a_no_op(db: Database) -> None:
    first = await prepare_database(db)
    rows = await _schema_rows(db)
    second = await prepare_database(db)
    assert first == second
    assert await _schema_rows(db) == rows  # nothing re-applied, applied_ts unchanged


@pytest_twisted.ensureDeferred
async def test_storage_opens_twice_on_the_same_database_keeping_data(
    database: dict[str, Any], db: Database
) -> None:
    storage = await Storage.open(db)
    assert await storage.users.create_user("@a:test", None, 1)
    db.close()
    again = open_database(database)
    try:
        reopened = await Storage.open(again)
        assert (await reopened.users.get_user("@a:test")) is not None
        assert await reopened.users.count_users() == 1
    finally:
        again.close()


@pytest_twisted.ensureDeferred
async def test_database_newer_than_the_code_is_refused(db: Database) -> None:
    await prepare_database(db)
    future = _newest(db.engine_name) + 1
    await db.run_interaction(
        "future",
        lambda txn: txn.execute(
            "INSERT INTO schema_version (version, name, applied_ts) VALUES (?, ?, ?)",
            (future, "from_the_future", 0),
        ),
    )
    with pytest.raises(SchemaError) as excinfo:
        await prepare_database(db)
    assert str(future) in str(excinfo.value)
    with pytest.raises(SchemaError):
        await Storage.open(db)


@pytest_twisted.ensureDeferred
async def test_applying_an_already_recorded_version_does_nothing(db: Database) -> None:
    await prepare_database(db)
    first = available_migrations(db.engine_name)[0]
    applied = await db.run_interaction("again", _apply, first)
    assert applied is False


@pytest_twisted.ensureDeferred
async def test_failed_migration_leaves_no_trace(db: Database) -> None:
    from storage.migrations import Migration

    await prepare_database(db)
    broken = Migration(
        _newest(db.engine_name) + 1,
        "broken",
        "CREATE TABLE half_done (x INTEGER);\nTHIS IS NOT SQL;",
    )
    with pytest.raises(Exception) as excinfo:  # noqa: B017 - each engine has its own type
        await db.run_interaction("broken", _apply, broken)
    assert "syntax" in str(excinfo.value).lower()

    def _state(txn: Transaction) -> tuple[Any, ...]:
        row = txn.select_one("SELECT MAX(version) FROM schema_version")
        assert row is not None
        return row

    assert (await db.run_interaction("state", _state))[0] == _newest(db.engine_name)
    # The table created before the failing statement was rolled back with it.
    await db.run_interaction(
        "recreate", lambda txn: txn.execute("CREATE TABLE half_done (x INTEGER)")
    )


@pytest_twisted.ensureDeferred
async def test_a_version_below_the_newest_applied_still_runs(db: Database) -> None:
    """A branch's migration merged after a later-numbered one has landed runs anyway."""
    await prepare_database(db)
    [missed] = [m for m in available_migrations(db.engine_name) if m.name == "sliding_sync_rooms"]
    assert missed.version < _newest(db.engine_name)

    def _forget(txn: Transaction) -> None:
        # As if this database had been migrated by code without ``missed``.
        txn.execute("DELETE FROM schema_version WHERE version = ?", (missed.version,))
        txn.execute("DROP TABLE sliding_sync_rooms")

    await db.run_interaction("forget", _forget)
    assert await prepare_database(db) == _newest(db.engine_name)
    assert missed.version in [r[0] for r in await _schema_rows(db)]
    count = await db.run_interaction(
        "count", lambda txn: txn.select_one("SELECT COUNT(*) FROM sliding_sync_rooms")
    )
    assert count == (0,)
