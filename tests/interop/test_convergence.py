"""Three servers in one room change state at the same moment, round after round, and
must always end up holding the same current state (issue #15).

Every user who acts holds power 100 (in v12 the creator is above that). In each round
one server demotes or restores a user's power level while the others set the name, the
topic or the join rules (every fourth round two servers change power levels), all fired
concurrently, so the room's graph forks three ways. After each round every server must
have every event of the round and the three current states (type, state_key -> event
id) must be identical; a failed state resolution in our log fails the test too.

Variants: two Synapses (from PyPI) and ours; two of ours and one Synapse.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer, reactor, task, threads

from tests.support.client import Client, q
from tests.support.federation import start_federating_server
from tests.support.server import RunningServer
from tests.support.synapse import SynapsePeer

ROOM_VERSIONS = ("10", "11", "12")
ROUNDS = 12
ROUND_DEADLINE = 45.0  # seconds for every server to converge after a round

State = dict[tuple[str, str], str]


async def sleep(seconds: float) -> None:
    await task.deferLater(reactor, seconds, lambda: None)


def localpart() -> str:
    return "c" + uuid.uuid4().hex[:10]


class ResolutionFailures(logging.Handler):
    """Collects our log lines that say a state resolution failed or fell back."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if "State resolution" in message and ("failed" in message or "keeping" in message):
            self.lines.append(message)


@pytest.fixture
def resolution_failures() -> Iterator[ResolutionFailures]:
    handler = ResolutionFailures()
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield handler
    finally:
        root.removeHandler(handler)


@dataclass
class Member:
    """One server's acting user (power 100) and a user it demotes and restores."""

    name: str
    admin: Client
    victim: str


async def start_synapses(count: int, tmp_path: Any) -> list[SynapsePeer]:
    peers = [SynapsePeer(str(tmp_path / f"synapse{i}")) for i in range(count)]
    try:
        await defer.gatherResults(
            [threads.deferToThread(peer.start) for peer in peers], consumeErrors=True
        )
    except BaseException:
        for peer in peers:
            peer.stop()
        raise
    return peers


async def start_ours(count: int, tmp_path: Any) -> list[RunningServer]:
    servers: list[RunningServer] = []
    try:
        for i in range(count):
            data = str(tmp_path / f"ours{i}")
            os.makedirs(data, exist_ok=True)
            db = {"name": "sqlite3", "args": {"database": os.path.join(data, "homeserver.db")}}
            servers.append(await start_federating_server(data, db))
    except BaseException:
        for server in servers:
            await server.stop()
        raise
    return servers


async def make_member(name: str, base_url: str) -> Member:
    admin = Client(base_url)
    await admin.register(localpart())
    victim = Client(base_url)
    await victim.register(localpart())
    assert victim.user_id is not None
    return Member(name, admin, victim.user_id)


async def room_state(client: Client, room_id: str) -> State | None:
    resp = await client.get(f"/_matrix/client/v3/rooms/{q(room_id)}/state")
    if resp.code != 200:
        return None
    return {(e["type"], e["state_key"]): e["event_id"] for e in resp.json}


async def has_event(client: Client, room_id: str, event_id: str) -> bool:
    resp = await client.get(f"/_matrix/client/v3/rooms/{q(room_id)}/event/{q(event_id)}")
    return resp.code == 200


async def put_state(client: Client, room_id: str, event_type: str, content: dict[str, Any]) -> str:
    resp = await client.put(f"/_matrix/client/v3/rooms/{q(room_id)}/state/{event_type}", content)
    assert resp.code == 200, (client.base_url, event_type, resp)
    return str(resp.json["event_id"])


async def wait_for(
    check: Callable[[], Awaitable[bool]], deadline: float, interval: float = 0.25
) -> bool:
    while True:
        if await check():
            return True
        if reactor.seconds() > deadline:  # type: ignore[attr-defined]
            return False
        await sleep(interval)


async def create_room(creator: Member, members: list[Member], room_version: str) -> str:
    users = {m.admin.user_id: 100 for m in members}
    users.update({m.victim: 50 for m in members})
    if room_version == "12":
        del users[creator.admin.user_id]  # creators are above every power level
    resp = await creator.admin.post(
        "/_matrix/client/v3/createRoom",
        {
            "room_version": room_version,
            "preset": "public_chat",
            "name": "start",
            "power_level_content_override": {"users": users},
        },
    )
    assert resp.code == 200, resp
    return str(resp.json["room_id"])


async def join_all(room_id: str, creator: Member, host: str, others: list[Member]) -> None:
    for member in others:
        resp = await member.admin.post(
            f"/_matrix/client/v3/join/{q(room_id)}", {}, params={"server_name": host}
        )
        assert resp.code == 200, (member.name, resp)
    members = [creator, *others]

    async def everyone_sees_everyone() -> bool:
        for viewer in members:
            resp = await viewer.admin.get(f"/_matrix/client/v3/rooms/{q(room_id)}/joined_members")
            if resp.code != 200:
                return False
            if any(m.admin.user_id not in resp.json.get("joined", {}) for m in members):
                return False
        return True

    assert await wait_for(everyone_sees_everyone, reactor.seconds() + 60)  # type: ignore[attr-defined]


