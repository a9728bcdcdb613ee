"""Helpers shared by the API tests: config overrides, UIA round trips, raw HTTP."""

from __future__ import annotations

import socket
from typing import Any

import pytest
from twisted.internet import threads

from tests.support.client import Client, Response
from tests.support.server import RunningServer

PASSWORD = "correct horse"


def with_config(**overrides: Any) -> pytest.MarkDecorator:
    """Run one test against a server started with these config overrides."""
    return pytest.mark.parametrize("config_overrides", [overrides], ids=["cfg"])


# For cases that only exercise request parsing: the database plays no part.
sqlite_only = pytest.mark.parametrize("db_kind", ["sqlite"])


def assert_error(resp: Response, code: int, errcode: str) -> None:
    assert resp.code == code, resp
    assert resp.json is not None, resp
    assert resp.json["errcode"] == errcode, resp
    assert isinstance(resp.json.get("error"), str), resp


async def register(server: RunningServer, username: str, **extra: Any) -> Client:
    client = server.client()
    await client.register(username, PASSWORD, **extra)
    return client


async def register_admin(server: RunningServer, username: str = "admin") -> Client:
    """A registered user made a server admin (before its first authenticated request)."""
    client = await register(server, username)
    await server.hs.storage.users.set_admin(client.user_id, True)
    return client


async def register_guest(server: RunningServer) -> Client:
    """A guest session (the server must allow guest access)."""
    client = server.client()
    resp = await client.post(
        "/_matrix/client/v3/register", {}, token=False, params={"kind": "guest"}
    )
    assert resp.code == 200, resp
    client.access_token = resp.json["access_token"]
    client.user_id = resp.json["user_id"]
    return client


async def uia_password(
    client: Client,
    method: str,
    path: str,
    body: dict[str, Any] | None = None,
    *,
    password: str = PASSWORD,
) -> Response:
    """Do a UIA-protected request: first without auth (expect 401), then with the password."""
    first = await client.request(method, path, dict(body or {}))
    assert first.code == 401, first
    assert {"stages": ["m.login.password"]} in first.json["flows"], first
    auth = {
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": client.user_id},
        "password": password,
        "session": first.json["session"],
    }
    return await client.request(method, path, {**(body or {}), "auth": auth})


def _raw_exchange(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(data)
        out = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return out
            out += chunk


async def raw_http(server: RunningServer, data: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send bytes as they are (``Connection: close`` expected) and parse the response."""
    port = server.hs.ports[0].getHost().port
    out = await threads.deferToThread(_raw_exchange, port, data)
    head, _, body = out.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, body
