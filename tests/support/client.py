"""A small Matrix client over real HTTP (treq) for tests."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

import treq
from twisted.internet import reactor
from twisted.web.client import HTTPConnectionPool

_pool = HTTPConnectionPool(reactor, persistent=False)


class Response:
    def __init__(self, code: int, body: bytes, headers: Any) -> None:
        self.code = code
        self.raw = body
        self.headers = headers
        try:
            self.json: Any = json.loads(body) if body else None
        except ValueError:
            self.json = None

    def header(self, name: str) -> str | None:
        values = self.headers.getRawHeaders(name)
        return values[0] if values else None

    def __repr__(self) -> str:
        return f"<Response {self.code} {self.raw[:300]!r}>"


def q(value: str) -> str:
    """Percent-encode a path parameter (user ids, room ids...)."""
    return quote(value, safe="")


class Client:
    def __init__(self, base_url: str, access_token: str | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.access_token = access_token
        self.user_id: str | None = None
        self.device_id: str | None = None

    async def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        token: str | None | bool = True,
        raw: bytes | None = None,
        headers: dict[str, str] | None = None,
        params: dict[str, Any] | None = None,
    ) -> Response:
        hdrs = {"Content-Type": "application/json"}
        if token is True and self.access_token:
            hdrs["Authorization"] = f"Bearer {self.access_token}"
        elif isinstance(token, str):
            hdrs["Authorization"] = f"Bearer {token}"
        hdrs.update(headers or {})
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        resp = await treq.request(
            method, self.base_url + path, data=data, headers=hdrs, params=params, pool=_pool
        )
        content = await treq.content(resp)
        return Response(resp.code, content, resp.headers)

    async def get(self, path: str, **kw: Any) -> Response:
        return await self.request("GET", path, **kw)

    async def post(self, path: str, body: Any = None, **kw: Any) -> Response:
        return await self.request("POST", path, body if body is not None else {}, **kw)

    async def put(self, path: str, body: Any = None, **kw: Any) -> Response:
        return await self.request("PUT", path, body if body is not None else {}, **kw)

    async def delete(self, path: str, body: Any = None, **kw: Any) -> Response:
        return await self.request("DELETE", path, body, **kw)

    async def register(
        self, username: str, password: str = "correct horse", **extra: Any
    ) -> Response:
        body = {"username": username, "password": password, "auth": {"type": "m.login.dummy"}}
        body.update(extra)
        resp = await self.post("/_matrix/client/v3/register", body, token=False)
        assert resp.code == 200, resp
        self.access_token = resp.json["access_token"]
        self.user_id = resp.json["user_id"]
        self.device_id = resp.json["device_id"]
        return resp

    async def login(self, username: str, password: str = "correct horse", **extra: Any) -> Response:
        body = {
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": username},
            "password": password,
        }
        body.update(extra)
        resp = await self.post("/_matrix/client/v3/login", body, token=False)
        if resp.code == 200:
            self.access_token = resp.json["access_token"]
            self.user_id = resp.json["user_id"]
            self.device_id = resp.json["device_id"]
        return resp
