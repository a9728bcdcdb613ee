"""Federation figures between two of our servers on loopback (HTTPS, SQLite or PostgreSQL).

    .venv/bin/python -m bench.federation_bench [--state-events 2000] [--messages 50]

Prints: the time for a user of server B to join a room of server A holding N state
events, and the per-message latency from a send on A to the message appearing in a
/sync long-poll of a user on B (p50 / p95 / p99 / max).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from typing import Any

from twisted.internet import defer, task

from tests.support.client import q
from tests.support.federation import start_federating_server


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


async def run(reactor: Any, args: argparse.Namespace) -> None:
    tmp = tempfile.mkdtemp(prefix="fedbench-")
    dbs = []
    for name in ("a", "b"):
        os.makedirs(os.path.join(tmp, name))
        dbs.append({"name": "sqlite3", "args": {"database": os.path.join(tmp, name, "hs.db")}})
    a = await start_federating_server(os.path.join(tmp, "a"), dbs[0])
    b = await start_federating_server(os.path.join(tmp, "b"), dbs[1])
    try:
        alice, bob = a.client(), b.client()
        await alice.register("alice")
        await bob.register("bob")
        resp = await alice.post("/_matrix/client/v3/createRoom", {"preset": "public_chat"})
        room_id = resp.json["room_id"]
        started = time.monotonic()
        sem = defer.DeferredSemaphore(8)

        async def put_state(i: int) -> None:
            r = await alice.put(
                f"/_matrix/client/v3/rooms/{q(room_id)}/state/org.example.bench/key{i}",
                {"i": i},
            )
            assert r.code == 200, r

        await defer.gatherResults(
            [
                sem.run(lambda i=i: defer.ensureDeferred(put_state(i)))
                for i in range(args.state_events)
            ]
        )
        print(f"created {args.state_events} state events on A in {time.monotonic() - started:.1f}s")

        started = time.monotonic()
        resp = await bob.post(
            f"/_matrix/client/v3/join/{q(room_id)}", {}, params={"server_name": a.hs.server_name}
        )
        assert resp.code == 200, resp
        join_s = time.monotonic() - started
        print(f"remote join of a room with {args.state_events + 7} state events: {join_s:.2f}s")

        resp = await bob.get("/_matrix/client/v3/sync")
        since = resp.json["next_batch"]
        latencies = []
        for i in range(args.messages):
            body = f"m{i}"
            t0 = time.monotonic()
            r = await alice.put(
                f"/_matrix/client/v3/rooms/{q(room_id)}/send/m.room.message/{i}",
                {"msgtype": "m.text", "body": body},
            )
            assert r.code == 200, r
            seen = False
            while not seen:
                r = await bob.get(
                    "/_matrix/client/v3/sync", params={"since": since, "timeout": "10000"}
                )
                since = r.json["next_batch"]
                room = r.json["rooms"]["join"].get(room_id, {})
                seen = any(
                    e.get("content", {}).get("body") == body
                    for e in room.get("timeline", {}).get("events", [])
                )
            latencies.append((time.monotonic() - t0) * 1000)
            if args.verbose:
                print(f"  message {i}: {latencies[-1]:.1f} ms")
        print(
            f"federated message latency over {args.messages} messages (ms): "
            f"p50 {pct(latencies, 50):.1f}  p95 {pct(latencies, 95):.1f}  "
            f"p99 {pct(latencies, 99):.1f}  max {max(latencies):.1f}  mean {statistics.mean(latencies):.1f}"
        )
    finally:
        await a.stop()
        await b.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--state-events", type=int, default=2000)
    parser.add_argument("--messages", type=int, default=50)
    parser.add_argument("--verbose", action="store_true", help="print each latency")
    args = parser.parse_args()
    task.react(lambda reactor: defer.ensureDeferred(run(reactor, args)))


if __name__ == "__main__":
    main()
