"""Run the test suite; retry, once, the failing files of the flake-prone groups.

Tests that start other processes or several servers over real networking (Synapse
peers, real clients, two federating servers, WebSockets) can fail for reasons outside
the code under test on a loaded two-core machine. When only files of those groups fail,
each such file is run once more; if it then passes, the run is green and the file is
listed as flaked. A failure anywhere else, or a second failure, is red.

Usage: python scripts/run_tests.py [pytest args...]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from typing import Any

FLAKE_PRONE = ("tests/interop/", "tests/e2e/", "tests/federation/", "tests/websocket/")


def run_pytest(args: list[str]) -> tuple[int, dict[str, Any]]:
    with tempfile.NamedTemporaryFile("r", suffix=".failed", delete=False) as f:
        log_path = f.name
    try:
        env = dict(os.environ, HOMESERVER_FAILURE_LOG=log_path)
        cmd = [sys.executable, "-m", "pytest", "-p", "tests.support.failure_log", *args]
        code = subprocess.call(cmd, env=env)
        try:
            with open(log_path, encoding="utf-8") as f:
                outcome: dict[str, Any] = json.load(f)
        except ValueError:  # pytest died before writing it
            outcome = {"failed": ["<pytest>"], "passed": 0, "skipped": 0}
        return code, outcome
    finally:
        os.unlink(log_path)


def main(argv: list[str]) -> int:
    code, outcome = run_pytest(["-q", *argv])
    if code == 0:
        return 0
    failed: list[str] = outcome["failed"]
    files = sorted({nodeid.split("::", 1)[0] for nodeid in failed})
    if code != 1 or not files or not all(f.startswith(FLAKE_PRONE) for f in files):
        return code
    print(f"\nRetrying {len(files)} flake-prone file(s) once: {' '.join(files)}", flush=True)
    retry_code, retry = run_pytest(["-q", *files])
    if retry_code != 0:
        print(f"Still failing on retry: {' '.join(retry['failed'])}")
        return retry_code
    print("Flaked (failed, then passed on retry):")
    for nodeid in failed:
        print(f"  {nodeid}")
    # The first run's passes plus the retried tests that passed the second time.
    passed = outcome["passed"] + len([n for n in failed if "::" in n])
    print(f"total: {passed} passed, 0 failed, {outcome['skipped']} skipped")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
