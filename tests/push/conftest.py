from __future__ import annotations

from typing import Any

import pytest


@pytest.fixture
def config_overrides() -> dict[str, Any]:
    # The push gateway stub listens on loopback, which ip_range_blacklist blocks by default.
    return {"ip_range_whitelist": ["127.0.0.0/8"]}
