"""Rate limits: 429 M_LIMIT_EXCEEDED with retry_after_ms and a Retry-After header."""

from __future__ import annotations

from typing import Any

import pytest_twisted

from tests.api.helpers import PASSWORD, assert_error, register, with_config
from tests.support.client import Response
from tests.support.server import HIGH_LIMIT, RunningServer

SLOW = {"per_second": 0.001, "burst_count": 2}
LOGIN = "/_matrix/client/v3/login"
REGISTER = "/_matrix/client/v3/register"


def _assert_limited(resp: Response) -> None:
    assert_error(resp, 429, "M_LIMIT_EXCEEDED")
    retry_ms = resp.json["retry_after_ms"]
    assert isinstance(retry_ms, int) and retry_ms > 0
    retry_after = resp.header("Retry-After")
    assert retry_after is not None
    assert int(retry_after) >= 1
    assert int(retry_after) * 1000 >= retry_ms
    assert "Retry-After" in resp.header("Access-Control-Expose-Headers")


def _login_body(user: str, password: str = PASSWORD) -> dict[str, Any]:
    return {"type": "m.login.password", "user": user, "password": password}


@with_config(rc_login={"address": SLOW, "account": HIGH_LIMIT, "failed_attempts": HIGH_LIMIT})
@pytest_twisted.ensureDeferred
async def test_login_limited_per_address(server: RunningServer) -> None:
    await register(server, "alice")
    c = server.client()
    for _ in range(2):
        assert (await c.post(LOGIN, _login_body("alice"))).code == 200
    resp = await c.post(LOGIN, _login_body("alice"))
    _assert_limited(resp)
    # retry_after_ms reflects the refill rate: about 1000 s per token at 0.001/s.
    assert resp.json["retry_after_ms"] > 900_000


@with_config(rc_login={"address": HIGH_LIMIT, "account": SLOW, "failed_attempts": HIGH_LIMIT})
@pytest_twisted.ensureDeferred
async def test_login_limited_per_account_not_other_accounts(server: RunningServer) -> None:
    await register(server, "alice")
    await register(server, "bob")
    c = server.client()
    for _ in range(2):
        assert (await c.post(LOGIN, _login_body("alice"))).code == 200
    # The account limit counts the account, whatever form its id takes.
    _assert_limited(await c.post(LOGIN, _login_body("@ALICE:test.local")))
    assert (await c.post(LOGIN, _login_body("bob"))).code == 200


@with_config(rc_login={"address": HIGH_LIMIT, "account": HIGH_LIMIT, "failed_attempts": SLOW})
@pytest_twisted.ensureDeferred
async def test_failed_logins_lock_the_account_even_for_right_password(
    server: RunningServer,
) -> None:
    await register(server, "alice")
    c = server.client()
    # Successful logins do not count against the failure limit.
    for _ in range(3):
        assert (await c.post(LOGIN, _login_body("alice"))).code == 200
    for _ in range(2):
        assert_error(await c.post(LOGIN, _login_body("alice", "wrong")), 403, "M_FORBIDDEN")
    _assert_limited(await c.post(LOGIN, _login_body("alice")))


@with_config(rc_login={"address": HIGH_LIMIT, "account": HIGH_LIMIT, "failed_attempts": SLOW})
@pytest_twisted.ensureDeferred
async def test_failed_uia_passwords_count_as_failed_logins(server: RunningServer) -> None:
    alice = await register(server, "alice")
    path = "/_matrix/client/v3/account/password"
    first = await alice.post(path, {"new_password": "new"})
    auth = {"type": "m.login.password", "password": "wrong", "session": first.json["session"]}
    for _ in range(2):
        resp = await alice.post(path, {"new_password": "new", "auth": auth})
        assert resp.code == 401 and resp.json["errcode"] == "M_FORBIDDEN", resp
    _assert_limited(await alice.post(path, {"new_password": "new", "auth": auth}))
    _assert_limited(await server.client().post(LOGIN, _login_body("alice")))


@with_config(rc_registration={"per_second": 0.001, "burst_count": 1})
@pytest_twisted.ensureDeferred
async def test_registration_limited_per_address(server: RunningServer) -> None:
    c = server.client()
    # One registration, including its UIA round trip, fits in a burst of one.
    first = await c.post(REGISTER, {"username": "alice", "password": PASSWORD}, token=False)
    assert first.code == 401, first
    auth = {"type": "m.login.dummy", "session": first.json["session"]}
    assert (await c.post(REGISTER, {"auth": auth}, token=False)).code == 200
    resp = await c.post(
        REGISTER,
        {"username": "bob", "password": PASSWORD, "auth": {"type": "m.login.dummy"}},
        token=False,
    )
    _assert_limited(resp)
    assert await server.hs.storage.users.get_user("@bob:test.local") is None


