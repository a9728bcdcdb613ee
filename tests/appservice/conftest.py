"""Fixtures: a fake application service on loopback, its registration file, and a
server configured with it (``app_service_config_files``).

A test module changes the registration through ``registration_overrides`` (merged into
the default one), adds services through ``extra_services`` and changes other config
keys through ``hs_overrides``.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import pytest_twisted

from homeserver.appservice import api, sender
from tests.appservice.fake_as import FakeAppService
from tests.appservice.helpers import HS_TOKEN, registration, write_registration
from tests.storage.db_pool import PostgresPool, pooled_database_config


@pytest.fixture(scope="session")
def postgres_pool() -> Iterator[PostgresPool]:
    pool = PostgresPool()
    try:
        yield pool
    finally:
        pool.close()


@pytest.fixture
def database(db_kind: str, tmp_path: Any, postgres_pool: PostgresPool) -> Iterator[Any]:
    """A reused (emptied) PostgreSQL database, or a new SQLite file."""
    if db_kind == "sqlite":
        yield {"name": "sqlite3", "args": {"database": os.path.join(str(tmp_path), "hs.db")}}
        return
    with pooled_database_config(postgres_pool) as config:
        yield config


@pytest.fixture(autouse=True)
def _fast_timers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sender, "BACKOFF_INITIAL_S", 0.05)
    monkeypatch.setattr(sender, "BACKOFF_MAX_S", 0.2)
    monkeypatch.setattr(sender, "POSITION_FLUSH_S", 0.05)
    monkeypatch.setattr(api, "REQUEST_TIMEOUT_S", 5.0)


@pytest_twisted.async_yield_fixture
async def fake_as() -> AsyncIterator[FakeAppService]:
    fake = FakeAppService(HS_TOKEN)
    try:
        yield fake
    finally:
        await fake.stop()


@pytest.fixture
def registration_overrides() -> dict[str, Any]:
    return {}


@pytest.fixture
def extra_services() -> list[dict[str, Any]]:
    return []


@pytest.fixture
def hs_overrides() -> dict[str, Any]:
    return {}


@pytest.fixture
def registration_files(
    tmp_path: Any,
    fake_as: FakeAppService,
    registration_overrides: dict[str, Any],
    extra_services: list[dict[str, Any]],
) -> list[str]:
    files = [write_registration(tmp_path, registration(fake_as.url, **registration_overrides))]
    for i, extra in enumerate(extra_services):
        files.append(write_registration(tmp_path, extra, name=f"extra{i}.yaml"))
    return files


@pytest.fixture
def config_overrides(registration_files: list[str], hs_overrides: dict[str, Any]) -> dict[str, Any]:
    return {"app_service_config_files": registration_files, **hs_overrides}
