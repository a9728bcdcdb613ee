"""Every client-server and server-server operation of the spec, fuzzed over real HTTP.

One server (a ``homeserver`` subprocess, SQLite) serves the whole module; each
operation is one test that sends ``FUZZ_EXAMPLES`` (default 10) derandomized requests,
so a failure here is reproducible and never a fluke. ``FUZZ_DB=postgres`` runs it on
PostgreSQL; ``python -m tests.fuzz.run`` is the long run (docs/fuzzing.md).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from tests.fuzz.spec import spec_missing_reason

if (missing := spec_missing_reason()) is not None:
    pytest.skip(missing, allow_module_level=True)

from tests.fuzz.engine import (  # noqa: E402
    answer_problem,
    fuzz_operation,
    load_schema,
    schema_operations,
)
from tests.fuzz.target import FuzzTarget  # noqa: E402

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "10"))
DB_KIND = os.environ.get("FUZZ_DB", "sqlite")
OPERATIONS = [
    (api, op)
    for api in ("client-server", "server-server")
    for op in schema_operations(load_schema(api))
]


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FuzzTarget]:
    with FuzzTarget(str(tmp_path_factory.mktemp("fuzz")), DB_KIND) as running:
        yield running


@pytest.mark.parametrize(("api", "op"), OPERATIONS, ids=[op.label for _, op in OPERATIONS])
def test_operation_keeps_its_contract(target: FuzzTarget, api: str, op: Any) -> None:
    report = fuzz_operation(op, target, api, EXAMPLES)
    assert report.requests >= 1
    assert not report.findings, "\n\n".join(report.findings)


def test_every_spec_operation_is_fuzzed() -> None:
    # The bundle resolved every file: both APIs, no operation lost to a bad $ref.
    labels = {op.label for _, op in OPERATIONS}
    assert len(OPERATIONS) >= 200
    assert "PUT /_matrix/client/v3/rooms/{roomId}/send/{eventType}/{txnId}" in labels
    assert "PUT /_matrix/federation/v1/send/{txnId}" in labels
    assert "GET /_matrix/key/v2/server" in labels


@pytest.mark.parametrize(
    ("status", "body", "problem"),
    [
        (200, b"not json", None),
        (404, b'{"errcode": "M_NOT_FOUND", "error": "No such room"}', None),
        (401, b'{"flows": [{"stages": ["m.login.dummy"]}], "session": "x"}', None),
        (502, b'{"errcode": "M_UNKNOWN", "error": "remote failed"}', None),
        (500, b'{"errcode": "M_UNKNOWN", "error": "Internal server error"}', "server error 500"),
        (400, b"<html>bad</html>", "400 body is not JSON"),
        (403, b"[]", "403 body is not a JSON object"),
        (400, b'{"errcode": "M_BAD_JSON"}', "400 body lacks a string errcode and error"),
        (401, b'{"errcode": 1, "error": "x"}', "401 body lacks a string errcode and error"),
    ],
)
def test_answer_problem(status: int, body: bytes, problem: str | None) -> None:
    assert answer_problem(status, body) == problem
