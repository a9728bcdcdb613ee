"""Fuzz one spec operation against a running server and check its answers.

For each operation of the bundled spec (``spec.py``), Hypothesis draws requests from
schemathesis' strategies, schema-valid ("positive") and schema-violating ("negative"),
and for each one an auth mode: a valid credential (the fuzz user's access token; an
``X-Matrix`` header signed by the key server for federation), none, or whatever the
generator made up. Path parameters are often swapped for real ids (the fuzz user's
room, events, device...) so requests reach the handlers rather than stop at a 404.

Properties of every answer (:func:`answer_problem`): no 5xx but a gateway error
(502/504, a remote failing), an answer within ``REQUEST_TIMEOUT_S``, and every 4xx/5xx
body a Matrix error (an object with string ``errcode`` and ``error``; a 401 from
user-interactive auth carries ``flows`` instead). After each operation the server must
still answer ``/versions``.

Query parameters are sent without lone surrogates (replaced by U+FFFD: they cannot be
put in a URL as UTF-8); JSON bodies are sent as generated, lone surrogates and U+0000
included.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.schemas import APIOperation, BaseSchema

from tests.fuzz import spec
from tests.fuzz.target import PUSH_URL, FuzzTarget

REQUEST_TIMEOUT_S = 10.0
# Long-poll parameters are cut to this many milliseconds, so a valid wait never looks
# like a hung request (and a short run stays short).
LONG_POLL_PARAMS = ("timeout", "timeout_ms")
MAX_LONG_POLL_MS = 500
# Operations that wait for news when no timeout is given (GET /events: 30 s, as Synapse).
WAITING_BY_DEFAULT = frozenset({"/_matrix/client/v3/events"})
GATEWAY_ERRORS = (502, 504)
AUTH_MODES = ("valid", "valid", "valid", "none", "generated")
_DIGITS = re.compile(r"\s*\+?\d+\s*")
_SURROGATES = re.compile("[\ud800-\udfff]")


def load_schema(api: str) -> BaseSchema:
    return schemathesis.openapi.from_dict(spec.bundle(api))


def schema_operations(schema: BaseSchema) -> list[APIOperation]:
    return [result.ok() for result in schema.get_all_operations()]


# -- the properties (pure) ------------------------------------------------------------


def answer_problem(status: int, body: bytes) -> str | None:
    """What is wrong with an answer, or None. Only error answers have a required shape."""
    if status >= 500 and status not in GATEWAY_ERRORS:
        return f"server error {status}"
    if status < 400:
        return None
    try:
        parsed = json.loads(body)
    except ValueError:
        return f"{status} body is not JSON"
    if not isinstance(parsed, dict):
        return f"{status} body is not a JSON object"
    if status == 401 and isinstance(parsed.get("flows"), list):
        return None  # user-interactive auth: flows, params, session
    if not isinstance(parsed.get("errcode"), str) or not isinstance(parsed.get("error"), str):
        return f"{status} body lacks a string errcode and error"
    return None


# -- building a request ---------------------------------------------------------------


def _clean(value: Any, unwanted: re.Pattern[str] = _SURROGATES) -> Any:
    """``value`` with ``unwanted`` characters replaced by U+FFFD (see the module
    docstring)."""
    if isinstance(value, str):
        return unwanted.sub("\ufffd", value)
    if isinstance(value, list):
        return [_clean(v, unwanted) for v in value]
    if isinstance(value, dict):
        return {_clean(k, unwanted): _clean(v, unwanted) for k, v in value.items()}
    return value


def _cap_long_poll(params: dict[str, Any], path: str) -> None:
    if path in WAITING_BY_DEFAULT and "timeout" not in params:
        params["timeout"] = str(MAX_LONG_POLL_MS)
    for name in LONG_POLL_PARAMS:
        value = params.get(name)
        digits = isinstance(value, int | str) and _DIGITS.fullmatch(str(value))
        if digits and int(str(value)) > MAX_LONG_POLL_MS:
            params[name] = str(MAX_LONG_POLL_MS)


def _confine_pusher(body: Any) -> None:
    if isinstance(body, dict) and isinstance(body.get("data"), dict):
        body["data"]["url"] = PUSH_URL


@dataclass
class Exchange:
    method: str
    url: str
    auth: str
    body: bytes | None
    status: int | None = None
    answer: bytes = b""
    error: str | None = None

    def describe(self, limit: int = 1500) -> str:
        sent = (self.body or b"")[:limit].decode("utf-8", errors="replace")
        got = self.answer[:limit].decode("utf-8", errors="replace")
        return (
            f"{self.method} {self.url[:limit]}\n  auth: {self.auth}\n  body: {sent}\n"
            f"  -> {self.status if self.error is None else self.error} {got}"
        )


def prepare(case: Any, target: FuzzTarget, api: str, auth: str) -> requests.PreparedRequest:
    kwargs = case.as_transport_kwargs(base_url=target.base_url)
    headers: dict[str, str] = {k: str(v) for k, v in kwargs.get("headers", {}).items()}
    params = dict(kwargs.get("params") or {})
    if auth != "generated":
        headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}
        params.pop("access_token", None)
    if auth == "valid" and api == "client-server":
        headers["Authorization"] = f"Bearer {target.fixtures.access_token}"
    _cap_long_poll(params, case.operation.path)
    body_kwargs: dict[str, Any] = {}
    if "json" in kwargs:
        body = kwargs["json"]
        if case.operation.path.endswith("/pushers/set"):
            _confine_pusher(body)
        body_kwargs["data"] = json.dumps(body).encode()
    elif "data" in kwargs:
        body_kwargs["data"] = kwargs["data"]
    request = requests.Request(
        kwargs["method"], kwargs["url"], headers=headers, params=_clean(params), **body_kwargs
    )
    prepared = target.session.prepare_request(request)
    if auth == "valid" and api == "server-server":
        content = _json_or_none(prepared.body)
        prepared.headers["Authorization"] = target.key_server.sign(
            prepared.method or "GET", prepared.path_url, target.server_name, content
        )
    return prepared


def _json_or_none(body: Any) -> Any:
    if not body:
        return None
    try:
        return json.loads(body)
    except ValueError:
        return None


def exchange(target: FuzzTarget, prepared: requests.PreparedRequest, auth: str) -> Exchange:
    raw = prepared.body.encode() if isinstance(prepared.body, str) else prepared.body
    ex = Exchange(prepared.method or "?", prepared.url or "?", auth, raw)
    try:
        resp = target.session.send(prepared, timeout=REQUEST_TIMEOUT_S, allow_redirects=False)
    except requests.Timeout:
        ex.error = f"no answer within {REQUEST_TIMEOUT_S:.0f} s"
        return ex
    except requests.RequestException as e:
        ex.error = f"connection failed: {type(e).__name__}: {e}"
        return ex
    ex.status = resp.status_code
    ex.answer = resp.content
    return ex


# -- fuzzing one operation ------------------------------------------------------------


class FuzzFailure(AssertionError):
    pass


class ServerError(FuzzFailure):
    pass


class NotAMatrixError(FuzzFailure):
    pass


class NoAnswer(FuzzFailure):
    pass


@dataclass
class OperationReport:
    label: str
    requests: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    findings: list[str] = field(default_factory=list)


def _has_inputs(op: APIOperation) -> bool:
    raw = op.definition.raw
    return bool(raw.get("parameters") or raw.get("requestBody") or raw.get("security"))


def case_strategy(op: APIOperation) -> st.SearchStrategy[Any]:
    positive = op.as_strategy(GenerationMode.POSITIVE)
    if not _has_inputs(op):
        return positive
    return st.one_of(positive, op.as_strategy(GenerationMode.NEGATIVE))


def _use_real_ids(case: Any, target: FuzzTarget, draw: Callable[[Any], Any]) -> None:
    """Swap generated path and query parameters for real ids, three times in four."""
    values = target.fixtures.real_values
    for container, encode in ((case.path_parameters, True), (case.query, False)):
        for name in list(container or {}):
            choices = values.get(name)
            if choices and draw(st.integers(0, 3)):
                value = draw(st.sampled_from(choices))
                container[name] = quote(value, safe="") if encode else value


def _check(target: FuzzTarget, ex: Exchange, stderr_from: int) -> None:
    if ex.error is not None:
        kind: type[FuzzFailure] = NoAnswer
        problem = ex.error
    else:
        assert ex.status is not None
        found = answer_problem(ex.status, ex.answer)
        if found is None:
            return
        kind = ServerError if found.startswith("server error") else NotAMatrixError
        problem = found
    log = target.stderr_tail(stderr_from, limit=3000)
    raise kind(f"{problem}\n{ex.describe()}\n  server log:\n{log}")


def fuzz_settings(max_examples: int, seed: int | None) -> settings:
    return settings(
        max_examples=max_examples,
        derandomize=seed is None,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
        report_multiple_bugs=True,
        print_blob=False,
    )


def fuzz_operation(
    op: APIOperation,
    target: FuzzTarget,
    api: str,
    max_examples: int,
    seed: int | None = None,
) -> OperationReport:
    """Send ``max_examples`` (plus shrinking) requests to ``op``; findings are the
    minimal failing requests Hypothesis shrank them to."""
    report = OperationReport(op.label)

    @fuzz_settings(max_examples, seed)
    @given(case=case_strategy(op), auth=st.sampled_from(AUTH_MODES), data=st.data())
    def run(case: Any, auth: str, data: st.DataObject) -> None:
        _use_real_ids(case, target, data.draw)
        prepared = prepare(case, target, api, auth)
        stderr_from = target.stderr_size()
        ex = exchange(target, prepared, auth)
        report.requests += 1
        if ex.status is not None:
            report.statuses[ex.status] += 1
        _check(target, ex, stderr_from)

    if seed is not None:
        run = _seeded(run, seed)
    try:
        run()
    except FuzzFailure as e:
        report.findings.append(f"{type(e).__name__}: {e}")
    except ExceptionGroup as group:  # several distinct failures
        for e in group.exceptions:
            report.findings.append(f"{type(e).__name__}: {e}")
    except Unsatisfiable:
        pass
    if not target.alive():
        report.findings.append(
            f"server stopped answering /versions after {op.label}\n{target.stderr_tail()}"
        )
    elif not target.fixtures_intact():
        target.provision()
    return report


def _seeded(test: Callable[[], None], seed: int) -> Callable[[], None]:
    from hypothesis import seed as hypothesis_seed

    seeded: Callable[[], None] = hypothesis_seed(seed)(test)
    return seeded
