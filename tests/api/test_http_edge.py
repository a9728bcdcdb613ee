"""The HTTP edge: routing errors, JSON parsing, tokens, CORS, body limits and 500s."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
import pytest_twisted

from homeserver.handlers.auth import hash_token
from tests.api.helpers import assert_error, raw_http, sqlite_only, with_config
from tests.support.client import Client
from tests.support.server import RunningServer

WHOAMI = "/_matrix/client/v3/account/whoami"
LOGIN = "/_matrix/client/v3/login"


# Routing -------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_unknown_endpoint_is_404_unrecognized(server: RunningServer) -> None:
    c = server.client()
    for path in ("/_matrix/client/v3/no_such_thing", "/nothing/here", "/_matrix/client/v99/login"):
        assert_error(await c.get(path), 404, "M_UNRECOGNIZED")


@pytest_twisted.ensureDeferred
async def test_known_path_with_wrong_method_is_405_unrecognized(server: RunningServer) -> None:
    c = server.client()
    assert_error(await c.put(LOGIN, {}), 405, "M_UNRECOGNIZED")
    assert_error(await c.delete("/_matrix/client/versions"), 405, "M_UNRECOGNIZED")
    assert_error(await c.post(WHOAMI, {}), 405, "M_UNRECOGNIZED")


@pytest_twisted.ensureDeferred
async def test_legacy_r0_prefix_serves_the_same_endpoints(
    server: RunningServer, alice: Client
) -> None:
    resp = await alice.get("/_matrix/client/r0/account/whoami")
    assert resp.code == 200, resp
    assert resp.json["user_id"] == alice.user_id


@pytest_twisted.ensureDeferred
async def test_head_request_answers_like_get_without_body(server: RunningServer) -> None:
    status, headers, body = await raw_http(
        server,
        b"HEAD /_matrix/client/versions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    assert status == 200
    assert headers["content-type"] == "application/json"
    assert body == b""


# JSON bodies -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [b"{not json", b"\xff\xfe", b"", b"   ", b'{"a": NaN}', b'{"a": Infinity}'],
    ids=["garbage", "not_utf8", "empty", "blank", "nan", "infinity"],
)
@sqlite_only
@pytest_twisted.ensureDeferred
async def test_unparseable_body_is_400_not_json(server: RunningServer, raw: bytes) -> None:
    resp = await server.client().post(LOGIN, raw=raw)
    assert_error(resp, 400, "M_NOT_JSON")


@pytest.mark.parametrize("body", [[], "string", 3, None, True], ids=str)
@sqlite_only
@pytest_twisted.ensureDeferred
async def test_json_that_is_not_an_object_is_400_bad_json(server: RunningServer, body: Any) -> None:
    resp = await server.client().post(LOGIN, raw=json.dumps(body).encode())
    assert_error(resp, 400, "M_BAD_JSON")


@pytest.mark.parametrize(
    "body",
    [
        {"type": 1, "password": "x", "user": "alice"},
        {"type": "m.login.password", "password": 5, "user": "alice"},
        {"type": "m.login.password", "password": "x", "user": "alice", "device_id": []},
        {"type": "m.login.password", "password": "x", "user": "alice", "refresh_token": "yes"},
        {"type": "m.login.password", "password": "x", "identifier": "alice"},
        {"type": "m.login.password", "password": "x", "user": 17},
    ],
    ids=["type", "password", "device_id", "refresh_token", "identifier", "user"],
)
@sqlite_only
@pytest_twisted.ensureDeferred
async def test_login_field_of_wrong_type_is_400_bad_json(
    server: RunningServer, body: dict[str, Any]
) -> None:
    assert_error(await server.client().post(LOGIN, body), 400, "M_BAD_JSON")


@pytest_twisted.ensureDeferred
async def test_missing_required_field_is_400_missing_param(server: RunningServer) -> None:
    resp = await server.client().post(LOGIN, {"type": "m.login.password", "user": "alice"})
    assert_error(resp, 400, "M_MISSING_PARAM")


@pytest_twisted.ensureDeferred
async def test_chunked_request_body_is_read(server: RunningServer) -> None:
    body = b'{"username": "chunky"}'
    request = (
        b"GET /_matrix/client/v3/register/available?username=chunky HTTP/1.1\r\n"
        b"Host: x\r\nConnection: close\r\n\r\n"
    )
    status, _, raw = await raw_http(server, request)
    assert status == 200, raw
    request = (
        b"POST /_matrix/client/v3/login HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
        + f"{len(body):x}\r\n".encode()
        + body
        + b"\r\n0\r\n\r\n"
    )
    status, _, raw = await raw_http(server, request)
    # The body arrived and was parsed: the complaint is about the missing login type.
    assert status == 400, raw
    assert json.loads(raw)["errcode"] == "M_MISSING_PARAM"


# Body size limit ---------------------------------------------------------------------


@with_config(max_request_body_size=1024)
@pytest_twisted.ensureDeferred
async def test_body_over_max_request_body_size_is_413_too_large(server: RunningServer) -> None:
    c = server.client()
    big = json.dumps({"type": "m.login.password", "padding": "x" * 2000}).encode()
    assert_error(await c.post(LOGIN, raw=big), 413, "M_TOO_LARGE")
    # Just under the limit is parsed normally.
    small = json.dumps({"type": "m.login.password", "padding": "x" * 900}).encode()
    assert len(small) <= 1024
    assert_error(await c.post(LOGIN, raw=small), 400, "M_MISSING_PARAM")


@with_config(max_request_body_size=1024)
@pytest_twisted.ensureDeferred
async def test_chunked_body_over_limit_is_413_too_large(server: RunningServer) -> None:
    chunk = b"x" * 600
    request = (
        b"POST /_matrix/client/v3/login HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
        + (f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n") * 3
        + b"0\r\n\r\n"
    )
    status, _, raw = await raw_http(server, request)
    assert status == 413, raw
    assert json.loads(raw)["errcode"] == "M_TOO_LARGE"


@with_config(max_request_body_size="1K")
@pytest_twisted.ensureDeferred
async def test_max_request_body_size_accepts_size_strings(server: RunningServer) -> None:
    resp = await server.client().post(LOGIN, raw=b"{" + b" " * 1100 + b"}")
    assert_error(resp, 413, "M_TOO_LARGE")


# Access tokens ---------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_missing_token_is_401_missing_token(server: RunningServer) -> None:
    c = server.client()
    for path in (WHOAMI, "/_matrix/client/v3/capabilities", "/_matrix/client/v3/devices"):
        assert_error(await c.get(path), 401, "M_MISSING_TOKEN")


@pytest_twisted.ensureDeferred
async def test_non_bearer_authorization_header_is_401_missing_token(
    server: RunningServer,
) -> None:
    c = server.client()
    for value in ("Basic abc", "Bearer", "Bearer   "):
        resp = await c.get(WHOAMI, token=False, headers={"Authorization": value})
        assert_error(resp, 401, "M_MISSING_TOKEN")


@pytest_twisted.ensureDeferred
async def test_unknown_token_is_401_unknown_token_without_soft_logout(
    server: RunningServer,
) -> None:
    resp = await server.client().get(WHOAMI, token="mat_not_a_real_token")
    assert_error(resp, 401, "M_UNKNOWN_TOKEN")
    assert resp.json["soft_logout"] is False


@pytest_twisted.ensureDeferred
async def test_access_token_query_parameter_is_accepted(
    server: RunningServer, alice: Client
) -> None:
    resp = await server.client().get(WHOAMI, params={"access_token": alice.access_token})
    assert resp.code == 200, resp
    assert resp.json["user_id"] == alice.user_id
    bad = await server.client().get(WHOAMI, params={"access_token": "nope"})
    assert_error(bad, 401, "M_UNKNOWN_TOKEN")


@pytest_twisted.ensureDeferred
async def test_expired_refreshable_token_is_401_unknown_token_with_soft_logout(
    server: RunningServer, alice: Client
) -> None:
    # A token whose lifetime ended a second ago, as one from a refresh pair would.
    token = "mat_expired_for_test"
    now_ms = int(server.hs.reactor.seconds() * 1000)
    await server.hs.storage.users.add_access_token(
        alice.user_id, alice.device_id, hash_token(token), valid_until_ms=now_ms - 1000
    )
    resp = await alice.get(WHOAMI, token=token)
    assert_error(resp, 401, "M_UNKNOWN_TOKEN")
    assert resp.json["soft_logout"] is True
    # Asked again (now from the token cache) it is still expired.
    resp = await alice.get(WHOAMI, token=token)
    assert resp.json["soft_logout"] is True


@pytest_twisted.ensureDeferred
async def test_token_still_valid_before_its_expiry(server: RunningServer, alice: Client) -> None:
    token = "mat_not_yet_expired"
    now_ms = int(server.hs.reactor.seconds() * 1000)
    await server.hs.storage.users.add_access_token(
        alice.user_id, alice.device_id, hash_token(token), valid_until_ms=now_ms + 60_000
    )
    resp = await alice.get(WHOAMI, token=token)
    assert resp.code == 200, resp


# CORS --------------------------------------------------------------------------------


def _assert_cors(resp: Any) -> None:
    assert resp.header("Access-Control-Allow-Origin") == "*"
    methods = resp.header("Access-Control-Allow-Methods")
    for method in ("GET", "POST", "PUT", "DELETE", "OPTIONS"):
        assert method in methods
    assert "Authorization" in resp.header("Access-Control-Allow-Headers")
    assert "Content-Type" in resp.header("Access-Control-Allow-Headers")


@pytest_twisted.ensureDeferred
async def test_cors_headers_on_success_and_error_responses(server: RunningServer) -> None:
    c = server.client()
    _assert_cors(await c.get("/_matrix/client/versions"))
    _assert_cors(await c.get(WHOAMI))
    _assert_cors(await c.get("/_matrix/client/v3/nope"))


@pytest_twisted.ensureDeferred
async def test_options_preflight_is_200_with_cors_even_for_authed_endpoints(
    server: RunningServer,
) -> None:
    c = server.client()
    for path in (WHOAMI, LOGIN, "/_matrix/client/v3/profile/%40x%3Atest.local/displayname"):
        resp = await c.request("OPTIONS", path, token=False)
        assert resp.code == 200, resp
        _assert_cors(resp)


@pytest_twisted.ensureDeferred
async def test_responses_are_json_and_not_cacheable(server: RunningServer) -> None:
    resp = await server.client().get("/_matrix/client/versions")
    assert resp.header("Content-Type") == "application/json"
    assert "no-store" in resp.header("Cache-Control")


# Unexpected failures ---------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_handler_exception_is_500_unknown_without_traceback(
    server: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    async def boom(request: Any) -> tuple[int, Any]:
        raise RuntimeError("secret internal detail /etc/passwd")

    server.hs.resource.register("GET", "/_test/boom", boom)
    with caplog.at_level(logging.ERROR, logger="homeserver.http.server"):
        resp = await server.client().get("/_test/boom")
    assert_error(resp, 500, "M_UNKNOWN")
    assert b"Traceback" not in resp.raw
    assert b"secret internal detail" not in resp.raw
    assert b"RuntimeError" not in resp.raw
    # The failure is logged server-side, with the request id, and with its traceback.
    records = [r for r in caplog.records if r.name == "homeserver.http.server"]
    assert records, caplog.text
    assert any(r.exc_info and "req-" in r.getMessage() for r in records), caplog.text
    # The server keeps serving afterwards.
    assert (await server.client().get("/_matrix/client/versions")).code == 200


@pytest_twisted.ensureDeferred
async def test_handler_returning_server_matrix_error_keeps_its_errcode(
    server: RunningServer,
) -> None:
    from homeserver.errors import MatrixError

    async def unavailable(request: Any) -> tuple[int, Any]:
        raise MatrixError(503, "M_UNKNOWN", "try later")

    server.hs.resource.register("GET", "/_test/unavailable", unavailable)
    resp = await server.client().get("/_test/unavailable")
    assert_error(resp, 503, "M_UNKNOWN")
    assert resp.json["error"] == "try later"
