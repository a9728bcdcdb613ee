from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import pytest_twisted

from tests.support.federation import start_federating_server
from tests.support.server import RunningServer
from tests.support.synapse import SynapsePeer


@pytest.fixture(scope="module")
def synapse(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SynapsePeer]:
    peer = SynapsePeer(str(tmp_path_factory.mktemp("synapse")))
    peer.start()
    try:
        yield peer
    finally:
        peer.stop()


@pytest_twisted.async_yield_fixture
async def ours(tmp_path: Any) -> AsyncIterator[RunningServer]:
    data = str(tmp_path / "ours")
    os.makedirs(data, exist_ok=True)
    db = {"name": "sqlite3", "args": {"database": os.path.join(data, "homeserver.db")}}
    server = await start_federating_server(data, db)
    try:
        yield server
    finally:
        await server.stop()
