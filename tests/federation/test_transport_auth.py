"""Inbound federation requests without a valid X-Matrix signature are refused."""

from __future__ import annotations

import pytest_twisted
from signedjson.key import generate_signing_key

from federation.x_matrix import sign_request
from tests.support.federation import federation_request
from tests.support.server import RunningServer


async def _put(server: RunningServer, path: str, body: dict, auth: str | None) -> tuple[int, dict]:
    code, resp = await federation_request(server, "PUT", path, body=body, auth=auth)
    return code, dict(resp)


@pytest_twisted.ensureDeferred
async def test_send_without_signature_is_401(
    two_servers: tuple[RunningServer, RunningServer],
) -> None:
    a, _ = two_servers
    code, body = await _put(a, "/_matrix/federation/v1/send/t1", {"pdus": [], "edus": []}, None)
    assert code == 401
    assert body["errcode"] == "M_UNAUTHORIZED"


@pytest_twisted.ensureDeferred
async def test_send_with_wrong_key_is_401(two_servers: tuple[RunningServer, RunningServer]) -> None:
    a, b = two_servers
    # Signed by a key that is not B's: A fetches B's real key and the signature fails.
    impostor = generate_signing_key("a_xyz")
    path = "/_matrix/federation/v1/send/t2"
    body = {"origin": b.hs.server_name, "pdus": [], "edus": []}
    auth = sign_request(impostor, "PUT", path, b.hs.server_name, a.hs.server_name, body)
    code, resp = await _put(a, path, body, auth)
    assert code == 401, resp
