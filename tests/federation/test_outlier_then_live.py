"""An event first held as an outlier, then received live (issue #15, concurrency audit).

B can hold an event of A only as an outlier (fetched with an auth chain or a remote
state) before A's transaction with that event arrives: the two paths run concurrently.
The live copy must still be processed (timeline, current state), and an event citing
it as a prev event must use its state, not the empty state of an outlier.
"""

from __future__ import annotations

from typing import Any

import pytest_twisted

from tests.federation.test_backfill import alice_bob_and_a_room, join_from_b
from tests.federation.test_two_servers import current_state, eventually_equal_state, sleep
from tests.support.client import q
from tests.support.server import RunningServer


@pytest_twisted.ensureDeferred
async def test_event_held_as_outlier_is_still_processed_when_it_arrives_live(
    two_servers: tuple[RunningServer, RunningServer],
) -> None:
    a, b = two_servers
    alice, bob, room_id = await alice_bob_and_a_room(a, b)
    await join_from_b(bob, room_id, a)
    await eventually_equal_state(alice, bob, room_id)
    assert a.hs.federation is not None and b.hs.federation is not None

    # Hold back A's transactions to B (kept, not delivered) while alice sets the topic.
    a_client = a.hs.federation.client
    real_put_json = a_client.put_json
    held: list[tuple[str, str, Any]] = []

    async def holding_put_json(destination: str, path: str, body: Any, *a: Any, **kw: Any) -> Any:
        if "/send/" in path:
            held.append((destination, path, body))
            return {"pdus": {}}
        return await real_put_json(destination, path, body, *a, **kw)

    a_client.put_json = holding_put_json  # type: ignore[method-assign]
    resp = await alice.put(
        f"/_matrix/client/v3/rooms/{q(room_id)}/state/m.room.topic", {"topic": "T"}
    )
    assert resp.code == 200, resp
    topic_id = resp.json["event_id"]
    topics: list[dict[str, Any]] = []
    for _ in range(100):
        topics = [
            p for _, _, body in held for p in body.get("pdus", []) if p["type"] == "m.room.topic"
        ]
        if topics:
            break
        await sleep(0.05)
    (topic_pdu,) = topics

    # Meanwhile B gets the topic event as an outlier (as from an /event_auth answer).
    version = await b.hs.storage.rooms.get_version(room_id)
    assert version is not None
    await b.hs.federation.events.store_outliers(version, [topic_pdu])

    # Then the transaction arrives.
    a_client.put_json = real_put_json  # type: ignore[method-assign]
    for destination, path, body in held:
        await real_put_json(destination, path, body)
    resp = await alice.put(
        f"/_matrix/client/v3/rooms/{q(room_id)}/send/m.room.message/m1",
        {"msgtype": "m.text", "body": "after the topic"},
    )
    assert resp.code == 200, resp
    message_id = resp.json["event_id"]

    await eventually_equal_state(alice, bob, room_id)
    assert (await current_state(bob, room_id))[("m.room.topic", "")] == topic_id
    # The message (prev event: the topic) was accepted on B, not rejected on no state.
    for _ in range(50):
        resp = await bob.get(f"/_matrix/client/v3/rooms/{q(room_id)}/event/{q(message_id)}")
        if resp.code == 200:
            break
        await sleep(0.1)
    assert resp.code == 200, resp
