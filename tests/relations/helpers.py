"""Helpers for the relations, threads and push tests."""

from __future__ import annotations

from typing import Any

from tests.ephemeral.helpers import V3, room_path, send
from tests.support.client import Client, Response, q

V1 = "/_matrix/client/v1"

_txn = [0]


def next_txn() -> str:
    _txn[0] += 1
    return f"rel{_txn[0]}"


async def send_event(
    client: Client,
    room_id: str,
    event_type: str,
    content: dict[str, Any],
    txn: str | None = None,
) -> Response:
    return await client.put(
        room_path(room_id, f"/send/{q(event_type)}/{q(txn or next_txn())}"), content
    )


async def send_ok(client: Client, room_id: str, event_type: str, content: dict[str, Any]) -> str:
    resp = await send_event(client, room_id, event_type, content)
    assert resp.code == 200, resp
    return str(resp.json["event_id"])


def edit_content(original_id: str, new_body: str) -> dict[str, Any]:
    return {
        "msgtype": "m.text",
        "body": f"* {new_body}",
        "m.new_content": {"msgtype": "m.text", "body": new_body},
        "m.relates_to": {"rel_type": "m.replace", "event_id": original_id},
    }


def reaction_content(target_id: str, key: str) -> dict[str, Any]:
    return {"m.relates_to": {"rel_type": "m.annotation", "event_id": target_id, "key": key}}


def thread_content(root_id: str, body: str, reply_to: str | None = None) -> dict[str, Any]:
    relates: dict[str, Any] = {"rel_type": "m.thread", "event_id": root_id}
    if reply_to is not None:
        relates["m.in_reply_to"] = {"event_id": reply_to}
        relates["is_falling_back"] = True
    return {"msgtype": "m.text", "body": body, "m.relates_to": relates}


async def edit(client: Client, room_id: str, original_id: str, new_body: str) -> str:
    return await send_ok(client, room_id, "m.room.message", edit_content(original_id, new_body))


async def react(client: Client, room_id: str, target_id: str, key: str) -> str:
    return await send_ok(client, room_id, "m.reaction", reaction_content(target_id, key))


async def thread_reply(
    client: Client, room_id: str, root_id: str, body: str, reply_to: str | None = None
) -> str:
    return await send_ok(client, room_id, "m.room.message", thread_content(root_id, body, reply_to))


async def relations(
    client: Client, room_id: str, event_id: str, *rest: str, **params: Any
) -> Response:
    path = f"{V1}/rooms/{q(room_id)}/relations/{q(event_id)}"
    for part in rest:
        path += f"/{q(part)}"
    return await client.get(path, params={k: str(v) for k, v in params.items()} or None)


async def threads(client: Client, room_id: str, **params: Any) -> Response:
    return await client.get(
        f"{V1}/rooms/{q(room_id)}/threads", params={k: str(v) for k, v in params.items()} or None
    )


async def get_event(client: Client, room_id: str, event_id: str) -> Response:
    return await client.get(room_path(room_id, f"/event/{q(event_id)}"))


def m_relations(event: dict[str, Any]) -> dict[str, Any]:
    return dict(event.get("unsigned", {}).get("m.relations", {}))


__all__ = ["V3", "send"]
