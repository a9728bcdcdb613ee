"""Helpers for the application service tests."""

from __future__ import annotations

import copy
import os
from typing import Any

import yaml

from tests.support.client import Client, Response, q
from tests.support.server import RunningServer

V1 = "/_matrix/client/v1"
V3 = "/_matrix/client/v3"
AS_TOKEN = "as_secret_token"
HS_TOKEN = "hs_secret_token"
SENDER = "@_bridge_bot:test.local"

DEFAULT_REGISTRATION: dict[str, Any] = {
    "id": "bridge",
    "as_token": AS_TOKEN,
    "hs_token": HS_TOKEN,
    "sender_localpart": "_bridge_bot",
    "namespaces": {
        "users": [
            {"regex": "@_bridge_.*:test\\.local", "exclusive": True},
            {"regex": "@irc-.*:test\\.local", "exclusive": True},
            {"regex": "@shared-.*:test\\.local", "exclusive": False},
        ],
        "aliases": [{"regex": "#_bridge_.*:test\\.local", "exclusive": True}],
        "rooms": [],
    },
    "protocols": ["irc"],
}


def registration(base_url: str | None, /, **overrides: Any) -> dict[str, Any]:
    reg = copy.deepcopy(DEFAULT_REGISTRATION)
    reg["url"] = base_url
    reg.update(overrides)
    return reg


def write_registration(directory: Any, data: dict[str, Any], name: str = "bridge.yaml") -> str:
    path = os.path.join(str(directory), name)
    with open(path, "w", encoding="utf-8") as f:
        yaml.safe_dump(data, f)
    return path


def as_client(server: RunningServer, token: str = AS_TOKEN) -> Client:
    client = server.client()
    client.access_token = token
    return client


def assert_error(resp: Response, code: int, errcode: str) -> None:
    assert resp.code == code, resp
    assert resp.json is not None and resp.json.get("errcode") == errcode, resp


async def register_puppet(server: RunningServer, localpart: str, **extra: Any) -> Response:
    body = {"type": "m.login.application_service", "username": localpart, **extra}
    return await as_client(server).post(f"{V3}/register", body)


async def puppet(server: RunningServer, localpart: str) -> str:
    """Register a namespaced user without a session; its user id."""
    resp = await register_puppet(server, localpart, inhibit_login=True)
    assert resp.code == 200, resp
    return str(resp.json["user_id"])


async def as_request(
    server: RunningServer, method: str, path: str, body: Any = None, *, user_id: str | None = None
) -> Response:
    params = {"user_id": user_id} if user_id is not None else None
    return await as_client(server).request(method, path, body, params=params)


def room_path(room_id: str, rest: str = "") -> str:
    return f"{V3}/rooms/{q(room_id)}{rest}"
