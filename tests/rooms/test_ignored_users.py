"""m.ignored_user_list: an ignored user's messages and invites are not shown."""

from __future__ import annotations

import pytest_twisted
from twisted.internet import defer

from tests.rooms.helpers import (
    V3,
    all_events,
    bodies,
    create_room,
    invite,
    join,
    send,
    sync,
    timeline,
    user,
)
from tests.support.client import Client, q
from tests.support.server import RunningServer


async def ignore(client: Client, *user_ids: str | None) -> None:
    resp = await client.put(
        f"{V3}/user/{q(client.user_id or '')}/account_data/m.ignored_user_list",
        {"ignored_users": {u: {} for u in user_ids if u}},
    )
    assert resp.code == 200, resp


NO_PRESENCE = {"presence": {"types": []}}


@pytest_twisted.ensureDeferred
async def test_ignored_users_messages_and_invites_are_hidden(server: RunningServer) -> None:
    alice, bob, carol = [await user(server, n) for n in ("alice", "bob", "carol")]
    room_id = await create_room(alice, preset="public_chat")
    await join(bob, room_id)
    await join(carol, room_id)
    await ignore(carol, bob.user_id)

    # Live: bob's and alice's messages wake carol's long-poll together with the others'
    # (the shared room section must not leak bob's message into carol's).
    since = {c.user_id: (await sync(c))["next_batch"] for c in (alice, carol)}
    # (Without presence: bob's first message also makes his presence news, and a
    # long-poll woken by that alone would hold no room.)
    polls = {
        c.user_id: defer.ensureDeferred(
            sync(c, since[c.user_id], timeout=10_000, filter=NO_PRESENCE)
        )
        for c in (alice, carol)
    }
    await send(bob, room_id, "from bob")
    await send(alice, room_id, "from alice")
    got = {uid: await d for uid, d in polls.items()}
    seen_by_alice = bodies(timeline(got[alice.user_id], room_id)["events"])
    assert "from bob" in seen_by_alice or "from alice" in seen_by_alice
    assert "from bob" not in bodies(timeline(got[carol.user_id], room_id)["events"])

    # Initial sync and /messages: bob's messages are gone, his membership (state) stays.
    initial = await sync(carol)
    assert "from bob" not in bodies(timeline(initial, room_id)["events"])
    history = await all_events(carol, room_id)
    assert "from alice" in bodies(history)
    assert "from bob" not in bodies(history)
    assert any(e["type"] == "m.room.member" and e["state_key"] == bob.user_id for e in history)
    assert "from bob" in bodies(await all_events(alice, room_id))

    # Invites from an ignored user are not shown; un-ignoring shows messages again.
    other = await create_room(bob)
    resp = await invite(bob, other, carol.user_id)
    assert resp.code == 200, resp
    assert other not in (await sync(carol))["rooms"]["invite"]
    await ignore(carol)
    assert other in (await sync(carol))["rooms"]["invite"]
    assert "from bob" in bodies(await all_events(carol, room_id))
