"""Auth chains and state in federation answers come oldest first (by depth).

Servers such as SyTest's take each event in the order given, a later event of a
(type, state_key) replacing an earlier one: from a set's arbitrary order they kept a power
level event that had since been replaced, and their next events were rejected."""

from __future__ import annotations

from typing import Any

import pytest_twisted

from tests.security.common import FED, create_room, send_state, user
from tests.support.client import q
from tests.support.malicious_server import MaliciousServer
from tests.support.server import RunningServer

JsonDict = dict[str, Any]


def depths(pdus: list[JsonDict]) -> list[int]:
    return [int(p["depth"]) for p in pdus]


@pytest_twisted.ensureDeferred
async def test_send_join_state_and_event_auth_list_oldest_first(
    ours: RunningServer, attacker: MaliciousServer
) -> None:
    alice = await user(ours, "alice")
    room_id = await create_room(alice, "public_chat")
    levels = (
        await alice.get(f"/_matrix/client/v3/rooms/{q(room_id)}/state/m.room.power_levels")
    ).json
    for n in range(4):  # several power levels in the join's auth chain
        levels["users"][f"@u{n}:example.org"] = 10 + n
        await send_state(alice, room_id, "m.room.power_levels", levels)
    joined = await attacker.join(ours, room_id)
    chain, state = joined.send_join["auth_chain"], joined.send_join["state"]
    assert len(chain) >= 8
    assert depths(chain) == sorted(depths(chain)), depths(chain)
    assert depths(state) == sorted(depths(state)), depths(state)
    # What a server that keeps the last of each key holds is the current power level.
    last: dict[tuple[str, str], JsonDict] = {}
    for pdu in [*chain, *state]:
        last[(pdu["type"], pdu.get("state_key", ""))] = pdu
    assert last[("m.room.power_levels", "")]["content"] == levels

    join_id = joined.event["event_id"]
    status, body = await attacker.request(
        ours, "GET", f"{FED}/state/{q(room_id)}", query={"event_id": [join_id]}
    )
    assert status == 200, body
    assert depths(body["auth_chain"]) == sorted(depths(body["auth_chain"]))
    assert depths(body["pdus"]) == sorted(depths(body["pdus"]))
    status, body = await attacker.request(
        ours, "GET", f"{FED}/event_auth/{q(room_id)}/{q(join_id)}"
    )
    assert status == 200, body
    assert depths(body["auth_chain"]) == sorted(depths(body["auth_chain"]))
