#!/usr/bin/env python3
"""Ours against Synapse, side by side: one command, one machine, the same database kind.

For each server in turn (ours first, then Synapse from PyPI, installed by
``run_synapse.sh`` on first use) it starts the server on a fresh data directory (and a
fresh PostgreSQL database with ``--db postgres``), with presence on and every rate limit
lifted, runs the scenarios through ``load.py`` with the client filter a chat client uses
(receipts, typing and presence included), stops the server, and finally prints both
results, their ratios, and each of issue #8's targets with PASS or MISS:

- ``busy``: 50 users in one room, all syncing, 5 senders back to back; ours must reach
  10x Synapse's throughput and at most 1/10 of its p99 delivery latency, 0 lost;
- ``large``: a 500-member room at a steady 10 msg/s; p99 delivery under 200 ms
  (``large-ws``: the same for ours with every member on a WebSocket instead);
- ``idle``: N idle ``/sync`` long-polls (and, for ours, N idle WebSockets) held open,
  server RSS per connection (target: at most 9 KiB each);
- ``initial``: a user in 300 rooms (10 other members, 30 messages each) does an initial
  ``/sync`` with Element's first-sync filter: the first call after setting up, the
  median of 3 more computed afresh (warm), the first call after a restart of the server
  on the same data, and the median of 3 identical requests (which Synapse answers from
  its 2-minute response cache); each checked complete. Ours must take at most 1/5 of
  Synapse's time in each.

Server CPU (% of one core over the measured window) and RSS (after the run, and the
peak) are read from /proc. Only loopback addresses; every phase is time-bounded.

    .venv/bin/python bench/compare.py                  # SQLite, every scenario
    .venv/bin/python bench/compare.py --db postgres --scenarios busy,large
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import load

HERE = Path(__file__).resolve().parent
SCENARIOS = ("busy", "large", "large-ws", "idle", "initial")
OURS_ONLY = {"large-ws"}  # Synapse has no WebSocket
START_TIMEOUT_S = 300.0  # Synapse's first start installs it and builds its schema


@dataclass
class ServerKind:
    name: str
    script: str
    port: int
    db_name: str
    results: dict[str, Any] = field(default_factory=dict)


class Server:
    """One homeserver process started through its run script, in its own session."""

    def __init__(self, kind: ServerKind, db: str, data_dir: str, log_path: str) -> None:
        self.kind = kind
        self.base_url = f"http://127.0.0.1:{kind.port}"
        self.db, self.data_dir, self.log_path = db, data_dir, log_path
        self._start("wb")

    def _start(self, log_mode: str) -> None:
        env = {**os.environ, "DATABASE": self.db, "DB_NAME": self.kind.db_name, "PRESENCE": "true"}
        self._log = open(self.log_path, log_mode)  # noqa: SIM115 - closed in stop()
        # The script execs the server: this pid is the server's.
        self.proc = subprocess.Popen(
            ["bash", str(HERE / self.kind.script), self.data_dir, str(self.kind.port)],
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def restart(self) -> None:
        """Stop the server and start it again on the same data; wait until it answers."""
        self.stop()
        self._start("ab")
        self.wait_ready()

    def wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"{self.kind.name} exited with {self.proc.returncode}")
            try:
                with urllib.request.urlopen(f"{self.base_url}/_matrix/client/versions", timeout=2):
                    return
            except OSError:
                time.sleep(0.5)
        raise SystemExit(f"{self.kind.name} did not answer within {START_TIMEOUT_S:.0f} s")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def memory_kib(self) -> dict[str, int]:
        return read_memory_kib(self.pid)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self._log.close()


def read_memory_kib(pid: int) -> dict[str, int]:
    """VmRSS (now) and VmHWM (peak) of a process, in KiB."""
    values = {}
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0])
    return {"rss_kib": values.get("VmRSS", 0), "peak_rss_kib": values.get("VmHWM", 0)}


def fresh_postgres_database(name: str) -> None:
    import psycopg2

    conn = psycopg2.connect(host="127.0.0.1", user="postgres", dbname="postgres")
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    conn.close()  # the run script creates it again, with the collation its server needs


# Scenarios --------------------------------------------------------------------------


def load_args(server: Server, args: argparse.Namespace, **options: Any) -> argparse.Namespace:
    argv = [
        "--base-url",
        server.base_url,
        "--server-pid",
        str(server.pid),
        "--ephemeral",
        "--setup-concurrency",
        "10",
    ]
    for key, value in options.items():
        argv += [f"--{key.replace('_', '-')}", str(value)]
    return load.parse_args(argv)


def run_load(server: Server, args: argparse.Namespace, **options: Any) -> dict[str, Any]:
    result = asyncio.run(load.bench(load_args(server, args, **options)))
    result["memory"] = server.memory_kib()
    return result


def scenario_busy(server: Server, args: argparse.Namespace) -> dict[str, Any]:
    return run_load(
        server, args, users=50, senders=5, rate=0, duration=args.duration, warmup=args.warmup
    )


def scenario_large(
    server: Server, args: argparse.Namespace, transport: str = "sync"
) -> dict[str, Any]:
    return run_load(
        server,
        args,
        users=args.large_users,
        senders=5,
        rate=10,
        duration=args.duration,
        warmup=args.warmup,
        grace=20,
        transport=transport,
    )


def scenario_large_ws(server: Server, args: argparse.Namespace) -> dict[str, Any]:
    return scenario_large(server, args, transport="websocket")


def scenario_idle(server: Server, args: argparse.Namespace) -> dict[str, Any]:
    import idle_connections

    websockets = args.idle_websockets if server.kind.name == "ours" else 0  # Synapse has none
    per_connection = asyncio.run(
        idle_connections.measure(server.base_url, server.pid, args.idle, websockets)
    )
    result: dict[str, Any] = {"sync KiB/connection": per_connection["long-poll"] / 1024}
    if "websocket" in per_connection:
        result["websocket KiB/connection"] = per_connection["websocket"] / 1024
        result["websockets held"] = float(websockets)
    return result


def scenario_initial(server: Server, args: argparse.Namespace) -> dict[str, Any]:
    import statistics

    import initial_sync

    s = asyncio.run(
        initial_sync.setup(server.base_url, args.initial_rooms, members=10, messages=30)
    )
    print(f"  set up {len(s.room_ids)} rooms in {s.seconds:.0f} s", flush=True)

    def one(timeout_ms: int = 0) -> float:
        return asyncio.run(initial_sync.measure_sync(server.base_url, s, 30, timeout_ms))

    # Straight after setting up: whatever the server cached while the rooms were made
    # (Synapse's caches, our in-memory rooms) is still there, but nothing of this sync.
    first = one()
    # The same request again: Synapse replays the response it keeps for 2 minutes.
    repeated = [one() for _ in range(3)]
    # Warm: computed again (another timeout, which an initial sync ignores), caches warm.
    warm = [one(timeout_ms) for timeout_ms in (1, 2, 3)]
    memory = server.memory_kib()
    server.restart()
    after_restart = one()
    return {
        "setup (s)": s.seconds,
        "first sync (ms)": 1000 * first,
        "warm sync, median of 3 (ms)": 1000 * statistics.median(warm),
        "first sync after restart (ms)": 1000 * after_restart,
        "same request again, median of 3 (ms)": 1000 * statistics.median(repeated),
        "server RSS before restart (MiB)": memory["rss_kib"] / 1024,
    }


RUNNERS: dict[str, Callable[[Server, argparse.Namespace], dict[str, Any]]] = {
    "busy": scenario_busy,
    "large": scenario_large,
    "large-ws": scenario_large_ws,
    "idle": scenario_idle,
    "initial": scenario_initial,
}
INITIAL_TARGETS = (
    "first sync (ms)",
    "warm sync, median of 3 (ms)",
    "first sync after restart (ms)",
)
# No target: Synapse replays the response it keeps for 2 minutes (the "warm" is
# its recomputed figure), but the ratio is printed.
INITIAL_REPLAY = "same request again, median of 3 (ms)"


# Report -----------------------------------------------------------------------------


def _fmt(value: float | None, unit: str = "") -> str:
    if value is None or value != value:  # None or NaN
        return "-"
    return f"{value:,.1f}{unit}"


def _ratio(ours: float | None, theirs: float | None) -> str:
    if not ours or not theirs or ours != ours or theirs != theirs:
        return "-"
    return f"{ours / theirs:.2f}x"


def load_rows(r: dict[str, Any]) -> dict[str, float | None]:
    delivery, send = r["delivery_latency_ms"], r["send_latency_ms"]
    return {
        "throughput (msg/s)": r["throughput_msg_s"],
        "send p50 (ms)": send["p50"],
        "send p99 (ms)": send["p99"],
        "delivery p50 (ms)": delivery["p50"],
        "delivery p95 (ms)": delivery["p95"],
        "delivery p99 (ms)": delivery["p99"],
        "delivery max (ms)": delivery["max"],
        "deliveries lost": r["deliveries_lost"],
        "server CPU (% core)": r["cpu_percent"].get("server"),
        "server RSS (MiB)": r["memory"]["rss_kib"] / 1024,
        "server peak RSS (MiB)": r["memory"]["peak_rss_kib"] / 1024,
    }


def print_comparison(kinds: list[ServerKind], scenarios: list[str]) -> list[str]:
    """The side-by-side table; returns the target lines (PASS/MISS)."""
    ours, synapse = kinds[0].results, (kinds[1].results if len(kinds) > 1 else {})
    targets: list[str] = []
    for name in scenarios:
        mine, theirs = ours.get(name), synapse.get(name)
        print(f"\n== {name} " + "=" * 60)
        if name in ("idle", "initial"):
            labels = {**(theirs or {}), **(mine or {})}  # in the order measured
            for label in sorted(labels) if name == "idle" else labels:
                a, b = (mine or {}).get(label), (theirs or {}).get(label)
                print(f"{label:<36}{_fmt(a):>14}{_fmt(b):>14}{_ratio(a, b):>10}")
            continue
        rows_a = load_rows(mine) if mine else {}
        rows_b = load_rows(theirs) if theirs else {}
        print(f"{'':<26}{'ours':>14}{'synapse':>14}{'ours/synapse':>14}")
        for label in rows_a or rows_b:
            a, b = rows_a.get(label), rows_b.get(label)
            print(f"{label:<26}{_fmt(a):>14}{_fmt(b):>14}{_ratio(a, b):>14}")
    busy_a, busy_b = ours.get("busy"), synapse.get("busy")
    if busy_a and busy_b:
        t = busy_a["throughput_msg_s"] / max(busy_b["throughput_msg_s"], 1e-9)
        p = busy_a["delivery_latency_ms"]["p99"] / max(busy_b["delivery_latency_ms"]["p99"], 1e-9)
        targets.append(f"busy: throughput {t:.1f}x Synapse's (target >= 10x): {_verdict(t >= 10)}")
        targets.append(
            f"busy: p99 delivery {p:.3f} of Synapse's (target <= 0.1): {_verdict(p <= 0.1)}"
        )
    if busy_a:
        lost = busy_a["deliveries_lost"]
        targets.append(f"busy: {lost} deliveries lost (target 0): {_verdict(lost == 0)}")
    for name in ("large", "large-ws"):
        large = ours.get(name)
        if large:
            p99 = large["delivery_latency_ms"]["p99"]
            targets.append(
                f"{name}: p99 delivery {p99:.0f} ms (target < 200 ms): {_verdict(p99 < 200)}"
            )
    idle = ours.get("idle")
    if idle:
        for key in ("sync KiB/connection", "websocket KiB/connection"):
            if key in idle:
                targets.append(
                    f"idle: {key} {idle[key]:.1f} (target <= 9): {_verdict(idle[key] <= 9)}"
                )
        if "websockets held" in idle:
            held = idle["websockets held"]
            targets.append(
                f"idle: {held:.0f} WebSockets held (target 10,000): {_verdict(held >= 10_000)}"
            )
    initial_a, initial_b = ours.get("initial"), synapse.get("initial")
    if initial_a and initial_b:
        for key in INITIAL_TARGETS:
            share = initial_a[key] / max(initial_b[key], 1e-9)
            targets.append(
                f"initial: {key.removesuffix(' (ms)')} {share:.3f} of Synapse's "
                f"(target <= 0.2): {_verdict(share <= 0.2)}"
            )
        share = initial_a[INITIAL_REPLAY] / max(initial_b[INITIAL_REPLAY], 1e-9)
        targets.append(
            f"initial: {INITIAL_REPLAY.removesuffix(' (ms)')} {share:.3f} of Synapse's"
            " (no target: Synapse replays its cached response)"
        )
    print("\n== targets " + "=" * 57)
    for line in targets:
        print(line)
    return targets


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--db", choices=("sqlite", "postgres"), default="sqlite")
    p.add_argument("--scenarios", default=",".join(SCENARIOS), help="comma-separated")
    p.add_argument("--servers", default="ours,synapse", help="comma-separated: ours, synapse")
    p.add_argument("--duration", type=float, default=30, help="measured seconds per load run")
    p.add_argument("--warmup", type=float, default=5)
    p.add_argument("--large-users", type=int, default=500, help="members of the large room")
    p.add_argument("--idle", type=int, default=1000, help="idle /sync long-polls")
    p.add_argument(
        "--idle-websockets", type=int, default=10_000, help="idle WebSockets (ours only)"
    )
    p.add_argument("--initial-rooms", type=int, default=300, help="rooms of the initial-sync user")
    p.add_argument(
        "--instance",
        type=int,
        default=0,
        help="N > 0: other ports and databases, to run beside another compare.py",
    )
    p.add_argument("--keep", action="store_true", help="keep the data directories and logs")
    p.add_argument("--json", metavar="PATH", help="write every result as JSON")
    args = p.parse_args(argv)
    args.scenario_list = [s for s in args.scenarios.split(",") if s]
    unknown = set(args.scenario_list) - set(SCENARIOS)
    if unknown:
        p.error(f"unknown scenarios: {', '.join(sorted(unknown))}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    offset, suffix = 10 * args.instance, (f"_{args.instance}" if args.instance else "")
    all_kinds = {
        "ours": ServerKind(
            "ours", "run_homeserver.sh", 18008 + offset, f"bench_homeserver{suffix}"
        ),
        "synapse": ServerKind(
            "synapse", "run_synapse.sh", 18448 + offset, f"bench_synapse{suffix}"
        ),
    }
    kinds = [all_kinds[n] for n in args.servers.split(",") if n]
    root = tempfile.mkdtemp(prefix="bench-compare-")
    print(f"data and logs in {root}; database {args.db}; scenarios {args.scenarios}")
    try:
        for kind in kinds:
            for scenario in args.scenario_list:
                if scenario in OURS_ONLY and kind.name != "ours":
                    continue
                # A fresh server per scenario: no scenario pays for another's data.
                data_dir = os.path.join(root, f"{kind.name}-{scenario}")
                if args.db == "postgres":
                    fresh_postgres_database(kind.db_name)
                server = Server(kind, args.db, data_dir, f"{data_dir}.log")
                try:
                    server.wait_ready()
                    print(f"\n{kind.name}: {scenario} (pid {server.pid}) ...", flush=True)
                    kind.results[scenario] = RUNNERS[scenario](server, args)
                finally:
                    server.stop()
        print_comparison(kinds, args.scenario_list)
        if args.json:
            with open(args.json, "w", encoding="utf-8") as f:
                json.dump({k.name: k.results for k in kinds}, f, indent=2)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
