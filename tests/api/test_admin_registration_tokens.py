"""``/_synapse/admin/v1/registration_tokens``: admins manage the tokens registration asks for."""

from __future__ import annotations

from typing import Any

import pytest
import pytest_twisted

from tests.api.helpers import PASSWORD, assert_error
from tests.support.server import RunningServer

TOKENS = "/_synapse/admin/v1/registration_tokens"
REGISTER = "/_matrix/client/v3/register"


@pytest.fixture
def config_overrides() -> dict[str, Any]:
    return {
        "registration_requires_token": True,
        "enable_registration_without_verification": False,
    }


def _now_ms(server: RunningServer) -> int:
    return int(server.hs.reactor.seconds() * 1000)


@pytest_twisted.ensureDeferred
async def test_registration_token_crud(server: RunningServer) -> None:
    await server.hs.storage.registration.create_registration_token("seed", None, None)
    # Registration needs a token here: spend the seed one on the admin and a user.
    admin = server.client()
    await _register_with_token(admin, "admin", "seed")
    await server.hs.storage.users.set_admin(admin.user_id or "", True)
    alice = server.client()
    await _register_with_token(alice, "alice", "seed")

    assert_error(await alice.get(TOKENS), 403, "M_FORBIDDEN")
    assert_error(await alice.post(f"{TOKENS}/new", {}), 403, "M_FORBIDDEN")

    resp = await admin.post(f"{TOKENS}/new", {"token": "abcd", "uses_allowed": 1})
    assert resp.code == 200, resp
    assert resp.json == {
        "token": "abcd",
        "uses_allowed": 1,
        "pending": 0,
        "completed": 0,
        "expiry_time": None,
    }
    generated = await admin.post(f"{TOKENS}/new", {"length": 10})
    assert generated.code == 200, generated
    assert len(generated.json["token"]) == 10
    assert_error(await admin.post(f"{TOKENS}/new", {"token": "abcd"}), 400, "M_INVALID_PARAM")
    for bad in (
        {"token": 5},
        {"token": ""},
        {"token": "a b"},
        {"length": 0},
        {"length": "8"},
        {"uses_allowed": -1},
        {"expiry_time": "soon"},
        {"expiry_time": 1},
    ):
        assert_error(await admin.post(f"{TOKENS}/new", bad), 400, "M_INVALID_PARAM")

    got = await admin.get(f"{TOKENS}/abcd")
    assert got.code == 200 and got.json["uses_allowed"] == 1, got
    assert_error(await admin.get(f"{TOKENS}/nope"), 404, "M_NOT_FOUND")

    # Spend "abcd": it becomes invalid.
    bob = server.client()
    await _register_with_token(bob, "bob", "abcd")
    listed = (await admin.get(TOKENS)).json["registration_tokens"]
    assert {t["token"] for t in listed} == {"seed", "abcd", generated.json["token"]}
    invalid = (await admin.get(TOKENS, params={"valid": "false"})).json["registration_tokens"]
    assert [(t["token"], t["completed"]) for t in invalid] == [("abcd", 1)]
    valid = (await admin.get(TOKENS, params={"valid": "true"})).json["registration_tokens"]
    assert "abcd" not in {t["token"] for t in valid}

    later = _now_ms(server) + 3_600_000
    put = await admin.put(f"{TOKENS}/abcd", {"uses_allowed": 5, "expiry_time": later})
    assert put.code == 200, put
    assert put.json == {
        "token": "abcd",
        "uses_allowed": 5,
        "pending": 0,
        "completed": 1,
        "expiry_time": later,
    }
    unchanged = await admin.put(f"{TOKENS}/abcd", {})
    assert unchanged.json == put.json
    assert_error(await admin.put(f"{TOKENS}/abcd", {"uses_allowed": "x"}), 400, "M_INVALID_PARAM")
    assert_error(await admin.put(f"{TOKENS}/nope", {"uses_allowed": 1}), 404, "M_NOT_FOUND")

    assert (await admin.delete(f"{TOKENS}/abcd")).json == {}
    assert_error(await admin.delete(f"{TOKENS}/abcd"), 404, "M_NOT_FOUND")
    assert_error(await admin.get(f"{TOKENS}/abcd"), 404, "M_NOT_FOUND")


async def _register_with_token(client: Any, username: str, token: str) -> None:
    first = await client.post(REGISTER, {"username": username, "password": PASSWORD}, token=False)
    assert first.code == 401, first
    auth = {"type": "m.login.registration_token", "token": token, "session": first.json["session"]}
    resp = await client.post(REGISTER, {"auth": auth}, token=False)
    assert resp.code == 200, resp
    client.access_token = resp.json["access_token"]
    client.user_id = resp.json["user_id"]