async def power_change(member: Member, target: str, room_id: str) -> str:
    resp = await member.admin.get(
        f"/_matrix/client/v3/rooms/{q(room_id)}/state/m.room.power_levels"
    )
    assert resp.code == 200, resp
    content = resp.json
    users = content.setdefault("users", {})
    users[target] = 0 if users.get(target, 0) == 50 else 50
    return await put_state(member.admin, room_id, "m.room.power_levels", content)


async def one_round(members: list[Member], room_id: str, number: int) -> list[str]:
    """Every server changes state at once; returns the new event ids."""
    actions: list[defer.Deferred[str]] = []
    for i, member in enumerate(members):
        role = (i + number) % len(members)
        if role == 0:
            target = members[(number + 1) % len(members)].victim
            action = power_change(member, target, room_id)
        elif role == 1 and number % 4 == 3:
            # Two power levels changes at once: a conflict on the power levels.
            target = members[(number + 2) % len(members)].victim
            action = power_change(member, target, room_id)
        elif role == 1:
            action = put_state(
                member.admin, room_id, "m.room.name", {"name": f"n{number}-{member.name}"}
            )
        elif number % 3 == 2:
            rule = "invite" if number % 2 else "public"
            # A unique key: Synapse answers a state change equal to the current state
            # with the old event instead of sending a new one.
            content = {"join_rule": rule, "round": number}
            action = put_state(member.admin, room_id, "m.room.join_rules", content)
        else:
            action = put_state(
                member.admin, room_id, "m.room.topic", {"topic": f"t{number}-{member.name}"}
            )
        actions.append(defer.ensureDeferred(action))
    return list(await defer.gatherResults(actions, consumeErrors=True))


async def converge(members: list[Member], room_id: str, event_ids: list[str]) -> None:
    """Wait until every server has every event and all agree on the current state."""
    deadline = reactor.seconds() + ROUND_DEADLINE  # type: ignore[attr-defined]

    missing: list[tuple[str, str]] = []

    async def all_delivered() -> bool:
        missing[:] = [
            (member.name, event_id)
            for member in members
            for event_id in event_ids
            if not await has_event(member.admin, room_id, event_id)
        ]
        return not missing

    assert await wait_for(all_delivered, deadline), f"never arrived in {room_id}: {missing}"
    states: list[State | None] = []

    async def same_state() -> bool:
        states[:] = [await room_state(m.admin, room_id) for m in members]
        return states[0] is not None and all(s == states[0] for s in states)

    if not await wait_for(same_state, deadline):
        raise AssertionError(f"{room_id} did not converge:\n{describe(members, states)}")


def describe(members: list[Member], states: list[State | None]) -> str:
    keys = sorted({k for s in states if s for k in s})
    lines = []
    for key in keys:
        values = [(s or {}).get(key) for s in states]
        if len(set(values)) > 1:
            lines.append(
                f"  {key}: "
                + ", ".join(f"{m.name}={v}" for m, v in zip(members, values, strict=True))
            )
    return "\n".join(lines)


async def run_rounds(members: list[Member], host: str, failures: ResolutionFailures) -> None:
    creator, others = members[0], members[1:]
    room_ids = [await create_room(creator, members, v) for v in ROOM_VERSIONS]
    await defer.gatherResults(
        [defer.ensureDeferred(join_all(r, creator, host, others)) for r in room_ids],
        consumeErrors=True,
    )
    for number in range(ROUNDS):
        rounds = await defer.gatherResults(
            [defer.ensureDeferred(one_round(members, r, number)) for r in room_ids],
            consumeErrors=True,
        )
        await defer.gatherResults(
            [
                defer.ensureDeferred(converge(members, r, ids))
                for r, ids in zip(room_ids, rounds, strict=True)
            ],
            consumeErrors=True,
        )
        assert not failures.lines, failures.lines


@pytest_twisted.ensureDeferred
async def test_two_synapses_and_ours_converge(
    tmp_path: Any, resolution_failures: ResolutionFailures
) -> None:
    synapses = await start_synapses(2, tmp_path)
    try:
        (ours,) = await start_ours(1, tmp_path)
        try:
            members = [
                await make_member("synapse0", synapses[0].base_url),
                await make_member("synapse1", synapses[1].base_url),
                await make_member("ours", ours.base_url),
            ]
            await run_rounds(members, synapses[0].server_name, resolution_failures)
        finally:
            await ours.stop()
    finally:
        for peer in synapses:
            peer.stop()


@pytest_twisted.ensureDeferred
async def test_two_of_ours_and_synapse_converge(
    tmp_path: Any, resolution_failures: ResolutionFailures
) -> None:
    (synapse,) = await start_synapses(1, tmp_path)
    try:
        ours = await start_ours(2, tmp_path)
        try:
            members = [
                await make_member("ours0", ours[0].base_url),
                await make_member("synapse", synapse.base_url),
                await make_member("ours1", ours[1].base_url),
            ]
            await run_rounds(members, ours[0].hs.server_name, resolution_failures)
        finally:
            for server in ours:
                await server.stop()
    finally:
        synapse.stop()
