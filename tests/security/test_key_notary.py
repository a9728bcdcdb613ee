"""/_matrix/key/v2/query: we act as a notary for other servers' keys, and an origin that
forgets a key cannot make us forget it (SyTest 50federation/01keys.pl)."""

from __future__ import annotations

import time
from typing import Any

import pytest_twisted

from crypto.json_signing import sign_json
from crypto.signing_key import generate_signing_key, key_id, verify_key_base64
from tests.support.client import q
from tests.support.malicious_server import MaliciousServer
from tests.support.server import RunningServer

JsonDict = dict[str, Any]


def key_response(server_name: str, version: str, valid_until_ts: int) -> JsonDict:
    key = generate_signing_key(version)
    body = {
        "server_name": server_name,
        "valid_until_ts": valid_until_ts,
        "verify_keys": {key_id(key): {"key": verify_key_base64(key)}},
        "old_verify_keys": {},
    }
    return sign_json(body, server_name, key)


async def notary_query(ours: RunningServer, server: str, kid: str, minimum: int) -> list[JsonDict]:
    body = {"server_keys": {server: {kid: {"minimum_valid_until_ts": minimum}}}}
    resp = await ours.client().post("/_matrix/key/v2/query", body)
    assert resp.code == 200, resp
    keys: list[JsonDict] = resp.json["server_keys"]
    return keys


@pytest_twisted.ensureDeferred
async def test_notary_keeps_a_key_the_origin_forgets(
    ours: RunningServer, attacker: MaliciousServer
) -> None:
    name = attacker.server_name
    expiry = int((time.time() - 86400) * 1000)  # already expired: refetched on demand
    answers = [key_response(name, "key_1", expiry)]

    async def serve_key(**_: Any) -> tuple[int, Any]:
        return 200, answers[-1]

    attacker.on("GET", "/_matrix/key/v2/server", serve_key)
    first = await notary_query(ours, name, "ed25519:key_1", 0)
    assert "ed25519:key_1" in first[0]["verify_keys"]
    assert ours.hs.server_name in first[0]["signatures"]  # co-signed by us

    # The origin now answers with another key only; a later minimum forces a refetch.
    answers.append(key_response(name, "key_2", expiry + 1000))
    await notary_query(ours, name, "ed25519:key_1", int(time.time() * 1000))
    assert len([r for r in attacker.received if r[1] == "/_matrix/key/v2/server"]) == 2

    # key_1 is still served, and only responses holding it are.
    third = await notary_query(ours, name, "ed25519:key_1", expiry)
    assert third and all("ed25519:key_1" in r["verify_keys"] for r in third)

    # The older GET form naming the key answers the same.
    resp = await ours.client().get(f"/_matrix/key/v2/query/{q(name)}/{q('ed25519:key_1')}")
    assert resp.code == 200, resp
    assert all("ed25519:key_1" in r["verify_keys"] for r in resp.json["server_keys"])
    assert resp.json["server_keys"]
    # A key the origin never had is fetched for, then simply missing from the answer.
    assert await notary_query(ours, name, "ed25519:nope", 0) == []
