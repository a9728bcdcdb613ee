"""Simplified sliding sync (MSC4186) side by side: the same scenario on Synapse 1.163.2
(where ``msc3575_enabled`` is on by default) and on ours, the same requests, and the
responses compared by structure: room lists in recency order, ``count``,
``joined_count``, ``invited_count``, names, ``required_state``, invite state and
timelines (event types, senders and contents), for a first and an incremental request.
Event ids, room ids, tokens and stream positions differ between servers and are left
out; user ids (and localparts) are replaced by the scenario's names for them.
Notification counts are checked apart (see ``ROOM_FIELDS``).

The scenario, on each server alone: users alice, bob and carol; alice creates "general"
(bob joins), "quiet", "to leave" (she leaves it); bob creates "kicked from" (alice joins
and talks, bob kicks her) and "bob's", inviting alice and carol; messages in between,
the last ones from bob in "general". Then a first request, a message in "quiet" and an
incremental request.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest_twisted

from tests.interop.test_synapse import name
from tests.support.client import Client, q
from tests.support.server import RunningServer
from tests.support.synapse import SynapsePeer

V3 = "/_matrix/client/v3"
SLIDING = "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync"
REQUEST: dict[str, Any] = {
    "lists": {
        "all": {
            "ranges": [[0, 9]],
            "timeline_limit": 3,
            "required_state": [["m.room.name", ""], ["m.room.member", "$ME"]],
        }
    }
}
# Per room: the fields whose values must agree (the rest hold ids or positions).
# ``notification_count`` and ``highlight_count`` are compared apart: Synapse 1.163.2's
# sliding sync always answers 0 for both (dummy values, a TODO in its handler), ours
# gives the real counts, the same as its /sync's ``unread_notifications``.
ROOM_FIELDS = (
    "name",
    "initial",
    "joined_count",
    "invited_count",
    "limited",
)


async def ok(client: Client, method: str, path: str, body: Any = None) -> Any:
    resp = await client.request(method, path, body if body is not None else {})
    assert resp.code == 200, (method, path, resp)
    return resp.json


async def send(client: Client, room_id: str, body: str) -> None:
    path = f"{V3}/rooms/{q(room_id)}/send/m.room.message/{uuid.uuid4().hex}"
    await ok(client, "PUT", path, {"msgtype": "m.text", "body": body})


async def scenario(base_url: str) -> tuple[dict[str, Client], dict[str, str]]:
    """Run the scenario on one server: the users by name, and room id -> room label."""
    clients = {}
    for who in ("alice", "bob", "carol"):
        clients[who] = Client(base_url)
        await clients[who].register(f"{who}{name()}")
    alice, bob, carol = clients["alice"], clients["bob"], clients["carol"]
    rooms: dict[str, str] = {}

    async def create(client: Client, label: str, **extra: Any) -> str:
        created = await ok(client, "POST", f"{V3}/createRoom", {"name": label, **extra})
        rooms[created["room_id"]] = label
        return str(created["room_id"])

    general = await create(alice, "general", preset="public_chat")
    await ok(bob, "POST", f"{V3}/join/{q(general)}")
    await send(alice, general, "hello general")
    quiet = await create(alice, "quiet")
    await send(alice, quiet, "note to self")
    leave = await create(alice, "to leave", preset="public_chat")
    await send(alice, leave, "bye")
    await ok(alice, "POST", f"{V3}/rooms/{q(leave)}/leave")
    kicked = await create(bob, "kicked from", preset="public_chat")
    await ok(alice, "POST", f"{V3}/join/{q(kicked)}")
    await send(alice, kicked, "am I welcome?")
    await ok(bob, "POST", f"{V3}/rooms/{q(kicked)}/kick", {"user_id": alice.user_id, "reason": "r"})
    bobs = await create(bob, "bob's", invite=[alice.user_id, carol.user_id])
    await send(bob, bobs, "come in")
    await send(bob, general, "hi alice")
    await send(bob, general, f"{alice.user_id}: are you there?")
    return clients, rooms


def normalise(body: dict[str, Any], users: dict[str, str], rooms: dict[str, str]) -> Any:
    """The response with ids replaced by labels and server-specific values left out."""

    def label(value: Any) -> Any:
        if isinstance(value, str):
            for user_id, who in users.items():
                value = value.replace(user_id, who).replace(user_id[1:].split(":")[0], who)
            return rooms.get(value, value)
        if isinstance(value, list):
            return [label(v) for v in value]
        if isinstance(value, dict):
            return {k: label(v) for k, v in value.items()}
        return value

    def event(e: dict[str, Any]) -> dict[str, Any]:
        kept = {k: e[k] for k in ("type", "sender", "state_key", "content") if k in e}
        return label(kept)

    lists = {
        key: {
            "count": lst["count"],
            "rooms": [rooms[r] for op in lst.get("ops", []) for r in op.get("room_ids", [])],
        }
        for key, lst in body.get("lists", {}).items()
    }
    out_rooms = {}
    for room_id, room in body.get("rooms", {}).items():
        out: dict[str, Any] = {k: room[k] for k in ROOM_FIELDS if k in room}
        out["timeline"] = [event(e) for e in room.get("timeline", [])]
        out["required_state"] = sorted((event(e) for e in room.get("required_state", [])), key=repr)
        out["invite_state"] = sorted((event(e) for e in room.get("invite_state", [])), key=repr)
        out_rooms[rooms[room_id]] = out
    return {"lists": lists, "rooms": out_rooms}


Counts = dict[str, tuple[int, int]]


def sliding_counts(body: dict[str, Any], rooms: dict[str, str]) -> Counts:
    return {
        rooms[r]: (room["notification_count"], room["highlight_count"])
        for r, room in body["rooms"].items()
        if "invite_state" not in room and room.get("timeline")
    }


async def run_on(base_url: str) -> tuple[list[Any], Counts, Counts]:
    """The normalised first and incremental responses, the first one's notification and
    highlight counts per joined room, and those of /sync for the same rooms."""
    clients, rooms = await scenario(base_url)
    users = {str(c.user_id): who for who, c in clients.items()}
    alice = clients["alice"]
    first = await ok(alice, "POST", SLIDING, REQUEST)
    counts = sliding_counts(first, rooms)
    resp = await alice.get(f"{V3}/sync", params={"timeout": "0"})
    assert resp.code == 200, resp
    v2 = {
        rooms[r]: (
            room["unread_notifications"].get("notification_count", 0),
            room["unread_notifications"].get("highlight_count", 0),
        )
        for r, room in resp.json["rooms"]["join"].items()
        if rooms[r] in counts
    }
    quiet = next(r for r, label in rooms.items() if label == "quiet")
    await send(alice, quiet, "another note")
    resp = await alice.request(
        "POST", SLIDING, REQUEST, params={"pos": first["pos"], "timeout": "0"}
    )
    assert resp.code == 200, resp
    return [normalise(first, users, rooms), normalise(resp.json, users, rooms)], counts, v2


@pytest_twisted.ensureDeferred
async def test_same_sliding_sync_responses(synapse: SynapsePeer, ours: RunningServer) -> None:
    theirs, their_counts, _ = await run_on(synapse.base_url)
    mine, my_counts, my_v2 = await run_on(ours.client().base_url)
    assert mine == theirs
    first, incremental = mine
    assert first["lists"] == {
        "all": {"count": 4, "rooms": ["general", "bob's", "kicked from", "quiet"]}
    }
    assert incremental["lists"] == {
        "all": {"count": 4, "rooms": ["quiet", "general", "bob's", "kicked from"]}
    }
    assert list(incremental["rooms"]) == ["quiet"]
    # Counts: Synapse's dummy zeros; ours agree with its /sync.
    assert set(their_counts) == set(my_counts) == {"general", "quiet", "kicked from"}
    assert set(their_counts.values()) == {(0, 0)}
    assert set(my_v2) == {"general", "quiet"}  # "kicked from" is under /sync's leave
    assert {r: my_counts[r] for r in my_v2} == my_v2
    assert my_counts["general"][0] == 2  # bob's two messages after alice's last
