"""Simplified sliding sync: list filters (MSC4186 ``filters``), over real HTTP."""

from __future__ import annotations

import pytest_twisted

from tests.rooms.helpers import V3, assert_error, create_room, invite, put_state, user
from tests.support.client import q
from tests.support.server import RunningServer
from tests.sync.helpers import all_rooms, list_ids, sliding, sliding_raw


@pytest_twisted.ensureDeferred
async def test_list_filters(server: RunningServer) -> None:
    alice = await user(server, "alice")
    bob = await user(server, "bob")
    plain = await create_room(alice)
    space = await create_room(alice, creation_content={"type": "m.space"})
    encrypted = await create_room(
        alice,
        initial_state=[
            {
                "type": "m.room.encryption",
                "state_key": "",
                "content": {"algorithm": "m.megolm.v1.aes-sha2"},
            }
        ],
    )
    dm = await create_room(alice)
    resp = await alice.put(
        f"{V3}/user/{q(alice.user_id or '')}/account_data/m.direct", {bob.user_id: [dm]}
    )
    assert resp.code == 200, resp
    invited = await create_room(bob)
    assert (await invite(bob, invited, alice.user_id)).code == 200
    assert (
        await put_state(alice, space, "m.space.child", {"via": ["test"]}, state_key=plain)
    ).code == 200
    # A child event without ``via`` is no child.
    assert (await put_state(alice, space, "m.space.child", {}, state_key=dm)).code == 200

    async def ids(filters: dict[str, object]) -> set[str]:
        body = await sliding(
            alice, {"lists": {"all": all_rooms([[0, 99]], timeline_limit=0, filters=filters)}}
        )
        assert body["lists"]["all"]["count"] == len(list_ids(body))
        return set(list_ids(body))

    everything = {plain, space, encrypted, dm, invited}
    assert await ids({}) == everything
    assert await ids({"is_invite": True}) == {invited}
    assert await ids({"is_invite": False}) == everything - {invited}
    assert await ids({"is_dm": True}) == {dm}
    assert await ids({"is_dm": False}) == everything - {dm}
    assert await ids({"is_encrypted": True}) == {encrypted}
    assert await ids({"room_types": ["m.space"]}) == {space}
    assert await ids({"room_types": [None]}) == everything - {space}
    assert await ids({"not_room_types": ["m.space"]}) == everything - {space}
    assert await ids({"spaces": [space]}) == {plain}
    assert await ids({"spaces": ["!unknown:test"]}) == set()
    # Filters combine with AND.
    assert await ids({"is_invite": False, "room_types": [None], "is_dm": False}) == {
        plain,
        encrypted,
    }


@pytest_twisted.ensureDeferred
async def test_direct_invite_counts_as_dm(server: RunningServer) -> None:
    alice = await user(server, "alice")
    bob = await user(server, "bob")
    room_id = await create_room(bob, is_direct=True, invite=[alice.user_id])
    body = await sliding(alice, {"lists": {"dms": all_rooms([[0, 9]], filters={"is_dm": True})}})
    assert list_ids(body, "dms") == [room_id]


@pytest_twisted.ensureDeferred
async def test_tag_filters(server: RunningServer) -> None:
    alice = await user(server, "alice")
    fav = await create_room(alice)
    low = await create_room(alice)
    both = await create_room(alice)
    plain = await create_room(alice)
    uid = q(alice.user_id or "")
    for room_id, tag in ((fav, "m.favourite"), (low, "m.lowpriority"), (both, "m.favourite")):
        resp = await alice.put(f"{V3}/user/{uid}/rooms/{q(room_id)}/tags/{tag}", {})
        assert resp.code == 200, resp
    resp = await alice.put(f"{V3}/user/{uid}/rooms/{q(both)}/tags/m.lowpriority", {})
    assert resp.code == 200, resp

    async def ids(filters: dict[str, object]) -> set[str]:
        body = await sliding(alice, {"lists": {"all": all_rooms([[0, 99]], filters=filters)}})
        return set(list_ids(body))

    assert await ids({"tags": ["m.favourite"]}) == {fav, both}
    assert await ids({"not_tags": ["m.lowpriority"]}) == {fav, plain}
    # not_tags wins.
    assert await ids({"tags": ["m.favourite"], "not_tags": ["m.lowpriority"]}) == {fav}
    # A removed tag no longer counts.
    resp = await alice.delete(f"{V3}/user/{uid}/rooms/{q(fav)}/tags/m.favourite")
    assert resp.code == 200, resp
    assert await ids({"tags": ["m.favourite"]}) == {both}


@pytest_twisted.ensureDeferred
async def test_room_name_like_is_refused_clearly(server: RunningServer) -> None:
    alice = await user(server, "alice")
    resp = await sliding_raw(
        alice, {"lists": {"all": all_rooms([[0, 9]], filters={"room_name_like": "x"})}}
    )
    assert_error(resp, 400, "M_INVALID_PARAM")
