"""End to end: matrix-js-sdk 37.5.0 (Node) against a real server process.

``tests/e2e/js/scenario.mjs`` logs two users in, creates a room, exchanges plain
messages, starts a thread with ``sendMessage(roomId, rootId, content)`` (which must
resolve), replies in it from the second client, edits a message and reacts to it.
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
SCENARIO_TIMEOUT_S = 120


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    yield from run_server(tmp_path)


def test_js_sdk_threads_edits_reactions(server: ServerProcess) -> None:
    js_dir = ensure_node_modules()
    node = require_tool("node")
    for user in ("alice", "bob"):
        register(server.base_url, user, PASSWORD)
    result = subprocess.run(
        [node, "scenario.mjs", server.base_url],
        cwd=js_dir,
        env=dict(os.environ, PASSWORD=PASSWORD, STEP_TIMEOUT_MS="15000"),
        capture_output=True,
        text=True,
        timeout=SCENARIO_TIMEOUT_S,
    )
    output = f"stdout:\n{result.stdout}\nstderr:\n{result.stderr[-6000:]}"
    assert result.returncode == 0, f"the js-sdk scenario failed\n{output}\n{server.stderr()}"
    steps = [line.removeprefix("ok: ") for line in result.stdout.splitlines()]
    for step in ("thread reply sent", "thread seen by both", "edit", "reaction"):
        assert step in steps, output
