from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_twisted

from tests.support.databases import database_config
from tests.support.server import RunningServer, make_config_dict, start_server


@pytest.fixture(params=["sqlite", "postgres"])
def db_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def database(db_kind: str, tmp_path: Any) -> Any:
    with database_config(db_kind, str(tmp_path)) as config:
        yield config


@pytest.fixture
def config_overrides() -> dict[str, Any]:
    """Override in a test module to change the server's config."""
    return {}


@pytest_twisted.async_yield_fixture
async def server(
    database: dict[str, Any], tmp_path: Any, config_overrides: dict[str, Any]
) -> AsyncIterator[RunningServer]:
    running = await start_server(
        make_config_dict(str(tmp_path), database, **config_overrides), str(tmp_path)
    )
    try:
        yield running
    finally:
        await running.stop()
