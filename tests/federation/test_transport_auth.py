"""Inbound federation requests without a valid X-Matrix signature are refused."""

from __future__ import annotations

import json

import pytest_twisted
import treq
from signedjson.key import generate_signing_key

from federation.x_matrix import sign_request
from tests.support.server import RunningServer


def _federation_url(server: RunningServer, path: str) -> str:
    port = server.hs.ports[-1].getHost().port
    return f"https://127.0.0.1:{port}{path}"


async def _put(server: RunningServer, path: str, body: dict, auth: str | None) -> tuple[int, dict]:
    headers = {"Content-Type": "application/json"}
    if auth is not None:
        headers["Authorization"] = auth
    from twisted.internet import reactor
    from twisted.internet.ssl import CertificateOptions
    from twisted.web.client import Agent, BrowserLikePolicyForHTTPS  # noqa: F401
    from twisted.web.iweb import IPolicyForHTTPS
    from zope.interface import implementer

    @implementer(IPolicyForHTTPS)
    class NoVerify:
        def creatorForNetloc(self, hostname: bytes, port: int) -> CertificateOptions:
            return CertificateOptions(verify=False)

    agent = Agent(reactor, contextFactory=NoVerify())
    resp = await treq.request(
        "PUT",
        _federation_url(server, path),
        data=json.dumps(body).encode(),
        headers=headers,
        agent=agent,
    )
    return resp.code, json.loads(await treq.content(resp))


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
