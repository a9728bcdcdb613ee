"""Room set-up shared by the attacker tests (our users act through the client API)."""

from __future__ import annotations

import itertools
from typing import Any

from crypto.event_hashing import compute_event_id
from homeserver.events.room_versions import ROOM_VERSIONS
from tests.support.client import Client, q
from tests.support.malicious_server import Joined, MaliciousServer
from tests.support.server import RunningServer

JsonDict = dict[str, Any]
FED = "/_matrix/federation/v1"
_txn = itertools.count(1)


async def user(server: RunningServer, name: str) -> Client:
    client = server.client()
    await client.register(name)
    return client


async def create_room(
    owner: Client, preset: str, history_visibility: str | None = None, version: str = "11"
) -> str:
    body: JsonDict = {"preset": preset, "room_version": version}
    if history_visibility is not None:
        body["initial_state"] = [
            {
                "type": "m.room.history_visibility",
                "state_key": "",
                "content": {"history_visibility": history_visibility},
            }
        ]
    resp = await owner.post("/_matrix/client/v3/createRoom", body)
    assert resp.code == 200, resp
    return str(resp.json["room_id"])


async def room_of_two(preset: str, owner: Client, other: Client) -> str:
    """A room created by ``owner`` that ``other`` (invited first) has joined."""
    room_id = await create_room(owner, preset)
    resp = await owner.post(
        f"/_matrix/client/v3/rooms/{q(room_id)}/invite", {"user_id": other.user_id}
    )
    assert resp.code == 200, resp
    resp = await other.post(f"/_matrix/client/v3/join/{q(room_id)}", {})
    assert resp.code == 200, resp
    return room_id


async def get_missing_events(
    attacker: MaliciousServer, ours: RunningServer, room_id: str, latest: str
) -> tuple[int, Any]:
    return await attacker.request(
        ours,
        "POST",
        f"{FED}/get_missing_events/{q(room_id)}",
        {"earliest_events": [], "latest_events": [latest], "limit": 20},
    )


async def assert_not_stored(client: Client, room_id: str, event_id: str) -> None:
    resp = await client.get(f"/_matrix/client/v3/rooms/{q(room_id)}/event/{q(event_id)}")
    assert resp.code == 404, resp


async def send_text(client: Client, room_id: str, body: str) -> str:
    resp = await client.put(
        f"/_matrix/client/v3/rooms/{q(room_id)}/send/m.room.message/{next(_txn)}",
        {"msgtype": "m.text", "body": body},
    )
    assert resp.code == 200, resp
    return str(resp.json["event_id"])


async def send_state(client: Client, room_id: str, event_type: str, content: JsonDict) -> str:
    resp = await client.put(f"/_matrix/client/v3/rooms/{q(room_id)}/state/{event_type}", content)
    assert resp.code == 200, resp
    return str(resp.json["event_id"])


def message_auth_events(joined: Joined) -> list[str]:
    """The auth events of a message from the attacker's joined user: create (before
    v12), power levels, its join."""
    wanted = {("m.room.power_levels", "")}
    if joined.room_version in ("10", "11"):
        wanted.add(("m.room.create", ""))
    state = [p for p in joined.send_join["state"] if (p["type"], p.get("state_key")) in wanted]
    version = ROOM_VERSIONS[joined.room_version]
    return [compute_event_id(p, version) for p in state] + [joined.event["event_id"]]
