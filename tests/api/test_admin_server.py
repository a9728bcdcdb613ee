"""Synapse's admin API about the server: version, background updates, federation
destinations."""

from __future__ import annotations

from collections.abc import Callable

import pytest_twisted
from twisted.internet import reactor, task

from tests.api.helpers import assert_error, register, register_admin
from tests.rooms.helpers import create_room
from tests.support.client import q
from tests.support.server import RunningServer

ADMIN = "/_synapse/admin/v1"
DESTINATIONS = f"{ADMIN}/federation/destinations"


async def until(condition: Callable[[], bool]) -> None:
    for _ in range(500):
        if condition():
            return
        await task.deferLater(reactor, 0.02, lambda: None)
    raise AssertionError("condition never met")


@pytest_twisted.ensureDeferred
async def test_server_version_and_background_updates(server: RunningServer) -> None:
    resp = await server.client().get(f"{ADMIN}/server_version", token=False)
    assert resp.code == 200, resp
    assert isinstance(resp.json["server_version"], str)
    admin = await register_admin(server)
    alice = await register(server, "alice")
    status = f"{ADMIN}/background_updates/status"
    assert_error(await alice.get(status), 403, "M_FORBIDDEN")
    resp = await admin.get(status)
    assert resp.code == 200 and resp.json == {"enabled": True, "current_updates": {}}, resp


@pytest_twisted.ensureDeferred
async def test_federation_destinations_show_backoff_and_reset(server: RunningServer) -> None:
    admin = await register_admin(server)
    alice = await register(server, "alice")
    assert_error(await alice.get(DESTINATIONS), 403, "M_FORBIDDEN")
    assert (await admin.get(DESTINATIONS)).json == {"destinations": [], "total": 0}
    assert_error(await admin.get(f"{DESTINATIONS}/nowhere.invalid"), 404, "M_NOT_FOUND")

    # Nothing answers at these names: the sender backs off, and says so.
    sender = server.hs.federation.sender
    for name in ("b-unreachable.invalid", "a-unreachable.invalid"):
        await sender.send_edu([name], "m.direct_to_device", {"messages": {}})
    store = server.hs.storage.federation

    async def backed_off() -> bool:
        return all(
            [
                await store.get_retry("a-unreachable.invalid"),
                await store.get_retry("b-unreachable.invalid"),
            ]
        )

    for _ in range(500):
        if await backed_off():
            break
        await task.deferLater(reactor, 0.02, lambda: None)
    resp = await admin.get(DESTINATIONS)
    assert resp.code == 200, resp
    assert resp.json["total"] == 2
    names = [d["destination"] for d in resp.json["destinations"]]
    assert names == ["a-unreachable.invalid", "b-unreachable.invalid"]
    first = resp.json["destinations"][0]
    assert first["retry_last_ts"] > 0 and first["retry_interval"] > 0
    assert first["failure_ts"] == first["retry_last_ts"]
    assert first["last_successful_stream_ordering"] is None

    backwards = await admin.get(DESTINATIONS, params={"dir": "b", "limit": "1"})
    assert [d["destination"] for d in backwards.json["destinations"]] == [names[1]]
    assert backwards.json["next_token"] == "1"
    found = await admin.get(DESTINATIONS, params={"destination": "B-UNREACH"})
    assert [d["destination"] for d in found.json["destinations"]] == [names[1]]
    resp = await admin.get(DESTINATIONS, params={"order_by": "nope"})
    assert_error(resp, 400, "M_INVALID_PARAM")

    detail = await admin.get(f"{DESTINATIONS}/{q(names[0])}")
    assert detail.code == 200 and detail.json == first, detail
    rooms = await admin.get(f"{DESTINATIONS}/{q(names[0])}/rooms")
    assert rooms.json == {"rooms": [], "total": 0}

    reset = f"{DESTINATIONS}/{q(names[0])}/reset_connection"
    assert_error(await alice.post(reset, {}), 403, "M_FORBIDDEN")
    resp = await admin.post(reset, {})
    assert resp.code == 200 and resp.json == {}, resp
    # Woken at once: it fails again straight away and is backed off anew.
    await until(lambda: names[0] in sender._wakeups)
    after = (await admin.get(f"{DESTINATIONS}/{q(names[0])}")).json
    assert after["retry_last_ts"] >= first["retry_last_ts"]


@pytest_twisted.ensureDeferred
async def test_destination_rooms_lists_rooms_shared_with_the_server(
    server: RunningServer,
) -> None:
    admin = await register_admin(server)
    alice = await register(server, "alice")
    room_id = await create_room(alice)
    # A destination we sent to, sharing no room with us.
    store = server.hs.storage.federation
    await store.set_retry("remote.example", 0, 0)
    rooms = await admin.get(f"{DESTINATIONS}/remote.example/rooms")
    assert rooms.json == {"rooms": [], "total": 0}, rooms
    own = await admin.get(f"{DESTINATIONS}/{q(server.hs.server_name)}/rooms")
    assert_error(own, 404, "M_NOT_FOUND")
    # Our own server name is not a destination; its rooms would be ours.
    await store.set_retry(server.hs.server_name, 0, 0)
    own = await admin.get(f"{DESTINATIONS}/{q(server.hs.server_name)}/rooms")
    assert [r["room_id"] for r in own.json["rooms"]] == [room_id]
    assert own.json["rooms"][0]["stream_ordering"] > 0
    reset = await admin.post(f"{DESTINATIONS}/remote.example/reset_connection", {})
    assert_error(reset, 400, "M_UNKNOWN")
