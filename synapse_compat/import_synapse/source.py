"""Read-only access to a Synapse database (SQLite or PostgreSQL)."""

from __future__ import annotations

import os
import sqlite3
import urllib.request
from collections.abc import Iterator, Sequence
from typing import Any


class SynapseDatabase:
    """A plain DB-API connection to Synapse's database; only SELECTs are issued."""

    def __init__(self, database_config: dict[str, Any]) -> None:
        name = database_config.get("name")
        args = dict(database_config.get("args") or {})
        self.kind: str
        if name in ("sqlite3", "sqlite"):
            path = args.get("database")
            if not path:
                raise ValueError("Synapse's database config has no args.database")
            # Read-only: the import never changes Synapse's data.
            uri = "file:" + urllib.request.pathname2url(os.path.abspath(path)) + "?mode=ro"
            self._conn: Any = sqlite3.connect(uri, uri=True)
            self.kind = "sqlite"
        elif name in ("psycopg2", "psycopg"):
            import psycopg2

            connect_args = {
                k: v for k, v in args.items() if k not in ("cp_min", "cp_max", "cp_reconnect")
            }
            if "database" in connect_args and "dbname" not in connect_args:
                connect_args["dbname"] = connect_args.pop("database")
            self._conn = psycopg2.connect(**connect_args)
            self._conn.set_session(readonly=True)
            self.kind = "postgres"
        else:
            raise ValueError(f"unsupported Synapse database engine {name!r}")

    def close(self) -> None:
        self._conn.close()

    def _sql(self, sql: str) -> str:
        return sql.replace("?", "%s") if self.kind == "postgres" else sql

    def has_table(self, table: str) -> bool:
        if self.kind == "sqlite":
            sql = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?"
        else:
            sql = "SELECT 1 FROM information_schema.tables WHERE table_name = ?"
        return bool(self.select(sql, (table,)))

    def columns(self, table: str) -> set[str]:
        if self.kind == "sqlite":
            return {str(r[1]) for r in self.select(f"PRAGMA table_info({table})")}
        return {
            str(r[0])
            for r in self.select(
                "SELECT column_name FROM information_schema.columns WHERE table_name = ?",
                (table,),
            )
        }

    def select(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        cur = self._conn.cursor()
        try:
            cur.execute(self._sql(sql), tuple(params))
            return [tuple(r) for r in cur.fetchall()]
        finally:
            cur.close()

    def iterate(self, sql: str, params: Sequence[Any] = ()) -> Iterator[tuple[Any, ...]]:
        yield from self.select(sql, params)

    def count(self, table: str, where: str = "") -> int:
        row = self.select(f"SELECT COUNT(*) FROM {table} {where}")
        return int(row[0][0])
