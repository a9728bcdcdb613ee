from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_twisted

from tests.support.databases import database_config
from tests.support.federation import two_federating_servers
from tests.support.server import RunningServer


@pytest.fixture
def database_b(db_kind: str, tmp_path: Any) -> Any:
    os.makedirs(str(tmp_path / "b"), exist_ok=True)
    with database_config(db_kind, str(tmp_path / "b")) as config:
        yield config


@pytest.fixture
def server_b_overrides() -> dict[str, Any]:
    """Configuration of server B in ``two_servers`` (parametrize to change it)."""
    return {}


@pytest_twisted.async_yield_fixture
async def two_servers(
    database: dict[str, Any],
    database_b: dict[str, Any],
    tmp_path: Any,
    server_b_overrides: dict[str, Any],
) -> AsyncIterator[tuple[RunningServer, RunningServer]]:
    async with two_federating_servers(
        tmp_path, database, database_b, b_overrides=server_b_overrides
    ) as servers:
        yield servers
