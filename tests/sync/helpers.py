"""Helpers for the simplified sliding sync (MSC4186) tests."""

from __future__ import annotations

from typing import Any

from tests.support.client import Client, Response

SLIDING_PATH = "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync"


def all_rooms(
    ranges: list[list[int]] | None = None,
    *,
    timeline_limit: int = 10,
    required_state: list[list[str]] | None = None,
    filters: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One list config."""
    config: dict[str, Any] = {
        "timeline_limit": timeline_limit,
        "required_state": required_state if required_state is not None else [],
    }
    if ranges is not None:
        config["ranges"] = ranges
    if filters is not None:
        config["filters"] = filters
    return config


async def sliding_raw(
    client: Client, body: dict[str, Any], pos: str | None = None, timeout: int | None = None
) -> Response:
    params: dict[str, Any] = {}
    if pos is not None:
        params["pos"] = pos
    if timeout is not None:
        params["timeout"] = str(timeout)
    return await client.post(SLIDING_PATH, body, params=params)


async def sliding(
    client: Client, body: dict[str, Any], pos: str | None = None, timeout: int | None = None
) -> dict[str, Any]:
    resp = await sliding_raw(client, body, pos, timeout)
    assert resp.code == 200, resp
    assert isinstance(resp.json["pos"], str)
    return dict(resp.json)


def list_ids(body: dict[str, Any], name: str = "all") -> list[str]:
    """The room ids of a list's windows, in order."""
    return [r for op in body["lists"][name]["ops"] for r in op["room_ids"]]


def timeline_ids(room: dict[str, Any]) -> list[str]:
    return [ev["event_id"] for ev in room.get("timeline", [])]
