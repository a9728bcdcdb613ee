"""Test databases: a fresh SQLite file or a fresh PostgreSQL database per test.

PostgreSQL is at 127.0.0.1:5432 (user postgres, trust auth). Locally its tests skip
with a visible reason when it is down; under CI=true a missing server is a failure.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

PG_ARGS = {
    "host": os.environ.get("TEST_PG_HOST", "127.0.0.1"),
    "port": int(os.environ.get("TEST_PG_PORT", "5432")),
    "user": os.environ.get("TEST_PG_USER", "postgres"),
}

_pg_error: str | None = None
_pg_checked = False


def postgres_unavailable() -> str | None:
    global _pg_checked, _pg_error
    if not _pg_checked:
        _pg_checked = True
        try:
            import psycopg2

            conn = psycopg2.connect(dbname="postgres", connect_timeout=3, **PG_ARGS)
            conn.close()
        except Exception as e:  # any failure means: not usable
            _pg_error = f"PostgreSQL not reachable at {PG_ARGS['host']}:{PG_ARGS['port']}: {e}"
    return _pg_error


def require_postgres() -> None:
    reason = postgres_unavailable()
    if reason is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(reason)


def _admin_connection() -> Any:
    import psycopg2

    conn = psycopg2.connect(dbname="postgres", **PG_ARGS)
    conn.autocommit = True
    return conn


@contextmanager
def postgres_database() -> Iterator[dict[str, Any]]:
    """A new, empty database; dropped afterwards. Yields the psycopg2 connect args."""
    require_postgres()
    name = f"hs_test_{uuid.uuid4().hex[:16]}"
    conn = _admin_connection()
    try:
        with conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE {name} ENCODING 'UTF8' TEMPLATE template0")
        yield {"database": name, **PG_ARGS}
    finally:
        with conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        conn.close()


@contextmanager
def database_config(kind: str, tmp_dir: str) -> Iterator[dict[str, Any]]:
    """A Synapse-style ``database`` config section for ``kind`` ('sqlite' or 'postgres')."""
    if kind == "sqlite":
        yield {"name": "sqlite3", "args": {"database": os.path.join(tmp_dir, "homeserver.db")}}
        return
    with postgres_database() as args:
        yield {"name": "psycopg2", "args": {**args, "cp_min": 1, "cp_max": 5}}
