"""End to end: matrix-js-sdk 37.5.0's ``SlidingSync`` (simplified sliding sync, MSC4186)
against a real server process.

matrix-js-sdk 37.5.0 speaks simplified sliding sync: ``MatrixClient.slidingSync`` posts
to ``/_matrix/client/unstable/org.matrix.simplified_msc3575/sync`` (``pos`` and
``timeout`` as query parameters), and ``startClient({slidingSync})`` runs it through
``SlidingSyncSdk``. ``tests/e2e/js/sliding_scenario.mjs`` drives one list (ranges
[0,10], timeline_limit 5) and a room subscription while another user, not syncing,
sends a message, a read receipt and typing notifications.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.js_clients import ensure_node_modules, register, require_tool, run_server
from tests.support.subprocess_server import ServerProcess

PASSWORD = "correct horse battery staple"
SCENARIO_TIMEOUT_S = 60


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    yield from run_server(tmp_path)


def test_js_sdk_sliding_sync_list_subscription_receipts_typing(server: ServerProcess) -> None:
    js_dir = ensure_node_modules()
    node = require_tool("node")
    for user in ("alice", "bob"):
        register(server.base_url, user, PASSWORD)
    result = subprocess.run(
        [node, "sliding_scenario.mjs", server.base_url],
        cwd=js_dir,
        env=dict(os.environ, PASSWORD=PASSWORD, STEP_TIMEOUT_MS="15000"),
        capture_output=True,
        text=True,
        timeout=SCENARIO_TIMEOUT_S,
    )
    output = f"stdout:\n{result.stdout}\nstderr:\n{result.stderr[-6000:]}"
    assert result.returncode == 0, f"the sliding-sync scenario failed\n{output}\n{server.stderr()}"
    # The sdk also logs to stdout (the subscription's timeline repeats the list's events).
    steps = [line[4:] for line in result.stdout.splitlines() if line.startswith("ok: ")]
    assert steps == ["rooms set up", "room list", "message", "receipt", "typing"], output
