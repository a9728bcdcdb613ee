"""Crash durability: every event the server acknowledged survives a SIGKILL.

The real ``homeserver`` runs as a subprocess (SQLite and PostgreSQL). Several clients
send a burst of messages into one room, each sender one message at a time as a client
does; the server is SIGKILLed while the burst is in flight. After a restart on the same
data, every acknowledged event (200 with an ``event_id``) must be readable by id and in
``/messages``, in each sender's sending order, with nothing a sender never sent; a
retried transaction id must still answer the original event id; and the room must keep
working (new messages, initial and incremental ``/sync``).
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest

from tests.support.databases import database_config
from tests.support.subprocess_server import (
    NO_RATE_LIMITS,
    STOP_TIMEOUT_S,
    ServerProcess,
    free_port,
    generate_config,
    start_server,
    write_overrides,
)

V3 = "/_matrix/client/v3"
PASSWORD = "crash test dummy"
SENDERS = 4
KILL_AFTER_ACKS = 60  # total acknowledged sends before the SIGKILL
MAX_PER_SENDER = 500  # bound: the test fails rather than sends forever
TIMEOUT = aiohttp.ClientTimeout(total=10)


def q(value: str) -> str:
    return quote(value, safe="")


@dataclass
class Sender:
    user_id: str
    token: str
    acked: list[tuple[int, str]] = field(default_factory=list)  # (seq, event_id)
    lost_connection: bool = False
    unexpected: list[str] = field(default_factory=list)


class Api:
    def __init__(self, session: aiohttp.ClientSession, base_url: str) -> None:
        self.session = session
        self.base_url = base_url

    async def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        token: str | None = None,
        params: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with self.session.request(
            method, self.base_url + path, json=body, headers=headers, params=params
        ) as resp:
            return resp.status, await resp.json(content_type=None)

    async def ok(self, method: str, path: str, body: Any = None, **kw: Any) -> Any:
        status, data = await self.call(method, path, body, **kw)
        assert status == 200, f"{method} {path} -> {status} {data}"
        return data


async def register(api: Api, name: str) -> Sender:
    body: dict[str, Any] = {"username": name, "password": PASSWORD}
    status, flows = await api.call("POST", f"{V3}/register", body)
    assert status == 401, flows
    body["auth"] = {"type": "m.login.dummy", "session": flows["session"]}
    data = await api.ok("POST", f"{V3}/register", body)
    return Sender(data["user_id"], data["access_token"])


def send_path(room_id: str, txn_id: str) -> str:
    return f"{V3}/rooms/{q(room_id)}/send/m.room.message/{q(txn_id)}"


def message(index: int, seq: int) -> dict[str, Any]:
    return {"msgtype": "m.text", "body": f"sender {index} message {seq}", "seq": seq}


async def burst(api: Api, room_id: str, senders: list[Sender], server: ServerProcess) -> None:
    """All senders send concurrently; the server is killed after KILL_AFTER_ACKS acks."""
    acks = 0

    async def run(index: int, sender: Sender) -> None:
        nonlocal acks
        for seq in range(MAX_PER_SENDER):
            try:
                status, data = await api.call(
                    "PUT", send_path(room_id, f"t{seq}"), message(index, seq), sender.token
                )
            except (TimeoutError, aiohttp.ClientError):
                sender.lost_connection = True
                return
            if status != 200 or not isinstance(data.get("event_id"), str):
                sender.unexpected.append(f"seq {seq}: {status} {data}")
                return
            sender.acked.append((seq, data["event_id"]))
            acks += 1
            if acks == KILL_AFTER_ACKS:
                server.proc.kill()  # SIGKILL, mid-burst: other sends are in flight

    await asyncio.gather(*(run(i, s) for i, s in enumerate(senders)))


async def all_messages(api: Api, room_id: str, token: str) -> list[dict[str, Any]]:
    """The room's whole timeline, oldest first, through /messages backwards."""
    events: list[dict[str, Any]] = []
    params = {"dir": "b", "limit": "100"}
    for _ in range(100):  # bound
        page = await api.ok("GET", f"{V3}/rooms/{q(room_id)}/messages", token=token, params=params)
        events.extend(page["chunk"])
        if not page["chunk"] or "end" not in page:
            break
        params = {**params, "from": page["end"]}
    else:
        raise AssertionError("/messages did not reach the start of the room")
    events.reverse()
    return events


