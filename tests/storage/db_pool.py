"""A pool of migrated PostgreSQL test databases, emptied between uses.

Creating and migrating a database costs about half a second; emptying a used one takes
a few milliseconds. A database is migrated by the first server or ``Storage`` opened on
it; when released, every table but ``schema_version`` is emptied (no migration seeds
data) and it is handed out again. Tests that change the schema itself, or need a
database that was never migrated, must use a fresh database instead.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from tests.support.databases import PG_ARGS, require_postgres


class PostgresPool:
    def __init__(self) -> None:
        self._free: list[str] = []
        self._created: list[str] = []

    @staticmethod
    def _admin() -> Any:
        import psycopg2

        conn = psycopg2.connect(dbname="postgres", **PG_ARGS)
        conn.autocommit = True
        return conn

    def acquire(self) -> str:
        if self._free:
            return self._free.pop()
        require_postgres()
        name = f"hs_test_{uuid.uuid4().hex[:16]}"
        conn = self._admin()
        try:
            with conn.cursor() as cur:
                cur.execute(f"CREATE DATABASE {name} ENCODING 'UTF8' TEMPLATE template0")
        finally:
            conn.close()
        self._created.append(name)
        return name

    def release(self, name: str) -> None:
        """Empty every table (keeping the schema) and make the database reusable."""
        import psycopg2

        try:
            conn = psycopg2.connect(dbname=name, **PG_ARGS)
            try:
                with conn, conn.cursor() as cur:
                    # Foreign keys would otherwise dictate the order of the deletes.
                    cur.execute("SET LOCAL session_replication_role = replica")
                    cur.execute(
                        "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
                        " AND tablename <> 'schema_version'"
                    )
                    for (table,) in cur.fetchall():
                        cur.execute(f'DELETE FROM "{table}"')
                    cur.execute("SELECT sequencename FROM pg_sequences WHERE schemaname = 'public'")
                    for (sequence,) in cur.fetchall():
                        cur.execute(f'ALTER SEQUENCE "{sequence}" RESTART')
            finally:
                conn.close()
        except psycopg2.Error:
            self._drop(name)  # unusable: never reuse it
            return
        self._free.append(name)

    def _drop(self, name: str) -> None:
        conn = self._admin()
        try:
            with conn.cursor() as cur:
                cur.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        finally:
            conn.close()
        if name in self._created:
            self._created.remove(name)

    def close(self) -> None:
        for name in list(self._created):
            self._drop(name)
        self._free.clear()


@contextmanager
def pooled_database_config(pool: PostgresPool) -> Iterator[dict[str, Any]]:
    """A Synapse-style ``database`` section over a pooled database."""
    name = pool.acquire()
    try:
        yield {"name": "psycopg2", "args": {"database": name, **PG_ARGS, "cp_min": 1, "cp_max": 5}}
    finally:
        # Whoever used it (a server, a Storage) has closed its connections by now.
        pool.release(name)
