from __future__ import annotations

import pytest_twisted

from tests.api.helpers import register
from tests.support.client import Client
from tests.support.server import RunningServer


@pytest_twisted.async_fixture
async def alice(server: RunningServer) -> Client:
    return await register(server, "alice")


@pytest_twisted.async_fixture
async def bob(server: RunningServer) -> Client:
    return await register(server, "bob")
