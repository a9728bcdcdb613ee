"""Real JavaScript clients (matrix-js-sdk in Node, Hydrogen in Chromium) against a real
``homeserver`` process on loopback.

The npm packages are pinned in ``tests/e2e/js/package-lock.json``; ``npm ci`` installs
them on first use (``node_modules`` is git-ignored). A missing tool (node, npm, chromium)
skips the test with a reason locally and fails it under ``CI=true``:
``scripts/ensure-services.sh`` installs them from Debian's packages.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.subprocess_server import (
    NO_RATE_LIMITS,
    ServerProcess,
    free_port,
    generate_config,
    start_server,
    write_overrides,
)

JS_DIR = Path(__file__).resolve().parent.parent / "e2e" / "js"
NPM_CI_TIMEOUT_S = 300


def require_tool(name: str) -> str:
    """The tool's path; skip (locally) or fail (CI=true) when it is missing."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed (scripts/ensure-services.sh installs it)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


def ensure_node_modules() -> Path:
    """``npm ci`` in tests/e2e/js when its node_modules is missing or older than the lock."""
    require_tool("node")
    npm = require_tool("npm")
    lock = JS_DIR / "package-lock.json"
    marker = JS_DIR / "node_modules" / ".package-lock.json"
    if not marker.exists() or marker.stat().st_mtime < lock.stat().st_mtime:
        result = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"],
            cwd=JS_DIR,
            capture_output=True,
            text=True,
            timeout=NPM_CI_TIMEOUT_S,
        )
        assert result.returncode == 0, f"npm ci failed:\n{result.stdout}\n{result.stderr}"
    return JS_DIR


def post_json(url: str, body: dict[str, Any], token: str | None = None) -> dict[str, Any]:
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, json.dumps(body).encode(), headers, method="POST")
    with urllib.request.urlopen(req, timeout=30) as resp:
        result: dict[str, Any] = json.load(resp)
    return result


def register(base_url: str, username: str, password: str) -> dict[str, Any]:
    """Register through the client API (m.login.dummy); the /register response."""
    return post_json(
        f"{base_url}/_matrix/client/v3/register",
        {"username": username, "password": password, "auth": {"type": "m.login.dummy"}},
    )


def run_server(tmp_path: Path, **overrides: Any) -> Iterator[ServerProcess]:
    """A ``homeserver`` process on SQLite without rate limits, stopped afterwards."""
    port = free_port()
    config_path = generate_config(tmp_path, port)
    overrides_path = write_overrides(tmp_path, {"bcrypt_rounds": 4, **NO_RATE_LIMITS, **overrides})
    server = start_server(tmp_path, port, config_path, overrides_path)
    try:
        yield server
    finally:
        server.stop()
