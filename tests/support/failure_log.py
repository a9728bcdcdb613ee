"""A pytest plugin that writes the run's outcome to a JSON file: failed node ids, counts.

Loaded by ``scripts/run_tests.py`` (``-p tests.support.failure_log``) with the file named
in ``HOMESERVER_FAILURE_LOG``, so the runner can retry flake-prone files once.
"""

from __future__ import annotations

import json
import os

import pytest

_failed: list[str] = []
_counts = {"passed": 0, "skipped": 0}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.failed and report.nodeid not in _failed:
        _failed.append(report.nodeid)
    elif report.skipped:
        _counts["skipped"] += 1
    elif report.passed and report.when == "call":
        _counts["passed"] += 1


def pytest_collectreport(report: pytest.CollectReport) -> None:
    if report.failed:
        _failed.append(report.nodeid or "<collection>")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    path = os.environ.get("HOMESERVER_FAILURE_LOG")
    if path:
        with open(path, "w", encoding="utf-8") as f:
            json.dump({"failed": _failed, **_counts}, f)
