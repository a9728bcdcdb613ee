#!/usr/bin/env python3
"""Push figures: send-to-gateway latency, and push rule evaluation in a big room.

1. **Latency.** An in-process server (SQLite in a temporary directory, or PostgreSQL
   with ``--engine postgres``) and a push gateway stub (a twisted.web server on
   loopback, as the tests use). Bob has an HTTP pusher and is not syncing; Alice sends
   ``--messages`` messages one after the other. For each, the time from just before
   the ``PUT /send`` to the gateway receiving the notify request: p50, p95, max.
2. **Evaluation.** ``--members`` users join one room. For one message event the
   rules of every local member but the sender are evaluated
   (``PushActionGenerator.actions_for_event``: rule sets from memory, the event
   flattened once): p50 and max over ``--rounds`` runs, warm; and once cold (rule
   sets not cached: one query loads them all).

    .venv/bin/python bench/push_bench.py
    .venv/bin/python bench/push_bench.py --members 500 --messages 20 --engine postgres
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
import uuid
from dataclasses import replace
from typing import Any

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from twisted.internet import defer, reactor, task  # noqa: E402

from homeserver.config import parse_config  # noqa: E402
from homeserver.server import build_homeserver  # noqa: E402
from tests.push.gateway import start_gateway  # noqa: E402
from tests.support.client import Client, q  # noqa: E402
from tests.support.server import make_config_dict  # noqa: E402

V3 = "/_matrix/client/v3"
PG_ARGS = {"host": "127.0.0.1", "port": 5432, "user": "postgres"}


def pct(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(p / 100 * len(ordered)) - 1))]


async def register(base_url: str, name: str) -> Client:
    client = Client(base_url)
    await client.register(name)
    return client


async def latency(base_url: str, hs: Any, messages: int) -> None:
    gateway = await start_gateway()
    try:
        alice = await register(base_url, "alice")
        bob = await register(base_url, "bob")
        resp = await alice.post(f"{V3}/createRoom", {"preset": "public_chat"})
        room_id = resp.json["room_id"]
        assert (await bob.post(f"{V3}/join/{q(room_id)}", {})).code == 200
        pusher = {
            "kind": "http",
            "app_id": "bench",
            "app_display_name": "bench",
            "device_display_name": "bench",
            "pushkey": "bench-key",
            "lang": "en",
            "data": {"url": gateway.url},
        }
        assert (await bob.post(f"{V3}/pushers/set", pusher)).code == 200
        samples: list[float] = []
        send_samples: list[float] = []
        for i in range(messages):
            start = time.monotonic()
            resp = await alice.put(
                f"{V3}/rooms/{q(room_id)}/send/m.room.message/b{i}",
                {"msgtype": "m.text", "body": f"message {i}"},
            )
            send_samples.append(time.monotonic() - start)
            await gateway.wait_for_events(i + 1)
            arrived = [r for r in gateway.received if r.body["notification"].get("event_id")][i].at
            samples.append(arrived - start)
        ms = [s * 1000 for s in samples]
        send_ms = [s * 1000 for s in send_samples]
        print(f"send -> push gateway ({messages} messages, sequential)")
        print(f"  p50 {pct(ms, 50):.1f} ms   p95 {pct(ms, 95):.1f} ms   max {max(ms):.1f} ms")
        print(f"  (PUT /send answered: p50 {pct(send_ms, 50):.1f} ms)")
    finally:
        await gateway.stop()


async def evaluation(base_url: str, hs: Any, members: int, rounds: int) -> None:
    owner = await register(base_url, "owner")
    resp = await owner.post(f"{V3}/createRoom", {"preset": "public_chat"})
    room_id = resp.json["room_id"]
    sem = defer.DeferredSemaphore(16)

    async def member(i: int) -> None:
        client = await register(base_url, f"m{i}")
        assert (await client.post(f"{V3}/join/{q(room_id)}", {})).code == 200

    start = time.monotonic()
    await defer.gatherResults(
        [sem.run(lambda i=i: defer.ensureDeferred(member(i))) for i in range(members - 1)]
    )
    print(f"\n{members}-member room built in {time.monotonic() - start:.1f} s")
    resp = await owner.put(
        f"{V3}/rooms/{q(room_id)}/send/m.room.message/eval",
        {"msgtype": "m.text", "body": "hello everyone"},
    )
    event_id = resp.json["event_id"]
    room = await hs.push.actions._rooms.get(room_id)  # the room cache it evaluates with
    event = next(ev for ev in room.recent if ev.event_id == event_id)
    generator = hs.push.actions
    rules = hs.push.rules

    rules._cache.clear()
    start = time.perf_counter()
    rows = await generator.actions_for_event(event, room)
    cold = time.perf_counter() - start
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        rows = await generator.actions_for_event(event, room)
        samples.append(time.perf_counter() - start)
    ms = [s * 1000 for s in samples]
    print(f"push rules for one message, {len(room.joined_members()) - 1} recipients")
    print(f"  warm: p50 {pct(ms, 50):.2f} ms   max {max(ms):.2f} ms   ({rounds} rounds)")
    print(f"  cold (rule sets loaded in one query): {cold * 1000:.2f} ms")
    print(f"  notifying actions: {len(rows)}")
    copies = [replace(r, event_id=f"$bench-{uuid.uuid4().hex}") for r in rows]
    start = time.perf_counter()
    await hs.storage.push.add_push_actions(copies)
    elapsed_ms = (time.perf_counter() - start) * 1000
    print(f"  storing them (one transaction, multi-row inserts): {elapsed_ms:.2f} ms")


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as data_dir:
        pg_name = None
        if args.engine == "postgres":
            import psycopg2

            pg_name = f"push_bench_{uuid.uuid4().hex[:8]}"
            conn = psycopg2.connect(dbname="postgres", **PG_ARGS)
            conn.autocommit = True
            conn.cursor().execute(f"CREATE DATABASE {pg_name}")
            conn.close()
            database: dict[str, Any] = {
                "name": "psycopg2",
                "args": {"database": pg_name, **PG_ARGS},
            }
        else:
            database = {"name": "sqlite3", "args": {"database": os.path.join(data_dir, "hs.db")}}
        # The gateway stub is on loopback, which ip_range_blacklist blocks by default.
        config_dict = make_config_dict(data_dir, database, ip_range_whitelist=["127.0.0.0/8"])
        config = parse_config(config_dict, data_dir)
        hs = await build_homeserver(config, reactor)
        hs.listen()
        base_url = f"http://127.0.0.1:{hs.ports[0].getHost().port}"
        try:
            print(f"engine: {args.engine}")
            await latency(base_url, hs, args.messages)
            await evaluation(base_url, hs, args.members, args.rounds)
        finally:
            await hs.stop()
            if pg_name is not None:
                import psycopg2

                conn = psycopg2.connect(dbname="postgres", **PG_ARGS)
                conn.autocommit = True
                conn.cursor().execute(f"DROP DATABASE IF EXISTS {pg_name}")
                conn.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--engine", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--messages", type=int, default=20)
    parser.add_argument("--members", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=50)
    parsed = parser.parse_args()
    task.react(lambda _reactor: defer.ensureDeferred(main(parsed)))