async def check_after_restart(api: Api, room_id: str, senders: list[Sender]) -> None:
    reader = senders[0].token
    for sender in senders:
        for seq, event_id in sender.acked:
            ev = await api.ok("GET", f"{V3}/rooms/{q(room_id)}/event/{q(event_id)}", token=reader)
            assert ev["event_id"] == event_id
            assert ev["sender"] == sender.user_id and ev["content"]["seq"] == seq, ev

    timeline = await all_messages(api, room_id, reader)
    ids = [ev["event_id"] for ev in timeline]
    assert len(ids) == len(set(ids)), "an event appears twice in /messages"
    for sender in senders:
        sent = [
            (ev["content"]["seq"], ev["event_id"])
            for ev in timeline
            if ev["sender"] == sender.user_id and ev["type"] == "m.room.message"
        ]
        # The acknowledged sends, in sending order; at most the one send that was in
        # flight at the kill may also have been committed, and only after them.
        assert sent[: len(sender.acked)] == sender.acked, (sender.user_id, sent, sender.acked)
        extra = [seq for seq, _ in sent[len(sender.acked) :]]
        assert extra in ([], [len(sender.acked)]), (sender.user_id, extra)

    for index, sender in enumerate(senders):
        # A retried transaction answers the event it created before the crash.
        seq, event_id = sender.acked[-1]
        again = await api.ok(
            "PUT", send_path(room_id, f"t{seq}"), message(index, seq), token=sender.token
        )
        assert again["event_id"] == event_id, (sender.user_id, seq)


async def check_room_still_works(api: Api, room_id: str, senders: list[Sender]) -> None:
    sync_filter = json.dumps({"room": {"timeline": {"limit": 10}}})
    user = senders[0]
    new_ids = []
    for index, sender in enumerate(senders):
        sent = await api.ok(
            "PUT", send_path(room_id, "after-restart"), message(index, 10_000), token=sender.token
        )
        new_ids.append(sent["event_id"])

    initial = await api.ok(
        "GET", f"{V3}/sync", token=user.token, params={"filter": sync_filter, "timeout": "0"}
    )
    timeline = [ev["event_id"] for ev in initial["rooms"]["join"][room_id]["timeline"]["events"]]
    assert timeline[-len(new_ids) :] == new_ids, timeline

    async def later_send() -> str:
        await asyncio.sleep(0.2)
        data = await api.ok(
            "PUT", send_path(room_id, "live"), message(0, 10_001), token=senders[-1].token
        )
        return str(data["event_id"])

    params = {"filter": sync_filter, "timeout": "5000", "since": initial["next_batch"]}
    live, live_id = await asyncio.gather(
        api.ok("GET", f"{V3}/sync", token=user.token, params=params), later_send()
    )
    events = live["rooms"]["join"][room_id]["timeline"]["events"]
    assert [ev["event_id"] for ev in events] == [live_id], events


async def scenario(tmp_path: Path, port: int, configs: list[Path]) -> None:
    server = start_server(tmp_path, port, *configs)
    try:
        async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
            api = Api(session, server.base_url)
            senders = [await register(api, f"sender{i}") for i in range(SENDERS)]
            created = await api.ok(
                "POST", f"{V3}/createRoom", {"preset": "public_chat"}, token=senders[0].token
            )
            room_id = created["room_id"]
            for sender in senders[1:]:
                await api.ok("POST", f"{V3}/rooms/{q(room_id)}/join", {}, token=sender.token)
            await burst(api, room_id, senders, server)
        server.proc.wait(timeout=STOP_TIMEOUT_S)
        assert server.proc.returncode == -9, "the server was not killed"
    finally:
        server.kill()

    for sender in senders:
        assert not sender.unexpected, sender.unexpected
    assert sum(len(s.acked) for s in senders) >= KILL_AFTER_ACKS
    assert any(s.lost_connection for s in senders), "the kill did not interrupt the burst"

    server = start_server(tmp_path, port, *configs)
    try:
        async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
            api = Api(session, server.base_url)
            await check_after_restart(api, room_id, senders)
            await check_room_still_works(api, room_id, senders)
    finally:
        status = server.stop()
    assert status == 0, f"exit status {status} on SIGTERM; stderr:\n{server.stderr()}"


@pytest.mark.parametrize("db_kind", ["sqlite", "postgres"])
def test_acknowledged_events_survive_sigkill_mid_burst(db_kind: str, tmp_path: Path) -> None:
    port = free_port()
    config_path = generate_config(tmp_path, port)
    with database_config(db_kind, str(tmp_path)) as database:
        overrides = write_overrides(
            tmp_path, {"bcrypt_rounds": 4, "database": database, **NO_RATE_LIMITS}
        )
        asyncio.run(asyncio.wait_for(scenario(tmp_path, port, [config_path, overrides]), 60))
