#!/usr/bin/env python3
"""First simplified sliding sync (MSC4186) response, ours against Synapse.

For each server in turn (ours, then Synapse 1.163.2 from PyPI through ``run_synapse.sh``)
on a fresh data directory with every rate limit lifted, and for each room count (300 and
3,000 by default) it registers a user, creates that many rooms through the client API
(one ``m.text`` message in each; at most ``--concurrency`` requests in flight, the same
for both servers), and then times ``--runs`` first sliding-sync requests of that user:
one list of the 20 most recent rooms with ``timeline_limit`` 1, each request on a new
``conn_id`` and without ``pos`` (so each is a first response, computed afresh). Each
response is checked: 20 rooms, ordered by recency (the last rooms created), ``count``
equal to the room count, the message in each timeline. It prints median and p95 per
server and room count, and their ratio (issue #18's target: ours at most 1/10).

    .venv/bin/python bench/sliding_sync_bench.py
    .venv/bin/python bench/sliding_sync_bench.py --rooms 300 --runs 10 --servers ours

Never run by CI: it downloads Synapse and takes minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from typing import Any

import aiohttp
from compare import Server, ServerKind
from load import V3, BenchError, Http, q, register_dummy

SLIDING = "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync"
LIST_SIZE = 20
REQUIRED_STATE = [["m.room.create", ""], ["m.room.name", ""], ["m.room.member", "$ME"]]


def request_body(conn_id: str) -> dict[str, Any]:
    return {
        "conn_id": conn_id,
        "lists": {
            "all": {
                "ranges": [[0, LIST_SIZE - 1]],
                "timeline_limit": 1,
                "required_state": REQUIRED_STATE,
            }
        },
    }


async def populate(base_url: str, rooms: int, concurrency: int) -> tuple[str, list[str]]:
    """A new user in ``rooms`` rooms, one message in each; its token and the room ids in
    creation order."""
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=concurrency + 4)
    ) as session:
        http = Http(session, base_url)
        _, token = await register_dummy(http, f"slide{secrets.token_hex(3)}")
        sem = asyncio.Semaphore(concurrency)

        async def one(n: int) -> str:
            async with sem:
                created = await http.ok(
                    "POST", f"{V3}/createRoom", {"name": f"room {n}"}, token=token, timeout_s=120
                )
                room_id = str(created["room_id"])
                await http.ok(
                    "PUT",
                    f"{V3}/rooms/{q(room_id)}/send/m.room.message/m{n}",
                    {"msgtype": "m.text", "body": f"message in room {n}"},
                    token=token,
                    timeout_s=120,
                )
                return room_id

        # In batches of ``concurrency``: room n's message is sent before room n+batch
        # is created, so recency follows creation order batch by batch.
        room_ids: list[str] = []
        for start in range(0, rooms, concurrency):
            batch = range(start, min(rooms, start + concurrency))
            room_ids += await asyncio.gather(*(one(n) for n in batch))
    return token, room_ids


async def measure(base_url: str, token: str, room_ids: list[str], run: int) -> float:
    async with aiohttp.ClientSession() as session:
        start = time.monotonic()
        async with session.post(
            f"{base_url}{SLIDING}",
            json=request_body(f"bench-{run}-{secrets.token_hex(3)}"),
            headers={"Authorization": f"Bearer {token}"},
            timeout=aiohttp.ClientTimeout(total=300),
        ) as resp:
            raw = await resp.read()
        elapsed = time.monotonic() - start
    if resp.status != 200:
        raise BenchError(f"sliding sync -> {resp.status} {raw[:300]!r}")
    check(json.loads(raw), room_ids)
    return elapsed


def check(body: dict[str, Any], room_ids: list[str]) -> None:
    lst = body["lists"]["all"]
    if lst["count"] != len(room_ids):
        raise BenchError(f"count {lst['count']}, want {len(room_ids)}")
    listed = [r for op in lst.get("ops", []) for r in op.get("room_ids", [])]
    # Batches were made concurrently: the 20 most recent are among the last batches.
    recent = set(room_ids[-2 * LIST_SIZE - 64 :])
    if len(listed) != LIST_SIZE or not set(listed) <= recent:
        raise BenchError(f"listed {len(listed)} rooms, not the most recent: {listed[:3]}")
    for room_id in listed:
        events = body["rooms"][room_id]["timeline"]
        if [e["type"] for e in events] != ["m.room.message"]:
            raise BenchError(f"{room_id}: timeline {events}")


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def run_kind(kind: ServerKind, args: argparse.Namespace, root: str) -> None:
    data_dir = os.path.join(root, kind.name)
    server = Server(kind, "sqlite", data_dir, f"{data_dir}.log")
    try:
        server.wait_ready()
        for rooms in args.rooms:
            t0 = time.monotonic()
            token, room_ids = asyncio.run(populate(server.base_url, rooms, args.concurrency))
            setup_s = time.monotonic() - t0
            times = [
                asyncio.run(measure(server.base_url, token, room_ids, i)) for i in range(args.runs)
            ]
            kind.results[rooms] = {
                "setup (s)": setup_s,
                "first (ms)": 1000 * times[0],
                "median (ms)": 1000 * statistics.median(times),
                "p95 (ms)": 1000 * p95(times),
            }
            print(f"{kind.name} {rooms} rooms: {kind.results[rooms]}", flush=True)
    finally:
        server.stop()


def table(kinds: list[ServerKind], rooms: list[int], runs: int) -> str:
    lines = [
        f"| rooms | server | median (ms) | p95 (ms) | first (ms) | setup (s) |  (N = {runs})",
        "|---:|---|---:|---:|---:|---:|",
    ]
    for n in rooms:
        for kind in kinds:
            r = kind.results.get(n)
            if r:
                lines.append(
                    f"| {n} | {kind.name} | {r['median (ms)']:.1f} | {r['p95 (ms)']:.1f} "
                    f"| {r['first (ms)']:.1f} | {r['setup (s)']:.0f} |"
                )
        by = {k.name: k.results.get(n) for k in kinds}
        if by.get("ours") and by.get("synapse"):
            ratio = by["synapse"]["median (ms)"] / by["ours"]["median (ms)"]
            verdict = "PASS" if ratio >= 10 else "MISS"
            lines.append(f"| {n} | Synapse / ours (median) | {ratio:.1f}x | | | {verdict} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--rooms", default="300,3000", help="comma-separated room counts")
    p.add_argument("--runs", type=int, default=20, help="timed requests per room count")
    p.add_argument("--servers", default="ours,synapse", help="comma-separated: ours, synapse")
    p.add_argument("--concurrency", type=int, default=16, help="setup requests in flight")
    p.add_argument("--keep", action="store_true", help="keep the data directories and logs")
    p.add_argument("--ports", default="18108,18548", help="the two servers' ports: ours,synapse")
    args = p.parse_args(argv)
    args.rooms = [int(n) for n in args.rooms.split(",") if n]
    ours_port, synapse_port = (int(n) for n in args.ports.split(","))
    all_kinds = {
        "ours": ServerKind("ours", "run_homeserver.sh", ours_port, "bench_sliding_ours"),
        "synapse": ServerKind("synapse", "run_synapse.sh", synapse_port, "bench_sliding_synapse"),
    }
    kinds = [all_kinds[n] for n in args.servers.split(",") if n]
    root = tempfile.mkdtemp(prefix="bench-sliding-")
    print(f"data and logs in {root}", flush=True)
    try:
        for kind in kinds:
            run_kind(kind, args, root)
        print(table(kinds, args.rooms, args.runs))
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
