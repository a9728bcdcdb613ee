"""Two (or more) of our servers federating over TLS on loopback, in the test process."""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import treq
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from twisted.internet import reactor
from twisted.internet.error import CannotListenError
from twisted.internet.ssl import CertificateOptions
from twisted.web.client import Agent
from twisted.web.iweb import IPolicyForHTTPS
from zope.interface import implementer

from tests.support.server import RunningServer, make_config_dict, start_server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_self_signed_cert(directory: str) -> tuple[str, str]:
    """A certificate for 127.0.0.1 / localhost, as a test federation listener needs."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path = os.path.join(directory, "tls.crt")
    key_path = os.path.join(directory, "tls.key")
    with open(cert_path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(key_path, "wb") as f:
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    return cert_path, key_path


def federation_config(
    data_dir: str, database: dict[str, Any], fed_port: int, **overrides: Any
) -> dict[str, Any]:
    cert, key = write_self_signed_cert(data_dir)
    config = make_config_dict(
        data_dir,
        database,
        server_name=f"127.0.0.1:{fed_port}",
        listeners=[
            {
                "port": 0,
                "bind_addresses": ["127.0.0.1"],
                "type": "http",
                "resources": [{"names": ["client", "media"]}],
            },
            {
                "port": fed_port,
                "bind_addresses": ["127.0.0.1"],
                "type": "http",
                "tls": True,
                "resources": [{"names": ["federation", "keys"]}],
            },
        ],
        tls_certificate_path=cert,
        tls_private_key_path=key,
        federation_verify_certificates=False,
        ip_range_whitelist=["127.0.0.0/8"],
        trusted_key_servers=[],
        allow_public_rooms_over_federation=True,
        federation={
            "destination_min_retry_interval": "200ms",
            "destination_max_retry_interval": "2s",
        },
    )
    config.update(overrides)
    return config


async def start_federating_server(
    data_dir: str, database: dict[str, Any], fed_port: int | None = None, **overrides: Any
) -> RunningServer:
    os.makedirs(data_dir, exist_ok=True)
    for attempt in range(1, 6):
        port = fed_port or free_port()
        try:
            return await start_server(
                federation_config(data_dir, database, port, **overrides), data_dir
            )
        except CannotListenError:
            # free_port's port was taken between its check and our listen (by another
            # connection's ephemeral port): a chosen port is final, a free one is not.
            if fed_port is not None or attempt == 5:
                raise
    raise AssertionError("unreachable")


@implementer(IPolicyForHTTPS)
class _NoVerify:
    """Test servers present self-signed certificates."""

    def creatorForNetloc(self, hostname: bytes, port: int) -> CertificateOptions:
        return CertificateOptions(verify=False)


async def federation_request(
    server: RunningServer, method: str, path: str, *, body: Any = None, auth: str | None = None
) -> tuple[int, Any]:
    """One request to ``server``'s federation (TLS) listener: status and parsed JSON."""
    headers = {"Content-Type": "application/json"}
    if auth is not None:
        headers["Authorization"] = auth
    port = server.hs.ports[-1].getHost().port
    resp = await treq.request(
        method,
        f"https://127.0.0.1:{port}{path}",
        data=json.dumps(body).encode() if body is not None else None,
        headers=headers,
        agent=Agent(reactor, contextFactory=_NoVerify()),
    )
    return resp.code, json.loads(await treq.content(resp))


@asynccontextmanager
async def two_federating_servers(
    tmp_path: Any,
    database: dict[str, Any],
    database_b: dict[str, Any],
    a_overrides: dict[str, Any] | None = None,
    b_overrides: dict[str, Any] | None = None,
) -> AsyncIterator[tuple[RunningServer, RunningServer]]:
    """Servers A and B (data in ``tmp_path``/a and /b), both stopped on the way out."""
    a = await start_federating_server(str(tmp_path / "a"), database, **(a_overrides or {}))
    try:
        b = await start_federating_server(str(tmp_path / "b"), database_b, **(b_overrides or {}))
    except BaseException:
        await a.stop()  # B failed to start: A must not outlive the test
        raise
    try:
        yield a, b
    finally:
        await a.stop()
        await b.stop()
