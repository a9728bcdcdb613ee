"""Helpers for the search tests: users, rooms, sending, and calling POST /search."""

from __future__ import annotations

import itertools
from typing import Any

from tests.support.client import Client, Response, q
from tests.support.server import RunningServer

V3 = "/_matrix/client/v3"
_txn = itertools.count()


async def user(server: RunningServer, name: str) -> Client:
    client = server.client()
    await client.register(name)
    return client


async def create_room(client: Client, **body: Any) -> str:
    resp = await client.post(f"{V3}/createRoom", body)
    assert resp.code == 200, resp
    return str(resp.json["room_id"])


async def join(client: Client, room_id: str) -> None:
    resp = await client.post(f"{V3}/rooms/{q(room_id)}/join", {})
    assert resp.code == 200, resp


async def leave(client: Client, room_id: str) -> None:
    resp = await client.post(f"{V3}/rooms/{q(room_id)}/leave", {})
    assert resp.code == 200, resp


async def send(
    client: Client,
    room_id: str,
    body: str,
    *,
    event_type: str = "m.room.message",
    content: dict[str, Any] | None = None,
) -> str:
    if content is None:
        content = {"msgtype": "m.text", "body": body}
    resp = await client.put(f"{V3}/rooms/{q(room_id)}/send/{q(event_type)}/t{next(_txn)}", content)
    assert resp.code == 200, resp
    return str(resp.json["event_id"])


async def put_state(
    client: Client, room_id: str, event_type: str, content: dict[str, Any], state_key: str = ""
) -> str:
    resp = await client.put(
        f"{V3}/rooms/{q(room_id)}/state/{q(event_type)}/{q(state_key)}", content
    )
    assert resp.code == 200, resp
    return str(resp.json["event_id"])


async def redact(client: Client, room_id: str, event_id: str) -> str:
    resp = await client.put(f"{V3}/rooms/{q(room_id)}/redact/{q(event_id)}/r{next(_txn)}", {})
    assert resp.code == 200, resp
    return str(resp.json["event_id"])


async def search_raw(client: Client, next_batch: str | None = None, **room_events: Any) -> Response:
    params = {"next_batch": next_batch} if next_batch is not None else None
    return await client.post(
        f"{V3}/search", {"search_categories": {"room_events": room_events}}, params=params
    )


async def search(client: Client, term: str, next_batch: str | None = None, **kw: Any) -> Any:
    """The ``room_events`` object of a successful search."""
    resp = await search_raw(client, next_batch, search_term=term, **kw)
    assert resp.code == 200, resp
    return resp.json["search_categories"]["room_events"]


def result_ids(room_events: Any) -> list[str]:
    return [r["result"]["event_id"] for r in room_events["results"]]


async def all_pages(client: Client, term: str, **kw: Any) -> list[list[str]]:
    """Every page of results by following next_batch to the end."""
    pages: list[list[str]] = []
    token: str | None = None
    for _ in range(100):
        res = await search(client, term, token, **kw)
        pages.append(result_ids(res))
        token = res.get("next_batch")
        if token is None:
            return pages
    raise AssertionError("next_batch never ran out")


def assert_error(resp: Response, code: int, errcode: str) -> None:
    assert resp.code == code, resp
    assert resp.json["errcode"] == errcode, resp
