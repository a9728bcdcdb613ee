"""Run the test suite; retry, once, the failing files of the flake-prone groups.

Tests that start other processes or several servers over real networking (Synapse
peers, real clients, two federating servers, WebSockets) can fail for reasons outside
the code under test on a loaded two-core machine. When only files of those groups fail,
each such file is run once more; if it then passes, the run is green and the file is
listed as flaked. A failure anywhere else, or a second failure, is red.

Without arguments (the whole suite, as CI runs it), SyTest follows a green pytest run
(``scripts/sytest.py run``: every SyTest test we list as passing must pass), and the last
line counts both. With arguments, they go to pytest alone.

Usage: python scripts/run_tests.py [pytest args...]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from typing import Any

FLAKE_PRONE = (
    "tests/interop/",
    "tests/e2e/",
    "tests/federation/",
    "tests/websocket/",
    "tests/workers/",
)


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
    code, outcome = run_pytest_with_retry(argv)
    if code != 0 or argv:
        return code
    with tempfile.NamedTemporaryFile("r", suffix=".json", delete=False) as f:
        counts_path = f.name
    try:
        sytest = [sys.executable, "scripts/sytest.py", "run", "--counts", counts_path]
        sytest_code = subprocess.call(sytest)
        with open(counts_path, encoding="utf-8") as f:
            text = f.read()
        sytest_counts = json.loads(text) if text else {"passed": 0, "failed": 0}
    finally:
        os.unlink(counts_path)
    passed = outcome["passed"] + sytest_counts["passed"]
    failed = sytest_counts["failed"]
    print(f"total: {passed} passed, {failed} failed, {outcome['skipped']} skipped")
    return sytest_code


def run_pytest_with_retry(argv: list[str]) -> tuple[int, dict[str, Any]]:
    """pytest, then the flake-prone failing files once more; the outcome counts both."""
    code, outcome = run_pytest(["-q", *argv])
    if code == 0:
        return 0, outcome
    failed: list[str] = outcome["failed"]
    files = sorted({nodeid.split("::", 1)[0] for nodeid in failed})
    if code != 1 or not files or not all(f.startswith(FLAKE_PRONE) for f in files):
        return code, outcome
    print(f"\nRetrying {len(files)} flake-prone file(s) once: {' '.join(files)}", flush=True)
    retry_code, retry = run_pytest(["-q", *files])
    if retry_code != 0:
        print(f"Still failing on retry: {' '.join(retry['failed'])}")
        return retry_code, outcome
    print("Flaked (failed, then passed on retry):")
    for nodeid in failed:
        print(f"  {nodeid}")
    # The first run's passes plus the retried tests that passed the second time.
    outcome["passed"] += len([n for n in failed if "::" in n])
    outcome["failed"] = []
    return 0, outcome


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
