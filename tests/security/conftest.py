"""Fixtures for attacker tests: one of our servers, federating, and a malicious server."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any

import pytest_twisted

from tests.support.federation import start_federating_server
from tests.support.malicious_server import MaliciousServer
from tests.support.server import RunningServer


@pytest_twisted.async_yield_fixture
async def ours(database: dict[str, Any], tmp_path: Any) -> AsyncIterator[RunningServer]:
    """One of our servers with a TLS federation listener (on both databases)."""
    running = await start_federating_server(str(tmp_path / "ours"), database)
    try:
        yield running
    finally:
        await running.stop()


@pytest_twisted.async_yield_fixture
async def attacker(tmp_path: Any) -> AsyncIterator[MaliciousServer]:
    """A running malicious server (see ``tests.support.malicious_server``), named
    ``localhost:<port>`` so that a server ACL can deny it and not our server."""
    os.makedirs(str(tmp_path / "attacker"), exist_ok=True)
    async with MaliciousServer.running(str(tmp_path / "attacker"), host="localhost") as evil:
        yield evil
