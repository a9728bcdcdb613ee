"""Helpers shared by the room and /sync tests: create rooms, send, sync, paginate."""

from __future__ import annotations

import json
from typing import Any

from tests.support.client import Client, Response, q
from tests.support.server import RunningServer

V3 = "/_matrix/client/v3"
PASSWORD = "correct horse"


def assert_error(resp: Response, code: int, errcode: str) -> None:
    assert resp.code == code, resp
    assert resp.json is not None, resp
    assert resp.json["errcode"] == errcode, resp
    assert isinstance(resp.json.get("error"), str), resp


async def user(server: RunningServer, name: str) -> Client:
    client = server.client()
    await client.register(name, PASSWORD)
    return client


def room_path(room_id: str, rest: str = "") -> str:
    return f"{V3}/rooms/{q(room_id)}{rest}"


async def create_room(client: Client, **body: Any) -> str:
    resp = await client.post(f"{V3}/createRoom", body)
    assert resp.code == 200, resp
    return str(resp.json["room_id"])


_txn_counter = [0]


def next_txn() -> str:
    _txn_counter[0] += 1
    return f"txn{_txn_counter[0]}"


async def send(
    client: Client,
    room_id: str,
    body: str = "hi",
    *,
    event_type: str = "m.room.message",
    content: dict[str, Any] | None = None,
    txn: str | None = None,
) -> str:
    resp = await send_raw(client, room_id, body, event_type=event_type, content=content, txn=txn)
    assert resp.code == 200, resp
    return str(resp.json["event_id"])


async def send_raw(
    client: Client,
    room_id: str,
    body: str = "hi",
    *,
    event_type: str = "m.room.message",
    content: dict[str, Any] | None = None,
    txn: str | None = None,
) -> Response:
    if content is None:
        content = {"msgtype": "m.text", "body": body}
    return await client.put(
        room_path(room_id, f"/send/{q(event_type)}/{q(txn or next_txn())}"), content
    )


async def put_state(
    client: Client, room_id: str, event_type: str, content: dict[str, Any], state_key: str = ""
) -> Response:
    path = f"/state/{q(event_type)}"
    if state_key:
        path += f"/{q(state_key)}"
    return await client.put(room_path(room_id, path), content)


async def get_state(
    client: Client, room_id: str, event_type: str, state_key: str = "", fmt: str | None = None
) -> Response:
    path = f"/state/{q(event_type)}/{q(state_key)}"
    return await client.get(room_path(room_id, path), params={"format": fmt} if fmt else None)


async def join(client: Client, room_id_or_alias: str) -> Response:
    return await client.post(f"{V3}/join/{q(room_id_or_alias)}", {})


async def invite(client: Client, room_id: str, user_id: str | None) -> Response:
    return await client.post(room_path(room_id, "/invite"), {"user_id": user_id})


async def leave(client: Client, room_id: str) -> Response:
    return await client.post(room_path(room_id, "/leave"), {})


async def sync(
    client: Client,
    since: str | None = None,
    *,
    filter: dict[str, Any] | str | None = None,
    timeout: int | None = None,
    full_state: bool = False,
) -> dict[str, Any]:
    resp = await sync_raw(client, since, filter=filter, timeout=timeout, full_state=full_state)
    assert resp.code == 200, resp
    return dict(resp.json)


async def sync_raw(
    client: Client,
    since: str | None = None,
    *,
    filter: dict[str, Any] | str | None = None,
    timeout: int | None = None,
    full_state: bool = False,
) -> Response:
    params: dict[str, Any] = {}
    if since is not None:
        params["since"] = since
    if filter is not None:
        params["filter"] = filter if isinstance(filter, str) else json.dumps(filter)
    if timeout is not None:
        params["timeout"] = str(timeout)
    if full_state:
        params["full_state"] = "true"
    return await client.get(f"{V3}/sync", params=params)


async def messages(client: Client, room_id: str, **params: Any) -> Response:
    if "filter" in params and not isinstance(params["filter"], str):
        params["filter"] = json.dumps(params["filter"])
    return await client.get(room_path(room_id, "/messages"), params=params)


async def all_events(client: Client, room_id: str, page: int = 7) -> list[dict[str, Any]]:
    """Every event the user may see, oldest first, by paginating /messages dir=f."""
    out: list[dict[str, Any]] = []
    token: str | None = None
    for _ in range(1000):
        params: dict[str, Any] = {"dir": "f", "limit": page}
        if token is not None:
            params["from"] = token
        resp = await messages(client, room_id, **params)
        assert resp.code == 200, resp
        chunk = resp.json["chunk"]
        out.extend(chunk)
        if not chunk or "end" not in resp.json:
            return out
        token = resp.json["end"]
    raise AssertionError("pagination did not end")


def bodies(events: list[dict[str, Any]]) -> list[str]:
    return [
        e["content"]["body"]
        for e in events
        if e["type"] == "m.room.message" and "body" in e.get("content", {})
    ]


def timeline(sync_body: dict[str, Any], room_id: str) -> dict[str, Any]:
    return dict(sync_body["rooms"]["join"][room_id]["timeline"])


def state_events(sync_body: dict[str, Any], room_id: str) -> list[dict[str, Any]]:
    return list(sync_body["rooms"]["join"][room_id]["state"]["events"])
