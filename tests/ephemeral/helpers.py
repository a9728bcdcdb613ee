"""Helpers for the receipts, typing, presence, tags and user directory tests."""

from __future__ import annotations

import json
from typing import Any

import pytest
from twisted.internet import reactor, task

from tests.support.client import Client, Response, q
from tests.support.server import RunningServer, make_config_dict, start_server

V3 = "/_matrix/client/v3"
PASSWORD = "correct horse"

sqlite_only = pytest.mark.parametrize("db_kind", ["sqlite"])


def with_config(**overrides: Any) -> pytest.MarkDecorator:
    return pytest.mark.parametrize("config_overrides", [overrides], ids=["cfg"])


def assert_error(resp: Response, code: int, errcode: str) -> None:
    assert resp.code == code, resp
    assert resp.json is not None, resp
    assert resp.json["errcode"] == errcode, resp


async def sleep(seconds: float) -> None:
    await task.deferLater(reactor, seconds, lambda: None)


async def user(server: RunningServer, name: str, displayname: str | None = None) -> Client:
    client = server.client()
    await client.register(name, PASSWORD)
    if displayname is not None:
        resp = await client.put(
            f"{V3}/profile/{q(client.user_id or '')}/displayname", {"displayname": displayname}
        )
        assert resp.code == 200, resp
    return client


def room_path(room_id: str, rest: str = "") -> str:
    return f"{V3}/rooms/{q(room_id)}{rest}"


async def create_room(client: Client, **body: Any) -> str:
    resp = await client.post(f"{V3}/createRoom", body)
    assert resp.code == 200, resp
    return str(resp.json["room_id"])


async def join(client: Client, room_id: str) -> None:
    resp = await client.post(f"{V3}/join/{q(room_id)}", {})
    assert resp.code == 200, resp


async def shared_room(owner: Client, *others: Client, **body: Any) -> str:
    """A public room created by ``owner`` that every other client has joined."""
    room_id = await create_room(owner, preset="public_chat", **body)
    for other in others:
        await join(other, room_id)
    return room_id


_txn = [0]


async def send(client: Client, room_id: str, content: dict[str, Any] | str = "hi") -> str:
    if isinstance(content, str):
        content = {"msgtype": "m.text", "body": content}
    _txn[0] += 1
    resp = await client.put(room_path(room_id, f"/send/m.room.message/t{_txn[0]}"), content)
    assert resp.code == 200, resp
    return str(resp.json["event_id"])


async def sync_raw(
    client: Client,
    since: str | None = None,
    *,
    timeout: int | None = None,
    set_presence: str | None = None,
    filter: dict[str, Any] | None = None,
) -> Response:
    params: dict[str, Any] = {}
    if since is not None:
        params["since"] = since
    if timeout is not None:
        params["timeout"] = str(timeout)
    if set_presence is not None:
        params["set_presence"] = set_presence
    if filter is not None:
        params["filter"] = json.dumps(filter)
    return await client.get(f"{V3}/sync", params=params)


async def sync(client: Client, since: str | None = None, **kw: Any) -> dict[str, Any]:
    resp = await sync_raw(client, since, **kw)
    assert resp.code == 200, resp
    return dict(resp.json)


def ephemeral(body: dict[str, Any], room_id: str, event_type: str) -> list[dict[str, Any]]:
    room = body["rooms"]["join"].get(room_id)
    if room is None:
        return []
    return [e for e in room["ephemeral"]["events"] if e["type"] == event_type]


def room_account_data(body: dict[str, Any], room_id: str) -> dict[str, Any]:
    room = body["rooms"]["join"].get(room_id)
    if room is None:
        return {}
    return {e["type"]: e["content"] for e in room["account_data"]["events"]}


def presence_events(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["sender"]: e["content"] for e in body["presence"]["events"]}


async def restart(
    server: RunningServer, data_dir: str, database: dict[str, Any], **overrides: Any
) -> RunningServer:
    """Stop ``server`` and start a new one on the same database and data directory."""
    await server.stop()
    return await start_server(make_config_dict(data_dir, database, **overrides), data_dir)
