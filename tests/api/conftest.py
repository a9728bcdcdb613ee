"""API test fixtures.

PostgreSQL databases come from a pool (``tests.storage.db_pool``) instead of being
created and migrated for every test; the migrations themselves are tested on fresh
databases in ``tests/storage``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
import pytest_twisted

from tests.api.helpers import register
from tests.storage.db_pool import PostgresPool, pooled_database_config
from tests.support.client import Client
from tests.support.server import RunningServer


@pytest.fixture(scope="session")
def postgres_pool() -> Iterator[PostgresPool]:
    pool = PostgresPool()
    try:
        yield pool
    finally:
        pool.close()


@pytest.fixture
def database(db_kind: str, tmp_path: Any, postgres_pool: PostgresPool) -> Iterator[Any]:
    if db_kind == "sqlite":
        yield {"name": "sqlite3", "args": {"database": os.path.join(str(tmp_path), "hs.db")}}
        return
    with pooled_database_config(postgres_pool) as config:
        yield config


@pytest_twisted.async_fixture
async def alice(server: RunningServer) -> Client:
    return await register(server, "alice")


@pytest_twisted.async_fixture
async def bob(server: RunningServer) -> Client:
    return await register(server, "bob")