@with_config(rc_registration={"per_second": 0.001, "burst_count": 2})
@pytest_twisted.ensureDeferred
async def test_register_available_is_rate_limited(server: RunningServer) -> None:
    c = server.client()
    path = "/_matrix/client/v3/register/available"
    for name in ("a1", "a2"):
        assert (await c.get(path, params={"username": name})).code == 200
    _assert_limited(await c.get(path, params={"username": "a3"}))


@with_config(
    rc_login={"address": SLOW, "account": HIGH_LIMIT, "failed_attempts": HIGH_LIMIT},
    listeners=[
        {
            "port": 0,
            "bind_addresses": ["127.0.0.1"],
            "type": "http",
            "x_forwarded": True,
            "resources": [{"names": ["client"]}],
        }
    ],
)
@pytest_twisted.ensureDeferred
async def test_x_forwarded_for_is_the_limited_address_behind_a_proxy(
    server: RunningServer,
) -> None:
    await register(server, "alice")
    c = server.client()
    for ip in ("10.0.0.1", "10.0.0.1"):
        resp = await c.post(LOGIN, _login_body("alice"), headers={"X-Forwarded-For": ip})
        assert resp.code == 200, resp
    _assert_limited(
        await c.post(LOGIN, _login_body("alice"), headers={"X-Forwarded-For": "10.0.0.1"})
    )
    ok = await c.post(LOGIN, _login_body("alice"), headers={"X-Forwarded-For": "10.0.0.2, 1.1.1.1"})
    assert ok.code == 200, ok


# The token bucket itself, on a fake clock --------------------------------------------


def _limiter(per_second: float, burst: float) -> tuple[Any, Any]:
    from twisted.internet.task import Clock

    from homeserver.config import RateLimit
    from homeserver.http.ratelimit import Ratelimiter

    clock = Clock()
    return clock, Ratelimiter(clock, RateLimit(per_second, burst))


def test_bucket_allows_burst_then_refuses_until_refilled() -> None:
    from homeserver.errors import LimitExceededError

    clock, limiter = _limiter(per_second=1.0, burst=3)
    for _ in range(3):
        limiter.ratelimit("k")
    try:
        limiter.ratelimit("k")
    except LimitExceededError as e:
        assert e.retry_after_ms == 1000
        assert e.headers == {"Retry-After": "1"}
    else:
        raise AssertionError("expected LimitExceededError")
    clock.advance(1.0)
    limiter.ratelimit("k")  # one token came back
    # Keys are independent.
    limiter.ratelimit("other")


def test_check_without_update_records_nothing() -> None:
    clock, limiter = _limiter(per_second=0.1, burst=2)
    for _ in range(5):
        limiter.ratelimit("k", update=False)
    limiter.ratelimit("k")
    limiter.ratelimit("k")
    allowed, wait = limiter.can_do("k")
    assert not allowed and abs(wait - 10.0) < 1e-6


def test_full_bucket_refuses_a_check_without_update() -> None:
    from homeserver.errors import LimitExceededError

    _, limiter = _limiter(per_second=0.1, burst=1)
    limiter.ratelimit("k")
    try:
        limiter.ratelimit("k", update=False)
    except LimitExceededError:
        pass
    else:
        raise AssertionError("a full bucket must refuse the next action")


def test_zero_limits_mean_unlimited() -> None:
    _, limiter = _limiter(per_second=0, burst=0)
    for _ in range(100):
        limiter.ratelimit("k")


def test_no_refill_means_long_retry() -> None:
    _, limiter = _limiter(per_second=0, burst=1)
    limiter.ratelimit("k")
    allowed, wait = limiter.can_do("k")
    assert not allowed and wait >= 3600


def test_retry_after_header_rounds_up_to_whole_seconds() -> None:
    from homeserver.errors import LimitExceededError

    assert LimitExceededError(1).headers["Retry-After"] == "1"
    assert LimitExceededError(1500).headers["Retry-After"] == "2"
    assert LimitExceededError(2000).headers["Retry-After"] == "2"
    assert LimitExceededError(1500).to_json() == {
        "errcode": "M_LIMIT_EXCEEDED",
        "error": "Too many requests",
        "retry_after_ms": 1500,
    }
