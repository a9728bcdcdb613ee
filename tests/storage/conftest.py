"""Storage fixtures: a Database and a migrated Storage over SQLite and PostgreSQL.

``db_kind`` and ``database`` (the config section of a fresh database) come from the
top-level conftest, so every test here runs against both engines.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor

from storage.database import Database, make_engine
from storage.storage import Storage
from tests.storage.db_pool import PostgresPool


def open_database(database: dict[str, Any]) -> Database:
    return Database(make_engine(database), reactor, cp_min=1, cp_max=3)


@pytest.fixture(scope="session")
def postgres_pool() -> Iterator[PostgresPool]:
    pool = PostgresPool()
    try:
        yield pool
    finally:
        pool.close()


@pytest_twisted.async_yield_fixture
async def db(database: dict[str, Any]) -> AsyncIterator[Database]:
    d = open_database(database)
    try:
        yield d
    finally:
        d.close()


@pytest_twisted.async_fixture
async def storage(db: Database) -> Storage:
    return await Storage.open(db)
