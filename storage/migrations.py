"""Versioned, forward-only schema migrations applied at start-up.

Files in ``storage/schema`` are named ``NNNN_description.sql`` (portable SQL) or
``NNNN_description.sqlite.sql`` / ``NNNN_description.postgres.sql`` when the two
databases need different text for the same step. Each version is applied once, in one
transaction together with its row in ``schema_version``; running again is a no-op. A
database that records a version newer than this code knows refuses to start.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from importlib import resources

from storage.database import Database, Transaction

logger = logging.getLogger(__name__)

_FILE_RE = re.compile(r"^(\d{4})_([a-z0-9_]+?)(?:\.(sqlite|postgres))?\.sql$")


class SchemaError(Exception):
    pass


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def available_migrations(engine_name: str) -> list[Migration]:
    by_version: dict[int, Migration] = {}
    for entry in resources.files("storage").joinpath("schema").iterdir():
        m = _FILE_RE.match(entry.name)
        if not m:
            continue
        version, name, only_for = int(m.group(1)), m.group(2), m.group(3)
        if only_for is not None and only_for != engine_name:
            continue
        if version in by_version and only_for is None:
            continue  # an engine-specific file wins over the portable one
        by_version[version] = Migration(version, name, entry.read_text(encoding="utf-8"))
    return [by_version[v] for v in sorted(by_version)]


def split_statements(sql: str) -> list[str]:
    without_comments = "\n".join(
        line for line in sql.splitlines() if not line.strip().startswith("--")
    )
    return [s.strip() for s in without_comments.split(";") if s.strip()]


def _prepare(txn: Transaction) -> set[int]:
    txn.execute(
        "CREATE TABLE IF NOT EXISTS schema_version ("
        " version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_ts BIGINT NOT NULL)"
    )
    return {int(row[0]) for row in txn.select_all("SELECT version FROM schema_version")}


def _apply(txn: Transaction, migration: Migration) -> bool:
    row = txn.select_one("SELECT 1 FROM schema_version WHERE version = ?", (migration.version,))
    if row is not None:
        return False  # another process applied it first
    for statement in split_statements(migration.sql):
        txn.execute(statement)
    txn.execute(
        "INSERT INTO schema_version (version, name, applied_ts) VALUES (?, ?, ?)",
        (migration.version, migration.name, int(time.time() * 1000)),
    )
    return True


async def prepare_database(db: Database) -> int:
    """Bring the schema up to date; return the version now in force."""
    applied_versions = await db.run_interaction("schema_prepare", _prepare)
    current = max(applied_versions, default=0)
    migrations = available_migrations(db.engine_name)
    newest_known = migrations[-1].version if migrations else 0
    if current > newest_known:
        raise SchemaError(
            f"The database schema is at version {current}, newer than this server knows "
            f"({newest_known}). Upgrade the homeserver before starting it on this database."
        )
    # Each version not yet recorded, even one numbered below the newest applied: a
    # branch's migration merged after a later-numbered one must still run.
    for migration in migrations:
        if migration.version in applied_versions:
            continue
        applied = await db.run_interaction(f"schema_{migration.version}", _apply, migration)
        if applied:
            logger.info("Applied schema migration %04d_%s", migration.version, migration.name)
    return max(current, newest_known)
